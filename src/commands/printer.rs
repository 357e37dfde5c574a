//! One printer decides what reaches stderr: warnings and notes unless `--quiet`, details
//! only with `--verbose`, per-file errors always; all of it drawn around the progress bar.

use std::fmt::Display;
use std::io::{self, IsTerminal};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vlm::progress::{Level, Progress};

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

    fn line(&self, text: std::fmt::Arguments<'_>) {
        self.bar.suspend(|| eprintln!("{text}"));
    }
}

/// The library's runs report here: a progress bar of images on a terminal's stderr (none
/// with `--quiet`, or for a stream of unknown length), failures and messages by level.
impl Progress for Printer {
    fn start(&self, total: Option<usize>) {
        let Some(total) = total else { return };
        if self.quiet || !io::stderr().is_terminal() {
            return;
        }
        let template = "{bar:30} {pos}/{len} images  {per_sec}  ETA {eta}";
        if let Ok(style) = ProgressStyle::with_template(template) {
            self.bar.set_style(style);
        }
        self.bar.reset();
        self.bar.set_length(total as u64);
        self.bar.set_draw_target(ProgressDrawTarget::stderr());
    }

    fn advance(&self, count: usize) {
        self.bar.inc(count as u64);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
        self.bar.set_draw_target(ProgressDrawTarget::hidden());
    }

    fn say(&self, level: Level, message: &dyn Display) {
        match level {
            Level::Error => self.error(message),
            Level::Warning => self.warn(message),
            Level::Note => self.note(message),
            Level::Detail => self.detail(message),
            Level::Plain => self.plain(message),
            Level::PlainDetail if self.verbose => self.plain(message),
            Level::PlainDetail => {}
        }
    }

    fn suspend(&self, write: &mut dyn FnMut()) {
        self.bar.suspend(write);
    }
}
