//! The scoring path never allocates: a counting global allocator (its own test binary, so it
//! counts nothing else) sees zero allocations during `DynDetector::push` after warm-up, for
//! every architecture, whether a push scores a window or not.

use std::alloc::System;

use sensorae::{Arch, DynDetector, Status, Variant, encode_to_vec, testing};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn model(arch: Arch, hop: u16) -> Vec<u8> {
    let mut header = testing::header(8, 16, 64, 8);
    header.window.hop = hop;
    match arch {
        Arch::Dense => {}
        Arch::Tied => header.tied = true,
        Arch::Vae => header.variant = Variant::Vae,
        Arch::VqVae { codebook } => {
            header.variant = Variant::VqVae {
                codebook: u16::try_from(codebook).expect("small codebook"),
            };
        }
        Arch::Hierarchical {
            block,
            coarse_hidden,
            coarse_latent,
        } => {
            let small = |v: usize| u16::try_from(v).expect("small size");
            header.variant = Variant::Hierarchical {
                block: small(block),
                coarse_hidden: small(coarse_hidden),
                coarse_latent: small(coarse_latent),
            };
        }
    }
    header.scoring.kl_weight = 0.5;
    let channels: Vec<_> = (0..8).map(testing::channel).collect();
    let params: Vec<f32> = (0..header.param_count())
        .map(|i| 0.1 * testing::param(i))
        .collect();
    encode_to_vec(&header, &channels, &params).expect("valid model")
}

// One test in this binary: the counter is process-wide.
#[test]
fn push_never_allocates_after_warm_up() {
    let samples: Vec<[f32; 8]> = (0..512)
        .map(|t| core::array::from_fn(|c| ((t * 7 + c * 13) as f32 * 0.01).sin()))
        .collect();
    for arch in [
        Arch::Dense,
        Arch::Tied,
        Arch::Vae,
        Arch::VqVae { codebook: 16 },
        Arch::Hierarchical {
            block: 4,
            coarse_hidden: 16,
            coarse_latent: 4,
        },
    ] {
        for hop in [1, 4] {
            let mut d = DynDetector::from_bytes(&model(arch, hop)).expect("load");
            for s in &samples[..16] {
                d.push(s);
            }
            let mut scored = 0;
            let region = Region::new(GLOBAL);
            for s in &samples[16..] {
                let v = d.push(s);
                if let Status::Normal(score) | Status::Anomalous { score, .. } = v.status {
                    scored += usize::from(score.fresh);
                }
            }
            let change = region.change();
            assert_eq!(
                (change.allocations, change.reallocations),
                (0, 0),
                "{arch:?} hop {hop}"
            );
            assert!(scored > 0, "{arch:?} hop {hop}: no window was scored");
        }
    }
}
