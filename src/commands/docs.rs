//! `vlm completions` and `vlm man`: generated from the clap definitions, so they cannot drift.

use std::io::{self, Write};

use clap::CommandFactory;

use super::ExitStatus;
use crate::cli::Cli;

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitStatus> {
    let mut command = Cli::command();
    let mut out = io::stdout().lock();
    clap_complete::generate(shell, &mut command, "vlm", &mut out);
    out.flush()?;
    Ok(ExitStatus::Ok)
}

/// Writes the manual page (roff) to stdout, with a section per subcommand.
pub fn man() -> anyhow::Result<ExitStatus> {
    let command = Cli::command();
    let mut out = io::stdout().lock();
    clap_mangen::Man::new(command.clone()).render(&mut out)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name: &'static str = Box::leak(format!("vlm-{}", sub.get_name()).into_boxed_str());
        let sub = sub.clone().name(name).bin_name(name);
        clap_mangen::Man::new(sub).render(&mut out)?;
    }
    out.flush()?;
    Ok(ExitStatus::Ok)
}
