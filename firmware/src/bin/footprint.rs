//! Measures what the detector costs on a Cortex-M4F, printed as `key value` lines over
//! semihosting for `footprint.sh`: the detector's size, the peak stack of `push` (stack painting)
//! and instructions per push (SysTick under `qemu -icount shift=0`, where the virtual clock
//! advances one nanosecond per instruction). No `core::fmt`, so the image is the detector plus
//! a minimal runtime and its flash size is the detector's cost.
#![no_std]
#![no_main]

use cortex_m::peripheral::{SYST, syst::SystClkSource};
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hio};
use sensorae::Verdict;
use static_cell::ConstStaticCell;

#[allow(dead_code)] // CHANNEL_NAMES is for the CSV firmware only
mod model {
    include!(concat!(env!("OUT_DIR"), "/model.rs"));
}
use model::{CHANNELS, ModelDetector, STREAM};

static DETECTOR: ConstStaticCell<ModelDetector> = ConstStaticCell::new(ModelDetector::new());

/// Bytes of stack below `main`'s frame painted before pushing.
const PAINT: usize = 32 * 1024;
const PATTERN: u32 = 0x5AA5_C33C;

#[entry]
fn main() -> ! {
    let Some(mut cp) = cortex_m::Peripherals::take() else {
        exit(false)
    };
    let syst = &mut cp.SYST;
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(0x00FF_FFFF);
    syst.clear_current();
    syst.enable_counter();

    // The clock check: a loop of exactly 2 * n instructions, timed at two lengths so the
    // call and read overhead cancels out.
    let short = ticks(syst, || spin(10_000));
    let long = ticks(syst, || spin(110_000));
    put("calib_ticks_per_200000_insns", long.saturating_sub(short));
    put("empty_ticks", ticks(syst, || {}));

    let detector = DETECTOR.take();
    // Loading in place: the stack it needs (the model must not pass through it).
    let top = paint();
    let loaded = load(detector);
    put("stack_peak_load", high_water(top) as u32);
    if !loaded {
        put("load_error", 1);
        exit(false);
    }
    put(
        "size_of_detector",
        core::mem::size_of::<ModelDetector>() as u32,
    );
    put("size_of_verdict", core::mem::size_of::<Verdict>() as u32);
    let cfg = detector.config();
    let (c, w) = (u32::from(cfg.window.channels), u32::from(cfg.window.length));
    let (h, z) = (cfg.layers.hidden, cfg.layers.latent);
    let n = c * w;
    // Multiply-adds of the dense layers per window (the VAE adds a second H->Z head).
    let heads = if cfg.arch() == sensorae::Arch::Vae {
        2
    } else {
        1
    };
    put("channels", c);
    put("window", w);
    put("hidden", h);
    put("latent", z);
    let params = sensorae::param_count(cfg.arch(), n as usize, h as usize, z as usize);
    put("params", params as u32);
    put("macs", n * h + heads * h * z + z * h + h * n);
    put("model_bytes", model_bytes() as u32);
    put("stream_bytes", STREAM.len() as u32);

    let top = paint();
    let (mut scored, mut warm, mut scored_ticks, mut warm_ticks, mut max_ticks) =
        (0u32, 0u32, 0u64, 0u64, 0u32);
    let mut alarms = 0u32;
    for raw in STREAM.chunks_exact(4 * CHANNELS) {
        let mut sample = [f32::NAN; CHANNELS];
        for (v, b) in sample.iter_mut().zip(raw.chunks_exact(4)) {
            if let Ok(b) = <[u8; 4]>::try_from(b) {
                *v = f32::from_le_bytes(b);
            }
        }
        let start = SYST::get_current();
        let verdict = push(detector, &sample);
        let t = start.wrapping_sub(SYST::get_current()) & 0x00FF_FFFF;
        if verdict.score().is_some_and(|s| s.fresh) {
            scored += 1;
            scored_ticks += u64::from(t);
            max_ticks = max_ticks.max(t);
        } else {
            warm += 1;
            warm_ticks += u64::from(t);
        }
        alarms += u32::from(verdict.is_alarm());
    }
    put("stack_peak_push", high_water(top) as u32);
    put("pushes_scored", scored);
    put("pushes_other", warm);
    put("alarms", alarms);
    put("ticks_scored_total_lo", scored_ticks as u32);
    put("ticks_scored_total_hi", (scored_ticks >> 32) as u32);
    put("ticks_other_total", warm_ticks as u32);
    put("ticks_scored_max", max_ticks);
    exit(scored > 0)
}

/// Out of line, so that everything `load` puts on the stack lies below `main`'s frame.
#[inline(never)]
fn load(detector: &mut ModelDetector) -> bool {
    #[cfg(not(feature = "runtime-load"))]
    return detector.load_decoded(&model::MODEL).is_ok();
    #[cfg(feature = "runtime-load")]
    return detector.load(model::MODEL_FILE).is_ok();
}

/// Flash the model takes: the decoded constants (parameters, channels and their names, the
/// configuration), or the file.
fn model_bytes() -> usize {
    #[cfg(not(feature = "runtime-load"))]
    {
        let m = &model::MODEL;
        let names: usize = m.channels.iter().map(|c| c.name.len()).sum();
        core::mem::size_of_val(m.params)
            + core::mem::size_of_val(m.channels)
            + names
            + core::mem::size_of::<sensorae::Decoded<'static>>()
    }
    #[cfg(feature = "runtime-load")]
    model::MODEL_FILE.len()
}

/// Out of line, so that everything `push` puts on the stack lies below `main`'s frame.
#[inline(never)]
fn push(detector: &mut ModelDetector, sample: &[f32; CHANNELS]) -> Verdict {
    detector.push(sample)
}

/// SysTick ticks `f` takes (the counter counts down and wraps at 2^24).
fn ticks(_syst: &mut SYST, f: impl FnOnce()) -> u32 {
    let start = SYST::get_current();
    f();
    start.wrapping_sub(SYST::get_current()) & 0x00FF_FFFF
}

/// Exactly `2 * n` instructions (`subs`, `bne`), plus call overhead.
#[inline(never)]
fn spin(n: u32) {
    // SAFETY: a register-only countdown loop.
    unsafe {
        core::arch::asm!("2:", "subs {0}, #1", "bne 2b", inout(reg) n => _, options(nomem, nostack));
    }
}

/// Fills `PAINT` bytes below the current stack pointer with `PATTERN`; returns the top.
#[inline(never)]
fn paint() -> usize {
    // The caller's frame ends at our stack pointer plus our own small frame; start a little
    // below it. A leaf loop of volatile stores: it uses no stack of its own.
    let top = cortex_m::register::msp::read() as usize - 64;
    let mut a = top - PAINT;
    while a < top {
        // SAFETY: unused stack below the current frame, word-aligned (the stack is 8-aligned).
        unsafe { core::ptr::write_volatile(a as *mut u32, PATTERN) };
        a += 4;
    }
    top
}

/// Bytes below `top` that something overwrote since `paint`.
fn high_water(top: usize) -> usize {
    let mut a = top - PAINT;
    // SAFETY: the region `paint` wrote, read back.
    while a < top && unsafe { core::ptr::read_volatile(a as *const u32) } == PATTERN {
        a += 4;
    }
    top - a
}

/// Writes `key value\n` without `core::fmt`.
fn put(key: &str, value: u32) {
    let Ok(mut out) = hio::hstdout() else { return };
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut v = value;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let _ = out.write_all(key.as_bytes());
    let _ = out.write_all(b" ");
    let _ = out.write_all(&digits[i..]);
    let _ = out.write_all(b"\n");
}

fn exit(success: bool) -> ! {
    debug::exit(if success {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {
        cortex_m::asm::bkpt();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // No message: formatting it would link `core::fmt` into the measured image.
    exit(false)
}
