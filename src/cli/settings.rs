//! Each command's arguments resolved once, into the library's types, before anything is
//! loaded: flags checked, files named by flags read (labels, templates, a probe), defaults
//! settled. After `resolve` no code reads the arguments; every `resolve` takes its
//! arguments apart field by field, so a new flag cannot be silently ignored.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use super::{
    AskArgs, BenchArgs, CaptionArgs, ClassifyArgs, DedupArgs, DescribeArgs, EmbedArgs, EvalArgs,
    EvalFormat, FitArgs, FormatArg, GenerationArgs, InputArgs, ModelArgs, OutputArgs, ReportArgs,
    SearchArgs, TemplateArgs, Verbosity, XmpArgs, INTERRUPTED,
};
use vlm::caption::{Describe, GenerationOptions, Request};
use vlm::classify::{Classify, OrganizeSettings, ResultsTo, XmpSettings};
use vlm::decide::{self, Decisions, ExampleSettings, LabelSource};
use vlm::evaluation::summary::Style;
use vlm::export::{self, ExportFormat};
use vlm::fewshot::{self, TipParams};
use vlm::inputs::{FilesFrom, InputOptions, InputSpec};
use vlm::labels::{self, PromptSet, PromptSpec};
use vlm::output::Format;
use vlm::pipeline::PipelineOptions;
use vlm::probe::{Probe, TrainOptions};
use vlm::review::{self, PageOptions};
use vlm::search::QuerySpec;
use vlm::session::{CacheChoice, ModelSettings};
use vlm::store::Address;
use vlm::xmp::XmpOptions;

impl ModelArgs {
    /// The model flags as the library takes them. `--threads` is not among them: `main`
    /// sets it for the whole process before any thread starts.
    pub fn settings(&self) -> ModelSettings {
        let ModelArgs {
            spec,
            revision,
            device,
            dtype,
            no_pack_cache,
            batch_size,
            threads: _,
            workers,
            cache,
            jpeg_downscale,
            allow_truncated,
            max_megapixels,
        } = self;
        ModelSettings {
            spec: spec.clone(),
            revision: revision.clone(),
            device: (*device).into(),
            dtype: (*dtype).into(),
            pack_cache: !no_pack_cache,
            cache: match cache {
                None => CacheChoice::Off,
                Some(None) => CacheChoice::Default,
                Some(Some(dir)) => CacheChoice::Dir(dir.clone()),
            },
            jpeg_downscale: *jpeg_downscale,
            allow_truncated: *allow_truncated,
            max_megapixels: *max_megapixels,
            pipeline: PipelineOptions {
                batch_size: usize::try_from(*batch_size).unwrap_or(16),
                workers: workers
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or_else(|| PipelineOptions::default().workers),
                cancel: Some(&INTERRUPTED),
                max_wait: None,
            },
        }
    }
}

impl InputArgs {
    /// The walk's options for these flags.
    pub fn options(&self) -> InputOptions {
        let InputArgs {
            files_from: _,
            null,
            max_depth,
            hidden,
            ext,
            exclude,
            shard,
            allow_empty: _,
        } = self;
        InputOptions {
            max_depth: *max_depth,
            hidden: *hidden,
            extensions: ext.clone(),
            exclude: exclude.clone(),
            shard: *shard,
            null_separated: *null,
        }
    }

    /// The walk's options for a labelled folder (`vlm eval`, `vlm fit`), which takes its
    /// images from DIR/<label>/ and not from a list.
    fn folder_options(&self, command: &str) -> anyhow::Result<InputOptions> {
        if self.files_from.is_some() {
            bail!(
                "vlm {command} takes its images from DIR/<label>/ folders; --files-from does not apply"
            );
        }
        Ok(self.options())
    }

    /// `paths` and the `--files-from` list, found with these flags.
    pub fn spec(&self, paths: &[String]) -> InputSpec {
        InputSpec {
            paths: paths.to_vec(),
            files_from: self.files_from.as_ref().map(FilesFrom::from_arg),
            options: self.options(),
            allow_empty: self.allow_empty,
        }
    }
}

impl XmpArgs {
    /// `--write-xmp`'s settings, with keywords under `root`; `None` without it.
    pub fn settings(&self, root: &str, dry_run: bool) -> anyhow::Result<Option<XmpSettings>> {
        let XmpArgs {
            write_xmp,
            xmp_naming,
        } = self;
        if !write_xmp {
            return Ok(None);
        }
        Ok(Some(XmpSettings {
            options: XmpOptions::new((*xmp_naming).into(), root)?,
            dry_run,
        }))
    }
}

/// `--to`/`--in ADDRESS` (and `--table`), refused at once when this build lacks its client.
fn address(url: &str, table: Option<&str>) -> anyhow::Result<Address> {
    let address = Address::parse(url, table)?;
    address.ensure_built()?;
    Ok(address)
}

/// `vlm classify`.
pub struct ClassifySettings {
    pub classify: Classify,
    pub model: ModelSettings,
    pub verbosity: Verbosity,
}

impl ClassifySettings {
    pub fn resolve(args: &ClassifyArgs) -> anyhow::Result<Self> {
        let ClassifyArgs {
            inputs,
            labels,
            labels_file,
            prompts,
            probe,
            examples,
            examples_weight,
            examples_sharpness,
            filter,
            to,
            table,
            model,
            multi_label,
            threshold,
            min_probability,
            organize,
            dest,
            dry_run,
            xmp,
            xmp_root,
            output,
            resume,
            top_k,
            verbosity,
        } = args;
        let source = match probe {
            Some(path) => LabelSource::Probe {
                path: path.clone(),
                probe: Probe::load(path)?,
            },
            None => LabelSource::Prompts(prompt_set(labels, labels_file, prompts)?),
        };
        // Checked before the model loads; the values used are settled with the examples.
        TipParams::new(
            examples_weight.unwrap_or(fewshot::DEFAULT_WEIGHT),
            examples_sharpness.unwrap_or(fewshot::DEFAULT_SHARPNESS),
        )?;
        let results = results_to(output, *resume)?;
        let top_k = top_k.map(|k| usize::try_from(k).unwrap_or(usize::MAX));
        let decisions = Decisions::new(
            top_k,
            multi_label.then_some(threshold.unwrap_or(decide::DEFAULT_COSINE_THRESHOLD)),
            *min_probability,
        )?;
        let store = to
            .as_deref()
            .map(|to| address(to, table.as_deref()))
            .transpose()?;
        let classify = Classify {
            inputs: filter.spec(inputs),
            labels: source,
            examples: examples.as_ref().map(|dir| ExampleSettings {
                dir: dir.clone(),
                filter: filter.options(),
                weight: *examples_weight,
                sharpness: *examples_sharpness,
            }),
            decisions,
            threshold: *threshold,
            organize: match (organize, dest) {
                (Some(mode), Some(dest)) => Some(OrganizeSettings {
                    dest: dest.clone(),
                    mode: (*mode).into(),
                    dry_run: *dry_run,
                }),
                _ => None,
            },
            xmp: xmp.settings(xmp_root, *dry_run)?,
            store,
            results,
        };
        Ok(Self {
            classify,
            model: model.settings(),
            verbosity: *verbosity,
        })
    }
}

/// The labels and prompts from the command line (`--labels`, `--labels-file`, templates).
fn prompt_set(
    labels: &Option<String>,
    labels_file: &Option<PathBuf>,
    prompts: &TemplateArgs,
) -> anyhow::Result<PromptSet> {
    let labels = match (labels, labels_file) {
        (_, Some(path)) => labels::read_file(path)?,
        (Some(list), None) => labels::parse_list(list)?,
        (None, None) => return Err(labels::LabelError::None.into()),
    };
    Ok(PromptSet::new(&labels, &template_spec(prompts)?.templates)?)
}

/// `--template` or `--templates`.
fn template_spec(prompts: &TemplateArgs) -> anyhow::Result<PromptSpec> {
    let TemplateArgs {
        template,
        templates,
    } = prompts;
    Ok(PromptSpec::from_options(template, templates.as_deref())?)
}

/// What `vlm report` makes its page of.
pub enum ReportSource {
    /// Results files (JSON Lines) of `vlm classify`, `vlm caption` or `vlm ask`, joined by
    /// path when there are several.
    Results(Vec<PathBuf>),
    /// Inputs to classify first, into `results` (FILE.jsonl beside the page).
    Classify {
        settings: Box<ClassifySettings>,
        results: PathBuf,
    },
}

impl ReportSource {
    /// The results files the page is made of.
    pub fn files(&self) -> &[PathBuf] {
        match self {
            ReportSource::Results(files) => files,
            ReportSource::Classify { results, .. } => std::slice::from_ref(results),
        }
    }

    /// Their names, as the page shows them: `labels.jsonl + captions.jsonl`.
    pub fn names(&self) -> String {
        review::results_names(self.files())
    }
}

/// `vlm report`.
pub struct ReportSettings {
    pub source: ReportSource,
    /// The page.
    pub output: PathBuf,
    pub self_contained: bool,
    pub title: String,
    pub max_megapixels: f64,
    pub verbosity: Verbosity,
}

impl ReportSettings {
    pub fn resolve(args: &ReportArgs) -> anyhow::Result<Self> {
        let results_files = args.results_files();
        let ReportArgs {
            classify,
            self_contained,
            title,
        } = args;
        let Some(output) = classify.output.output.clone() else {
            bail!("give --output FILE.html: where to write the page");
        };
        let source = match results_files {
            Some(files) => {
                if let Some(folder) = files.iter().find(|f| f.is_dir()) {
                    bail!(
                        "{} is a folder: give --labels (or --labels-file, --probe) to classify it first, or pass results files from `vlm classify --format jsonl` or `vlm caption`",
                        folder.display()
                    );
                }
                if classify.organize.is_some() || classify.to.is_some() || classify.xmp.write_xmp {
                    bail!("--organize, --to and --write-xmp act on images as they are classified; with results files there is nothing to classify: run `vlm classify` (or `vlm caption --write-xmp`) on the images");
                }
                ReportSource::Results(files)
            }
            None => {
                let c = classify;
                if c.labels.is_none() && c.labels_file.is_none() && c.probe.is_none() {
                    bail!("give --labels, --labels-file or --probe to classify the inputs first, or pass one results file from `vlm classify --format jsonl`");
                }
                let results = output.with_extension("jsonl");
                if results == output {
                    bail!("--output names the page: give it a .html name");
                }
                // Classified as `vlm classify` would, into FILE.jsonl, all labels ranked.
                let classify = ClassifyArgs {
                    output: OutputArgs {
                        format: Some(FormatArg::Jsonl),
                        output: Some(results.clone()),
                    },
                    resume: false,
                    top_k: None,
                    ..classify.clone()
                };
                ReportSource::Classify {
                    settings: Box::new(ClassifySettings::resolve(&classify)?),
                    results,
                }
            }
        };
        let title = title
            .clone()
            .unwrap_or_else(|| format!("vlm report: {}", source.names()));
        Ok(Self {
            source,
            output,
            self_contained: *self_contained,
            title,
            max_megapixels: classify.model.max_megapixels,
            verbosity: classify.verbosity,
        })
    }
}

/// Where `vlm search` looks.
pub enum SearchIn {
    /// The images given.
    Inputs(InputSpec),
    /// `--in`: a database table.
    Database(Address),
}

/// `vlm search`.
pub struct SearchSettings {
    pub query: QuerySpec,
    pub target: SearchIn,
    pub top: usize,
    pub format: Format,
    pub output: Option<PathBuf>,
    pub model: ModelSettings,
    pub verbosity: Verbosity,
}

impl SearchSettings {
    pub fn resolve(args: &SearchArgs) -> anyhow::Result<Self> {
        let SearchArgs {
            query,
            inputs,
            image,
            in_database,
            table,
            top,
            filter,
            model,
            output: OutputArgs { format, output },
            verbosity,
        } = args;
        let format = Format::for_output(format.map(Format::from), output.as_deref())?;
        let empty = || "the query is empty; give the text to search for, or --image IMAGE";
        let (query, target) = match in_database {
            Some(url) => {
                let address = address(url, table.as_deref())?;
                if !inputs.is_empty() || filter.files_from.is_some() {
                    bail!("--in searches the table; leave out the INPUTs (vlm embed INPUTS --to ADDRESS adds them)");
                }
                let query = match (image, query) {
                    (Some(_), Some(_)) => bail!(
                        "--in searches the table; give either a text query or --image IMAGE, and no INPUTs"
                    ),
                    (None, Some(text)) if text.trim().is_empty() => bail!(empty()),
                    (None, Some(text)) => QuerySpec::Text(text.clone()),
                    (Some(image), None) => QuerySpec::Image(image.clone()),
                    (None, None) => bail!("give a text query or --image IMAGE"),
                };
                (query, SearchIn::Database(address))
            }
            None => {
                // With --image the first positional argument is an input, not a text query.
                let (query, paths) = match image {
                    Some(image) => (
                        QuerySpec::Image(image.clone()),
                        query.iter().chain(inputs).cloned().collect::<Vec<_>>(),
                    ),
                    None => match query {
                        Some(text) if text.trim().is_empty() => bail!(empty()),
                        Some(text) => (QuerySpec::Text(text.clone()), inputs.clone()),
                        None if inputs.is_empty() && filter.files_from.is_none() => bail!(
                            "no images to search: give files, directories or globs after the query, or --files-from"
                        ),
                        None => bail!("give a text query or --image IMAGE"),
                    },
                };
                if paths.is_empty() && filter.files_from.is_none() {
                    bail!("no images to search: give files, directories or globs after the query, or --files-from");
                }
                (query, SearchIn::Inputs(filter.spec(&paths)))
            }
        };
        Ok(Self {
            query,
            target,
            top: usize::try_from(*top).unwrap_or(usize::MAX),
            format,
            output: output.clone(),
            model: model.settings(),
            verbosity: *verbosity,
        })
    }
}

/// What `vlm embed` embeds.
pub enum EmbedWhat {
    /// Images, found as inputs are.
    Images(InputSpec),
    /// Prompts, as given (`--text`, `--text-file`).
    Texts(Vec<String>),
}

/// Where `vlm embed` writes.
pub enum EmbedTo {
    File {
        path: PathBuf,
        format: ExportFormat,
    },
    /// `--to`: a database table.
    Database(Address),
}

/// `vlm embed`.
pub struct EmbedSettings {
    pub what: EmbedWhat,
    pub to: EmbedTo,
    /// Scale each embedding to unit length.
    pub normalized: bool,
    pub model: ModelSettings,
    pub verbosity: Verbosity,
}

impl EmbedSettings {
    pub fn resolve(args: &EmbedArgs) -> anyhow::Result<Self> {
        let EmbedArgs {
            inputs,
            text,
            text_file,
            filter,
            model,
            output,
            to,
            table,
            format,
            no_normalize,
            verbosity,
        } = args;
        let images = || EmbedWhat::Images(filter.spec(inputs));
        let (what, to) = match to {
            Some(to) => (images(), EmbedTo::Database(address(to, table.as_deref())?)),
            None => {
                let path = output
                    .clone()
                    .context("give --output FILE or --to ADDRESS")?;
                let format = match format {
                    Some(format) => (*format).into(),
                    None => ExportFormat::from_path(&path)?,
                };
                let what = match (text, text_file) {
                    (Some(list), _) => EmbedWhat::Texts(export::prompts_from_list(list)?),
                    (None, Some(file)) => EmbedWhat::Texts(export::read_prompts(file)?),
                    (None, None) => images(),
                };
                (what, EmbedTo::File { path, format })
            }
        };
        Ok(Self {
            what,
            to,
            normalized: !no_normalize,
            model: model.settings(),
            verbosity: *verbosity,
        })
    }
}

/// `vlm eval`.
pub struct EvalSettings {
    /// The labelled folder or list.
    pub dir: PathBuf,
    pub options: InputOptions,
    /// `--labels-file`: folder names to labels, or a labelled list.
    pub labels_file: Option<PathBuf>,
    /// The prompt specs to measure, checked against the labels once they are known.
    pub specs: Vec<PromptSpec>,
    /// Several templates side by side (`--compare-templates`).
    pub compare_templates: bool,
    pub model: ModelSettings,
    /// `--models`: each checkpoint, with the other model flags.
    pub models: Vec<ModelSettings>,
    pub style: Style,
    pub confusion_csv: Option<PathBuf>,
    pub heatmap: Option<PathBuf>,
    /// `--report`: the page.
    pub report: Option<PathBuf>,
    pub most_confused: usize,
    pub verbosity: Verbosity,
}

impl EvalSettings {
    pub fn resolve(args: &EvalArgs) -> anyhow::Result<Self> {
        let EvalArgs {
            dir,
            labels_file,
            prompts,
            compare_templates,
            filter,
            model,
            models,
            format,
            confusion_csv,
            heatmap,
            report,
            most_confused,
            verbosity,
        } = args;
        if report.is_some() && !models.is_empty() {
            bail!("--report makes the page of one model's evaluation; leave out --models, or run vlm eval --report once per model");
        }
        let specs = if compare_templates.is_empty() {
            vec![template_spec(prompts)?]
        } else {
            vlm::evaluation::parse_specs(compare_templates)?
        };
        let models = models
            .iter()
            .map(|m| m.trim())
            .filter(|m| !m.is_empty())
            .map(|name| ModelSettings {
                spec: name.to_string(),
                ..model.settings()
            })
            .collect();
        Ok(Self {
            dir: dir.clone(),
            options: filter.folder_options("eval")?,
            labels_file: labels_file.clone(),
            specs,
            compare_templates: !compare_templates.is_empty(),
            model: model.settings(),
            models,
            style: match format {
                EvalFormat::Table => Style::Table,
                EvalFormat::Json => Style::Json,
            },
            confusion_csv: confusion_csv.clone(),
            heatmap: heatmap.clone(),
            report: report.clone(),
            most_confused: *most_confused,
            verbosity: *verbosity,
        })
    }
}

/// `vlm fit`.
pub struct FitSettings {
    pub dir: PathBuf,
    /// Where the probe goes.
    pub out: PathBuf,
    pub labels_file: Option<PathBuf>,
    /// `--ext`, `--exclude`, `--hidden`, `--max-depth` for the folders.
    pub options: InputOptions,
    pub holdout: f64,
    pub seed: u64,
    pub training: TrainOptions,
    pub model: ModelSettings,
    pub verbosity: Verbosity,
}

impl FitSettings {
    pub fn resolve(args: &FitArgs) -> anyhow::Result<Self> {
        let FitArgs {
            dir,
            out,
            labels_file,
            holdout,
            seed,
            l2,
            epochs,
            patience,
            learning_rate,
            filter,
            model,
            verbosity,
        } = args;
        if !(0.0..1.0).contains(holdout) {
            bail!("--holdout must be at least 0 and less than 1, got {holdout}");
        }
        let training = TrainOptions {
            l2: *l2,
            learning_rate: *learning_rate,
            max_epochs: *epochs,
            patience: *patience,
        };
        training.check()?;
        Ok(Self {
            dir: dir.clone(),
            out: out.clone(),
            labels_file: labels_file.clone(),
            options: filter.folder_options("fit")?,
            holdout: *holdout,
            seed: *seed,
            training,
            model: model.settings(),
            verbosity: *verbosity,
        })
    }
}

/// `vlm bench`.
pub struct BenchSettings {
    pub bench: vlm::bench::BenchOptions,
    /// Print one JSON object instead of text.
    pub json: bool,
    pub model: ModelSettings,
}

impl BenchSettings {
    pub fn resolve(args: &BenchArgs) -> anyhow::Result<Self> {
        let BenchArgs {
            batch_sizes,
            text_prompts,
            seconds,
            cold_start,
            folder,
            classify_args,
            json,
            model,
        } = args;
        if !(*seconds >= 0.0 && seconds.is_finite()) {
            bail!("--seconds must be a non-negative number, got {seconds}");
        }
        let batch_sizes = batch_sizes
            .iter()
            .map(|&b| usize::try_from(b).context("batch size too large"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // The classify runs of --cold-start and --folder: the same model, device and threads.
        let mut classify = vec![
            "classify".to_string(),
            "--labels".into(),
            "dog,cat".into(),
            "--model".into(),
            model.spec.clone(),
            "--device".into(),
            model.device.name().into(),
        ];
        classify.extend(
            classify_args
                .as_deref()
                .map(|a| a.split_whitespace().map(str::to_string).collect())
                .unwrap_or_else(Vec::new),
        );
        let flags = [
            ("--revision", model.revision.clone()),
            ("--threads", model.threads.map(|n| n.to_string())),
            ("--workers", model.workers.map(|n| n.to_string())),
        ];
        for (flag, value) in flags {
            if let Some(value) = value {
                classify.extend([flag.to_string(), value]);
            }
        }
        Ok(Self {
            bench: vlm::bench::BenchOptions {
                batch_sizes,
                text_prompts: *text_prompts,
                budget: Duration::from_secs_f64(*seconds),
                cold_start: *cold_start,
                folder: folder.clone(),
                classify,
            },
            json: *json,
            model: model.settings(),
        })
    }
}

/// `vlm caption` and `vlm ask`.
pub struct DescribeSettings {
    pub describe: Describe,
    pub model: ModelSettings,
    pub verbosity: Verbosity,
}

impl DescribeSettings {
    /// `vlm caption`.
    pub fn caption(args: &CaptionArgs) -> anyhow::Result<Self> {
        let CaptionArgs {
            inputs,
            prompt,
            to,
            table,
            xmp,
            dry_run,
            common,
        } = args;
        if prompt.as_deref().is_some_and(|p| p.trim().is_empty()) {
            bail!(
                "--prompt is empty; give the words the caption should start with, or leave it out"
            );
        }
        let request = Request::Caption {
            prompt: prompt.clone(),
        };
        let mut settings = Self::new(common, inputs, request)?;
        settings.describe.store = to
            .as_deref()
            .map(|to| address(to, table.as_deref()))
            .transpose()?;
        // A caption writes no keywords, so the root they would go under does not matter.
        settings.describe.xmp = xmp.settings(vlm::xmp::DEFAULT_ROOT, *dry_run)?;
        Ok(settings)
    }

    /// `vlm ask`: the last argument is the question unless --question or
    /// --questions-file gives them.
    pub fn ask(args: &AskArgs) -> anyhow::Result<Self> {
        let AskArgs {
            args: positional,
            question,
            questions_file,
            common,
        } = args;
        let mut inputs = positional.clone();
        let mut questions = question.clone();
        if let Some(path) = questions_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the questions file {}", path.display()))?;
            let listed: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_string)
                .collect();
            if listed.is_empty() {
                bail!(
                    "{} holds no questions; write one question per line",
                    path.display()
                );
            }
            questions.extend(listed);
        }
        if questions.is_empty() {
            match inputs.pop() {
                Some(last) => questions.push(last),
                None => bail!(
                    "no question; write it after the images (vlm ask photo.jpg \"what is on the table?\"), or pass --question or --questions-file"
                ),
            }
        }
        if inputs.is_empty() && common.filter.files_from.is_none() {
            bail!(
                "no images to ask about; name them before the question (vlm ask photo.jpg \"what is on the table?\") or pass --files-from"
            );
        }
        if let Some(blank) = questions.iter().position(|q| q.trim().is_empty()) {
            bail!(
                "question {} is empty; every question needs words",
                blank + 1
            );
        }
        Self::new(common, &inputs, Request::Ask { questions })
    }

    fn new(common: &DescribeArgs, inputs: &[String], request: Request) -> anyhow::Result<Self> {
        let DescribeArgs {
            generation,
            filter,
            model,
            output,
            resume,
            verbosity,
        } = common;
        Ok(Self {
            describe: Describe {
                inputs: filter.spec(inputs),
                request,
                generation: generation.options(),
                results: results_to(output, *resume)?,
                store: None,
                xmp: None,
            },
            model: model.settings(),
            verbosity: *verbosity,
        })
    }
}

/// What `vlm dedup` compares.
pub enum DedupFrom {
    /// The images given, embedded (or read from the cache) and compared exactly.
    Inputs(InputSpec),
    /// `--in`: the rows of a database table, through its index.
    Database(Address),
}

/// `vlm dedup`.
pub struct DedupSettings {
    pub source: DedupFrom,
    pub threshold: f32,
    pub model: ModelSettings,
    pub format: Format,
    /// The groups to this file, else to standard output.
    pub output: Option<PathBuf>,
    /// `--report`: the review page.
    pub page: Option<PageOptions>,
    pub organize: Option<OrganizeSettings>,
    pub verbosity: Verbosity,
}

impl DedupSettings {
    pub fn resolve(args: &DedupArgs) -> anyhow::Result<Self> {
        let DedupArgs {
            inputs,
            threshold,
            in_database,
            table,
            filter,
            model,
            output: OutputArgs { format, output },
            report,
            organize,
            dest,
            dry_run,
            verbosity,
        } = args;
        let format = Format::for_output(format.map(Format::from), output.as_deref())?;
        if matches!(format, Format::Csv | Format::Tsv) {
            bail!("vlm dedup writes table, json or jsonl; name the output .jsonl or .json, or pass --format");
        }
        if !(-1.0..=1.0).contains(threshold) {
            return Err(vlm::dedup::DedupError::Threshold(*threshold).into());
        }
        let source = match in_database {
            Some(url) => DedupFrom::Database(address(url, table.as_deref())?),
            None => DedupFrom::Inputs(filter.spec(inputs)),
        };
        let page = match report {
            Some(page) => {
                let here = std::env::current_dir().context(
                    "cannot read the current folder; run vlm dedup from a folder that exists",
                )?;
                let mut options = PageOptions::new(page.clone(), vec![here]);
                options.title = "vlm dedup".to_string();
                options.max_pixels = review::max_pixels(model.max_megapixels);
                Some(options)
            }
            None => None,
        };
        Ok(Self {
            source,
            threshold: *threshold,
            model: model.settings(),
            format,
            output: output.clone(),
            page,
            organize: match (organize, dest) {
                (Some(mode), Some(dest)) => Some(OrganizeSettings {
                    dest: dest.clone(),
                    mode: (*mode).into(),
                    dry_run: *dry_run,
                }),
                _ => None,
            },
            verbosity: *verbosity,
        })
    }
}

impl GenerationArgs {
    /// The generation settings these flags ask for; the rest as transformers defaults them.
    pub fn options(&self) -> GenerationOptions {
        let GenerationArgs {
            beams,
            max_new_tokens,
        } = self;
        GenerationOptions {
            num_beams: usize::try_from(*beams).unwrap_or(1),
            max_new_tokens: max_new_tokens.and_then(|n| usize::try_from(n).ok()),
            ..GenerationOptions::default()
        }
    }
}

/// Where results go, and whether `--resume` can keep what is there.
fn results_to(output: &OutputArgs<FormatArg>, resume: bool) -> anyhow::Result<ResultsTo> {
    let OutputArgs { format, output } = output;
    let format = Format::for_output(format.map(Format::from), output.as_deref())?;
    if resume && format != Format::Jsonl {
        bail!(
            "--resume needs JSON Lines output: name the output file .jsonl or pass --format jsonl"
        );
    }
    Ok(ResultsTo {
        path: output.clone(),
        format,
        resume,
    })
}

/// `vlm serve`.
#[cfg(feature = "serve")]
pub struct ServeSettings {
    pub server: vlm::serve::ServeOptions,
    pub model: ModelSettings,
    pub verbosity: Verbosity,
}

#[cfg(feature = "serve")]
impl ServeSettings {
    pub fn resolve(args: &super::ServeArgs) -> anyhow::Result<Self> {
        let super::ServeArgs {
            host,
            port,
            api_key_file,
            max_batch,
            max_wait_ms,
            queue,
            max_request_mib,
            timeout_s,
            model,
            verbosity,
        } = args;
        if !(*timeout_s > 0.0 && timeout_s.is_finite()) {
            bail!("--timeout-s must be a positive number of seconds, got {timeout_s}");
        }
        let api_key = api_key_file
            .as_deref()
            .map(vlm::serve::ApiKey::read)
            .transpose()?;
        let mut model = model.settings();
        model.pipeline.batch_size = usize::try_from(*max_batch).context("--max-batch too large")?;
        Ok(Self {
            server: vlm::serve::ServeOptions {
                addr: std::net::SocketAddr::new(*host, *port),
                max_wait: Duration::from_millis(*max_wait_ms),
                queue: usize::try_from(*queue).context("--queue too large")?,
                timeout: Duration::from_secs_f64(*timeout_s),
                max_request_bytes: usize::try_from(max_request_mib << 20)
                    .context("--max-request-mib too large")?,
                api_key,
            },
            model,
            verbosity: *verbosity,
        })
    }
}
