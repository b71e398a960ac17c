//! The `sensorae` command line.
fn main() {}
