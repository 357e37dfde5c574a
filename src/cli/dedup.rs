//! Arguments of `vlm dedup`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{InputArgs, ModelArgs, OutputArgs, Verbosity};

#[derive(Debug, Args)]
#[command(mut_arg("format", |a| a.help(
    "Output format [default: from the --output extension (.jsonl, .json), else table]"
)))]
pub struct DedupArgs {
    /// Images to compare: files, directories (searched recursively) or quoted glob patterns.
    #[arg(value_name = "INPUT", required_unless_present_any = ["files_from", "in_database"],
          conflicts_with = "in_database")]
    pub inputs: Vec<String>,

    /// Two images are near-duplicates at or above this cosine similarity of their
    /// embeddings (-1 to 1); lower finds more, and more distinct shots of one scene.
    #[arg(long, value_name = "COS", default_value_t = vlm::dedup::DEFAULT_THRESHOLD,
          allow_negative_numbers = true, help_heading = "Groups")]
    pub threshold: f32,

    /// Compare the embeddings stored by `vlm embed --to` instead of INPUTs, through the
    /// table's HNSW index (approximate: each image's 32 nearest), never reading an image:
    /// postgresql://USER@HOST[:PORT]/DB[?table=NAME]. Faster than comparing INPUTs from
    /// some 350,000 images on (BENCHMARKS.md); below that it saves reading them.
    // The input filters choose files to read, and --in reads none: refused, not ignored.
    #[arg(long = "in", value_name = "ADDRESS", help_heading = "Groups",
          conflicts_with_all = ["files_from", "max_depth", "hidden", "ext", "exclude", "shard", "allow_empty"])]
    pub in_database: Option<String>,

    /// The table to compare with --in [default: vlm_embeddings, or the one the address names].
    #[arg(
        long,
        value_name = "NAME",
        requires = "in_database",
        help_heading = "Groups"
    )]
    pub table: Option<String>,

    #[command(flatten)]
    pub filter: InputArgs,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub output: OutputArgs<DedupFormatArg>,

    /// Also write a review page (HTML, opened from disk) of the groups with thumbnails;
    /// they go to the folder FILE_files/ beside it.
    #[arg(long, value_name = "FILE.html", help_heading = "Output")]
    pub report: Option<PathBuf>,

    /// Put each group in DEST/group-NNNN/ as links (or copies) of its images; the images
    /// themselves are never moved or deleted.
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        requires = "dest",
        help_heading = "Output"
    )]
    pub organize: Option<DedupOrganizeArg>,

    /// Destination folder for --organize.
    #[arg(
        long,
        value_name = "DIR",
        requires = "organize",
        help_heading = "Output"
    )]
    pub dest: Option<PathBuf>,

    /// With --organize: print what would be done, change nothing.
    #[arg(long, requires = "organize", help_heading = "Output")]
    pub dry_run: bool,

    #[command(flatten)]
    pub verbosity: Verbosity,
}

/// Group output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DedupFormatArg {
    /// Each group and its members, for reading.
    Table,
    /// A JSON array of groups.
    Json,
    /// One group per line: {"group", "members": [{"path", "similarity"}]}.
    Jsonl,
}

impl From<DedupFormatArg> for vlm::output::Format {
    fn from(arg: DedupFormatArg) -> Self {
        match arg {
            DedupFormatArg::Table => Self::Table,
            DedupFormatArg::Json => Self::Json,
            DedupFormatArg::Jsonl => Self::Jsonl,
        }
    }
}

/// How --organize places a group's images (never moving them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DedupOrganizeArg {
    /// Symlink to each image.
    Link,
    /// Copy each image.
    Copy,
}

impl From<DedupOrganizeArg> for vlm::organize::Mode {
    fn from(arg: DedupOrganizeArg) -> Self {
        match arg {
            DedupOrganizeArg::Link => Self::Link,
            DedupOrganizeArg::Copy => Self::Copy,
        }
    }
}
