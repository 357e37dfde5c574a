//! Arguments of `vlm eval`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{InputArgs, ModelArgs, TemplateArgs, Verbosity};

/// `--files-from` and `--null` come with the shared input flags but do not apply: the images
/// are the label folders' contents. They are hidden here and refused when given.
#[derive(Debug, Args)]
#[command(
    mut_arg("files_from", |a| a.hide(true)),
    mut_arg("null", |a| a.hide(true))
)]
pub struct EvalArgs {
    /// Labelled folder: DIR/<label>/ holds the images of each label; or a labelled list,
    /// a JSON Lines file of {"path": ..., "label": ...} (as `vlm report` exports).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    // Labels and prompts.
    /// Map folder names to labels: one FOLDER<TAB>LABEL or FOLDER=LABEL per line (for
    /// folders named like n01440764); unmapped folders keep their names. A labelled list
    /// ({"path","label"} JSON Lines, e.g. corrections from `vlm report`) instead gives the
    /// files it names their labels.
    #[arg(long, value_name = "FILE", help_heading = "Labels")]
    pub labels_file: Option<PathBuf>,

    #[command(flatten)]
    pub prompts: TemplateArgs,

    /// Compare prompt specs on the same image embeddings: comma-separated; each a template
    /// with {} ("a photo of a {}."), imagenet80, imagenet7, or a templates file; write \,
    /// for a comma inside a template. Repeatable.
    #[arg(
        long,
        value_name = "SPEC[,SPEC...]",
        conflicts_with_all = ["template", "templates", "confusion_csv", "heatmap"],
        help_heading = "Labels"
    )]
    pub compare_templates: Vec<String>,

    #[command(flatten)]
    pub filter: InputArgs,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Evaluate several checkpoints (aliases, repo ids or directories, comma-separated) on
    /// the same folder and print one table, best first: how to choose a model for your data.
    /// The other --model options apply to each.
    #[arg(
        long,
        value_name = "MODEL[,MODEL...]",
        value_delimiter = ',',
        conflicts_with_all = ["compare_templates", "confusion_csv", "heatmap"],
        help_heading = "Model"
    )]
    pub models: Vec<String>,

    // Output.
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = EvalFormat::Table, help_heading = "Output")]
    pub format: EvalFormat,

    /// Also write the confusion matrix to FILE as CSV (a header, then one row per true class).
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub confusion_csv: Option<PathBuf>,

    /// Also write a heat map of the row-normalised confusion matrix to FILE as SVG.
    #[arg(long, value_name = "FILE.svg", help_heading = "Output")]
    pub heatmap: Option<PathBuf>,

    /// Also write an interactive page to FILE: the metrics, a confusion heat map whose
    /// cells list their images, the most confused pairs and per-class bars (thumbnails in
    /// FILE_files/ beside it).
    #[arg(
        long,
        value_name = "FILE.html",
        conflicts_with = "compare_templates",
        help_heading = "Output"
    )]
    pub report: Option<PathBuf>,

    /// How many of the most confused (true, predicted) pairs to list.
    #[arg(long, value_name = "N", default_value_t = 10, help_heading = "Output")]
    pub most_confused: usize,

    #[command(flatten)]
    pub verbosity: Verbosity,
}

/// How `vlm eval` prints its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvalFormat {
    /// Aligned text for reading.
    Table,
    /// One JSON object with every metric.
    Json,
}
