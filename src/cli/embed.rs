//! Arguments of `vlm embed`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{InputArgs, ModelArgs, Verbosity};

/// Write image (or prompt) embeddings to a file for other tools.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Images to embed: files, directories (searched recursively), quoted glob patterns
    /// such as "photos/**/*.jpg", or http(s) URLs.
    #[arg(
        value_name = "INPUT",
        required_unless_present_any = ["files_from", "text", "text_file"]
    )]
    pub inputs: Vec<String>,

    /// Embed these comma-separated prompts (used as given, no template) instead of images.
    #[arg(long, value_name = "LIST", conflicts_with_all = ["inputs", "files_from", "text_file"],
          help_heading = "Text")]
    pub text: Option<String>,

    /// Embed the prompts in FILE, one per line (commas allowed), instead of images; blank
    /// lines are skipped.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["inputs", "files_from"],
          help_heading = "Text")]
    pub text_file: Option<PathBuf>,

    #[command(flatten)]
    pub filter: InputArgs,

    #[command(flatten)]
    pub model: ModelArgs,

    /// File to write: .npy (plus NAME.paths.txt listing each row's path or prompt),
    /// .safetensors or .jsonl.
    #[arg(
        short,
        long,
        value_name = "FILE",
        required_unless_present = "to",
        help_heading = "Output"
    )]
    pub output: Option<PathBuf>,

    /// Store image embeddings in a database instead of a file: PostgreSQL with pgvector,
    /// postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?table=NAME] (PGPASSWORD and ~/.pgpass
    /// work as with psql), or Milvus, milvus://[USER[:PASSWORD]@]HOST[:PORT]/COLLECTION
    /// (a build with --features milvus). The table or collection is made if missing; a
    /// re-run embeds only new or changed files.
    #[arg(long, value_name = "ADDRESS", conflicts_with_all = ["output", "format", "text", "text_file"],
          help_heading = "Database")]
    pub to: Option<String>,

    /// The table (or Milvus collection) to use with --to [default: vlm_embeddings, or the
    /// one the address names].
    #[arg(long, value_name = "NAME", requires = "to", help_heading = "Database")]
    pub table: Option<String>,

    /// File format [default: from the --output extension].
    #[arg(short, long, value_enum, help_heading = "Output")]
    pub format: Option<EmbedFormatArg>,

    /// Write the encoder's projected embeddings as they are, instead of scaled to unit
    /// length (L2-normalised, so a dot product is the cosine similarity).
    #[arg(long = "no-normalize", visible_alias = "raw", help_heading = "Output")]
    pub no_normalize: bool,

    #[command(flatten)]
    pub verbosity: Verbosity,
}

/// Embedding file formats (see `vlm::export`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmbedFormatArg {
    /// A float32 (rows, dim) NumPy array, plus a .paths.txt file naming the rows.
    Npy,
    /// A safetensors file: tensor "embeddings", names and model in the metadata.
    Safetensors,
    /// One {"path" or "text", "embedding"} object per line.
    Jsonl,
}

impl From<EmbedFormatArg> for vlm::export::ExportFormat {
    fn from(arg: EmbedFormatArg) -> Self {
        match arg {
            EmbedFormatArg::Npy => Self::Npy,
            EmbedFormatArg::Safetensors => Self::Safetensors,
            EmbedFormatArg::Jsonl => Self::Jsonl,
        }
    }
}
