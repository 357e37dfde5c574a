//! `vlm fit` arguments.

use std::path::PathBuf;

use clap::Args;

use super::{InputArgs, ModelArgs, Verbosity};

#[derive(Debug, Args)]
pub struct FitArgs {
    /// Labelled images: one subfolder per label, DIR/<label>/..., searched recursively; or
    /// a labelled list, a JSON Lines file of {"path": ..., "label": ...}.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// Where to write the probe (a safetensors file), replacing any file there.
    #[arg(short, long, value_name = "FILE")]
    pub out: PathBuf,

    /// FOLDER<TAB>LABEL or FOLDER=LABEL lines naming the labels of folders such as n01440764
    /// (the same file as `vlm eval --labels-file`), or a labelled list of files.
    #[arg(long, value_name = "FILE", alias = "label-map")]
    pub labels_file: Option<PathBuf>,

    // Training.
    /// Fraction of each label's images held out to stop training and to report accuracy
    /// (0 trains on everything, for --epochs).
    #[arg(
        long,
        value_name = "F",
        default_value_t = 0.2,
        help_heading = "Training"
    )]
    pub holdout: f64,

    /// Seed of the held-out split: the same seed, images and options give the same file.
    #[arg(long, value_name = "N", default_value_t = 0, help_heading = "Training")]
    pub seed: u64,

    /// L2 penalty on the weights (l2/2 times their sum of squares).
    #[arg(long, value_name = "L", default_value_t = vlm::probe::DEFAULT_L2, help_heading = "Training")]
    pub l2: f64,

    /// Most full-batch training epochs.
    #[arg(long, value_name = "N", default_value_t = vlm::probe::DEFAULT_EPOCHS, help_heading = "Training")]
    pub epochs: usize,

    /// Stop after N epochs without a lower held-out loss.
    #[arg(long, value_name = "N", default_value_t = vlm::probe::DEFAULT_PATIENCE, help_heading = "Training")]
    pub patience: usize,

    /// AdamW step size.
    #[arg(long, value_name = "LR", default_value_t = vlm::probe::DEFAULT_LEARNING_RATE, help_heading = "Training")]
    pub learning_rate: f64,

    #[command(flatten)]
    pub filter: InputArgs,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub verbosity: Verbosity,
}
