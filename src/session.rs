//! A model ready to run jobs: the checkpoint resolved (a local directory, an alias or a hub
//! repo) and loaded on its device, its decoding limits set, the embedding cache opened, and
//! the pipeline's sizes. Every command that embeds images opens one with
//! [`Session::open`] and runs its [`Job`]s.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cache::{file_stamp, CacheError, CacheNamespace, EmbeddingCache};
use crate::checkpoint::Checkpoint;
use crate::device::{self, DeviceError, DeviceKind};
use crate::error::Error;
use crate::job::{Job, Level, Progress, Tally};
use crate::model::{Bf16Kernel, Int8Kernel, LoadOptions, PackStatus, Precision};
use crate::pipeline::PipelineOptions;
use crate::preprocess::{DecodeOptions, PreprocessConfig};
use crate::source::registry::Task;
use crate::source::{self, HubOptions, ModelFiles, SourceError};

/// Environment variable that picks the CPU's bf16 kernel (`amx` or `avx512bf16`) instead
/// of the fastest one present: to measure or test the AVX512-BF16 kernel on a CPU with AMX.
pub const BF16_KERNEL_ENV: &str = "VLM_BF16_KERNEL";

/// Environment variable that picks the CPU's int8 kernel (`amx`, `avx512vnni`, `avxvnni`,
/// `avx2` or `portable`) instead of the fastest one present: to measure or test another.
pub const INT8_KERNEL_ENV: &str = "VLM_INT8_KERNEL";

/// Where image embeddings are kept between runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheChoice {
    /// Nowhere.
    Off,
    /// [`EmbeddingCache::default_dir`].
    Default,
    /// This folder.
    Dir(PathBuf),
}

/// Which model, where it runs, and how images flow through it.
#[derive(Debug, Clone)]
pub struct ModelSettings {
    /// A local directory, an alias, or a hub repo id.
    pub spec: String,
    /// A hub revision instead of the default.
    pub revision: Option<String>,
    pub device: DeviceKind,
    /// What the encoders compute in: a float type, or int8 (CPU only).
    pub dtype: Precision,
    /// Keep packed weights between runs ([`crate::model::default_pack_dir`]).
    pub pack_cache: bool,
    pub cache: CacheChoice,
    /// Decode large JPEGs at a fraction of their size.
    pub jpeg_downscale: bool,
    /// Use images whose file stops early.
    pub allow_truncated: bool,
    /// Refuse images larger than this many million pixels.
    pub max_megapixels: f64,
    /// Batch size, decoding threads, Ctrl-C.
    pub pipeline: PipelineOptions,
}

/// Why a model could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("--max-megapixels must be a positive number, got {0}")]
    MaxMegapixels(f64),
    #[error("{BF16_KERNEL_ENV}: {0}, or unset it")]
    Bf16Kernel(String),
    #[error("{INT8_KERNEL_ENV}: {0}, or unset it")]
    Int8Kernel(String),
    #[error("this system has no user cache directory; pass --cache=DIR")]
    NoCacheDir,
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Load(#[from] Error),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// The bf16 kernel named by [`BF16_KERNEL_ENV`], if set.
pub fn bf16_kernel() -> Result<Option<Bf16Kernel>, SessionError> {
    kernel_named_by(BF16_KERNEL_ENV).map_err(SessionError::Bf16Kernel)
}

/// The int8 kernel named by [`INT8_KERNEL_ENV`], if set.
pub fn int8_kernel() -> Result<Option<Int8Kernel>, SessionError> {
    kernel_named_by(INT8_KERNEL_ENV).map_err(SessionError::Int8Kernel)
}

/// The kernel the environment variable `var` names, if set and not empty.
fn kernel_named_by<K: std::str::FromStr<Err = String>>(var: &str) -> Result<Option<K>, String> {
    match std::env::var(var) {
        Ok(name) if !name.is_empty() => name.parse().map(Some),
        _ => Ok(None),
    }
}

/// A loaded checkpoint, its files, the embedding cache and the pipeline's sizes.
pub struct Session {
    pub files: ModelFiles,
    pub checkpoint: Checkpoint,
    pub cache: Option<EmbeddingCache>,
    pub pipeline: PipelineOptions,
}

impl Session {
    /// Loads the model, says (with `--verbose`) how long it took and where its packed
    /// weights came from, and opens the cache.
    pub fn open(settings: &ModelSettings, progress: &dyn Progress) -> Result<Self, SessionError> {
        let started = Instant::now();
        let mut session = Self::load(settings)?;
        say_loaded(progress, &session.files.id, started);
        say_pack(progress, session.checkpoint.model().pack_status());
        session.cache = open_cache(
            &settings.cache,
            cache_namespace(&session.files, &session.checkpoint),
        )?;
        Ok(session)
    }

    /// Loads the model only: no messages, no cache (for prompts and benchmarks).
    pub fn load(settings: &ModelSettings) -> Result<Self, SessionError> {
        // A captioning checkpoint is refused here, before anything is downloaded.
        let files = resolve(settings, source::registry::Task::Classify)?;
        let device = device::select(settings.device)?;
        let mut checkpoint =
            Checkpoint::load_with(&files, &device, settings.dtype, &load_options(settings)?)?;
        checkpoint.set_decode_options(decode_options(settings, checkpoint.preprocessor().config()));
        Ok(Self {
            files,
            checkpoint,
            cache: None,
            pipeline: settings.pipeline,
        })
    }

    /// A job on this checkpoint, with the cache.
    pub fn job(&self) -> Job<'_> {
        Job::new(&self.checkpoint, self.pipeline).with_cache(self.cache.as_ref())
    }

    /// With `--verbose`: how much work the image encoder did and what the cache saved.
    pub fn say_stats(&self, tally: &Tally, progress: &dyn Progress) {
        say_stats(tally, self.cache.as_ref(), progress);
    }
}

/// Checks the settings that need no files and resolves the checkpoint to local files,
/// refusing before any download a checkpoint known to do another task than `task`.
pub(crate) fn resolve(settings: &ModelSettings, task: Task) -> Result<ModelFiles, SessionError> {
    let max_megapixels = settings.max_megapixels;
    if !(max_megapixels > 0.0 && max_megapixels.is_finite()) {
        return Err(SessionError::MaxMegapixels(max_megapixels));
    }
    source::check_task(&settings.spec, task)?;
    Ok(source::resolve(
        &settings.spec,
        settings.revision.as_deref(),
        &HubOptions::from_env(),
    )?)
}

/// Where packed weights are kept, and which bf16 kernel runs.
pub(crate) fn load_options(settings: &ModelSettings) -> Result<LoadOptions, SessionError> {
    Ok(LoadOptions {
        pack_dir: if settings.pack_cache {
            crate::model::default_pack_dir()
        } else {
            None
        },
        bf16_kernel: bf16_kernel()?,
        int8_kernel: int8_kernel()?,
    })
}

/// How images are decoded for a model whose preprocessing is `preprocess`.
pub(crate) fn decode_options(
    settings: &ModelSettings,
    preprocess: &PreprocessConfig,
) -> DecodeOptions {
    let decode = DecodeOptions::with_max_megapixels(settings.max_megapixels)
        .with_allow_truncated(settings.allow_truncated);
    if settings.jpeg_downscale {
        decode.with_jpeg_downscale(preprocess)
    } else {
        decode
    }
}

/// Says (with `--verbose`) how long loading the model took.
pub(crate) fn say_loaded(progress: &dyn Progress, id: &str, started: Instant) {
    // Spark and Ray workers count these lines to check that a model loads once per worker.
    progress.say(
        Level::Detail,
        &format_args!("loaded model {id} in {}", seconds(started.elapsed())),
    );
}

/// With `--verbose`: how much work the image encoder did and what `cache` saved.
pub fn say_stats(tally: &Tally, cache: Option<&EmbeddingCache>, progress: &dyn Progress) {
    let stats = &tally.stats;
    progress.say(
        Level::Detail,
        &format_args!(
            "image encoder ran on {} images ({} embeddings reused from the cache); it waited {} for input and ran {}",
            stats.encoded,
            stats.reused,
            seconds(stats.waiting),
            seconds(stats.encoding)
        ),
    );
    if let Some(mib) = peak_rss_mib() {
        progress.say(
            Level::Detail,
            &format_args!("peak memory (resident): {mib:.1} MiB"),
        );
    }
    if let Some(cache) = cache {
        let c = cache.stats();
        progress.say(
            Level::Detail,
            &format_args!(
                "cache {}: {} hits, {} misses, {} written",
                cache.dir().display(),
                c.hits,
                c.misses,
                c.writes
            ),
        );
    }
}

/// The process's peak resident set size in MiB, where the OS reports it (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn seconds(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

/// The cache `choice` names, opened for `namespace`.
pub(crate) fn open_cache(
    choice: &CacheChoice,
    namespace: CacheNamespace,
) -> Result<Option<EmbeddingCache>, SessionError> {
    let dir = match choice {
        CacheChoice::Off => return Ok(None),
        CacheChoice::Dir(dir) => dir.clone(),
        CacheChoice::Default => EmbeddingCache::default_dir().ok_or(SessionError::NoCacheDir)?,
    };
    Ok(Some(EmbeddingCache::open(&dir, namespace)?))
}

/// Says (with `--verbose`) where the packed weights came from; warns when they could not
/// be kept, since every later start then packs again.
pub(crate) fn say_pack(progress: &dyn Progress, status: &PackStatus) {
    let (level, message) = match status {
        PackStatus::Off => return,
        PackStatus::Loaded(path) => (
            Level::Detail,
            format!("packed weights mapped from {}", path.display()),
        ),
        PackStatus::Written(path) => (
            Level::Detail,
            format!("packed weights written to {}", path.display()),
        ),
        PackStatus::Rebuilt { path, reason } => (
            Level::Detail,
            format!(
                "packed weights in {} were not used ({reason}); packed again and rewritten",
                path.display()
            ),
        ),
        PackStatus::NotWritten { path, reason } => (
            Level::Warning,
            format!(
                "cannot keep the packed weights in {} ({reason}), so every start packs them again; \
                 set {} to a writable directory or pass --no-pack-cache",
                path.display(),
                crate::model::PACK_DIR_ENV
            ),
        ),
    };
    progress.say(level, &message);
}

/// The version of everything between a file's bytes and the pixels the encoder sees that
/// the preprocessing config does not describe: the decoders and their rules. Part of every
/// cache namespace, so raise it whenever decoding changes what it gives or refuses, and
/// embeddings cached before are never served again.
///
/// 1: the `image` crate's decoders, truncated files decoded. 2: JPEG through
/// libjpeg-turbo's decoder (Pillow's pixels), truncated files refused unless
/// `--allow-truncated`, junk between JPEG segments no longer hiding a cut, JPEG memory and
/// scan limits.
pub const PIXEL_PIPELINE_VERSION: u32 = 2;

/// What makes cached embeddings of this checkpoint valid: the exact weights file (a hub
/// snapshot path names its commit), how pixels are decoded ([`PIXEL_PIPELINE_VERSION`]) and
/// prepared, and how the encoder computes.
pub fn cache_namespace(files: &ModelFiles, checkpoint: &Checkpoint) -> CacheNamespace {
    namespace_for_pipeline(files, checkpoint, PIXEL_PIPELINE_VERSION)
}

fn namespace_for_pipeline(
    files: &ModelFiles,
    checkpoint: &Checkpoint,
    pipeline: u32,
) -> CacheNamespace {
    namespace_of(
        files,
        checkpoint.preprocessor().config(),
        &checkpoint.compute_fingerprint(),
        pipeline,
    )
}

/// The cache namespace of encodings made from `files` with this preprocessing, `compute`
/// (what else changes the numbers: family, number type, decoding shortcuts) and pixel
/// `pipeline` version ([`PIXEL_PIPELINE_VERSION`] for new entries).
pub(crate) fn namespace_of(
    files: &ModelFiles,
    preprocess: &PreprocessConfig,
    compute: &str,
    pipeline: u32,
) -> CacheNamespace {
    let weights = files
        .weights
        .canonicalize()
        .unwrap_or_else(|_| files.weights.clone());
    let stamp = file_stamp(&weights);
    let mut fingerprint = format!(
        "weights {} ({stamp}); preprocessing {preprocess:?}; {compute}",
        weights.display(),
    );
    // Version 1 had no mark, so its namespaces stay what they were (and unused).
    if pipeline > 1 {
        fingerprint.push_str(&format!("; pixel pipeline {pipeline}"));
    }
    CacheNamespace::new(&files.id, files.revision.as_deref(), &fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_the_previous_pixel_pipeline_are_misses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/models/tiny-quickgelu");
        let files = ModelFiles::from_dir(&dir).unwrap();
        let checkpoint = Checkpoint::load_with(
            &files,
            &candle_core::Device::Cpu,
            candle_core::DType::F32,
            &Default::default(),
        )
        .unwrap();
        let root = tempfile::tempdir().unwrap();
        let key = EmbeddingCache::key(b"the same bytes");
        let before = namespace_for_pipeline(&files, &checkpoint, PIXEL_PIPELINE_VERSION - 1);
        let old = EmbeddingCache::open(root.path(), before).unwrap();
        old.put(&key, &[0.5; 4]).unwrap();
        assert_eq!(old.get(&key), Some(vec![0.5; 4]));
        let now = EmbeddingCache::open(root.path(), cache_namespace(&files, &checkpoint)).unwrap();
        assert_eq!(
            now.get(&key),
            None,
            "an entry of the previous pipeline was served"
        );
        // The same pipeline finds its own entries.
        now.put(&key, &[0.25; 4]).unwrap();
        let again =
            EmbeddingCache::open(root.path(), cache_namespace(&files, &checkpoint)).unwrap();
        assert_eq!(again.get(&key), Some(vec![0.25; 4]));
    }
}
