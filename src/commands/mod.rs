//! One module per subcommand; this one holds what they share: opening the model and the
//! cache, finding the inputs, progress and small report helpers.

pub mod bench;
pub mod classify;
mod database;
pub mod dedup;
pub mod docs;
pub mod embed;
pub mod eval;
pub mod fit;
pub mod models;
mod printer;
pub mod report;
pub mod search;

pub use printer::Printer;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::cli::{InputArgs, ModelArgs};
use vlm::cache::EmbeddingCache;
use vlm::device;
use vlm::embedder::{self, Embedded};
use vlm::fewshot::{self, TipAdapterCache};
use vlm::inputs::{self, Event, FilesFrom, Input, Source};
use vlm::labels::PromptSet;
use vlm::output::Format;
use vlm::pipeline::{PipelineOptions, PipelineStats};
use vlm::preprocess::DecodeOptions;
use vlm::source::{self, HubOptions, ModelFiles};
use vlm::Checkpoint;

/// Set by the first Ctrl-C (main installs the handler); the pipeline then finishes the
/// batch in hand and stops.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Every input was handled.
pub const EXIT_OK: u8 = 0;
/// The run finished, but at least one input failed.
pub const EXIT_SOME_FAILED: u8 = 1;
/// Nothing useful could be done: bad arguments, unusable model, unwritable output.
pub const EXIT_ERROR: u8 = 2;
/// Stopped by Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// A checkpoint resolved to local files and loaded.
pub struct Model {
    pub files: ModelFiles,
    pub classifier: Checkpoint,
}

/// Resolves `--model` (local directory, alias or hub repo) and loads it on `--device`.
pub fn load_model(args: &ModelArgs) -> anyhow::Result<Model> {
    if !(args.max_megapixels > 0.0 && args.max_megapixels.is_finite()) {
        bail!(
            "--max-megapixels must be a positive number, got {}",
            args.max_megapixels
        );
    }
    if let Some(threads) = args.threads {
        // candle reads RAYON_NUM_THREADS for every matrix multiply; set before any worker
        // thread exists, so nothing reads the environment concurrently.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    let files = source::resolve(
        &args.spec,
        args.revision.as_deref(),
        &HubOptions::from_env(),
    )?;
    let device = device::select(args.device.into())?;
    let options = vlm::model::LoadOptions {
        pack_dir: if args.no_pack_cache {
            None
        } else {
            vlm::model::default_pack_dir()
        },
        bf16_kernel: bf16_kernel()?,
    };
    let mut classifier = Checkpoint::load_with(&files, &device, args.dtype.into(), &options)?;
    let mut decode = DecodeOptions::with_max_megapixels(args.max_megapixels)
        .with_allow_truncated(args.allow_truncated);
    if args.jpeg_downscale {
        decode = decode.with_jpeg_downscale(classifier.preprocessor().config());
    }
    classifier.set_decode_options(decode);
    Ok(Model { files, classifier })
}

/// Environment variable that picks the CPU's bf16 kernel (`amx` or `avx512bf16`) instead
/// of the fastest one present: to measure or test the AVX512-BF16 kernel on a CPU with AMX.
pub const BF16_KERNEL_ENV: &str = "VLM_BF16_KERNEL";

/// The bf16 kernel named by [`BF16_KERNEL_ENV`], if set.
pub fn bf16_kernel() -> anyhow::Result<Option<vlm::model::Bf16Kernel>> {
    match std::env::var(BF16_KERNEL_ENV) {
        Ok(name) if !name.is_empty() => name
            .parse()
            .map(Some)
            .map_err(|e: String| anyhow::anyhow!("{BF16_KERNEL_ENV}: {e}, or unset it")),
        _ => Ok(None),
    }
}

/// Opens the embedding cache when `--cache` was given.
pub fn open_cache(args: &ModelArgs, model: &Model) -> anyhow::Result<Option<EmbeddingCache>> {
    let Some(dir) = &args.cache else {
        return Ok(None);
    };
    let dir = dir
        .clone()
        .or_else(EmbeddingCache::default_dir)
        .context("this system has no user cache directory; pass --cache=DIR")?;
    Ok(Some(EmbeddingCache::open(
        &dir,
        embedder::cache_namespace(&model.files, &model.classifier),
    )?))
}

/// Batch size, decoding threads, and Ctrl-C.
pub fn pipeline_options(args: &ModelArgs) -> PipelineOptions {
    PipelineOptions {
        batch_size: usize::try_from(args.batch_size).unwrap_or(16),
        workers: args
            .workers
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or_else(|| PipelineOptions::default().workers),
        cancel: Some(&INTERRUPTED),
    }
}

/// Warns about each prompt cut to the model's context.
pub fn warn_truncated(printer: &Printer, prompts: &[String], truncated: &[bool], context: usize) {
    for (prompt, _) in prompts.iter().zip(truncated).filter(|(_, &cut)| cut) {
        printer.warn(format_args!(
            "prompt {prompt:?} is longer than the model's {context} tokens and was truncated"
        ));
    }
}

/// The inputs found, and what could not be used.
#[derive(Default)]
pub struct Found {
    pub inputs: Vec<Input>,
    /// Inputs that exist by name but cannot be used: (displayed path, message).
    pub unreadable: Vec<(String, String)>,
    /// Entries skipped (not images, hidden, other shards...).
    pub skipped: usize,
    /// Entries that failed, including those without a path of their own.
    pub failed: usize,
}

/// Walks the inputs; skips (with `--verbose`) and per-entry errors are reported as they come.
pub fn find_inputs(paths: &[String], args: &InputArgs, printer: &Printer) -> anyhow::Result<Found> {
    let options = args.options();
    let files_from = args.files_from.as_ref().map(FilesFrom::from_arg);
    let mut found = Found::default();
    for event in inputs::discover(paths, files_from, &options)? {
        match event {
            Event::Input(input) => found.inputs.push(input),
            Event::Skipped { path, reason } => {
                found.skipped += 1;
                printer.detail(format_args!("skipped {}: {reason}", path.display()));
            }
            Event::Error(err) => {
                found.failed += 1;
                printer.error(&err);
                if let Some(path) = err.subject() {
                    found.unreadable.push((path, err.to_string()));
                }
            }
        }
    }
    Ok(found)
}

/// The inputs as a lazy stream, for `--files-from -`: each is handed to the pipeline as
/// it is read, so results come back while stdin stays open. Skips are reported with
/// `--verbose`; an entry that names a path but cannot be used goes on as an input, so it
/// fails in order with an error record of its own; other errors are printed and counted.
pub fn stream_inputs(
    paths: &[String],
    args: &InputArgs,
    printer: &Printer,
    failed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> anyhow::Result<impl Iterator<Item = Input> + Send> {
    let options = args.options();
    let files_from = args.files_from.as_ref().map(FilesFrom::from_arg);
    let printer = printer.clone();
    let events = inputs::discover(paths, files_from, &options)?;
    Ok(events.filter_map(move |event| match event {
        Event::Input(input) => Some(input),
        Event::Skipped { path, reason } => {
            printer.detail(format_args!("skipped {}: {reason}", path.display()));
            None
        }
        Event::Error(err) => match err.subject() {
            Some(display) => Some(Input {
                source: if display.starts_with("http://") || display.starts_with("https://") {
                    Source::Url(display.clone())
                } else {
                    Source::File(display.clone().into())
                },
                display,
            }),
            None => {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                printer.error(&err);
                None
            }
        },
    }))
}

/// The process's peak resident set size in MiB, where the OS reports it (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn peak_memory() -> Option<String> {
    peak_rss_mib().map(|mib| format!("{mib:.1} MiB"))
}

/// `--output` (buffered) or stdout, and how messages name it.
pub fn output_writer(path: Option<&Path>) -> anyhow::Result<(Box<dyn std::io::Write>, String)> {
    Ok(match path {
        Some(path) => (
            Box::new(
                std::fs::File::create(path)
                    .map(std::io::BufWriter::new)
                    .with_context(|| format!("cannot open {} for writing", path.display()))?,
            ),
            path.display().to_string(),
        ),
        None => (
            Box::new(std::io::stdout().lock()),
            "standard output".to_string(),
        ),
    })
}

pub fn write_failed(out_name: &str) -> String {
    format!("cannot write results to {out_name}; free some space or choose another --output (every line written so far is complete)")
}

fn seconds(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

/// With `--verbose`: how much work the image encoder did and what the cache saved.
pub fn report_encoder(printer: &Printer, stats: &PipelineStats, cache: Option<&EmbeddingCache>) {
    printer.detail(format_args!(
        "image encoder ran on {} images ({} embeddings reused from the cache); it waited {} for input and ran {}",
        stats.encoded,
        stats.reused,
        seconds(stats.waiting),
        seconds(stats.encoding)
    ));
    if let Some(peak) = peak_memory() {
        printer.detail(format_args!("peak memory (resident): {peak}"));
    }
    if let Some(cache) = cache {
        let c = cache.stats();
        printer.detail(format_args!(
            "cache {}: {} hits, {} misses, {} written",
            cache.dir().display(),
            c.hits,
            c.misses,
            c.writes
        ));
    }
}

/// The loaded model and cache of a command that embeds images, and the run skeleton they
/// share: progress, per-file failures, the cache warning and the encoder report.
pub struct Session {
    pub printer: Printer,
    pub model: Model,
    pub cache: Option<EmbeddingCache>,
    options: PipelineOptions,
}

/// Says (with `--verbose`) where the packed weights came from; warns when they could not
/// be kept, since every later start then packs again.
pub fn report_pack(printer: &Printer, status: &vlm::model::PackStatus) {
    use vlm::model::PackStatus;
    match status {
        PackStatus::Off => {}
        PackStatus::Loaded(path) => printer.detail(format_args!(
            "packed weights mapped from {}",
            path.display()
        )),
        PackStatus::Written(path) => {
            printer.detail(format_args!("packed weights written to {}", path.display()))
        }
        PackStatus::Rebuilt { path, reason } => printer.detail(format_args!(
            "packed weights in {} were not used ({reason}); packed again and rewritten",
            path.display()
        )),
        PackStatus::NotWritten { path, reason } => printer.warn(format_args!(
            "cannot keep the packed weights in {} ({reason}), so every start packs them again; \
             set {} to a writable directory or pass --no-pack-cache",
            path.display(),
            vlm::model::PACK_DIR_ENV
        )),
    }
}

impl Session {
    /// Loads `--model` and opens `--cache`.
    pub fn open(args: &ModelArgs, printer: Printer) -> anyhow::Result<Self> {
        let started = std::time::Instant::now();
        let model = load_model(args)?;
        // Spark and Ray workers count these lines to check that a model loads once per worker.
        printer.detail(format_args!(
            "loaded model {} in {}",
            model.files.id,
            seconds(started.elapsed())
        ));
        report_pack(&printer, model.classifier.model().pack_status());
        let cache = open_cache(args, &model)?;
        Ok(Self {
            printer,
            model,
            cache,
            options: pipeline_options(args),
        })
    }

    pub fn classifier(&self) -> &Checkpoint {
        &self.model.classifier
    }

    /// Batch size, decoding threads and Ctrl-C, as the flags set them.
    pub fn options(&self) -> PipelineOptions {
        self.options
    }

    /// Embeds `inputs` with a progress bar of `unit`s, reporting each failed input, and
    /// hands every batch to `sink` in input order. Returns the pipeline's counts; the caller
    /// says what an interrupted run leaves behind.
    pub fn embed<S, X>(
        &self,
        inputs: Vec<Input>,
        unit: &str,
        sink: S,
    ) -> anyhow::Result<PipelineStats>
    where
        S: FnMut(&Printer, Vec<Embedded>) -> Result<(), X>,
        X: From<vlm::Error>,
        anyhow::Error: From<X>,
    {
        let len = inputs.len();
        self.embed_stream(inputs.into_iter(), Some(len), unit, sink)
    }

    /// [`Session::embed`] over inputs that arrive as the run goes (a list on stdin): each
    /// batch is handed on as soon as the input pauses, and the progress bar has no total.
    pub fn embed_stream<I, S, X>(
        &self,
        inputs: I,
        len: Option<usize>,
        unit: &str,
        mut sink: S,
    ) -> anyhow::Result<PipelineStats>
    where
        I: Iterator<Item = Input> + Send,
        S: FnMut(&Printer, Vec<Embedded>) -> Result<(), X>,
        X: From<vlm::Error>,
        anyhow::Error: From<X>,
    {
        // A copy carries the progress bar, so the sink may borrow the session meanwhile.
        let mut printer = self.printer.clone();
        if let Some(len) = len {
            printer.start_progress(len, unit);
        }
        let progress = &printer;
        let summary = embedder::embed_inputs(
            &self.model.classifier,
            self.cache.as_ref(),
            inputs,
            self.options,
            |batch: Vec<Embedded>| {
                for done in &batch {
                    if let Err(err) = &done.embedding {
                        progress.failure(&done.input.display, err);
                    }
                }
                let count = batch.len();
                sink(progress, batch)?;
                progress.advance(count);
                Ok::<(), X>(())
            },
        );
        printer.finish_progress();
        let summary = summary?;
        if let Some(err) = &summary.cache_error {
            self.printer.warn(err);
        }
        Ok(summary.stats)
    }

    /// With `--verbose`: the encoder's work and the cache's counts.
    pub fn report(&self, stats: &PipelineStats) {
        report_encoder(&self.printer, stats, self.cache.as_ref());
    }

    /// Reads and embeds `--examples` for `prompts`' classes, reporting what could not be
    /// used; `None` when Ctrl-C stopped it.
    pub fn examples(
        &self,
        dir: &Path,
        prompts: &PromptSet,
    ) -> anyhow::Result<Option<TipAdapterCache>> {
        let printer = &self.printer;
        let examples = fewshot::load_examples(
            self.classifier(),
            self.cache.as_ref(),
            dir,
            &prompts.classes,
            self.options,
        )?;
        if examples.summary.stats.cancelled {
            printer.error("interrupted while reading the examples; nothing was labelled");
            return Ok(None);
        }
        for err in &examples.unreadable {
            printer.error(format_args!("example left out: {err}"));
        }
        for (display, err) in &examples.failed {
            printer.failure(display, &format_args!("example left out: {err}"));
        }
        for (path, reason) in &examples.skipped {
            printer.detail(format_args!("skipped example {}: {reason}", path.display()));
        }
        if let Some(err) = &examples.summary.cache_error {
            printer.warn(err);
        }
        let counts = examples.cache.counts();
        printer.note(format_args!(
            "{} examples for {} of {} labels from {}",
            examples.cache.len(),
            counts.iter().filter(|&&n| n > 0).count(),
            counts.len(),
            dir.display()
        ));
        if !examples.without_examples.is_empty() {
            printer.warn(format_args!(
                "no examples for {}: scored by the prompt alone, so chosen less often than labels with examples",
                examples.without_examples.join(", ")
            ));
        }
        Ok(Some(examples.cache))
    }
}

/// The output format: as asked, else from the output file's extension, else a table.
pub fn output_format(asked: Option<Format>, output: Option<&Path>) -> anyhow::Result<Format> {
    if let Some(format) = asked {
        return Ok(format);
    }
    let Some(path) = output else {
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
