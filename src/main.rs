//! The `vlm` command: parses arguments and wires them to the library.

mod cli;

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use cli::{ClassifyArgs, Cli, Command, DeviceArg};
use vlm::cache::{CacheNamespace, ContentKey, EmbeddingCache};
use vlm::device::{self, DeviceKind};
use vlm::inputs::{self, Event, FilesFrom, Input, InputOptions, Source};
use vlm::labels::{self, PromptSet, Template, Templates};
use vlm::organize::Organizer;
use vlm::output::{self, Format, ImageReport, LabelResult, Outcome, ReportWriter};
use vlm::pipeline::{self, Done, PipelineOptions, Prepared};
use vlm::preprocess::DecodeOptions;
use vlm::source::{self, HubOptions, ModelFiles};
use vlm::{Classifier, PromptEmbeddings};

/// Every input was classified.
const EXIT_OK: u8 = 0;
/// The run finished, but at least one input failed.
const EXIT_SOME_FAILED: u8 = 1;
/// Nothing useful could be done: bad arguments, unusable model, unwritable output.
const EXIT_ERROR: u8 = 2;
/// Stopped by Ctrl-C (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

/// Set by the first Ctrl-C; the pipeline then finishes the batch in hand and stops.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Larger inputs are refused before decoding: no photo is this big, a hostile file may be.
const MAX_INPUT_BYTES: u64 = 512 << 20;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A second Ctrl-C does not wait for the batch in hand. If no handler can be set (an
    // embedding program owns SIGINT), Ctrl-C keeps its default effect; output lines already
    // written stay whole either way.
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
    });
    let result = match cli.command {
        Command::Classify(args) => classify(&args),
        Command::Models => models(),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) if is_broken_pipe(&err) => ExitCode::from(EXIT_OK),
        Err(err) => {
            eprintln!("vlm: error: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// A closed stdout (`vlm ... | head -1`) ends the run quietly, as other Unix tools do.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// The output format: as asked, else from the output file's extension, else a table.
fn output_format(args: &ClassifyArgs) -> anyhow::Result<Format> {
    if let Some(format) = args.format {
        return Ok(format.into());
    }
    let Some(path) = &args.output else {
        return Ok(Format::Table);
    };
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    Ok(match extension.as_deref() {
        Some("jsonl" | "ndjson") => Format::Jsonl,
        Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some("tsv" | "tab") => Format::Tsv,
        Some("txt") => Format::Table,
        _ => bail!(
            "cannot tell the format of {} from its extension; name it .jsonl, .json, .csv or .tsv, or pass --format",
            path.display()
        ),
    })
}

/// Counters for the summary line.
#[derive(Default)]
struct Tally {
    labelled: usize,
    failed: usize,
    skipped: usize,
}

fn classify(args: &ClassifyArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let labels = match (&args.labels, &args.labels_file) {
        (_, Some(path)) => labels::read_file(path)?,
        (Some(list), None) => labels::parse_list(list)?,
        (None, None) => return Err(labels::LabelError::None.into()),
    };
    let templates = match &args.templates {
        Some(set) => Templates::from_arg(set)?,
        None => Templates::single(Template::new(&args.template)?),
    };
    let prompts = PromptSet::new(&labels, &templates)?;
    let format = output_format(args)?;
    if args.resume && format != Format::Jsonl {
        bail!(
            "--resume needs JSON Lines output: name the output file .jsonl or pass --format jsonl"
        );
    }
    if let Some(p) = args.min_probability {
        if !(0.0..=1.0).contains(&p) {
            bail!("--min-probability must be between 0 and 1, got {p}");
        }
    }

    let mut tally = Tally::default();
    let (mut todo, unreadable) = find_inputs(args, &mut tally)?;
    if let Some(path) = args.output.as_ref().filter(|_| args.resume) {
        let done = output::resume_jsonl(path)
            .with_context(|| format!("cannot read {} to resume", path.display()))?;
        let before = todo.len();
        todo.retain(|input| !done.contains(&input.display));
        if args.verbose {
            eprintln!(
                "vlm: resuming: {} inputs already in {}",
                before - todo.len(),
                path.display()
            );
        }
    }

    let files = source::resolve(
        &args.model,
        args.revision.as_deref(),
        &HubOptions::from_env(),
    )?;
    let device = device::select(match args.device {
        DeviceArg::Auto => DeviceKind::Auto,
        DeviceArg::Cpu => DeviceKind::Cpu,
        DeviceArg::Cuda => DeviceKind::Cuda,
        DeviceArg::Metal => DeviceKind::Metal,
    })?;
    let mut classifier = Classifier::load(&files, &device)?;
    if !(args.max_megapixels > 0.0 && args.max_megapixels.is_finite()) {
        bail!(
            "--max-megapixels must be a positive number, got {}",
            args.max_megapixels
        );
    }
    classifier.set_decode_options(DecodeOptions::with_max_megapixels(args.max_megapixels));
    let classifier = classifier;
    let text = classifier.embed_classes(&prompts)?;
    if !args.quiet {
        for (prompt, _) in prompts
            .prompts
            .iter()
            .zip(&text.truncated)
            .filter(|(_, &cut)| cut)
        {
            eprintln!(
                "vlm: warning: prompt {prompt:?} is longer than the model's {} tokens and was truncated",
                classifier.model().text_context()
            );
        }
    }

    let cache = match &args.cache {
        None => None,
        Some(dir) => {
            let dir = dir
                .clone()
                .or_else(EmbeddingCache::default_dir)
                .context("this system has no user cache directory; pass --cache=DIR")?;
            Some(EmbeddingCache::open(
                &dir,
                cache_namespace(&files, &classifier),
            )?)
        }
    };
    let organizer = match (args.organize, &args.dest) {
        (Some(mode), Some(dest)) => Some(Organizer::new(dest, mode.into(), args.dry_run)?),
        _ => None,
    };

    let out_name = args.output.as_ref().map_or_else(
        || "standard output".to_string(),
        |p| p.display().to_string(),
    );
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            output::open_output(path, args.resume)
                .with_context(|| format!("cannot open {} for writing", path.display()))?,
        ),
        None => Box::new(io::stdout().lock()),
    };
    let progress = if args.quiet || !io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(todo.len() as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {pos}/{len} images  {per_sec}  ETA {eta}")
        {
            bar.set_style(style);
        }
        bar
    };

    let mut writer = ReportWriter::new(out, format);
    for report in &unreadable {
        writer
            .write(report)
            .with_context(|| write_failed(&out_name))?;
    }
    let mut sink = Sink {
        args,
        prompts: &prompts,
        text: &text,
        classifier: &classifier,
        cache: cache.as_ref(),
        organizer,
        writer,
        progress: &progress,
        tally: &mut tally,
        cache_write_failed: false,
        out_name: &out_name,
    };
    let options = PipelineOptions {
        batch_size: usize::try_from(args.batch_size).unwrap_or(16),
        workers: args
            .workers
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or_else(|| PipelineOptions::default().workers),
        cancel: Some(&INTERRUPTED),
    };
    let embedding_dim = classifier.config().projection_dim;
    let stats = pipeline::run(
        todo.into_iter(),
        options,
        |input: &Input| load(input, &classifier, cache.as_ref(), embedding_dim),
        |pixels: &[Vec<f32>]| classifier.embed_pixels_rows(pixels),
        |batch| sink.write(batch),
    )?;
    let Sink { writer, .. } = sink;
    writer.finish().with_context(|| write_failed(&out_name))?;
    progress.finish_and_clear();
    if stats.cancelled {
        eprintln!(
            "vlm: interrupted: {} results written to {out_name}; the rest were not labelled{}",
            tally.labelled + tally.failed,
            if args.output.is_some() {
                "; run the same command with --resume to finish"
            } else {
                ""
            }
        );
        return Ok(EXIT_INTERRUPTED);
    }

    if !args.quiet {
        eprintln!(
            "vlm: labelled {}, failed {}, skipped {} in {:.1} s",
            tally.labelled,
            tally.failed,
            tally.skipped,
            started.elapsed().as_secs_f64()
        );
    }
    if args.verbose {
        eprintln!(
            "vlm: image encoder ran on {} images ({} embeddings reused from the cache); it waited {} for input and ran {}",
            stats.encoded,
            stats.reused,
            seconds(stats.waiting),
            seconds(stats.encoding)
        );
        if let Some(peak) = peak_memory() {
            eprintln!("vlm: peak memory (resident): {peak}");
        }
        if let Some(cache) = &cache {
            let c = cache.stats();
            eprintln!(
                "vlm: cache {}: {} hits, {} misses, {} written",
                cache.dir().display(),
                c.hits,
                c.misses,
                c.writes
            );
        }
    }
    Ok(if tally.failed > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    })
}

/// The process's peak resident set size, where the OS reports it (Linux).
fn peak_memory() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{:.1} MiB", kib / 1024.0))
}

fn write_failed(out_name: &str) -> String {
    format!("cannot write results to {out_name}; free some space or choose another --output (every line written so far is complete)")
}

fn seconds(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

/// Walks the inputs; skips and per-entry errors are reported as they come. Inputs that
/// exist by name but cannot be used come back as failure reports for the output.
fn find_inputs(
    args: &ClassifyArgs,
    tally: &mut Tally,
) -> anyhow::Result<(Vec<Input>, Vec<ImageReport>)> {
    let options = InputOptions {
        max_depth: args.max_depth,
        hidden: args.hidden,
        extensions: args.ext.clone(),
        exclude: args.exclude.clone(),
        shard: args.shard,
        null_separated: args.null,
    };
    let files_from = args.files_from.as_ref().map(FilesFrom::from_arg);
    let mut found = Vec::new();
    let mut unreadable = Vec::new();
    for event in inputs::discover(&args.inputs, files_from, &options)? {
        match event {
            Event::Input(input) => found.push(input),
            Event::Skipped { path, reason } => {
                tally.skipped += 1;
                if args.verbose {
                    eprintln!("vlm: skipped {}: {reason}", path.display());
                }
            }
            Event::Error(err) => {
                tally.failed += 1;
                eprintln!("vlm: {err}");
                if let Some(path) = err.subject() {
                    unreadable.push(ImageReport {
                        path,
                        outcome: Outcome::Failed(err.to_string()),
                        uncertain: None,
                        labels: None,
                    });
                }
            }
        }
    }
    Ok((found, unreadable))
}

/// What makes cached embeddings of this checkpoint valid: the exact weights file (a hub
/// snapshot path names its commit) and how pixels are prepared.
fn cache_namespace(files: &ModelFiles, classifier: &Classifier) -> CacheNamespace {
    let weights = files
        .weights
        .canonicalize()
        .unwrap_or_else(|_| files.weights.clone());
    let stamp = std::fs::metadata(&weights)
        .map(|m| {
            let modified = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{} bytes, modified {modified}", m.len())
        })
        .unwrap_or_default();
    let fingerprint = format!(
        "weights {} ({stamp}); preprocessing {:?}; f32",
        weights.display(),
        classifier.preprocessor().config()
    );
    CacheNamespace::new(&files.id, files.revision.as_deref(), &fingerprint)
}

/// Worker-side work for one input: read it, reuse a cached embedding, or decode and
/// preprocess it.
fn load(
    input: &Input,
    classifier: &Classifier,
    cache: Option<&EmbeddingCache>,
    embedding_dim: usize,
) -> Result<Prepared<Option<ContentKey>>, vlm::Error> {
    let bytes = inputs::read_bytes(&input.source, MAX_INPUT_BYTES)?;
    let key = cache.map(|_| EmbeddingCache::key(&bytes));
    if let (Some(cache), Some(key)) = (cache, &key) {
        if let Some(embedding) = cache.get(key).filter(|e| e.len() == embedding_dim) {
            return Ok(Prepared::Embedding(embedding));
        }
    }
    let pixels = classifier.pixels_from_bytes(&bytes, Path::new(&input.display))?;
    Ok(Prepared::Pixels(pixels, key))
}

/// Turns finished batches into reports, cache entries and placements.
struct Sink<'a, W: Write> {
    args: &'a ClassifyArgs,
    prompts: &'a PromptSet,
    text: &'a PromptEmbeddings,
    classifier: &'a Classifier,
    cache: Option<&'a EmbeddingCache>,
    organizer: Option<Organizer>,
    writer: ReportWriter<W>,
    progress: &'a ProgressBar,
    tally: &'a mut Tally,
    cache_write_failed: bool,
    out_name: &'a str,
}

impl<W: Write> Sink<'_, W> {
    fn write(&mut self, batch: Vec<Done<Input, Option<ContentKey>>>) -> anyhow::Result<()> {
        let rows: Vec<&[f32]> = batch
            .iter()
            .filter_map(|d| d.embedding.as_ref().ok().map(Vec::as_slice))
            .collect();
        let mut ranked = self.classifier.rank_rows(&rows, self.text)?.into_iter();
        for done in &batch {
            let report = match &done.embedding {
                Ok(embedding) => {
                    self.remember(done.key.as_ref().and_then(Option::as_ref), embedding);
                    let scores = ranked
                        .next()
                        .context("internal error: fewer rankings than images")?;
                    self.tally.labelled += 1;
                    self.report(&done.item, &scores)
                }
                Err(err) => {
                    self.tally.failed += 1;
                    let message = err.to_string();
                    self.progress.suspend(|| {
                        if message.contains(&done.item.display) {
                            eprintln!("vlm: {message}");
                        } else {
                            eprintln!("vlm: {}: {message}", done.item.display);
                        }
                    });
                    ImageReport {
                        path: done.item.display.clone(),
                        outcome: Outcome::Failed(err.to_string()),
                        uncertain: None,
                        labels: None,
                    }
                }
            };
            self.progress
                .suspend(|| self.writer.write(&report))
                .with_context(|| write_failed(self.out_name))?;
            if let Outcome::Ranked(_) = report.outcome {
                self.organize(&done.item, &report)?;
            }
            self.progress.inc(1);
        }
        Ok(())
    }

    fn remember(&mut self, key: Option<&ContentKey>, embedding: &[f32]) {
        let (Some(cache), Some(key)) = (self.cache, key) else {
            return;
        };
        if let Err(err) = cache.put(key, embedding) {
            // A cache that cannot be written costs speed, not results: say so once.
            if !std::mem::replace(&mut self.cache_write_failed, true) {
                self.progress.suspend(|| eprintln!("vlm: warning: {err}"));
            }
        }
    }

    fn report(&self, input: &Input, scores: &[vlm::score::Score]) -> ImageReport {
        let args = self.args;
        let top_k = args
            .top_k
            .map_or(usize::MAX, |k| usize::try_from(k).unwrap_or(usize::MAX));
        let selected = |similarity: f32| args.multi_label.then_some(similarity >= args.threshold);
        let results = scores
            .iter()
            .take(top_k)
            .map(|s| LabelResult {
                label: self.prompts.classes[s.index].name.clone(),
                prompt: self.prompts.first_prompt(s.index).to_string(),
                probability: s.probability,
                similarity: s.similarity,
                selected: selected(s.similarity),
            })
            .collect();
        let labels = args.multi_label.then(|| {
            scores
                .iter()
                .filter(|s| s.similarity >= args.threshold)
                .map(|s| self.prompts.classes[s.index].name.clone())
                .collect()
        });
        let uncertain = args
            .min_probability
            .map(|p| scores.first().is_none_or(|top| top.probability < p));
        ImageReport {
            path: input.display.clone(),
            outcome: Outcome::Ranked(results),
            uncertain,
            labels,
        }
    }

    fn organize(&mut self, input: &Input, report: &ImageReport) -> anyhow::Result<()> {
        let Some(organizer) = &mut self.organizer else {
            return Ok(());
        };
        let Source::File(path) = &input.source else {
            self.progress.suspend(|| {
                eprintln!(
                    "vlm: {}: not organized: only local files can be sorted",
                    input.display
                )
            });
            return Ok(());
        };
        let label = match (&report.labels, &report.outcome) {
            (Some(selected), _) => selected.first().cloned(),
            (None, _) if report.uncertain == Some(true) => None,
            (None, Outcome::Ranked(results)) => results.first().map(|r| r.label.clone()),
            (None, Outcome::Failed(_)) => return Ok(()),
        };
        match organizer.place(path, label.as_deref()) {
            Ok(placement) => {
                if self.args.dry_run || self.args.verbose {
                    self.progress.suspend(|| eprintln!("{placement}"));
                }
            }
            Err(err) => {
                self.tally.failed += 1;
                self.progress.suspend(|| eprintln!("vlm: {err}"));
            }
        }
        Ok(())
    }
}

fn models() -> anyhow::Result<u8> {
    let entries = source::registry::entries()?;
    let mut out = io::stdout().lock();
    let alias_width = entries
        .iter()
        .map(|e| e.alias.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let repo_width = entries
        .iter()
        .map(|e| e.repo.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:<alias_width$}  {:<repo_width$}  {:>5}  {:>5}  LICENSE",
        "ALIAS", "REPO", "SIZE", "DIM"
    )?;
    for e in &entries {
        writeln!(
            out,
            "{:<alias_width$}  {:<repo_width$}  {:>5}  {:>5}  {}",
            e.alias, e.repo, e.image_size, e.embed_dim, e.license
        )?;
    }
    if io::stdout().is_terminal() {
        writeln!(
            out,
            "\nUse one with: vlm classify --model ALIAS IMAGE... --labels ..."
        )?;
    }
    Ok(EXIT_OK)
}
