//! Host side of sensorae: the trainer for every autoencoder variant, threshold calibration,
//! CSV data loading, evaluation metrics, plots, the demo data generator, the streaming pipeline
//! and the command line's logic. `main.rs` only parses flags and maps errors to exit codes.

pub mod batch;
pub mod calibrate;
pub mod commands;
pub mod data;
pub mod demo;
pub mod error;
pub mod files;
pub mod fit;
pub mod inject;
pub mod metrics;
pub mod pipeline;
pub mod plot;
pub mod scoring;
pub mod train;
