//! One module per subcommand. Each `run` has the same shape: resolve the settings, call the
//! library, print what it did, and return the exit status. What they share is here: the
//! printer and the exit status.

pub mod bench;
pub mod caption;
pub mod classify;
pub mod dedup;
pub mod docs;
pub mod doctor;
pub mod embed;
pub mod eval;
pub mod fit;
pub mod models;
mod printer;
pub mod report;
pub mod search;
#[cfg(feature = "serve")]
pub mod serve;

pub use printer::Printer;

use std::process::ExitCode;

use crate::cli::Verbosity;
use vlm::job::Tally;

/// How a command ended, as the process's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Every input was handled.
    Ok,
    /// The run finished, but at least one input failed.
    SomeFailed,
    /// Nothing useful could be done: bad arguments, unusable model, unwritable output.
    Error,
    /// Stopped by Ctrl-C.
    Interrupted,
}

impl ExitStatus {
    /// The status of a run that went through: interrupted, some inputs failed, or all
    /// went well.
    pub fn of(tally: &Tally) -> Self {
        if tally.cancelled {
            Self::Interrupted
        } else if tally.failed > 0 {
            Self::SomeFailed
        } else {
            Self::Ok
        }
    }

    /// The exit code: 0, 1, 2, or 130 for Ctrl-C (128 + SIGINT, as shells report it).
    pub fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::SomeFailed => 1,
            Self::Error => 2,
            Self::Interrupted => 130,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status.code())
    }
}

impl From<Verbosity> for Printer {
    fn from(verbosity: Verbosity) -> Self {
        Printer::new(verbosity.quiet, verbosity.verbose)
    }
}
