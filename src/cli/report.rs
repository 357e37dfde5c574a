//! Arguments of `vlm report`.
//!
//! The classify flags are here, for `vlm report DIR --labels ...`, which classifies first
//! (and can organize, store and write sidecars as it goes); with results files they are
//! not needed, and those that act on images are refused. `--output` names the page.

use std::path::PathBuf;

use clap::Args;

use super::ClassifyArgs;

#[derive(Debug, Args)]
#[command(
    mut_group("label_source", |g| g.required(false)),
    mut_arg("inputs", |a| a
        .value_name("RESULTS.jsonl | INPUT")
        .help("Results files (JSON Lines) of `vlm classify`, `vlm caption` or `vlm ask`; several, e.g. the labels and the captions of one folder, are joined by path into one card per image. Or images and folders to classify first (then give --labels, --labels-file or --probe)")),
    mut_arg("output", |a| a
        .required(true)
        .value_name("FILE.html")
        .help("Where to write the page; its thumbnails go to the folder FILE_files/ beside it (when classifying first, the results go to FILE.jsonl)")),
    mut_arg("format", |a| a.hide(true)),
    mut_arg("resume", |a| a.hide(true)),
    mut_arg("top_k", |a| a.hide(true)),
)]
pub struct ReportArgs {
    #[command(flatten)]
    pub classify: ClassifyArgs,

    /// One file with the thumbnails inlined as data: URIs (larger; the detail view then
    /// shows the thumbnail instead of the original).
    #[arg(long, help_heading = "Report")]
    pub self_contained: bool,

    /// The page's title [default: the results file's name].
    #[arg(long, value_name = "TEXT", help_heading = "Report")]
    pub title: Option<String>,
}

impl ReportArgs {
    /// The results files, when no labels are given: every input is one.
    pub fn results_files(&self) -> Option<Vec<PathBuf>> {
        let c = &self.classify;
        let labelled = c.labels.is_some() || c.labels_file.is_some() || c.probe.is_some();
        if labelled || c.filter.files_from.is_some() || c.inputs.is_empty() {
            return None;
        }
        Some(c.inputs.iter().map(PathBuf::from).collect())
    }
}
