//! One module per subcommand; this one holds what they share: opening the model and the
//! cache, finding the inputs, progress and small report helpers.

pub mod bench;
pub mod classify;
pub mod embed;
pub mod eval;
pub mod fit;
pub mod models;
pub mod report;
pub mod search;

use std::io::{self, IsTerminal};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{DeviceArg, InputArgs, ModelArgs};
use crate::INTERRUPTED;
use vlm::cache::EmbeddingCache;
use vlm::device::{self, DeviceKind};
use vlm::embedder;
use vlm::inputs::{self, Event, FilesFrom, Input};
use vlm::output::Format;
use vlm::pipeline::{PipelineOptions, PipelineStats};
use vlm::preprocess::DecodeOptions;
use vlm::source::{self, HubOptions, ModelFiles};
use vlm::Classifier;

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
    pub classifier: Classifier,
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
    let device = device::select(match args.device {
        DeviceArg::Auto => DeviceKind::Auto,
        DeviceArg::Cpu => DeviceKind::Cpu,
        DeviceArg::Cuda => DeviceKind::Cuda,
        DeviceArg::Metal => DeviceKind::Metal,
    })?;
    let mut classifier = Classifier::load_as(&files, &device, args.dtype.into())?;
    let mut decode = DecodeOptions::with_max_megapixels(args.max_megapixels);
    if args.jpeg_downscale {
        decode = decode.with_jpeg_downscale(classifier.preprocessor().config());
    }
    classifier.set_decode_options(decode);
    Ok(Model { files, classifier })
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

/// Prints a warning for each prompt cut to the model's context.
pub fn warn_truncated(prompts: &[String], truncated: &[bool], context: usize) {
    for (prompt, _) in prompts.iter().zip(truncated).filter(|(_, &cut)| cut) {
        eprintln!(
            "vlm: warning: prompt {prompt:?} is longer than the model's {context} tokens and was truncated"
        );
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

/// Walks the inputs; skips (with `verbose`) and per-entry errors are reported as they come.
pub fn find_inputs(paths: &[String], args: &InputArgs, verbose: bool) -> anyhow::Result<Found> {
    let options = args.options();
    let files_from = args.files_from.as_ref().map(FilesFrom::from_arg);
    let mut found = Found::default();
    for event in inputs::discover(paths, files_from, &options)? {
        match event {
            Event::Input(input) => found.inputs.push(input),
            Event::Skipped { path, reason } => {
                found.skipped += 1;
                if verbose {
                    eprintln!("vlm: skipped {}: {reason}", path.display());
                }
            }
            Event::Error(err) => {
                found.failed += 1;
                eprintln!("vlm: {err}");
                if let Some(path) = err.subject() {
                    found.unreadable.push((path, err.to_string()));
                }
            }
        }
    }
    Ok(found)
}

/// A progress bar on a terminal's stderr, hidden otherwise or with `quiet`.
pub fn progress_bar(len: usize, quiet: bool, unit: &str) -> ProgressBar {
    if quiet || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    let template = format!("{{bar:30}} {{pos}}/{{len}} {unit}  {{per_sec}}  ETA {{eta}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// Prints a per-input failure without breaking the progress bar; the message names the
/// input unless it already does.
pub fn report_failure(progress: &ProgressBar, display: &str, err: &vlm::Error) {
    let message = err.to_string();
    progress.suspend(|| {
        if message.contains(display) {
            eprintln!("vlm: {message}");
        } else {
            eprintln!("vlm: {display}: {message}");
        }
    });
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

pub fn write_failed(out_name: &str) -> String {
    format!("cannot write results to {out_name}; free some space or choose another --output (every line written so far is complete)")
}

fn seconds(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

/// With --verbose: how much work the image encoder did and what the cache saved.
pub fn report_encoder(stats: &PipelineStats, cache: Option<&EmbeddingCache>) {
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
    if let Some(cache) = cache {
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
