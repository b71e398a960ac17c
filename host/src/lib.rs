//! Host side of sensorae: trainer, calibration, data loading, evaluation and the command line.
