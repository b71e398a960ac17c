//! Integration tests of the streaming pipeline (`sensorae_host::pipeline`).

mod common;
mod load;
mod local;
mod mqtt;
mod skab;
