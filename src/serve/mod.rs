//! `vlm serve`: a local HTTP server that keeps one model loaded and answers
//!
//! - `POST /v1/embeddings`: OpenAI's embeddings API; texts, or images (http(s) URLs or
//!   `data:` URIs) with `"modality": "image"` as Infinity takes them;
//! - `POST /v1/classify`: one image and labels, answered with what `vlm classify --format
//!   json` writes for it (the library's [`Scorer`](crate::decide::Scorer),
//!   [`Decisions`](crate::decide::Decisions) and [`ResultWriter`](crate::output::ResultWriter));
//! - `POST /v1/caption` and `POST /v1/ask`, with a BLIP checkpoint loaded: one image (and
//!   a prompt, or questions), answered with what `vlm caption --format json` or `vlm ask
//!   --format json` writes for it;
//! - `GET /health`, `GET /v1/models` (with the model's task), `GET /metrics` (Prometheus
//!   text).
//!
//! The model's task decides the endpoints ([`Loaded`]): an endpoint of another task is a
//! 400 whose message names the endpoints (and the command) that fit the model.
//!
//! ```text
//! requests ─▶ auth, size limit, timeout ─▶ handler ─▶ queue (bounded; 429 when full)
//!     ─▶ one job over the queue: decode on workers ─▶ encode in batches ─▶ reply to each request
//!                                          (BLIP: ─▶ generate for the batch ─▶ reply)
//! ```
//!
//! Every image of every request goes through one long-running [`Job`](crate::job::Job)
//! whose input is the queue ([`queue`]): images that arrive together are encoded together
//! (`--max-batch`, `--max-wait-ms`), a bad image is that request's 400 with the same
//! per-file message as the CLI's, and the server goes on. With BLIP, the job's sink
//! ([`describe`]) generates the captions or answers of each batch of encodings together
//! (requests with the same prompt and settings share a generation). Texts and prompts run on the text
//! tower one request at a time; a classify request's prompts are embedded once per label
//! set and kept.
//!
//! The server listens on 127.0.0.1 unless told otherwise; with an [`ApiKey`] every
//! endpoint but `/health` needs `Authorization: Bearer <key>`, compared in constant time
//! and never logged. When `stop` completes ([`termination`]: SIGTERM or Ctrl-C) it stops
//! accepting connections, answers the requests in flight, and returns.

mod api;
mod describe;
mod metrics;
mod queue;
mod routes;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::caption::{task_of_config, CaptionSession, DescribeError};
use crate::job::{Level, Progress};
use crate::model::blip::BlipTask;
use crate::pipeline::PipelineOptions;
use crate::session::{self, ModelSettings, Session, SessionError};
use crate::source::{self, registry::Task};

/// How the server listens and what it takes.
#[derive(Debug)]
pub struct ServeOptions {
    /// Where to listen (port 0: any free port; [`Server::local_addr`] says which).
    pub addr: SocketAddr,
    /// How long an image waits for others to share its encoder batch.
    pub max_wait: Duration,
    /// The most images accepted and not yet answered; past it, requests get 429.
    pub queue: usize,
    /// A request not answered in this time gets 503.
    pub timeout: Duration,
    /// The largest request body, in bytes (413 past it); also the largest image fetched
    /// from a URL.
    pub max_request_bytes: usize,
    /// Needed in every request but `/health` when set.
    pub api_key: Option<ApiKey>,
}

/// A bearer token, kept only as its SHA-256 digest, so that comparing it takes the same
/// time whatever is sent and the key itself is never in memory to be logged.
#[derive(Clone)]
pub struct ApiKey {
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(hidden)")
    }
}

impl ApiKey {
    /// The key in `path`: its first line, without surrounding whitespace.
    pub fn read(path: &Path) -> Result<Self, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ServeError::ApiKeyRead {
            path: path.to_path_buf(),
            cause,
        })?;
        let key = text.lines().next().unwrap_or("").trim();
        if key.is_empty() {
            return Err(ServeError::ApiKeyEmpty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self::new(key))
    }

    /// The key `key`.
    pub fn new(key: &str) -> Self {
        Self {
            digest: Sha256::digest(key.as_bytes()).into(),
        }
    }

    /// Whether `given` is the key. Digests of equal length are compared without an early
    /// exit, so the time taken says nothing about how much of the key was right.
    pub fn matches(&self, given: &[u8]) -> bool {
        let given: [u8; 32] = Sha256::digest(given).into();
        let difference = self
            .digest
            .iter()
            .zip(given.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

/// Why the server could not start or went down.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}; {hint}")]
    Bind {
        addr: SocketAddr,
        hint: &'static str,
        #[source]
        cause: std::io::Error,
    },
    #[error("cannot read the API key from {}", path.display())]
    ApiKeyRead {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("{} holds no API key; write the key on its first line", path.display())]
    ApiKeyEmpty { path: PathBuf },
    #[error(transparent)]
    Session(Box<SessionError>),
    #[error(transparent)]
    Describe(Box<DescribeError>),
    #[error("cannot start the server's threads")]
    Start(#[source] std::io::Error),
    #[error("the server stopped")]
    Serve(#[source] std::io::Error),
}

/// The model a server keeps loaded; its task decides the endpoints that answer.
pub enum Loaded {
    /// Image-text matching (CLIP, SigLIP, ...): `/v1/embeddings` and `/v1/classify`.
    Matching(Session),
    /// BLIP: `/v1/caption` (a captioning checkpoint) or `/v1/ask` (question answering).
    Describing(CaptionSession),
}

impl From<Session> for Loaded {
    fn from(session: Session) -> Self {
        Self::Matching(session)
    }
}

impl Loaded {
    /// Loads the checkpoint `settings` names, as the command of its task would: the
    /// registry or its directory tells the task before anything is downloaded; a hub
    /// repository outside the registry, its `config.json` once resolved.
    pub fn open(settings: &ModelSettings, progress: &dyn Progress) -> Result<Self, ServeError> {
        let task = match source::task_of(&settings.spec) {
            Some(task) => task,
            None => {
                let files = session::resolve(settings, Task::Classify)?;
                task_of_config(&files.config).map_or(Task::Classify, |task| match task {
                    BlipTask::Caption => Task::Caption,
                    BlipTask::Answer => Task::Answer,
                })
            }
        };
        Ok(match task {
            Task::Classify => Self::Matching(Session::open(settings, progress)?),
            Task::Caption => {
                Self::Describing(CaptionSession::open(settings, BlipTask::Caption, progress)?)
            }
            Task::Answer => {
                Self::Describing(CaptionSession::open(settings, BlipTask::Answer, progress)?)
            }
        })
    }

    /// The checkpoint, as responses name it.
    pub fn id(&self) -> &str {
        match self {
            Self::Matching(session) => &session.files.id,
            Self::Describing(session) => &session.files.id,
        }
    }

    /// What the checkpoint does.
    pub fn task(&self) -> Task {
        match self {
            Self::Matching(_) => Task::Classify,
            Self::Describing(session) => match session.captioner.task() {
                BlipTask::Caption => Task::Caption,
                BlipTask::Answer => Task::Answer,
            },
        }
    }

    fn pipeline(&self) -> PipelineOptions {
        match self {
            Self::Matching(session) => session.pipeline,
            Self::Describing(session) => session.pipeline,
        }
    }
}

impl From<SessionError> for ServeError {
    fn from(error: SessionError) -> Self {
        Self::Session(Box::new(error))
    }
}

impl From<DescribeError> for ServeError {
    fn from(error: DescribeError) -> Self {
        Self::Describe(Box::new(error))
    }
}

/// A server bound to its address, not yet serving.
pub struct Server {
    listener: TcpListener,
    options: ServeOptions,
}

/// What a server did before it stopped.
#[derive(Debug, Clone, Copy)]
pub struct Served {
    /// Requests answered.
    pub requests: u64,
}

impl Server {
    /// Binds `options.addr`, so that a port in use is said before the model loads.
    pub fn bind(options: ServeOptions) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(options.addr).map_err(|cause| ServeError::Bind {
            addr: options.addr,
            hint: match cause.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "another program uses this port: stop it or choose another --port"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "ports below 1024 need privileges: choose a --port above 1024"
                }
                _ => "check --host (an address of this machine) and --port",
            },
            cause,
        })?;
        Ok(Self { listener, options })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.options.addr)
    }

    /// Serves `model` until `stop` completes, then answers the requests in flight and
    /// returns. Batches are at most the session's batch size; the session's workers
    /// decode. `log` hears about failures (per-request lines with [`Level::Detail`]).
    pub fn run(
        self,
        model: impl Into<Loaded>,
        stop: impl Future<Output = ()> + Send + 'static,
        log: Arc<dyn Progress + Send + Sync>,
    ) -> Result<Served, ServeError> {
        let Server { listener, options } = self;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vlm-serve")
            .enable_all()
            .build()
            .map_err(ServeError::Start)?;
        let model = model.into();
        let pipeline = PipelineOptions {
            // Ctrl-C drains the server instead of cancelling the job.
            cancel: None,
            max_wait: Some(options.max_wait),
            ..model.pipeline()
        };
        let shared = Arc::new(routes::Shared::new(model, &options, log));
        let encoder = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("vlm-encoder".into())
                .spawn(move || shared.run_job(pipeline))
                .map_err(ServeError::Start)?
        };
        let served = runtime.block_on(async {
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let app = routes::router(Arc::clone(&shared), options.max_request_bytes);
            let draining = Arc::clone(&shared);
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    stop.await;
                    draining.drain();
                })
                .await
        });
        // Every request is answered (or its connection gone): the job finishes the
        // images it holds and ends.
        shared.close_queue();
        if encoder.join().is_err() {
            shared
                .log
                .say(Level::Error, &"the image encoder's thread panicked");
        }
        runtime.shutdown_timeout(Duration::from_secs(1));
        served.map_err(ServeError::Serve)?;
        Ok(Served {
            requests: shared.metrics.answered(),
        })
    }
}

/// Completes on SIGTERM or Ctrl-C (SIGINT); on other systems, on Ctrl-C. Should the
/// signals not be available, it never completes.
pub async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut interrupt)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return std::future::pending().await;
        };
        std::future::poll_fn(|cx| {
            if term.poll_recv(cx).is_ready() || interrupt.poll_recv(cx).is_ready() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_match_only_themselves() {
        let key = ApiKey::new("s3cret-token");
        assert!(key.matches(b"s3cret-token"));
        assert!(!key.matches(b"s3cret-toke"));
        assert!(!key.matches(b"s3cret-token "));
        assert!(!key.matches(b""));
        assert!(!format!("{key:?}").contains("s3cret"));
    }

    #[test]
    fn api_key_files_are_read_to_their_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "  k3y  \nsecond line\n").unwrap();
        assert!(ApiKey::read(&path).unwrap().matches(b"k3y"));
        std::fs::write(&path, "\n").unwrap();
        let err = ApiKey::read(&path).unwrap_err().to_string();
        assert!(err.contains("holds no API key"), "{err}");
        let err = ApiKey::read(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, ServeError::ApiKeyRead { .. }));
    }
}
