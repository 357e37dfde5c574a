//! Image embeddings for many inputs: reading, the embedding cache, decoding on worker
//! threads and the image encoder, wired together over the batch [`pipeline`].
//!
//! Every command that needs image embeddings (classify, eval, fit, embed, search) goes
//! through [`embed_inputs`], so they share the cache, the bounded memory and the per-file
//! errors.

use std::path::Path;

use crate::cache::{CacheError, CacheNamespace, ContentKey, EmbeddingCache};
use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::inputs::{self, Input};
use crate::pipeline::{self, PipelineOptions, PipelineStats, Prepared};
use crate::source::ModelFiles;

/// Larger inputs are refused before decoding: no photo is this big, a hostile file may be.
pub const MAX_INPUT_BYTES: u64 = 512 << 20;

/// One input's outcome, handed on in input order.
pub struct Embedded {
    pub input: Input,
    /// The projected (not normalised) image embedding, or why there is none.
    pub embedding: Result<Vec<f32>, Error>,
    /// The embedding came from the cache.
    pub reused: bool,
}

/// What a finished [`embed_inputs`] run reports besides its results.
#[derive(Debug, Default)]
pub struct EmbedSummary {
    pub stats: PipelineStats,
    /// The first failure to write the cache, if any (later ones are not kept): a cache that
    /// cannot be written costs speed, not results.
    pub cache_error: Option<CacheError>,
}

/// Embeds every input and hands the results to `sink` in input order, a batch at a time.
/// Cached embeddings are reused and new ones stored. An error returned by `sink` or by the
/// encoder stops the run; an input that cannot be read or decoded is an `Err` embedding.
pub fn embed_inputs<I, S, X>(
    classifier: &Checkpoint,
    cache: Option<&EmbeddingCache>,
    inputs: I,
    options: PipelineOptions,
    mut sink: S,
) -> Result<EmbedSummary, X>
where
    I: Iterator<Item = Input> + Send,
    S: FnMut(Vec<Embedded>) -> Result<(), X>,
    X: From<Error>,
{
    let embedding_dim = classifier.config().projection_dim;
    let mut cache_error = None;
    let stats = pipeline::run(
        inputs,
        options,
        |input: &Input| load(input, classifier, cache, embedding_dim),
        |pixels: &[Vec<f32>]| classifier.embed_pixels_rows(pixels),
        |batch| {
            let batch = batch
                .into_iter()
                .map(|done| {
                    if let (Some(cache), Some(Some(key)), Ok(embedding)) =
                        (cache, &done.key, &done.embedding)
                    {
                        if let Err(err) = cache.put(key, embedding) {
                            cache_error.get_or_insert(err);
                        }
                    }
                    Embedded {
                        input: done.item,
                        embedding: done.embedding,
                        reused: done.reused,
                    }
                })
                .collect();
            sink(batch)
        },
    )?;
    Ok(EmbedSummary { stats, cache_error })
}

/// Embeds inputs and collects the results, in input order.
pub fn embed_all(
    classifier: &Checkpoint,
    cache: Option<&EmbeddingCache>,
    inputs: Vec<Input>,
    options: PipelineOptions,
) -> Result<(Vec<Embedded>, EmbedSummary), Error> {
    let mut all = Vec::with_capacity(inputs.len());
    let summary = embed_inputs(classifier, cache, inputs.into_iter(), options, |batch| {
        all.extend(batch);
        Ok::<(), Error>(())
    })?;
    Ok((all, summary))
}

/// Worker-side work for one input: read it, reuse a cached embedding, or decode and
/// preprocess it.
fn load(
    input: &Input,
    classifier: &Checkpoint,
    cache: Option<&EmbeddingCache>,
    embedding_dim: usize,
) -> Result<Prepared<Option<ContentKey>>, Error> {
    let bytes = inputs::read_bytes(&input.source, MAX_INPUT_BYTES)?;
    let key = cache.map(|_| EmbeddingCache::key(&bytes));
    let origin = Path::new(&input.display);
    if let (Some(cache), Some(key)) = (cache, &key) {
        if let Some(embedding) = cache.get(key).filter(|e| e.len() == embedding_dim) {
            // A hit skips decoding, not the checks a decode makes first: a cut file is
            // refused whatever the cache holds for its bytes.
            crate::preprocess::check_bytes(&bytes, origin, classifier.decode_options())?;
            return Ok(Prepared::Embedding(embedding));
        }
    }
    let pixels = classifier.pixels_from_bytes(&bytes, origin)?;
    Ok(Prepared::Pixels(pixels, key))
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
/// snapshot path names its commit), how pixels are prepared and how the encoder computes.
pub fn cache_namespace(files: &ModelFiles, classifier: &Checkpoint) -> CacheNamespace {
    namespace_for_pipeline(files, classifier, PIXEL_PIPELINE_VERSION)
}

fn namespace_for_pipeline(
    files: &ModelFiles,
    classifier: &Checkpoint,
    pipeline: u32,
) -> CacheNamespace {
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
    let mut fingerprint = format!(
        "weights {} ({stamp}); preprocessing {:?}; {}",
        weights.display(),
        classifier.preprocessor().config(),
        classifier.compute_fingerprint()
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
        let classifier = Checkpoint::load_with(
            &files,
            &candle_core::Device::Cpu,
            candle_core::DType::F32,
            &Default::default(),
        )
        .unwrap();
        let root = tempfile::tempdir().unwrap();
        let key = EmbeddingCache::key(b"the same bytes");
        let before = namespace_for_pipeline(&files, &classifier, PIXEL_PIPELINE_VERSION - 1);
        let old = EmbeddingCache::open(root.path(), before).unwrap();
        old.put(&key, &[0.5; 4]).unwrap();
        assert_eq!(old.get(&key), Some(vec![0.5; 4]));
        let now = EmbeddingCache::open(root.path(), cache_namespace(&files, &classifier)).unwrap();
        assert_eq!(
            now.get(&key),
            None,
            "an entry of the previous pipeline was served"
        );
        // The same pipeline finds its own entries.
        now.put(&key, &[0.25; 4]).unwrap();
        let again =
            EmbeddingCache::open(root.path(), cache_namespace(&files, &classifier)).unwrap();
        assert_eq!(again.get(&key), Some(vec![0.25; 4]));
    }
}
