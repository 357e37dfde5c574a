//! Arguments of `vlm dedup`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{InputArgs, ModelArgs};

#[derive(Debug, Args)]
pub struct DedupArgs {
    /// Images to compare: files, directories (searched recursively) or quoted glob patterns.
    #[arg(value_name = "INPUT", required_unless_present = "files_from")]
    pub inputs: Vec<String>,

    /// Two images are near-duplicates at or above this cosine similarity of their
    /// embeddings (-1 to 1); lower finds more, and more distinct shots of one scene.
    #[arg(long, value_name = "COS", default_value_t = vlm::dedup::DEFAULT_THRESHOLD,
          allow_negative_numbers = true, help_heading = "Groups")]
    pub threshold: f32,

    /// How pairs are found: auto (exact all-pairs up to 1,000,000 images, an approximate
    /// HNSW index beyond), exact or approximate.
    #[arg(long, value_enum, default_value_t = DedupSearchArg::Auto, help_heading = "Groups")]
    pub search: DedupSearchArg,

    #[command(flatten)]
    pub filter: InputArgs,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Output format [default: from the --output extension (.jsonl, .json), else table].
    #[arg(short, long, value_enum, help_heading = "Output")]
    pub format: Option<DedupFormatArg>,

    /// Write the groups to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE", help_heading = "Output")]
    pub output: Option<PathBuf>,

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

    /// No progress bar, warnings or summary on stderr (errors are still printed).
    #[arg(short, long, help_heading = "Output")]
    pub quiet: bool,

    /// Also report skipped files, the search used and cache statistics on stderr.
    #[arg(short, long, conflicts_with = "quiet", help_heading = "Output")]
    pub verbose: bool,
}

/// How `vlm dedup` finds pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DedupSearchArg {
    /// Exact up to 1,000,000 images, approximate beyond.
    Auto,
    /// Every image against every other (slow for very many images).
    Exact,
    /// An HNSW index: each image's 32 nearest neighbours.
    Approximate,
}

impl From<DedupSearchArg> for vlm::dedup::Search {
    fn from(arg: DedupSearchArg) -> Self {
        match arg {
            DedupSearchArg::Auto => Self::Auto,
            DedupSearchArg::Exact => Self::Exact,
            DedupSearchArg::Approximate => Self::Approximate,
        }
    }
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
