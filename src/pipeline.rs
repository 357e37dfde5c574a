//! The batch pipeline: decoding on worker threads, encoding in fixed-size batches on the
//! calling thread, results handed on in input order.
//!
//! ```text
//! items ─▶ feeder ─▶ workers (load: read, decode, resize, or a cache hit) ─▶ reorder ─▶ batches ─▶ encode ─▶ sink
//! ```
//!
//! At most `in_flight` items are between the feeder and the sink at any time, so memory
//! stays bounded however many inputs there are, while the workers keep decoding the next
//! batch as the encoder runs the current one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use crate::error::Error;

/// What a worker made of one input. `K` travels with it to the sink, e.g. the content key
/// under which to cache the embedding.
pub enum Prepared<K = ()> {
    /// Normalised pixels that still need the image encoder.
    Pixels(Vec<f32>, K),
    /// A finished embedding (from the cache): the encoder is skipped.
    Embedding(Vec<f32>, K),
    /// Nothing to do for this input (e.g. unchanged since it was stored): it is handed on
    /// with an empty embedding and [`Done::skipped`] set.
    Skip(K),
}

/// One input's result, handed to the sink in input order.
pub struct Done<T, K = ()> {
    pub item: T,
    /// The key given with the prepared input; `None` when loading it failed.
    pub key: Option<K>,
    /// The projected image embedding, or why there is none (empty when skipped).
    pub embedding: Result<Vec<f32>, Error>,
    /// The embedding came from [`Prepared::Embedding`] rather than the encoder.
    pub reused: bool,
    /// The input was [`Prepared::Skip`]ped.
    pub skipped: bool,
}

/// Sizes of the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct PipelineOptions {
    /// Images per encoder call.
    pub batch_size: usize,
    /// Decoding threads.
    pub workers: usize,
    /// When this becomes true (e.g. on Ctrl-C) the run stops after the batch in hand:
    /// everything already handed to the sink stays done, nothing new is started.
    pub cancel: Option<&'static AtomicBool>,
    /// For inputs that arrive over time (a server's requests): a batch that is not full
    /// goes to the encoder once its first input has waited this long for others, and a
    /// batch takes every input that is ready when it goes (`Some(ZERO)`: never wait).
    /// `None`: it goes when the input has paused with nothing left to decode for a poll
    /// interval (50 ms), which keeps the batches of files and of stdin full.
    pub max_wait: Option<Duration>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            batch_size: 16,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            cancel: None,
            max_wait: None,
        }
    }
}

/// How often a waiting pipeline looks at its cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// Counts and timings of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct PipelineStats {
    /// Inputs handed to the sink.
    pub items: usize,
    /// Images run through the encoder.
    pub encoded: usize,
    /// Embeddings reused without the encoder.
    pub reused: usize,
    /// Inputs whose loading failed.
    pub failed: usize,
    /// Inputs skipped without an embedding ([`Prepared::Skip`]).
    pub skipped: usize,
    /// Time spent in the encoder.
    pub encoding: Duration,
    /// Time the encoding thread waited for decoded inputs.
    pub waiting: Duration,
    /// The run was cancelled before every input was done.
    pub cancelled: bool,
}

/// Runs `load` on worker threads for every item and `encode` on batches of the resulting
/// pixels, and hands every item to `sink` in input order, a batch at a time. An error from
/// `encode` or `sink` stops the run and is returned; per-item load errors are not errors
/// of the run, they reach the sink.
pub fn run<T, K, I, L, E, S, X>(
    items: I,
    options: PipelineOptions,
    load: L,
    mut encode: E,
    mut sink: S,
) -> Result<PipelineStats, X>
where
    T: Send,
    K: Send,
    I: Iterator<Item = T> + Send,
    L: Fn(&T) -> Result<Prepared<K>, Error> + Sync,
    E: FnMut(&[Vec<f32>]) -> Result<Vec<Vec<f32>>, Error>,
    S: FnMut(Vec<Done<T, K>>) -> Result<(), X>,
    X: From<Error>,
{
    let batch_size = options.batch_size.max(1);
    let workers = options.workers.max(1);
    // Two batches being decoded while one is encoded keeps the encoder fed.
    let in_flight = batch_size * 3 + workers;

    let (token_tx, token_rx) = mpsc::sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        // Cannot fail: the channel has room for every token and the receiver is alive.
        let _ = token_tx.send(());
    }
    let (job_tx, job_rx) = mpsc::sync_channel::<(usize, T)>(workers);
    // Shared by the workers and dropped with the last of them, so a feeder blocked on a
    // full queue is released when the workers stop early.
    let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
    let (done_tx, done_rx) =
        mpsc::sync_channel::<(usize, T, Result<Prepared<K>, Error>)>(in_flight);

    // Inputs handed to the workers so far; when every one of them has come back and the
    // input has nothing new, a partial batch is not held back (a stream on stdin).
    let fed = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let cancel = options.cancel;
        let fed = &fed;
        scope.spawn(move || feed(items, &token_rx, &job_tx, cancel, fed));
        let load = &load;
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let job_rx = std::sync::Arc::clone(&job_rx);
            scope.spawn(move || loop {
                // Take the lock only to receive, so workers load in parallel.
                let job = match job_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok((seq, item)) = job else { return };
                let prepared = load(&item);
                if done_tx.send((seq, item, prepared)).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        drop(job_rx);

        // Returning drops `token_tx` and `done_rx`, which unblocks and ends every thread.
        collect(
            done_rx,
            token_tx,
            Sizes {
                batch_size,
                max_wait: options.max_wait,
            },
            cancel,
            fed,
            &mut encode,
            &mut sink,
        )
    })
}

fn is_set(flag: Option<&AtomicBool>) -> bool {
    flag.is_some_and(|f| f.load(Ordering::Relaxed))
}

fn feed<T, I: Iterator<Item = T>>(
    items: I,
    tokens: &Receiver<()>,
    jobs: &SyncSender<(usize, T)>,
    cancel: Option<&AtomicBool>,
    fed: &AtomicUsize,
) {
    for (seq, item) in items.enumerate() {
        if is_set(cancel) || tokens.recv().is_err() || jobs.send((seq, item)).is_err() {
            return;
        }
        fed.fetch_add(1, Ordering::SeqCst);
    }
}

/// When the collector hands a batch to the encoder.
struct Sizes {
    batch_size: usize,
    max_wait: Option<Duration>,
}

fn collect<T, K, E, S, X>(
    done: Receiver<(usize, T, Result<Prepared<K>, Error>)>,
    tokens: SyncSender<()>,
    sizes: Sizes,
    cancel: Option<&AtomicBool>,
    fed: &AtomicUsize,
    encode: &mut E,
    sink: &mut S,
) -> Result<PipelineStats, X>
where
    E: FnMut(&[Vec<f32>]) -> Result<Vec<Vec<f32>>, Error>,
    S: FnMut(Vec<Done<T, K>>) -> Result<(), X>,
    X: From<Error>,
{
    let Sizes {
        batch_size,
        max_wait,
    } = sizes;
    let mut stats = PipelineStats::default();
    let mut waiting: BTreeMap<usize, (T, Result<Prepared<K>, Error>)> = BTreeMap::new();
    let mut next = 0usize;
    let mut pending: Vec<(T, Result<Prepared<K>, Error>)> = Vec::new();
    let mut pixels_pending = 0usize;
    // When the first input of the pending batch joined it (for `max_wait`).
    let mut pending_since: Option<Instant> = None;
    let mut finished = false;
    // Cache hits and failures hold tokens but do not fill the encoder's batch; bounding the
    // pending batch by items as well leaves `in_flight - max_pending` tokens for the inputs
    // still being loaded, so the input always moves.
    let max_pending = 2 * batch_size;
    let mut received = 0usize;
    // Set when the input went quiet with every fed item back: hand on what is pending.
    let mut idle = false;

    loop {
        if is_set(cancel) {
            stats.cancelled = true;
            return Ok(stats);
        }
        // Move in-order results into the pending batch until it is due.
        while pixels_pending < batch_size && pending.len() < max_pending {
            let Some(entry) = waiting.remove(&next) else {
                break;
            };
            if matches!(entry.1, Ok(Prepared::Pixels(..))) {
                pixels_pending += 1;
            }
            pending.push(entry);
            pending_since.get_or_insert_with(Instant::now);
            next += 1;
        }
        let waited = |limit: Duration| pending_since.is_some_and(|t| t.elapsed() >= limit);
        // A batch is due when the encoder has a full batch, when nothing in it needs the
        // encoder (cache hits and failures go on at once), when it holds `max_pending`
        // items of any kind (each holds a token, so the feeder must never wait on them),
        // when it has waited `max_wait`, or at the end of the input.
        let due = pixels_pending >= batch_size
            || pending.len() >= max_pending
            || (pixels_pending == 0 && !pending.is_empty())
            || (max_wait.is_some_and(waited) && !pending.is_empty())
            || ((finished || idle) && !pending.is_empty());
        idle = false;
        if due {
            let batch = std::mem::take(&mut pending);
            pixels_pending = 0;
            pending_since = None;
            let count = batch.len();
            let results = run_batch(batch, encode, &mut stats)?;
            sink(results)?;
            stats.items += count;
            for _ in 0..count {
                // The feeder may have finished and dropped its receiver: nothing to refill.
                let _ = tokens.send(());
            }
            continue;
        }
        if finished {
            return Ok(stats);
        }
        let started = Instant::now();
        let timeout = match (max_wait, pending_since) {
            (Some(limit), Some(since)) => limit.saturating_sub(since.elapsed()).min(CANCEL_POLL),
            _ => CANCEL_POLL,
        };
        match done.recv_timeout(timeout) {
            Ok((seq, item, prepared)) => {
                received += 1;
                waiting.insert(seq, (item, prepared));
                // Everything already decoded joins this batch, not only the first of it.
                while let Ok((seq, item, prepared)) = done.try_recv() {
                    received += 1;
                    waiting.insert(seq, (item, prepared));
                }
            }
            // Nothing in flight and nothing new from the input for a poll interval: the
            // input is a stream that is waiting (e.g. stdin), so the results so far go out
            // now rather than when a batch fills. With `max_wait`, that decides instead.
            Err(RecvTimeoutError::Timeout) => {
                idle = max_wait.is_none()
                    && waiting.is_empty()
                    && received == fed.load(Ordering::SeqCst);
            }
            Err(RecvTimeoutError::Disconnected) => finished = true,
        }
        stats.waiting += started.elapsed();
    }
}

fn run_batch<T, K, E>(
    batch: Vec<(T, Result<Prepared<K>, Error>)>,
    encode: &mut E,
    stats: &mut PipelineStats,
) -> Result<Vec<Done<T, K>>, Error>
where
    E: FnMut(&[Vec<f32>]) -> Result<Vec<Vec<f32>>, Error>,
{
    let mut pixels = Vec::new();
    let mut slots = Vec::with_capacity(batch.len());
    for (item, prepared) in batch {
        match prepared {
            Ok(Prepared::Pixels(p, key)) => {
                pixels.push(p);
                slots.push((item, None, Some(key), false));
            }
            Ok(Prepared::Embedding(e, key)) => slots.push((item, Some(Ok(e)), Some(key), false)),
            Ok(Prepared::Skip(key)) => slots.push((item, Some(Ok(Vec::new())), Some(key), true)),
            Err(err) => slots.push((item, Some(Err(err)), None, false)),
        }
    }
    let mut encoded = Vec::new().into_iter();
    if !pixels.is_empty() {
        let started = Instant::now();
        encoded = encode(&pixels)?.into_iter();
        stats.encoding += started.elapsed();
        stats.encoded += pixels.len();
    }
    let mut out = Vec::with_capacity(slots.len());
    for (item, result, key, skipped) in slots {
        let reused = !skipped && matches!(result, Some(Ok(_)));
        let embedding = match result {
            Some(result) => result,
            None => Ok(encoded.next().ok_or(Error::Internal(
                "the encoder returned fewer rows than images",
            ))?),
        };
        if reused {
            stats.reused += 1;
        } else if skipped {
            stats.skipped += 1;
        } else if embedding.is_err() {
            stats.failed += 1;
        }
        out.push(Done {
            item,
            key,
            embedding,
            reused,
            skipped,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn labels_error() -> Error {
        Error::Labels(crate::labels::LabelError::None)
    }

    /// Items are numbers; odd multiples of 7 fail, multiples of 5 are "cached".
    fn load(n: &usize) -> Result<Prepared, Error> {
        std::thread::sleep(Duration::from_micros((n * 37 % 11) as u64 * 100));
        if n.is_multiple_of(7) && n % 2 == 1 {
            Err(labels_error())
        } else if n.is_multiple_of(5) {
            Ok(Prepared::Embedding(vec![*n as f32, 1.0], ()))
        } else {
            Ok(Prepared::Pixels(vec![*n as f32], ()))
        }
    }

    #[test]
    fn results_keep_input_order_and_batches_are_bounded() {
        let mut batch_sizes = Vec::new();
        let mut seen = Vec::new();
        let stats = run(
            0..200usize,
            PipelineOptions {
                batch_size: 8,
                workers: 3,
                cancel: None,
                max_wait: None,
            },
            load,
            |pixels: &[Vec<f32>]| {
                batch_sizes.push(pixels.len());
                Ok(pixels.iter().map(|p| vec![p[0], 0.0]).collect())
            },
            |done: Vec<Done<usize>>| -> Result<(), Error> {
                for d in done {
                    match (&d.embedding, d.item) {
                        (Err(_), n) => assert!(n % 7 == 0 && n % 2 == 1),
                        (Ok(e), n) => {
                            assert_eq!(e[0], n as f32);
                            assert_eq!(d.reused, n % 5 == 0);
                            assert_eq!(e[1], if d.reused { 1.0 } else { 0.0 });
                        }
                    }
                    seen.push(d.item);
                }
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        assert!(batch_sizes.iter().all(|&b| b <= 8), "{batch_sizes:?}");
        assert!(
            batch_sizes[..batch_sizes.len() - 1].iter().all(|&b| b == 8),
            "{batch_sizes:?}"
        );
        assert_eq!(stats.items, 200);
        let failed = (0..200).filter(|n| n % 7 == 0 && n % 2 == 1).count();
        let reused = (0..200)
            .filter(|n| n % 5 == 0 && !(n % 7 == 0 && n % 2 == 1))
            .count();
        assert_eq!(stats.failed, failed);
        assert_eq!(stats.reused, reused);
        assert_eq!(stats.encoded, 200 - reused - failed);
    }

    #[test]
    fn a_sink_error_stops_the_run_without_hanging() {
        let loaded = AtomicUsize::new(0);
        let result = run(
            0..1_000_000usize,
            PipelineOptions {
                batch_size: 4,
                workers: 2,
                cancel: None,
                max_wait: None,
            },
            |n: &usize| {
                loaded.fetch_add(1, Ordering::Relaxed);
                Ok(Prepared::Pixels(vec![*n as f32], ()))
            },
            |pixels: &[Vec<f32>]| Ok(pixels.to_vec()),
            |done: Vec<Done<usize>>| {
                if done[0].item >= 8 {
                    Err(labels_error())
                } else {
                    Ok(())
                }
            },
        );
        assert!(result.is_err());
        // Bounded: only a few batches were ever loaded ahead of the sink.
        assert!(
            loaded.load(Ordering::Relaxed) < 100,
            "{}",
            loaded.load(Ordering::Relaxed)
        );
    }

    #[test]
    fn cancelling_keeps_what_the_sink_has_and_stops() {
        static CANCEL: AtomicBool = AtomicBool::new(false);
        let mut seen = Vec::new();
        let stats = run(
            0..10_000usize,
            PipelineOptions {
                batch_size: 4,
                workers: 2,
                cancel: Some(&CANCEL),
                max_wait: None,
            },
            |n: &usize| Ok(Prepared::Pixels(vec![*n as f32], ())),
            |pixels: &[Vec<f32>]| Ok(pixels.to_vec()),
            |done: Vec<Done<usize>>| -> Result<(), Error> {
                seen.extend(done.iter().map(|d| d.item));
                if seen.len() >= 12 {
                    CANCEL.store(true, Ordering::Relaxed);
                }
                Ok(())
            },
        )
        .unwrap();
        assert!(stats.cancelled);
        assert_eq!(stats.items, seen.len());
        assert_eq!(seen, (0..seen.len()).collect::<Vec<_>>());
        assert!(seen.len() < 100, "{}", seen.len());
    }

    /// What one input turns out to be in [`mixed_runs_never_stall`].
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Kind {
        Cached,
        New,
        Broken,
    }

    /// Inputs of `cached`, `new` and `broken` counts in one of four orders.
    fn arrange(cached: usize, new: usize, broken: usize, order: usize) -> Vec<Kind> {
        let runs = [
            vec![Kind::Cached; cached],
            vec![Kind::New; new],
            vec![Kind::Broken; broken],
        ];
        match order {
            // hits first, then misses, then failures
            0 => runs.concat(),
            // failures first (a long run of them), then misses, then hits
            1 => [runs[2].clone(), runs[1].clone(), runs[0].clone()].concat(),
            // misses first
            2 => [runs[1].clone(), runs[0].clone(), runs[2].clone()].concat(),
            // interleaved round-robin
            _ => {
                let mut out = Vec::new();
                let longest = cached.max(new).max(broken);
                for i in 0..longest {
                    for run in &runs {
                        if let Some(&k) = run.get(i) {
                            out.push(k);
                        }
                    }
                }
                out
            }
        }
    }

    /// What the sink saw of one input: its number, its embedding's first value or an
    /// error, and whether it was reused.
    type Seen = (usize, Result<f32, ()>, bool);

    /// Runs the pipeline on another thread and fails, rather than hangs, past `limit`.
    fn run_with_deadline(
        kinds: Vec<Kind>,
        options: PipelineOptions,
        limit: Duration,
    ) -> (Vec<Seen>, PipelineStats) {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let stats = run(
                0..kinds.len(),
                options,
                |&i: &usize| match kinds[i] {
                    Kind::Cached => Ok(Prepared::Embedding(vec![i as f32], ())),
                    Kind::New => Ok(Prepared::Pixels(vec![i as f32], ())),
                    Kind::Broken => Err(labels_error()),
                },
                |pixels: &[Vec<f32>]| Ok(pixels.to_vec()),
                |done: Vec<Done<usize>>| -> Result<(), Error> {
                    for d in done {
                        seen.push((d.item, d.embedding.map(|e| e[0]).map_err(|_| ()), d.reused));
                    }
                    Ok(())
                },
            );
            let _ = tx.send(stats.map(|s| (seen, s)));
        });
        match rx.recv_timeout(limit) {
            Ok(result) => result.unwrap(),
            Err(_) => panic!("the pipeline stalled: no result within {limit:?}"),
        }
    }

    #[test]
    fn mixed_runs_never_stall() {
        // The counts that hung before cache hits and failures were handed on: 200 hits + 1
        // miss, 100 + 50, 300 + 100, a long run of failures before good inputs; and the
        // ones that always finished.
        let mixes = [
            (200, 1, 0),
            (100, 50, 0),
            (300, 100, 0),
            (1, 40, 0),
            (40, 5, 0),
            (40, 16, 0),
            (0, 20, 60),
            (30, 30, 30),
            (150, 0, 150),
        ];
        for &(cached, new, broken) in &mixes {
            for order in 0..4 {
                let kinds = arrange(cached, new, broken, order);
                for batch_size in [1, 2, 16, 64] {
                    for workers in [1, 2, 8] {
                        let options = PipelineOptions {
                            batch_size,
                            workers,
                            cancel: None,
                            max_wait: None,
                        };
                        let case = format!(
                            "{cached} cached, {new} new, {broken} broken, order {order}, \
                             batch {batch_size}, workers {workers}"
                        );
                        let (seen, stats) =
                            run_with_deadline(kinds.clone(), options, Duration::from_secs(20));
                        assert_eq!(seen.len(), kinds.len(), "{case}");
                        for (i, (item, embedding, reused)) in seen.iter().enumerate() {
                            assert_eq!(*item, i, "{case}: out of order");
                            match kinds[i] {
                                Kind::Broken => assert!(embedding.is_err(), "{case}"),
                                kind => {
                                    assert_eq!(*embedding, Ok(i as f32), "{case}");
                                    assert_eq!(*reused, kind == Kind::Cached, "{case}");
                                }
                            }
                        }
                        assert_eq!(stats.reused, cached, "{case}");
                        assert_eq!(stats.encoded, new, "{case}");
                        assert_eq!(stats.failed, broken, "{case}");
                    }
                }
            }
        }
    }

    #[test]
    fn hits_are_handed_on_without_waiting_for_a_batch() {
        // 10 hits ahead of a slow run of misses: the hits reach the sink before the encoder
        // has seen a full batch.
        let mut first_batch = Vec::new();
        run(
            0..74usize,
            PipelineOptions {
                batch_size: 64,
                workers: 2,
                cancel: None,
                max_wait: None,
            },
            |&i: &usize| {
                if i < 10 {
                    Ok(Prepared::Embedding(vec![i as f32], ()))
                } else {
                    Ok(Prepared::Pixels(vec![i as f32], ()))
                }
            },
            |pixels: &[Vec<f32>]| Ok(pixels.to_vec()),
            |done: Vec<Done<usize>>| -> Result<(), Error> {
                if first_batch.is_empty() {
                    first_batch = done.iter().map(|d| d.item).collect();
                }
                Ok(())
            },
        )
        .unwrap();
        assert!(
            !first_batch.is_empty() && first_batch.iter().all(|&i| i < 10),
            "{first_batch:?}"
        );
    }

    #[test]
    fn a_waiting_stream_gets_its_results_before_the_batch_fills() {
        // Inputs arrive through a channel, as lines on stdin would: three, then a pause in
        // which the caller waits for their results, then two more, then the end.
        let (input_tx, input_rx) = mpsc::channel::<usize>();
        let (seen_tx, seen_rx) = mpsc::channel::<usize>();
        let runner = std::thread::spawn(move || {
            run(
                input_rx.into_iter(),
                PipelineOptions {
                    batch_size: 16,
                    workers: 2,
                    cancel: None,
                    max_wait: None,
                },
                |&i: &usize| {
                    if i == 1 {
                        Ok(Prepared::Embedding(vec![i as f32], ()))
                    } else {
                        Ok(Prepared::Pixels(vec![i as f32], ()))
                    }
                },
                |pixels: &[Vec<f32>]| Ok(pixels.to_vec()),
                |done: Vec<Done<usize>>| -> Result<(), Error> {
                    for d in done {
                        let _ = seen_tx.send(d.item);
                    }
                    Ok(())
                },
            )
        });
        for i in 0..3 {
            input_tx.send(i).unwrap();
        }
        let first: Vec<usize> = (0..3)
            .map(|_| {
                seen_rx
                    .recv_timeout(Duration::from_secs(10))
                    .expect("results of a waiting stream were held back for a full batch")
            })
            .collect();
        assert_eq!(first, [0, 1, 2]);
        input_tx.send(3).unwrap();
        input_tx.send(4).unwrap();
        drop(input_tx);
        let stats = runner.join().unwrap().unwrap();
        let rest: Vec<usize> = seen_rx.try_iter().collect();
        assert_eq!(rest, [3, 4]);
        assert_eq!(stats.items, 5);
        assert_eq!(stats.encoded, 4);
    }

    /// The input, the batches handed to the sink, and the running pipeline.
    type Streamed = (
        mpsc::Sender<usize>,
        Receiver<Vec<usize>>,
        std::thread::JoinHandle<Result<PipelineStats, Error>>,
    );

    /// Runs a pipeline over a channel's items with `max_wait`; the sink sends each batch's
    /// items on `batches`.
    fn stream_with_wait(max_wait: Duration, batch_size: usize) -> Streamed {
        let (input_tx, input_rx) = mpsc::channel::<usize>();
        let (batch_tx, batch_rx) = mpsc::channel::<Vec<usize>>();
        let runner = std::thread::spawn(move || {
            run(
                input_rx.into_iter(),
                PipelineOptions {
                    batch_size,
                    workers: 2,
                    cancel: None,
                    max_wait: Some(max_wait),
                },
                |&i: &usize| Ok(Prepared::Pixels(vec![i as f32], ())),
                |pixels: &[Vec<f32>]| Ok(pixels.to_vec()),
                |done: Vec<Done<usize>>| -> Result<(), Error> {
                    let _ = batch_tx.send(done.iter().map(|d| d.item).collect());
                    Ok(())
                },
            )
        });
        (input_tx, batch_rx, runner)
    }

    #[test]
    fn max_wait_holds_a_partial_batch_for_more_inputs() {
        // Three inputs and then a pause longer than the 50 ms after which a stream without
        // `max_wait` hands on what it has: with a longer `max_wait` they wait, together.
        let wait = Duration::from_millis(400);
        let (input_tx, batches, runner) = stream_with_wait(wait, 8);
        let started = Instant::now();
        for i in 0..3 {
            input_tx.send(i).unwrap();
        }
        let first = batches.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(
            started.elapsed() >= wait,
            "went after {:?}",
            started.elapsed()
        );
        assert_eq!(first, [0, 1, 2]);
        drop(input_tx);
        runner.join().unwrap().unwrap();
    }

    #[test]
    fn no_max_wait_answers_a_lone_input_at_once() {
        // One input at a time, the next sent when the previous came back: with a zero
        // `max_wait` none of them waits for the 50 ms poll that ends a paused stream's batch.
        let (input_tx, batches, runner) = stream_with_wait(Duration::ZERO, 8);
        let started = Instant::now();
        for i in 0..20 {
            input_tx.send(i).unwrap();
            let batch = batches.recv_timeout(Duration::from_secs(20)).unwrap();
            assert_eq!(batch, [i]);
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed < CANCEL_POLL * 20,
            "20 lone inputs took {elapsed:?}"
        );
        drop(input_tx);
        runner.join().unwrap().unwrap();
    }

    #[test]
    fn a_batch_takes_every_input_that_is_ready() {
        // Inputs sent faster than one encoder call: with a zero `max_wait` they still go
        // to the encoder together, not one by one.
        let (input_tx, batches, runner) = stream_with_wait(Duration::ZERO, 64);
        for i in 0..200 {
            input_tx.send(i).unwrap();
        }
        drop(input_tx);
        let stats = runner.join().unwrap().unwrap();
        let sizes: Vec<usize> = batches.try_iter().map(|b| b.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 200);
        assert_eq!(stats.items, 200);
        assert!(sizes.iter().any(|&n| n > 1), "{sizes:?}");
    }

    #[test]
    fn empty_input_is_fine() {
        let stats = run(
            std::iter::empty::<usize>(),
            PipelineOptions::default(),
            load,
            |_: &[Vec<f32>]| -> Result<Vec<Vec<f32>>, Error> { panic!("nothing to encode") },
            |_: Vec<Done<usize>>| -> Result<(), Error> { panic!("nothing to sink") },
        )
        .unwrap();
        assert_eq!(stats.items, 0);
    }
}
