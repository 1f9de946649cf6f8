//! A progress bar for the long steps of a run (reading Kafka back, publishing), drawn
//! only when asked (the command line, not the reconciler) and only on a terminal
//! (indicatif's; a well-kept crate rather than hand-drawn escapes). Elsewhere nothing is
//! drawn: the log line at each step's end says the same.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `len` steps labelled `what`; hidden unless `wanted` and stderr is a terminal.
pub fn bar(len: u64, what: &'static str, wanted: bool) -> ProgressBar {
    let target = if wanted && std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    let style = ProgressStyle::with_template("{msg:>20} [{bar:40}] {pos}/{len} ({eta} left)")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(what);
    bar
}
