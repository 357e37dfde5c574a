//! The encoder queue: images from every request go, as [`Item`]s, into one long-running
//! [`Job`] whose input is a channel, so images that arrive together are decoded on the
//! job's workers and encoded in one batch; a sink hands each result back to the request
//! that waits for it. The queue is bounded: a request that would take it past its capacity
//! is refused at once (429), not queued.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use super::metrics::Metrics;
use crate::error::Error;
use crate::job::{Embedded, ImageEncoder, Item, Job, JobError, Level, Progress, Sink};
use crate::pipeline::PipelineOptions;
use crate::progress::input_message;
use crate::session::Session;

/// What a request gets back for one image: its projected embedding, or the per-input
/// message (a bad image).
pub type Reply = Result<Vec<f32>, String>;

/// One image of a request, as the job reads it.
pub struct ImageRequest {
    name: String,
    bytes: Vec<u8>,
    reply: Mutex<Option<oneshot::Sender<Reply>>>,
    /// Holds the image's place in the queue until the image is done.
    _slot: Slot,
}

impl Item for ImageRequest {
    fn name(&self) -> &str {
        &self.name
    }

    fn read(&self) -> Result<Cow<'_, [u8]>, Error> {
        // The request timed out or its client went away: not worth decoding.
        let abandoned = self
            .reply
            .lock()
            .map_or(true, |reply| reply.as_ref().is_none_or(|r| r.is_closed()));
        if abandoned {
            return Err(Error::Internal("the request was abandoned"));
        }
        Ok(Cow::Borrowed(&self.bytes))
    }
}

impl ImageRequest {
    /// Hands `reply` to whoever waits for this image (nobody, if the request is gone).
    fn answer(&self, reply: Reply) {
        if let Some(sender) = self.reply.lock().ok().and_then(|mut r| r.take()) {
            let _ = sender.send(reply);
        }
    }
}

/// One place in the queue, given back when dropped.
struct Slot(Arc<Depth>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Images accepted and not yet answered, against the capacity.
struct Depth {
    used: AtomicUsize,
    capacity: usize,
}

/// The queue is full: the request was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// The sending side of the encoder queue, shared by the request handlers.
pub struct Queue {
    sender: Mutex<Option<mpsc::Sender<ImageRequest>>>,
    depth: Arc<Depth>,
}

/// The receiving side, for [`run_job`].
pub struct Feed(mpsc::Receiver<ImageRequest>);

impl Iterator for Feed {
    type Item = ImageRequest;

    fn next(&mut self) -> Option<ImageRequest> {
        self.0.recv().ok()
    }
}

impl Queue {
    /// A queue of `capacity` images and the feed of its job.
    pub fn new(capacity: usize) -> (Self, Feed) {
        let (sender, receiver) = mpsc::channel();
        let queue = Self {
            sender: Mutex::new(Some(sender)),
            depth: Arc::new(Depth {
                used: AtomicUsize::new(0),
                capacity,
            }),
        };
        (queue, Feed(receiver))
    }

    /// Images waiting or being worked on.
    pub fn depth(&self) -> usize {
        self.depth.used.load(Ordering::SeqCst)
    }

    /// The most images the queue holds.
    pub fn capacity(&self) -> usize {
        self.depth.capacity
    }

    /// Queues all of `images` (name and bytes) or, when they do not all fit, none; the
    /// receivers give each image's reply, in order.
    pub fn submit(
        &self,
        images: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<oneshot::Receiver<Reply>>, Full> {
        let count = images.len();
        let depth = &self.depth;
        depth
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used + count <= depth.capacity).then_some(used + count)
            })
            .map_err(|_| Full)?;
        // From here each image's slot is given back when the image is dropped.
        let mut requests = Vec::with_capacity(count);
        let mut receivers = Vec::with_capacity(count);
        for (name, bytes) in images {
            let (sender, receiver) = oneshot::channel();
            requests.push(ImageRequest {
                name,
                bytes,
                reply: Mutex::new(Some(sender)),
                _slot: Slot(Arc::clone(depth)),
            });
            receivers.push(receiver);
        }
        let sender = self.sender.lock().ok().and_then(|s| s.clone());
        for request in requests {
            // Closed (shutting down): the request is dropped and its receiver says so.
            if let Some(sender) = &sender {
                let _ = sender.send(request);
            }
        }
        Ok(receivers)
    }

    /// No more images: the job finishes those it has and ends.
    pub fn close(&self) {
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
    }
}

/// The model's image side, timed and its batch sizes counted for the metrics.
struct Metered<'a> {
    encoder: &'a dyn ImageEncoder,
    metrics: &'a Metrics,
}

impl ImageEncoder for Metered<'_> {
    fn encoding_len(&self) -> usize {
        self.encoder.encoding_len()
    }

    fn prepare(&self, bytes: &[u8], name: &str) -> Result<Vec<f32>, Error> {
        self.encoder.prepare(bytes, name)
    }

    fn encode(&self, batch: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, Error> {
        let started = Instant::now();
        let encoded = self.encoder.encode(batch);
        self.metrics.batch(batch.len(), started.elapsed());
        encoded
    }
}

/// Hands each result to the request that waits for it.
struct Replies;

impl Sink<Embedded<ImageRequest>> for Replies {
    fn write(
        &mut self,
        batch: &[Embedded<ImageRequest>],
        _: &dyn Progress,
    ) -> Result<(), JobError> {
        for done in batch {
            let reply = match &done.embedding {
                Ok(embedding) => Ok(embedding.clone()),
                Err(err) => Err(input_message(done.input.name(), err)),
            };
            done.input.answer(reply);
        }
        Ok(())
    }
}

/// What the server's job tells its log: per-image failures only with `--verbose` (the
/// client has the message), the rest as it is; no progress bar.
struct JobLog<'a>(&'a dyn Progress);

impl Progress for JobLog<'_> {
    fn say(&self, level: Level, message: &dyn std::fmt::Display) {
        self.0.say(level, message);
    }

    fn failed(&self, input: &str, error: &dyn std::fmt::Display) {
        self.0.say(Level::Detail, &input_message(input, error));
    }
}

/// Runs a job on `session`'s image encoder (with its cache) over everything `feed` brings,
/// until the queue is closed. Should the encoder fail on a batch, the requests of that
/// batch are answered with an error (their replies are dropped), the failure is logged,
/// and the job goes on.
pub fn run_job(
    session: &Session,
    options: PipelineOptions,
    feed: Feed,
    metrics: &Metrics,
    log: &dyn Progress,
) {
    let metered = Metered {
        encoder: &session.checkpoint,
        metrics,
    };
    let job = Job::new(&metered, options).with_cache(session.cache.as_ref());
    let mut feed = feed;
    let log = JobLog(log);
    loop {
        match job.run(&mut feed, &mut Replies, &log) {
            Ok(_) => return,
            Err(err) => log.say(
                Level::Error,
                &format_args!(
                    "the image encoder failed on a batch ({err}); its requests were answered \
                     with an error, and serving goes on"
                ),
            ),
        }
    }
}
