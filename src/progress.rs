//! How a long run talks to the person waiting for it: how far it got, which inputs failed,
//! and notes at a [`Level`]. The library says what happened; whoever runs it decides what
//! reaches the screen (the `vlm` binary's printer: a progress bar on a terminal, `--quiet`,
//! `--verbose`). [`Silent`] shows nothing, for library callers and tests.

use std::fmt::Display;

/// How much a message matters, which decides who sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// A failure the user must see whatever the verbosity (an input that failed, an
    /// interrupted run).
    Error,
    /// Something the user should act on; hidden by `--quiet`.
    Warning,
    /// A summary or a note on the run; hidden by `--quiet`.
    Note,
    /// Only with `--verbose`: skipped files, where things came from, timings.
    Detail,
    /// Shown as it is (no `vlm:` prefix), always: what a dry run would do.
    Plain,
    /// Shown as it is, only with `--verbose`: what was done to a file.
    PlainDetail,
}

impl Level {
    /// How to say what was done to a file: always in a dry run (it is what the user asked
    /// to see), else only with `--verbose`.
    pub fn of_change(dry_run: bool) -> Self {
        if dry_run {
            Self::Plain
        } else {
            Self::PlainDetail
        }
    }
}

/// Receives a run's progress and messages. Every method has a default that shows nothing,
/// so an implementation picks what it shows.
pub trait Progress: Sync {
    /// The run starts; `total` inputs when known in advance (not for a stream).
    fn start(&self, total: Option<usize>) {
        let _ = total;
    }

    /// `count` more inputs are done.
    fn advance(&self, count: usize) {
        let _ = count;
    }

    /// The run is over (finished, failed or interrupted): remove any progress display.
    fn finish(&self) {}

    /// A message at `level`.
    fn say(&self, level: Level, message: &dyn Display) {
        let _ = (level, message);
    }

    /// One input failed; the run goes on. The message names the input unless the error
    /// already does.
    fn failed(&self, input: &str, error: &dyn Display) {
        self.say(Level::Error, &input_message(input, error));
    }

    /// Runs `write` (a result written to standard output) with any progress display out
    /// of its way.
    fn suspend(&self, write: &mut dyn FnMut()) {
        write();
    }
}

/// The message of an input that failed: the error, prefixed with the input's name unless
/// it already names it.
pub fn input_message(input: &str, error: &dyn Display) -> String {
    let message = error.to_string();
    if message.contains(input) {
        message
    } else {
        format!("{input}: {message}")
    }
}

/// Shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {}

#[cfg(test)]
pub(crate) mod testing {
    use super::{Level, Progress};
    use std::fmt::Display;
    use std::sync::Mutex;

    /// Records everything it is told, for tests.
    #[derive(Debug, Default)]
    pub struct Recorded {
        pub lines: Mutex<Vec<(Level, String)>>,
        pub started: Mutex<Vec<Option<usize>>>,
        pub advanced: Mutex<usize>,
        pub finished: Mutex<usize>,
    }

    impl Recorded {
        /// The messages said at `level`.
        pub fn at(&self, level: Level) -> Vec<String> {
            let lines = self.lines.lock().unwrap();
            lines
                .iter()
                .filter(|(l, _)| *l == level)
                .map(|(_, m)| m.clone())
                .collect()
        }
    }

    impl Progress for Recorded {
        fn start(&self, total: Option<usize>) {
            self.started.lock().unwrap().push(total);
        }
        fn advance(&self, count: usize) {
            *self.advanced.lock().unwrap() += count;
        }
        fn finish(&self) {
            *self.finished.lock().unwrap() += 1;
        }
        fn say(&self, level: Level, message: &dyn Display) {
            self.lines
                .lock()
                .unwrap()
                .push((level, message.to_string()));
        }
    }
}
