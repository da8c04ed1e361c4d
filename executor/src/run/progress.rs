//! A progress bar on stderr while tasks run (indicatif), hidden when stderr is not a
//! terminal. Everything vt or a task prints goes through [`print`] so lines never tear the bar.

use std::sync::OnceLock;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static BAR: OnceLock<ProgressBar> = OnceLock::new();

/// Shows a bar for `total` tasks (once per process; later calls reuse it).
pub fn start(total: usize) {
    let bar = BAR.get_or_init(|| {
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {pos}/{len} tasks {wide_msg}") {
            bar.set_style(style);
        }
        // The spinner's ticker is a thread: none when nothing is drawn (stderr is not a
        // terminal, as in CI and scripts).
        if !bar.is_hidden() {
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
        }
        bar
    });
    bar.set_length(total as u64);
}

pub fn running(label: &str) {
    if let Some(bar) = BAR.get() {
        bar.set_message(label.to_owned());
    }
}

pub fn finished_one() {
    if let Some(bar) = BAR.get() {
        bar.inc(1);
    }
}

pub fn finish() {
    if let Some(bar) = BAR.get() {
        bar.finish_and_clear();
    }
}

/// Runs `write` with the bar hidden for the moment.
pub fn print(write: impl FnOnce()) {
    match BAR.get() {
        Some(bar) if !bar.is_hidden() => bar.suspend(write),
        _ => write(),
    }
}
