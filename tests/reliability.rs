//! Reliability: sensor faults injected into real SKAB streams (in progress).
