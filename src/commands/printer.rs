//! One printer decides what reaches stderr: warnings and notes unless `--quiet`, details
//! only with `--verbose`, per-file errors always; all of it drawn around the progress bar.

use std::fmt::Display;
use std::io::{self, IsTerminal};

use indicatif::{ProgressBar, ProgressStyle};

/// What the user asked to see on stderr, and the progress bar messages must not break.
#[derive(Debug, Clone)]
pub struct Printer {
    quiet: bool,
    verbose: bool,
    bar: ProgressBar,
}

impl Printer {
    pub fn new(quiet: bool, verbose: bool) -> Self {
        Self {
            quiet,
            verbose,
            bar: ProgressBar::hidden(),
        }
    }

    /// `--verbose` was given.
    pub fn verbose(&self) -> bool {
        self.verbose
    }

    /// Something the user should act on; hidden by `--quiet`.
    pub fn warn(&self, message: impl Display) {
        if !self.quiet {
            self.line(format_args!("vlm: warning: {message}"));
        }
    }

    /// A summary or progress note; hidden by `--quiet`.
    pub fn note(&self, message: impl Display) {
        if !self.quiet {
            self.line(format_args!("vlm: {message}"));
        }
    }

    /// Shown only with `--verbose`.
    pub fn detail(&self, message: impl Display) {
        if self.verbose {
            self.line(format_args!("vlm: {message}"));
        }
    }

    /// A failure the user must see, whatever the verbosity (a file that failed, a run
    /// that was interrupted).
    pub fn error(&self, message: impl Display) {
        self.line(format_args!("vlm: {message}"));
    }

    /// A line printed as is (e.g. a `--dry-run` placement), drawn around the progress bar.
    pub fn plain(&self, message: impl Display) {
        self.line(format_args!("{message}"));
    }

    /// A per-input failure; the message names the input unless it already does.
    pub fn failure(&self, display: &str, err: &dyn Display) {
        let message = err.to_string();
        if message.contains(display) {
            self.error(message);
        } else {
            self.error(format_args!("{display}: {message}"));
        }
    }

    /// Starts a progress bar of `len` units on a terminal's stderr (hidden otherwise or with
    /// `--quiet`); messages are drawn around it until [`Printer::finish_progress`].
    pub fn start_progress(&mut self, len: usize, unit: &str) {
        if self.quiet || !io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::new(len as u64);
        let template = format!("{{bar:30}} {{pos}}/{{len}} {unit}  {{per_sec}}  ETA {{eta}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        self.bar = bar;
    }

    /// Advances the progress bar.
    pub fn advance(&self, units: usize) {
        self.bar.inc(units as u64);
    }

    /// Removes the progress bar.
    pub fn finish_progress(&mut self) {
        self.bar.finish_and_clear();
        self.bar = ProgressBar::hidden();
    }

    /// Runs `write` (e.g. a result line on stdout) without tearing the progress bar.
    pub fn around_progress<R>(&self, write: impl FnOnce() -> R) -> R {
        self.bar.suspend(write)
    }

    fn line(&self, text: std::fmt::Arguments<'_>) {
        self.bar.suspend(|| eprintln!("{text}"));
    }
}
