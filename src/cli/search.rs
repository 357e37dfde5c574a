//! Arguments of `vlm search`.

use clap::{Args, ValueEnum};

use super::{InputArgs, ModelArgs, OutputArgs, Verbosity};

/// Find the images most similar to a text query or to an image.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// What to look for, e.g. "a dog on a beach". Leave it out with --image: then every
    /// argument is an image to search.
    #[arg(value_name = "QUERY")]
    pub query: Option<String>,

    /// Images to search: files, directories (searched recursively), quoted glob patterns
    /// such as "photos/**/*.jpg", or http(s) URLs.
    #[arg(value_name = "INPUT")]
    pub inputs: Vec<String>,

    /// Rank by similarity to this image (file or URL) instead of a text query. The image
    /// itself is left out of the results when it is among the inputs.
    #[arg(long, value_name = "IMAGE", help_heading = "Query")]
    pub image: Option<String>,

    /// Search the embeddings stored by `vlm embed --to` (through the database's cosine
    /// index) instead of INPUTs: postgresql://USER@HOST[:PORT]/DB[?table=NAME] or
    /// milvus://HOST[:PORT]/COLLECTION.
    #[arg(long = "in", value_name = "ADDRESS", help_heading = "Database")]
    pub in_database: Option<String>,

    /// The table (or Milvus collection) to search with --in [default: vlm_embeddings, or the
    /// one the address names].
    #[arg(
        long,
        value_name = "NAME",
        requires = "in_database",
        help_heading = "Database"
    )]
    pub table: Option<String>,

    /// Report the N most similar images.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..), help_heading = "Output")]
    pub top: u64,

    #[command(flatten)]
    pub filter: InputArgs,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub output: OutputArgs<SearchFormatArg>,

    #[command(flatten)]
    pub verbosity: Verbosity,
}

/// Search output formats; every one has rank, path and similarity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SearchFormatArg {
    /// Aligned columns for reading.
    Table,
    /// A JSON array of objects.
    Json,
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated, with a header.
    Csv,
    /// Tab-separated, with a header.
    Tsv,
}

impl From<SearchFormatArg> for vlm::output::Format {
    fn from(arg: SearchFormatArg) -> Self {
        match arg {
            SearchFormatArg::Table => Self::Table,
            SearchFormatArg::Json => Self::Json,
            SearchFormatArg::Jsonl => Self::Jsonl,
            SearchFormatArg::Csv => Self::Csv,
            SearchFormatArg::Tsv => Self::Tsv,
        }
    }
}
