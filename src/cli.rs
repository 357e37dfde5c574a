//! Command-line arguments. Parsing only: `main` wires them to the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Zero-shot image classification with CLIP: rank your labels for each image.
#[derive(Debug, Parser)]
#[command(name = "vlm", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Rank labels for each image by how well the image matches "a photo of a <label>."
    Classify(ClassifyArgs),
    /// List the model aliases built into vlm.
    Models,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("label_source").required(true).args(["labels", "labels_file"])))]
pub struct ClassifyArgs {
    /// Image files to classify (JPEG, PNG, WebP, GIF, BMP, TIFF).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,

    /// Comma-separated labels, e.g. "dog,cat,hot dog".
    #[arg(short, long, value_name = "LIST")]
    pub labels: Option<String>,

    /// File with one label per line; blank lines and lines starting with # are skipped.
    #[arg(long, value_name = "FILE")]
    pub labels_file: Option<PathBuf>,

    /// Prompt template; {} is replaced by each label ("{}" alone uses the bare label).
    #[arg(short, long, default_value = vlm::labels::DEFAULT_TEMPLATE)]
    pub template: String,

    /// Checkpoint: a local directory, an alias from `vlm models`, or a Hugging Face repo id.
    #[arg(short, long, env = "VLM_MODEL", default_value = vlm::source::DEFAULT_MODEL)]
    pub model: String,

    /// Hub revision (branch, tag or commit) to use instead of the default.
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = FormatArg::Table)]
    pub format: FormatArg,

    /// Report only the N most probable labels per image.
    #[arg(short = 'k', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub top_k: Option<u64>,

    /// Images encoded together in one forward pass.
    #[arg(short, long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch_size: u64,

    /// Where to run the model.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,

    /// Print no warnings on stderr (errors are still printed).
    #[arg(short, long)]
    pub quiet: bool,
}

/// Output formats (see `vlm::output::Format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Aligned text for reading.
    Table,
    /// A JSON array with one object per image.
    Json,
    /// One JSON object per line, per image.
    Jsonl,
    /// One row per image and label, with a header.
    Csv,
    /// Tab-separated, like csv.
    Tsv,
}

impl From<FormatArg> for vlm::output::Format {
    fn from(arg: FormatArg) -> Self {
        match arg {
            FormatArg::Table => Self::Table,
            FormatArg::Json => Self::Json,
            FormatArg::Jsonl => Self::Jsonl,
            FormatArg::Csv => Self::Csv,
            FormatArg::Tsv => Self::Tsv,
        }
    }
}

/// Compute devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// CUDA or Metal when vlm was built with it and one is present, else the CPU.
    Auto,
    Cpu,
    /// An NVIDIA GPU (needs a build with `--features cuda`).
    Cuda,
    /// An Apple GPU (needs a build with `--features metal`).
    Metal,
}
