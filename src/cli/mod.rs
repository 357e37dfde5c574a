//! Command-line arguments, and the settings they resolve to ([`settings`]): `main` hands
//! them to the commands, which wire them to the library.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub mod settings;

/// Set by the first Ctrl-C (`main` installs the handler); a running job then finishes the
/// batch in hand and stops.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

mod classify;
pub use classify::ClassifyArgs;
mod eval;
pub use eval::{EvalArgs, EvalFormat};
mod embed;
mod search;
pub use embed::EmbedArgs;
pub use search::SearchArgs;
mod bench;
pub use bench::BenchArgs;
mod fit;
pub use fit::FitArgs;
mod report;
pub use report::ReportArgs;
mod caption;
pub use caption::{AskArgs, CaptionArgs, DescribeArgs, GenerationArgs};
mod dedup;
pub use dedup::DedupArgs;
#[cfg(feature = "serve")]
mod serve;
#[cfg(feature = "serve")]
pub use serve::ServeArgs;

/// Zero-shot image classification with CLIP: rank your labels for each image.
#[derive(Debug, Parser)]
#[command(name = "vlm", version, long_version = vlm::build_info::long_version(), about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Rank labels for each image by how well the image matches "a photo of a <label>."
    Classify(Box<ClassifyArgs>),
    /// Measure zero-shot accuracy on a labelled folder DIR/<label>/: accuracy, per-class
    /// precision/recall/F1, confusion matrix; compare prompt templates.
    Eval(Box<EvalArgs>),
    /// Train a linear probe on labelled folders DIR/<label>/ for `classify --probe`.
    Fit(Box<FitArgs>),
    /// List the model aliases built into vlm.
    Models,
    /// Write image or prompt embeddings to a .npy, .safetensors or .jsonl file.
    Embed(Box<EmbedArgs>),
    /// Rank images by similarity to a text query or to an image.
    Search(Box<SearchArgs>),
    /// Measure images and prompts per second, cold start and memory on this machine.
    Bench(Box<BenchArgs>),
    /// Write a review page (HTML, opened from disk) of classify results: thumbnails by
    /// label, the least sure first, corrections exported for --examples and `vlm fit`.
    Report(Box<ReportArgs>),
    /// Write a caption for each image with a BLIP captioning model (default blip-base).
    #[command(mut_arg("model", |a| a.default_value("blip-base").env("VLM_CAPTION_MODEL")))]
    Caption(Box<CaptionArgs>),
    /// Answer questions about images with a BLIP question-answering model (default
    /// blip-vqa): `vlm ask photo.jpg "what is on the table?"`.
    #[command(mut_arg("model", |a| a.default_value("blip-vqa").env("VLM_ASK_MODEL")))]
    Ask(Box<AskArgs>),
    /// Group near-duplicate images (resized, recompressed, cropped or re-exposed copies) by
    /// the cosine similarity of their embeddings; never moves or deletes a file.
    Dedup(Box<DedupArgs>),
    /// Keep a model loaded behind a local HTTP API (OpenAI-style embeddings, classify, or
    /// BLIP captions and answers; health and Prometheus metrics), batching concurrent
    /// requests into the encoder.
    #[cfg(feature = "serve")]
    Serve(Box<ServeArgs>),
    /// Print a shell completion script, e.g. `vlm completions bash > ~/.local/share/bash-completion/completions/vlm`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `vlm man > ~/.local/share/man/man1/vlm.1`.
    Man,
    /// Print what vlm sees on this machine, for bug reports: build, CPU and kernels,
    /// threads, caches and their sizes, hub settings and whether the hub answers, and the
    /// programs the optional features use.
    Doctor {
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    /// `--threads`, for the commands that run a model.
    pub fn threads(&self) -> Option<u64> {
        match self {
            Command::Classify(args) => args.model.threads,
            Command::Eval(args) => args.model.threads,
            Command::Fit(args) => args.model.threads,
            Command::Embed(args) => args.model.threads,
            Command::Search(args) => args.model.threads,
            Command::Bench(args) => args.model.threads,
            Command::Report(args) => args.classify.model.threads,
            Command::Caption(args) => args.common.model.threads,
            Command::Ask(args) => args.common.model.threads,
            Command::Dedup(args) => args.model.threads,
            #[cfg(feature = "serve")]
            Command::Serve(args) => args.model.threads,
            Command::Models
            | Command::Completions { .. }
            | Command::Man
            | Command::Doctor { .. } => None,
        }
    }
}

/// Which files to take from the inputs: options shared by every command that reads images.
#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// Read more inputs from FILE, one per line ("-" for stdin).
    #[arg(long, value_name = "FILE", help_heading = "Inputs")]
    pub files_from: Option<PathBuf>,

    /// With --files-from: entries are separated by NUL bytes (as from find -print0).
    #[arg(
        short = '0',
        long = "null",
        requires = "files_from",
        help_heading = "Inputs"
    )]
    pub null: bool,

    /// Descend at most N directory levels below each directory given.
    #[arg(long, value_name = "N", help_heading = "Inputs")]
    pub max_depth: Option<usize>,

    /// Include hidden files and directories (names starting with a dot).
    #[arg(long, help_heading = "Inputs")]
    pub hidden: bool,

    /// Comma-separated extensions to take from directories, e.g. "jpg,png" (default: every
    /// supported image type; files without a known extension are recognised by content).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        help_heading = "Inputs"
    )]
    pub ext: Option<Vec<String>>,

    /// Skip inputs matching this glob, e.g. "**/thumbs/**" (repeatable).
    #[arg(long, value_name = "GLOB", help_heading = "Inputs")]
    pub exclude: Vec<String>,

    /// Take only slice K of N of the inputs (by a stable hash of each path), e.g. 2/8, to
    /// split one corpus across N machines.
    #[arg(long, value_name = "K/N", help_heading = "Inputs")]
    pub shard: Option<vlm::inputs::Shard>,

    /// Finding no image is not an error (exit 0, for scripts that label whatever arrives);
    /// by default it is, with exit status 1.
    #[arg(long, help_heading = "Inputs")]
    pub allow_empty: bool,
}

/// `--quiet` and `--verbose`: what reaches stderr; shared by every command that runs a job.
#[derive(Debug, Clone, Copy, Args)]
pub struct Verbosity {
    /// No progress bar, warnings or summary on stderr (errors are still printed).
    #[arg(short, long, help_heading = "Output")]
    pub quiet: bool,

    /// Also report skipped files and cache statistics on stderr.
    #[arg(short, long, conflicts_with = "quiet", help_heading = "Output")]
    pub verbose: bool,
}

/// `--format` and `--output` of a command that writes one result per image or match
/// (`classify`, `search`), in the formats `F` offers.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs<F: ValueEnum + Clone + Send + Sync + 'static> {
    /// Output format [default: from the --output extension (.jsonl, .json, .csv, .tsv), else table].
    #[arg(short, long, value_enum, help_heading = "Output")]
    pub format: Option<F>,

    /// Write results to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE", help_heading = "Output")]
    pub output: Option<PathBuf>,
}

/// How labels become prompts: shared by `classify` and `eval`.
#[derive(Debug, Clone, Args)]
pub struct TemplateArgs {
    /// Prompt template; {} is replaced by each label ("{}" alone uses the bare label).
    #[arg(short, long, default_value = vlm::labels::DEFAULT_TEMPLATE, help_heading = "Labels")]
    pub template: String,

    /// Prompt ensemble instead of one template: imagenet80, imagenet7, or a file with one
    /// template per line. Each class is the normalised mean of its prompts' embeddings.
    #[arg(
        long,
        value_name = "SET",
        conflicts_with = "template",
        help_heading = "Labels"
    )]
    pub templates: Option<String>,
}

/// Which model, where it runs, and how images flow through it: shared by every command that
/// embeds images or text.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Checkpoint: a local directory, an alias from `vlm models`, or a Hugging Face repo id.
    #[arg(short = 'm', long = "model", id = "model", env = "VLM_MODEL", default_value = vlm::source::DEFAULT_MODEL, help_heading = "Model")]
    pub spec: String,

    /// Hub revision (branch, tag or commit) to use instead of the default.
    #[arg(long, value_name = "REV", help_heading = "Model")]
    pub revision: Option<String>,

    /// Where to run the model.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto, help_heading = "Model")]
    pub device: DeviceArg,

    /// Number type the encoders compute in: f16 halves the weights' memory; bf16 needs a
    /// GPU or, on the CPU, Intel AMX-BF16 or AVX512-BF16; int8 (CPU only) quantises the
    /// transformer layers' weights and inputs, the fastest on most CPUs, embeddings within
    /// cosine 0.995 of f32, captions and answers about twice as fast as in f32 but not
    /// always the same words. Embeddings and scores are f32 either way.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32, help_heading = "Model")]
    pub dtype: DTypeArg,

    /// Pack the weights at every start instead of keeping them packed in the cache
    /// ($VLM_PACK_CACHE_DIR, else <user cache dir>/vlm/packed) and mapping them from
    /// there; a kept pack is about the size of the weights.
    #[arg(long, env = "VLM_NO_PACK_CACHE", help_heading = "Model")]
    pub no_pack_cache: bool,

    /// Images encoded together in one forward pass.
    #[arg(short, long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=4096), help_heading = "Model")]
    pub batch_size: u64,

    /// Threads for the model's matrix multiplications (default: one per core, or
    /// $RAYON_NUM_THREADS).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024),
          help_heading = "Model")]
    pub threads: Option<u64>,

    /// Threads decoding and resizing images (default: one per core).
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024),
          help_heading = "Model")]
    pub workers: Option<u64>,

    /// Keep image embeddings in DIR (default: the user cache directory, or $VLM_CACHE_DIR),
    /// keyed by file content, model and preprocessing, so relabelling skips the image encoder.
    #[arg(long, value_name = "DIR", num_args = 0..=1, require_equals = true, help_heading = "Model")]
    pub cache: Option<Option<PathBuf>>,

    /// Decode large JPEGs at 1/2, 1/4 or 1/8 size in the DCT domain, keeping at least twice
    /// the model's resize size: about twice as fast on camera photos; probabilities move by
    /// about 0.01.
    #[arg(long, help_heading = "Model")]
    pub jpeg_downscale: bool,

    /// Use images whose file stops early (a cut download or copy), with the missing part
    /// filled in, as Pillow's LOAD_TRUNCATED_IMAGES does; without it they are errors.
    #[arg(long, help_heading = "Inputs")]
    pub allow_truncated: bool,

    /// Refuse images larger than this many million pixels, before decoding them (guards
    /// against decompression bombs).
    #[arg(
        long,
        value_name = "MP",
        default_value_t = 179.0,
        help_heading = "Inputs"
    )]
    pub max_megapixels: f64,
}

/// How --organize places files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrganizeArg {
    /// Copy each image.
    Copy,
    /// Move each image (never left half-done).
    Move,
    /// Symlink to each image.
    Link,
}

impl From<OrganizeArg> for vlm::organize::Mode {
    fn from(arg: OrganizeArg) -> Self {
        match arg {
            OrganizeArg::Copy => Self::Copy,
            OrganizeArg::Move => Self::Move,
            OrganizeArg::Link => Self::Link,
        }
    }
}

/// `--write-xmp` and `--xmp-naming`: shared by `classify` (labels) and `caption`
/// (captions), which says what it writes by replacing the `--write-xmp` help.
#[derive(Debug, Clone, Args)]
pub struct XmpArgs {
    /// Write each image's accepted labels (the top label unless uncertain; with
    /// --multi-label the selected ones) into its XMP sidecar, as keywords (dc:subject),
    /// keyword paths under --xmp-root (lr:hierarchicalSubject, digiKam:TagsList). An
    /// existing sidecar is merged: vlm's earlier labels are replaced, everything else kept.
    #[arg(long, help_heading = "Photo tools")]
    pub write_xmp: bool,

    /// How sidecars are named: photo.jpg.xmp (digiKam, darktable) or photo.xmp (Lightroom,
    /// Capture One).
    #[arg(long, value_enum, value_name = "NAMING", default_value_t = XmpNamingArg::Append,
          requires = "write_xmp", help_heading = "Photo tools")]
    pub xmp_naming: XmpNamingArg,
}

/// How --write-xmp names sidecars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum XmpNamingArg {
    /// photo.jpg.xmp: digiKam, darktable.
    Append,
    /// photo.xmp: Lightroom, Capture One.
    Basename,
}

impl From<XmpNamingArg> for vlm::xmp::Naming {
    fn from(arg: XmpNamingArg) -> Self {
        match arg {
            XmpNamingArg::Append => Self::Appended,
            XmpNamingArg::Basename => Self::Basename,
        }
    }
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

/// Number types for --dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    F32,
    F16,
    Bf16,
    Int8,
}

impl From<DTypeArg> for vlm::model::Precision {
    fn from(arg: DTypeArg) -> Self {
        use candle_core::DType;
        match arg {
            DTypeArg::F32 => Self::Float(DType::F32),
            DTypeArg::F16 => Self::Float(DType::F16),
            DTypeArg::Bf16 => Self::Float(DType::BF16),
            DTypeArg::Int8 => Self::Int8,
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

impl DeviceArg {
    /// The flag's value, as `--device` takes it.
    pub fn name(self) -> &'static str {
        match self {
            DeviceArg::Auto => "auto",
            DeviceArg::Cpu => "cpu",
            DeviceArg::Cuda => "cuda",
            DeviceArg::Metal => "metal",
        }
    }
}

impl From<DeviceArg> for vlm::device::DeviceKind {
    fn from(arg: DeviceArg) -> Self {
        match arg {
            DeviceArg::Auto => Self::Auto,
            DeviceArg::Cpu => Self::Cpu,
            DeviceArg::Cuda => Self::Cuda,
            DeviceArg::Metal => Self::Metal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// docs/cli.md is rendered from these definitions; a flag added or changed without
    /// regenerating it fails here. Regenerate with `VLM_BLESS=1 cargo test --bin vlm cli_reference`.
    #[test]
    fn cli_reference_is_current() {
        let options = clap_markdown::MarkdownOptions::new()
            .title("vlm command-line reference".to_string())
            .show_footer(false)
            .show_table_of_contents(true);
        let rendered = clap_markdown::help_markdown_custom::<Cli>(&options);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md");
        if std::env::var_os("VLM_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &rendered).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == rendered,
            "docs/cli.md is stale; regenerate it with `VLM_BLESS=1 cargo test --bin vlm cli_reference` and commit it"
        );
    }

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }
}
