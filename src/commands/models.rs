//! `vlm models`: the built-in aliases.

use std::io::{self, IsTerminal, Write};

use super::EXIT_OK;
use vlm::source;

pub fn run() -> anyhow::Result<u8> {
    let entries = source::registry::entries()?;
    let mut out = io::stdout().lock();
    let alias_width = entries
        .iter()
        .map(|e| e.alias.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let repo_width = entries
        .iter()
        .map(|e| e.repo.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:<alias_width$}  {:<repo_width$}  {:>5}  {:>5}  LICENSE",
        "ALIAS", "REPO", "SIZE", "DIM"
    )?;
    for e in &entries {
        writeln!(
            out,
            "{:<alias_width$}  {:<repo_width$}  {:>5}  {:>5}  {}",
            e.alias, e.repo, e.image_size, e.embed_dim, e.license
        )?;
    }
    if io::stdout().is_terminal() {
        writeln!(
            out,
            "\nUse one with: vlm classify --model ALIAS IMAGE... --labels ..."
        )?;
    }
    Ok(EXIT_OK)
}
