//! Arguments of `vlm classify`.

use std::path::PathBuf;

use clap::Args;

use super::{
    FormatArg, InputArgs, ModelArgs, OrganizeArg, OutputArgs, TemplateArgs, Verbosity, XmpArgs,
};

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("label_source").required(true).args(["labels", "labels_file", "probe"])))]
#[command(group(clap::ArgGroup::new("changes_files").multiple(true).args(["organize", "write_xmp"])))]
pub struct ClassifyArgs {
    /// Images to classify: files, directories (searched recursively), quoted glob
    /// patterns such as "photos/**/*.jpg", or http(s) URLs.
    #[arg(value_name = "INPUT", required_unless_present = "files_from")]
    pub inputs: Vec<String>,

    // Labels and prompts.
    /// Comma-separated labels, e.g. "dog,cat,hot dog"; "cat|kitten" makes synonyms one class.
    #[arg(short, long, value_name = "LIST", help_heading = "Labels")]
    pub labels: Option<String>,

    /// File with one label per line (commas allowed); blank lines and # comments skipped.
    #[arg(long, value_name = "FILE", help_heading = "Labels")]
    pub labels_file: Option<PathBuf>,

    #[command(flatten)]
    pub prompts: TemplateArgs,

    /// A linear probe from `vlm fit` to score with instead of prompts; the labels are the
    /// probe's, and it must have been trained on the same --model.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["template", "templates", "multi_label", "examples"],
        help_heading = "Labels"
    )]
    pub probe: Option<PathBuf>,

    // Few-shot.
    /// A few example images per label in DIR/<label>/ (every folder must be one of the
    /// labels), or a labelled list ({"path","label"} JSON Lines, as `vlm report` exports):
    /// they sharpen the prompts (Tip-Adapter); labels without examples use the prompt alone.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "multi_label",
        help_heading = "Few-shot"
    )]
    pub examples: Option<PathBuf>,

    /// How much the examples count against the prompts (Tip-Adapter's alpha; 0 ignores them).
    /// Default: chosen by leave-one-out over the examples when every label has at least 4,
    /// else 1.
    #[arg(
        long,
        value_name = "A",
        requires = "examples",
        help_heading = "Few-shot"
    )]
    pub examples_weight: Option<f32>,

    /// How fast an example stops counting as an image looks less like it (Tip-Adapter's beta).
    /// Default: chosen by leave-one-out over the examples when every label has at least 4,
    /// else 5.5.
    #[arg(
        long,
        value_name = "B",
        requires = "examples",
        help_heading = "Few-shot"
    )]
    pub examples_sharpness: Option<f32>,

    #[command(flatten)]
    pub filter: InputArgs,

    /// Also store each image's embedding and labels in PostgreSQL with pgvector
    /// (postgresql://USER@HOST[:PORT]/DB[?table=NAME]) or Milvus
    /// (milvus://HOST[:PORT]/COLLECTION, in a build with --features milvus). PostgreSQL:
    /// embeddings go to the table (as with `vlm embed --to`), labels to NAME_labels (path,
    /// top_label, top_probability, labels as jsonb). Milvus: both in the collection's rows.
    #[arg(long, value_name = "ADDRESS", help_heading = "Database")]
    pub to: Option<String>,

    /// The table (or Milvus collection) to use with --to [default: vlm_embeddings, or the
    /// one the address names].
    #[arg(long, value_name = "NAME", requires = "to", help_heading = "Database")]
    pub table: Option<String>,

    #[command(flatten)]
    pub model: ModelArgs,

    // Decisions.
    /// Decide each label on its own: select every label that reaches --threshold, instead of
    /// picking the most probable one.
    #[arg(long, help_heading = "Decisions")]
    pub multi_label: bool,

    /// What a label needs to be selected with --multi-label. Sigmoid-scored models (SigLIP):
    /// its own probability, 0-1, default 0.5, the boundary the model was trained for.
    /// Softmax-scored models (CLIP, MetaCLIP 2, open_clip): its cosine similarity, default
    /// 0.25, because a softmax share depends on the other labels given. With --probe: the
    /// probe's logit.
    #[arg(
        long,
        value_name = "T",
        requires = "multi_label",
        allow_negative_numbers = true,
        help_heading = "Decisions"
    )]
    pub threshold: Option<f32>,

    /// Mark an image uncertain when its top label's probability is below P (0-1).
    #[arg(
        long,
        value_name = "P",
        conflicts_with = "multi_label",
        help_heading = "Decisions"
    )]
    pub min_probability: Option<f32>,

    /// Sort the images into DEST/<top label>/ (uncertain ones into DEST/_uncertain/).
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        requires = "dest",
        help_heading = "Decisions"
    )]
    pub organize: Option<OrganizeArg>,

    /// Destination folder for --organize.
    #[arg(
        long,
        value_name = "DIR",
        requires = "organize",
        help_heading = "Decisions"
    )]
    pub dest: Option<PathBuf>,

    /// With --organize or --write-xmp: print what would be done, change nothing.
    #[arg(long, requires = "changes_files", help_heading = "Decisions")]
    pub dry_run: bool,

    #[command(flatten)]
    pub xmp: XmpArgs,

    /// The keyword path labels are filed under in the sidecars, e.g. "vlm" (vlm|cat) or
    /// "auto|vlm" (auto|vlm|cat).
    #[arg(long, value_name = "PATH", default_value = vlm::xmp::DEFAULT_ROOT,
          requires = "write_xmp", help_heading = "Photo tools")]
    pub xmp_root: String,

    // Output.
    #[command(flatten)]
    pub output: OutputArgs<FormatArg>,

    /// Keep the results already in --output (JSON Lines) and classify only the inputs not
    /// in it yet; a line cut short by a killed run is removed first.
    #[arg(long, requires = "output", help_heading = "Output")]
    pub resume: bool,

    /// Report only the N most probable labels per image.
    #[arg(short = 'k', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          help_heading = "Output")]
    pub top_k: Option<u64>,

    #[command(flatten)]
    pub verbosity: Verbosity,
}
