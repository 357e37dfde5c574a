//! Arguments of `vlm report`.
//!
//! The classify flags are all here, for `vlm report DIR --labels ...`, which classifies
//! first; with a results file they are not needed. `--output` names the page.

use std::path::PathBuf;

use clap::Args;

use super::ClassifyArgs;

#[derive(Debug, Args)]
#[command(
    mut_group("label_source", |g| g.required(false)),
    mut_arg("inputs", |a| a
        .value_name("RESULTS.jsonl | INPUT")
        .help("A results file from `vlm classify --format jsonl`, or images and folders to classify first (then give --labels, --labels-file or --probe)")),
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
    /// The results file, when the only input is one (`.jsonl`) and no labels are given.
    pub fn results_file(&self) -> Option<PathBuf> {
        let c = &self.classify;
        let labelled = c.labels.is_some() || c.labels_file.is_some() || c.probe.is_some();
        match c.inputs.as_slice() {
            [one] if !labelled && c.filter.files_from.is_none() => Some(PathBuf::from(one)),
            _ => None,
        }
    }
}
