//! Arguments of `vlm caption` and `vlm ask`.

use std::path::PathBuf;

use clap::Args;
use vlm::caption::{MAX_BEAMS, MAX_NEW_TOKENS};

use super::{FormatArg, InputArgs, ModelArgs, OutputArgs, Verbosity, XmpArgs};

/// How captions and answers are generated: shared by `caption` and `ask`.
#[derive(Debug, Clone, Args)]
pub struct GenerationArgs {
    /// Beam search with N beams (1: greedy, the checkpoint's default); the result is the
    /// beam with the best length-normalised log-probability, as transformers picks it.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=MAX_BEAMS), help_heading = "Generation")]
    pub beams: u64,

    /// Generate at most N tokens (default: 20, transformers' default for BLIP).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_NEW_TOKENS),
          help_heading = "Generation")]
    pub max_new_tokens: Option<u64>,
}

/// What `caption` and `ask` share: generation, inputs, model, output and verbosity.
#[derive(Debug, Clone, Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub generation: GenerationArgs,

    #[command(flatten)]
    pub filter: InputArgs,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub output: OutputArgs<FormatArg>,

    /// Keep the records already in --output (JSON Lines) and make only those not in it
    /// yet; a line cut short by a killed run is removed first.
    #[arg(long, requires = "output", help_heading = "Output")]
    pub resume: bool,

    #[command(flatten)]
    pub verbosity: Verbosity,
}

#[derive(Debug, Clone, Args)]
#[command(mut_arg("write_xmp", |a| a.help(
    "Write each image's caption into its XMP sidecar as its description (dc:description, \
     the default language, where digiKam, Lightroom and exiftool read it). An existing \
     sidecar is merged: vlm's earlier caption is replaced; keywords (those of `vlm classify \
     --write-xmp` too), other languages and everything else are kept"
)))]
// Changing an argument moves it last: the other photo-tool flags follow it, in order.
#[command(mut_arg("xmp_naming", |a| a), mut_arg("dry_run", |a| a))]
pub struct CaptionArgs {
    /// Images to caption: files, directories (searched recursively), quoted glob patterns
    /// such as "photos/**/*.jpg", or http(s) URLs.
    #[arg(value_name = "INPUT", required_unless_present = "files_from")]
    pub inputs: Vec<String>,

    /// Continue this text instead of starting a caption from nothing, e.g. "a photograph
    /// of"; the caption starts with it.
    #[arg(long, value_name = "TEXT", help_heading = "Generation")]
    pub prompt: Option<String>,

    /// Also store each caption in PostgreSQL (postgresql://USER@HOST[:PORT]/DB[?table=NAME])
    /// beside the embeddings the table holds (fill it first with `vlm embed --to`): in
    /// NAME_captions (path, content_hash, model, caption, log_prob, tokens as jsonb).
    #[arg(long, value_name = "ADDRESS", help_heading = "Database")]
    pub to: Option<String>,

    /// The table to use with --to [default: vlm_embeddings, or the one the address names].
    #[arg(long, value_name = "NAME", requires = "to", help_heading = "Database")]
    pub table: Option<String>,

    #[command(flatten)]
    pub xmp: XmpArgs,

    /// With --write-xmp: print what would change, write nothing.
    #[arg(long, requires = "write_xmp", help_heading = "Photo tools")]
    pub dry_run: bool,

    #[command(flatten)]
    pub common: DescribeArgs,
}

#[derive(Debug, Clone, Args)]
pub struct AskArgs {
    /// Images, then the question: `vlm ask photo.jpg "what colour is the car?"`. With
    /// --question or --questions-file every argument is an input.
    #[arg(value_name = "INPUT... QUESTION", required_unless_present_any = ["files_from", "questions_file"])]
    pub args: Vec<String>,

    /// The question (repeatable), instead of the last argument.
    #[arg(long, value_name = "TEXT", help_heading = "Questions")]
    pub question: Vec<String>,

    /// Ask every question in FILE (one per line; blank lines and # comments skipped) about
    /// each image; each image is encoded once for all of them.
    #[arg(long, value_name = "FILE", help_heading = "Questions")]
    pub questions_file: Option<PathBuf>,

    #[command(flatten)]
    pub common: DescribeArgs,
}
