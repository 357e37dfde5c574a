//! Arguments of `vlm bench`.

use std::path::PathBuf;

use clap::Args;

use super::ModelArgs;

/// Measure how fast this machine runs a model: image and text towers, cold start, a folder.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Batch sizes at which to time the image tower.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "1,8,32",
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch_sizes: Vec<u64>,

    /// Distinct prompts to time the text tower on (0 skips it).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub text_prompts: usize,

    /// Seconds to spend timing each figure; the best run counts.
    #[arg(long, value_name = "S", default_value_t = 3.0)]
    pub seconds: f64,

    /// Also time `vlm classify` from process start to result on one generated 3000x2000
    /// JPEG and two labels (best and median of 5 runs, model already in the page cache).
    #[arg(long)]
    pub cold_start: bool,

    /// Also time `vlm classify` over every image in DIR, start to finish, and report its
    /// peak memory.
    #[arg(long, value_name = "DIR")]
    pub folder: Option<PathBuf>,

    /// Extra arguments for the classify runs of --cold-start and --folder, e.g.
    /// "--jpeg-downscale" (split on spaces).
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub classify_args: Option<String>,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub model: ModelArgs,
}
