//! Where one vt process spends its fixed cost, phase by phase. `VT_TIMINGS=1` makes vt print,
//! at its exit, one stderr line per phase: `vt timing: PHASE COUNT TOTAL_MS` (phases in the
//! order they first started; a phase run by several tasks or threads is summed). Off by
//! default; then a phase costs one relaxed atomic load.
//!
//! It measures what `bench/fixed_cost.py` reports as its per-phase table: the wall clock of
//! each phase inside vt. What happens before `main` (exec, the loader, static initializers)
//! and after it returns is outside; the benchmark measures those against a bare binary.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

pub const TIMINGS_ENV: &str = "VT_TIMINGS";

const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

struct Phase {
    name: &'static str,
    first_start: Instant,
    count: u32,
    total: Duration,
}

static PHASES: Mutex<Vec<Phase>> = Mutex::new(Vec::new());

fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            let on = std::env::var_os(TIMINGS_ENV).is_some_and(|v| v == "1");
            STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
            on
        }
    }
}

/// Times a phase until the returned guard drops.
#[must_use = "the phase ends when the guard drops"]
pub fn phase(name: &'static str) -> PhaseGuard {
    PhaseGuard {
        running: enabled().then(|| (name, Instant::now())),
    }
}

/// Times `f` as the phase `name`.
pub fn time<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    let _phase = phase(name);
    f()
}

pub struct PhaseGuard {
    running: Option<(&'static str, Instant)>,
}

impl PhaseGuard {
    /// Ends the phase now (instead of at the end of the scope).
    pub fn end(self) {}
}

impl Drop for PhaseGuard {
    fn drop(&mut self) {
        if let Some((name, start)) = self.running.take() {
            record(name, start, start.elapsed());
        }
    }
}

fn record(name: &'static str, start: Instant, took: Duration) {
    let mut phases = PHASES.lock().unwrap_or_else(|p| p.into_inner());
    match phases.iter_mut().find(|p| p.name == name) {
        Some(phase) => {
            phase.count += 1;
            phase.total += took;
            phase.first_start = phase.first_start.min(start);
        }
        None => phases.push(Phase {
            name,
            first_start: start,
            count: 1,
            total: took,
        }),
    }
}

/// Whether phases are recorded: for code that notes its own moments and hands them over
/// afterwards ([`record_spans`]), such as the sandbox's processes, which must not lock.
pub fn on() -> bool {
    enabled()
}

/// Records the spans between consecutive `moments` (offsets from one start, 0 for a moment
/// never reached, which ends the spans) as the phases `names`: `names[i]` is the span from
/// `moments[i]` to `moments[i + 1]`.
pub fn record_spans(names: &[&'static str], start: Instant, moments: &[Duration]) {
    for (i, name) in names.iter().enumerate() {
        let (Some(&from), Some(&to)) = (moments.get(i), moments.get(i + 1)) else {
            return;
        };
        if (i > 0 && from.is_zero()) || to.is_zero() {
            return;
        }
        record(name, start + from, to.saturating_sub(from));
    }
}

/// The recorded phases as report lines, in the order they first started.
pub fn lines() -> Vec<String> {
    let mut phases = PHASES.lock().unwrap_or_else(|p| p.into_inner());
    phases.sort_by_key(|p| p.first_start);
    phases
        .iter()
        .map(|p| {
            format!(
                "vt timing: {} {} {:.3}",
                p.name,
                p.count,
                p.total.as_secs_f64() * 1000.0
            )
        })
        .collect()
}

/// Prints the report to stderr if `VT_TIMINGS=1`.
pub fn report() {
    if enabled() {
        let mut all = lines().join("\n");
        all.push('\n');
        let _ = std::io::Write::write_all(&mut std::io::stderr(), all.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_summed_by_name_in_the_order_they_first_started() {
        let t0 = Instant::now();
        record(
            "spawn",
            t0 + Duration::from_millis(2),
            Duration::from_millis(3),
        );
        record("open", t0, Duration::from_millis(1));
        record(
            "spawn",
            t0 + Duration::from_millis(9),
            Duration::from_millis(4),
        );
        let lines = lines();
        let ours: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains(" open ") || l.contains(" spawn "))
            .collect();
        assert_eq!(
            ours,
            ["vt timing: open 1 1.000", "vt timing: spawn 2 7.000"]
        );
    }

    #[test]
    fn spans_run_from_moment_to_moment_and_stop_at_one_never_reached() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let names = ["span one", "span two", "span three"];
        // The third moment was never reached: the second and third spans are not recorded.
        record_spans(&names, t0, &[Duration::ZERO, ms(2), Duration::ZERO, ms(9)]);
        record_spans(&names[..2], t0, &[Duration::ZERO, ms(1), ms(4)]);
        let lines = lines();
        let ours: Vec<&String> = lines.iter().filter(|l| l.contains(" span ")).collect();
        assert_eq!(
            ours,
            ["vt timing: span one 2 3.000", "vt timing: span two 1 3.000"]
        );
    }
}
