//! The job without the binary or a model: an encoder that reads numbers, items in memory, a
//! sink that records, and a progress that remembers what it was told.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::cache::CacheNamespace;
use crate::progress::testing::Recorded;

/// An image in memory: its name and bytes.
struct Mem {
    name: String,
    bytes: Vec<u8>,
}

impl Item for Mem {
    fn name(&self) -> &str {
        &self.name
    }

    fn read(&self) -> Result<Cow<'_, [u8]>, Error> {
        Ok(Cow::Borrowed(&self.bytes))
    }
}

/// "Decodes" bytes that do not start with `x` into one value, the first byte; encodes a
/// value `v` as `[v, 2v]`; counts the images it encoded.
#[derive(Default)]
struct Numbers {
    encoded: AtomicUsize,
}

impl ImageEncoder for Numbers {
    fn encoding_len(&self) -> usize {
        2
    }

    fn prepare(&self, bytes: &[u8], _: &str) -> Result<Vec<f32>, Error> {
        match bytes.first() {
            Some(b'x') | None => Err(Error::Internal("not a number image")),
            Some(&b) => Ok(vec![f32::from(b)]),
        }
    }

    fn encode(&self, batch: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, Error> {
        self.encoded.fetch_add(batch.len(), Ordering::Relaxed);
        Ok(batch.iter().map(|p| vec![p[0], 2.0 * p[0]]).collect())
    }
}

/// `n` items named `img0..`; every seventh is broken.
fn items(n: usize) -> Vec<Mem> {
    (0..n)
        .map(|i| Mem {
            name: format!("img{i}"),
            bytes: if i % 7 == 3 {
                b"xx".to_vec()
            } else {
                vec![(i % 200) as u8 + 1, i as u8]
            },
        })
        .collect()
}

fn options(batch_size: usize, workers: usize) -> PipelineOptions {
    PipelineOptions {
        batch_size,
        workers,
        cancel: None,
        max_wait: None,
    }
}

/// What a sink saw of one result: name, first value or error, reused, key.
type Seen = (String, Result<f32, String>, bool, Option<ContentKey>);

/// A sink that records what it saw into `seen`.
fn recorder(seen: &mut Vec<Seen>) -> impl Sink<Embedded<Mem>> + '_ {
    SinkFn(move |batch: &[Embedded<Mem>], _: &dyn Progress| {
        seen.extend(batch.iter().map(|d| {
            (
                d.input.name.clone(),
                d.embedding
                    .as_ref()
                    .map(|e| e[0])
                    .map_err(|e| e.to_string()),
                d.reused,
                d.key,
            )
        }));
        Ok(())
    })
}

#[test]
fn results_come_in_input_order_with_each_failure_in_its_place() {
    let encoder = Numbers::default();
    let progress = Recorded::default();
    let mut seen = Vec::new();
    let tally = Job::new(&encoder, options(4, 3))
        .run(items(60), &mut recorder(&mut seen), &progress)
        .unwrap();
    let names: Vec<String> = (0..60).map(|i| format!("img{i}")).collect();
    assert_eq!(
        seen.iter().map(|s| &s.0).collect::<Vec<_>>(),
        names.iter().collect::<Vec<_>>()
    );
    for (i, (_, value, reused, key)) in seen.iter().enumerate() {
        if i % 7 == 3 {
            assert!(
                value.as_ref().unwrap_err().contains("not a number image"),
                "{i}"
            );
        } else {
            assert_eq!(*value, Ok(((i % 200) + 1) as f32), "{i}");
        }
        assert!(!reused);
        assert_eq!(*key, None, "no keys unless asked for, cached or skipped");
    }
    let broken = (0..60).filter(|i| i % 7 == 3).count();
    assert_eq!(
        (tally.done, tally.failed, tally.unchanged),
        (60 - broken, broken, 0)
    );
    assert!(!tally.cancelled);
    assert_eq!(encoder.encoded.load(Ordering::Relaxed), 60 - broken);
    // The progress knew the total, saw every input go by and each failure named.
    assert_eq!(*progress.started.lock().unwrap(), [Some(60)]);
    assert_eq!(*progress.advanced.lock().unwrap(), 60);
    assert_eq!(*progress.finished.lock().unwrap(), 1);
    let errors = progress.at(Level::Error);
    assert_eq!(errors.len(), broken);
    assert!(errors[0].starts_with("img3: "), "{errors:?}");
}

#[test]
fn a_stream_has_no_total_and_keys_come_when_asked_for() {
    let encoder = Numbers::default();
    let progress = Recorded::default();
    let mut seen = Vec::new();
    let stream = items(10).into_iter().filter(|item| item.name != "img5");
    let tally = Job::new(&encoder, options(2, 2))
        .with_keys()
        .run(stream, &mut recorder(&mut seen), &progress)
        .unwrap();
    assert_eq!(*progress.started.lock().unwrap(), [None]);
    assert_eq!(tally.done + tally.failed, 9);
    for (name, value, _, key) in &seen {
        let i: usize = name[3..].parse().unwrap();
        match value {
            Ok(_) => assert_eq!(*key, Some(EmbeddingCache::key(&items(10)[i].bytes))),
            Err(_) => assert_eq!(*key, None, "an input that failed has no key"),
        }
    }
}

#[test]
fn cached_embeddings_skip_the_encoder_and_keep_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cache = EmbeddingCache::open(dir.path(), CacheNamespace::new("numbers", None, "")).unwrap();
    let encoder = Numbers::default();
    let job = Job::new(&encoder, options(4, 2)).with_cache(Some(&cache));

    let (first, tally) = job.collect(items(20)).unwrap();
    let encoded = encoder.encoded.load(Ordering::Relaxed);
    assert_eq!(encoded, tally.done);
    assert_eq!(cache.stats().writes as usize, tally.done);
    assert!(first.iter().all(|d| !d.reused));

    let mut seen = Vec::new();
    let tally = job
        .run(items(20), &mut recorder(&mut seen), &Silent)
        .unwrap();
    assert_eq!(
        encoder.encoded.load(Ordering::Relaxed),
        encoded,
        "no image encoded again"
    );
    assert_eq!(tally.stats.reused, tally.done);
    for (done, (name, value, reused, key)) in first.iter().zip(&seen) {
        assert_eq!(&done.input.name, name);
        assert_eq!(
            done.embedding.as_ref().ok().map(|e| e[0]),
            value.clone().ok()
        );
        assert_eq!(*reused, done.embedding.is_ok());
        assert_eq!(*key, done.key, "a hit carries the key of the bytes read");
        if value.is_ok() {
            assert_eq!(*key, Some(EmbeddingCache::key(&done.input.bytes)));
        }
    }
}

#[test]
fn the_skip_rule_leaves_out_inputs_after_reading_them() {
    let encoder = Numbers::default();
    let unchanged = EmbeddingCache::key(&items(9)[4].bytes);
    let rule = |name: &str, key: &ContentKey| name == "img4" && *key == unchanged;
    let progress = Recorded::default();
    let mut seen = Vec::new();
    let tally = Job::new(&encoder, options(3, 2))
        .skip_if(&rule)
        .run(items(9), &mut recorder(&mut seen), &progress)
        .unwrap();
    assert_eq!(tally.unchanged, 1);
    assert!(seen.iter().all(|s| s.0 != "img4"));
    assert_eq!(seen.len(), 8);
    assert_eq!(
        encoder.encoded.load(Ordering::Relaxed),
        7,
        "neither img4 nor img3 encoded"
    );
    assert_eq!(*progress.advanced.lock().unwrap(), 8);
}

/// A sink that fails on its second batch, or counts inputs it could not handle.
struct Picky {
    batches: usize,
    fail_on: Option<usize>,
    rejected: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("the disk is full")]
struct DiskFull;

impl Sink<Embedded<Mem>> for Picky {
    fn write(&mut self, batch: &[Embedded<Mem>], progress: &dyn Progress) -> Result<(), JobError> {
        self.batches += 1;
        if Some(self.batches) == self.fail_on {
            return Err(JobError::sink(DiskFull));
        }
        for done in batch.iter().filter(|d| d.input.name.ends_with('0')) {
            self.rejected += 1;
            progress.failed(done.input.name(), &"rejected by the sink");
        }
        Ok(())
    }

    fn failed(&self) -> usize {
        self.rejected
    }
}

#[test]
fn a_sink_error_stops_the_run_and_sink_failures_count() {
    let encoder = Numbers::default();
    let progress = Recorded::default();
    let mut sink = Picky {
        batches: 0,
        fail_on: Some(2),
        rejected: 0,
    };
    let err = Job::new(&encoder, options(2, 2))
        .run(items(1000), &mut sink, &progress)
        .expect_err("the sink's error stops the run");
    assert_eq!(err.to_string(), "the disk is full");
    assert_eq!(
        *progress.finished.lock().unwrap(),
        1,
        "the progress is cleared"
    );
    assert!(
        encoder.encoded.load(Ordering::Relaxed) < 100,
        "the run stopped early"
    );

    let mut sink = Picky {
        batches: 0,
        fail_on: None,
        rejected: 0,
    };
    let tally = Job::new(&encoder, options(4, 2))
        .run(items(30), &mut sink, &Silent)
        .unwrap();
    let broken = (0..30).filter(|i| i % 7 == 3).count();
    // img0, img10, img20 rejected by the sink on top of the broken ones.
    assert_eq!(tally.failed, broken + 3);
    assert_eq!(tally.done, 30 - broken);
}

#[test]
fn sinks_combine() {
    let encoder = Numbers::default();
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let mut both = (recorder(&mut first), Some(recorder(&mut second)));
    Job::new(&encoder, options(4, 2))
        .run(items(12), &mut both, &Silent)
        .unwrap();
    drop(both);
    assert_eq!(first.len(), 12);
    assert_eq!(
        first.iter().map(|s| &s.0).collect::<Vec<_>>(),
        second.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
}
