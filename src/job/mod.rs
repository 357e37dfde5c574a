//! The labelling job every command runs: read each input once, key it by its content,
//! reuse a cached embedding or decode it on worker threads, encode in batches, and hand the
//! results to a [`Sink`] in input order, a batch at a time, with progress and per-input
//! failures reported through a [`Progress`].
//!
//! ```text
//! inputs ─▶ read bytes ─▶ content key ─▶ skip rule? ─▶ cache hit? ─▶ prepare (decode) ─▶ encode (batches) ─▶ sink
//! ```
//!
//! What is generic, so that a new command is wiring: the inputs ([`Item`]: files and URLs,
//! or bytes a server received), the image side of the model ([`ImageEncoder`]: CLIP's
//! image tower, or another vision encoder), and what happens to the results ([`Sink`]:
//! writers, stores, pages, collectors; [`crate::decide::Labeller`] is a sink that labels
//! each batch and hands the labelled results on to sinks of its own). The content key made
//! from the bytes that were read travels with each result ([`Embedded::key`]), so the
//! cache, the stores and the outputs all use the hash of the bytes that were embedded.

mod sink;

pub use crate::progress::{Level, Progress, Silent};
pub use sink::{Sink, SinkFn};

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use crate::cache::{CacheError, ContentKey, EmbeddingCache};
use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::inputs::{self, Input};
use crate::pipeline::{self, PipelineOptions, PipelineStats, Prepared};
use crate::preprocess;

/// Larger inputs are refused before decoding: no photo is this big, a hostile file may be.
pub const MAX_INPUT_BYTES: u64 = 512 << 20;

/// Something the job reads an image from.
pub trait Item: Send {
    /// How results and messages name it.
    fn name(&self) -> &str;
    /// Its bytes (read once per run).
    fn read(&self) -> Result<Cow<'_, [u8]>, Error>;
    /// What tells it apart from every other item, for a store that keys rows by it and a
    /// skip rule that looks them up: its name unless two names can look alike.
    fn id(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.name())
    }
    /// The local file it was read from, if any (an XMP sidecar goes beside it).
    fn file(&self) -> Option<&Path> {
        None
    }
}

impl Item for Input {
    fn name(&self) -> &str {
        &self.display
    }

    /// [`Input::key`]: a file name that is not UTF-8 shows lossily, and is keyed without
    /// losing a byte.
    fn id(&self) -> Cow<'_, str> {
        Cow::Owned(self.key())
    }

    fn file(&self) -> Option<&Path> {
        match &self.source {
            inputs::Source::File(path) => Some(path),
            inputs::Source::Url(_) => None,
        }
    }

    fn read(&self) -> Result<Cow<'_, [u8]>, Error> {
        Ok(Cow::Owned(inputs::read_bytes(
            &self.source,
            MAX_INPUT_BYTES,
        )?))
    }
}

/// The image side of a model as the job drives it: [`ImageEncoder::prepare`] runs on the
/// worker threads, [`ImageEncoder::encode`] on batches on the job's own thread.
pub trait ImageEncoder: Sync {
    /// Values in one encoding; a cached entry of another length is a miss.
    fn encoding_len(&self) -> usize;
    /// Decodes and preprocesses one image (`name` for messages).
    fn prepare(&self, bytes: &[u8], name: &str) -> Result<Vec<f32>, Error>;
    /// The checks [`ImageEncoder::prepare`] makes of the bytes before decoding (a cut
    /// file, too many scans), run on a cache hit: a cached embedding never answers for
    /// bytes that preparing would refuse.
    fn check(&self, bytes: &[u8], name: &str) -> Result<(), Error> {
        let _ = (bytes, name);
        Ok(())
    }
    /// Encodes a batch of prepared images, one encoding per image, in order.
    fn encode(&self, batch: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, Error>;
}

impl ImageEncoder for Checkpoint {
    fn encoding_len(&self) -> usize {
        self.config().projection_dim
    }

    fn prepare(&self, bytes: &[u8], name: &str) -> Result<Vec<f32>, Error> {
        self.pixels_from_bytes(bytes, Path::new(name))
    }

    fn check(&self, bytes: &[u8], name: &str) -> Result<(), Error> {
        Ok(preprocess::check_bytes(
            bytes,
            Path::new(name),
            self.decode_options(),
        )?)
    }

    fn encode(&self, batch: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, Error> {
        self.embed_pixels_rows(batch)
    }
}

/// One input's outcome, handed on in input order.
pub struct Embedded<T = Input> {
    pub input: T,
    /// SHA-256 of the bytes that were read and embedded, when the job makes keys
    /// ([`Job::with_keys`], always with a cache or a skip rule); `None` when the input
    /// could not be read or decoded.
    pub key: Option<ContentKey>,
    /// The projected (not normalised) image embedding, or why there is none.
    pub embedding: Result<Vec<f32>, Error>,
    /// The embedding came from the cache.
    pub reused: bool,
}

impl<T> Embedded<T> {
    /// The embedding, when there is one.
    pub fn ok(&self) -> Option<&[f32]> {
        self.embedding.as_deref().ok()
    }
}

/// What a run did, for its summary line and exit status. The job counts `done`, `failed`,
/// `unchanged` and `cancelled`; a command adds what it found before the run (`skipped`,
/// entries that failed while walking) and what its sinks failed to do.
#[derive(Debug, Default)]
pub struct Tally {
    /// Inputs with an embedding.
    pub done: usize,
    /// Inputs that failed.
    pub failed: usize,
    /// Entries left out before the run (not images, hidden, other shards...).
    pub skipped: usize,
    /// Inputs the skip rule left out after reading them (unchanged since stored).
    pub unchanged: usize,
    /// Ctrl-C stopped the run before every input was done.
    pub cancelled: bool,
    /// The pipeline's counts and timings.
    pub stats: PipelineStats,
    /// The first failure to write the cache, if any (later ones are not kept): a cache that
    /// cannot be written costs speed, not results. [`Job::run`] also warns about it.
    pub cache_error: Option<CacheError>,
}

impl Tally {
    /// Counts what finding the inputs skipped and could not use.
    pub fn add_found(&mut self, found: &inputs::Found) {
        self.failed += found.failed;
        self.skipped += found.skipped;
    }
}

/// Why a run stopped: the encoder failed as a whole, or a sink could not go on.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Encode(#[from] Error),
    /// A sink's own error (a write, a store, a page), boxed so that sinks of different
    /// modules combine; its message and causes are the sink's.
    #[error(transparent)]
    Sink(SinkError),
}

impl JobError {
    /// Wraps a sink's error.
    pub fn sink(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Sink(SinkError(Box::new(error)))
    }
}

/// A sink's error: shows as the error it holds, with the same causes.
pub struct SinkError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl SinkError {
    /// The error the sink gave.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Debug for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// A write that failed: names where the results were going.
#[derive(Debug, thiserror::Error)]
#[error("cannot write results to {to}; free some space or choose another --output (every line written so far is complete)")]
pub struct WriteError {
    /// The output's name ("standard output" or a path).
    pub to: String,
    #[source]
    pub cause: std::io::Error,
}

impl From<WriteError> for JobError {
    fn from(error: WriteError) -> Self {
        Self::sink(error)
    }
}

/// Decides, from an input's [`Item::id`] and content key, that it needs no work (e.g. a store
/// already holds an embedding of these bytes).
pub type SkipRule<'a> = &'a (dyn Fn(&str, &ContentKey) -> bool + Sync);

/// One run's setup: the encoder, the cache, batch size and workers, and what to skip.
#[derive(Clone, Copy)]
pub struct Job<'a> {
    encoder: &'a dyn ImageEncoder,
    cache: Option<&'a EmbeddingCache>,
    options: PipelineOptions,
    keys: bool,
    skip: Option<SkipRule<'a>>,
}

impl<'a> Job<'a> {
    /// A job on `encoder`, without a cache.
    pub fn new(encoder: &'a dyn ImageEncoder, options: PipelineOptions) -> Self {
        Self {
            encoder,
            cache: None,
            options,
            keys: false,
            skip: None,
        }
    }

    /// Reuses embeddings from `cache` and stores new ones there.
    pub fn with_cache(mut self, cache: Option<&'a EmbeddingCache>) -> Self {
        self.cache = cache;
        self
    }

    /// Gives every result its content key (made anyway with a cache or a skip rule).
    pub fn with_keys(mut self) -> Self {
        self.keys = true;
        self
    }

    /// Leaves out, after reading and keying it, every input `rule` says needs no work;
    /// they are counted in [`Tally::unchanged`] and not handed to the sink.
    pub fn skip_if(mut self, rule: SkipRule<'a>) -> Self {
        self.skip = Some(rule);
        self
    }

    /// Values in one encoding.
    pub fn encoding_len(&self) -> usize {
        self.encoder.encoding_len()
    }

    /// Batch size, workers and the cancel flag.
    pub fn options(&self) -> PipelineOptions {
        self.options
    }

    /// Runs over `inputs`, handing every batch of results to `sink` in input order, and
    /// `progress` the count (a total when the iterator knows its length exactly), each
    /// failed input, and a warning when the cache could not be written. The tally counts
    /// the inputs the sink failed on ([`Sink::failed`]) with the failed ones. An error of the
    /// encoder or of the sink stops the run; an input that cannot be read or decoded is
    /// an `Err` embedding and the run goes on.
    pub fn run<T, I, S>(
        &self,
        inputs: I,
        sink: &mut S,
        progress: &dyn Progress,
    ) -> Result<Tally, JobError>
    where
        T: Item,
        I: IntoIterator<Item = T>,
        I::IntoIter: Send,
        S: Sink<Embedded<T>> + ?Sized,
    {
        let inputs = inputs.into_iter();
        let total = match inputs.size_hint() {
            (low, Some(high)) if low == high => Some(low),
            _ => None,
        };
        progress.start(total);
        let mut tally = Tally::default();
        let outcome = self.each_batch(inputs, &mut tally, |batch| {
            for done in &batch {
                if let Err(err) = &done.embedding {
                    progress.failed(done.input.name(), err);
                }
            }
            let count = batch.len();
            sink.write(&batch, progress)?;
            progress.advance(count);
            Ok(())
        });
        progress.finish();
        outcome?;
        tally.failed += sink.failed();
        if let Some(err) = &tally.cache_error {
            progress.say(Level::Warning, err);
        }
        Ok(tally)
    }

    /// Runs over `inputs` and returns every result, in input order (a query image): no
    /// progress, and a cache that cannot be written is only in [`Tally::cache_error`].
    pub fn collect<T: Item>(&self, inputs: Vec<T>) -> Result<(Vec<Embedded<T>>, Tally), Error> {
        let mut all = Vec::with_capacity(inputs.len());
        let mut tally = Tally::default();
        let outcome = self.each_batch(inputs.into_iter(), &mut tally, |batch| {
            all.extend(batch);
            Ok(())
        });
        match outcome {
            Ok(_) => Ok((all, tally)),
            Err(JobError::Encode(err)) => Err(err),
            // The closure above never fails.
            Err(JobError::Sink(_)) => Err(Error::Internal("a collecting job failed to collect")),
        }
    }

    /// The pipeline with this job's reading, keying, skipping and caching; counts into
    /// `tally`.
    fn each_batch<T, I, F>(&self, inputs: I, tally: &mut Tally, mut each: F) -> Result<(), JobError>
    where
        T: Item,
        I: Iterator<Item = T> + Send,
        F: FnMut(Vec<Embedded<T>>) -> Result<(), JobError>,
    {
        let encoder = self.encoder;
        let cache = self.cache;
        let mut cache_error = None;
        let stats = pipeline::run(
            inputs,
            self.options,
            |item: &T| self.load(item),
            |pixels: &[Vec<f32>]| encoder.encode(pixels),
            |batch| {
                let mut out = Vec::with_capacity(batch.len());
                for done in batch {
                    if done.skipped {
                        tally.unchanged += 1;
                        continue;
                    }
                    let key = done.key.flatten();
                    if let (Some(cache), Some(key), Ok(embedding), false) =
                        (cache, &key, &done.embedding, done.reused)
                    {
                        if let Err(err) = cache.put(key, embedding) {
                            cache_error.get_or_insert(err);
                        }
                    }
                    match &done.embedding {
                        Ok(_) => tally.done += 1,
                        Err(_) => tally.failed += 1,
                    }
                    out.push(Embedded {
                        input: done.item,
                        key,
                        embedding: done.embedding,
                        reused: done.reused,
                    });
                }
                each(out)
            },
        )?;
        tally.cancelled = stats.cancelled;
        tally.stats = stats;
        tally.cache_error = cache_error;
        Ok(())
    }

    /// Worker-side work for one input: read it, key it, skip it, reuse a cached
    /// embedding, or prepare it for the encoder.
    fn load<T: Item>(&self, item: &T) -> Result<Prepared<Option<ContentKey>>, Error> {
        let bytes = item.read()?;
        let key = (self.keys || self.cache.is_some() || self.skip.is_some())
            .then(|| EmbeddingCache::key(&bytes));
        if let (Some(skip), Some(key)) = (self.skip, &key) {
            if skip(&item.id(), key) {
                return Ok(Prepared::Skip(Some(*key)));
            }
        }
        if let (Some(cache), Some(k)) = (self.cache, &key) {
            let len = self.encoder.encoding_len();
            if let Some(embedding) = cache.get(k).filter(|e| e.len() == len) {
                // A hit skips decoding, not the checks a decode makes first: a cut file is
                // refused whatever the cache holds for its bytes.
                self.encoder.check(&bytes, item.name())?;
                return Ok(Prepared::Embedding(embedding, key));
            }
        }
        let pixels = self.encoder.prepare(&bytes, item.name())?;
        Ok(Prepared::Pixels(pixels, key))
    }
}

#[cfg(test)]
mod tests;
