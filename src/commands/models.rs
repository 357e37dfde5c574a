//! `vlm models`: the built-in aliases, with their family, task and scoring.

use std::io::{self, IsTerminal, Write};

use super::ExitStatus;
use vlm::source;

pub fn run() -> anyhow::Result<ExitStatus> {
    let entries = source::registry::entries()?;
    let mut out = io::stdout().lock();
    let width = |get: fn(&source::registry::ModelEntry) -> usize, title: &str| {
        entries.iter().map(get).max().unwrap_or(0).max(title.len())
    };
    let alias_width = width(|e| e.alias.len(), "ALIAS");
    let repo_width = width(|e| e.repo.len(), "REPO");
    let family_width = width(|e| e.family.len(), "FAMILY");
    writeln!(
        out,
        "{:<alias_width$}  {:<repo_width$}  {:<family_width$}  {:<8}  {:<7}  {:>4}  {:>4}  {:>7}  LICENSE",
        "ALIAS", "REPO", "FAMILY", "TASK", "SCORING", "SIZE", "DIM", "WEIGHTS"
    )?;
    for e in &entries {
        writeln!(
            out,
            "{:<alias_width$}  {:<repo_width$}  {:<family_width$}  {:<8}  {:<7}  {:>4}  {:>4}  {:>7}  {}",
            e.alias,
            e.repo,
            e.family,
            e.task.name(),
            e.scoring.as_deref().unwrap_or("-"),
            e.image_size,
            e.embed_dim.map_or("-".to_string(), |d| d.to_string()),
            weights(e.weights_mb),
            e.license
        )?;
        writeln!(out, "{:<alias_width$}  {}", "", e.description)?;
    }
    if io::stdout().is_terminal() {
        writeln!(
            out,
            "\nUse one with: vlm classify --model ALIAS IMAGE... --labels ...\n\
             Compare several on your own labelled folder: vlm eval DIR --models a,b,c\n\
             Caption and answer checkpoints (TASK caption, answer): vlm caption, vlm ask"
        )?;
    }
    Ok(ExitStatus::Ok)
}

/// "605 MB", "3.9 GB".
fn weights(mb: u32) -> String {
    if mb >= 1000 {
        format!("{:.1} GB", f64::from(mb) / 1000.0)
    } else {
        format!("{mb} MB")
    }
}
