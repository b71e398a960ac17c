//! Integration tests of the core's public API, one binary with a module per area.

#[cfg(not(feature = "alloc"))]
compile_error!(
    "the core's integration tests need `--features alloc` (cargo test --workspace --all-features)"
);

mod common;
mod decoded;
mod detector;
mod faults;
mod golden;
mod model_format;
mod parity;
mod properties;
mod reliability;
mod wire;
