//! The HTTP side: routes, the guard every request passes (API key, timeout, metrics, log
//! line), the handlers, and the errors as responses.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{oneshot, Semaphore};

use super::api::{
    self, AskRequest, BadRequest, CaptionRequest, ClassifyRequest, DescribePlan, EmbeddingsRequest,
    EmbeddingsResponse, ErrorBody, ErrorDetail, ImageRef, Modality, ModelList,
};
use super::describe::{Generate, Generator};
use super::metrics::{Metrics, QueueState};
use super::queue::{self, Ask, Embed, Feed, Full, Queue, Replies};
use super::{ApiKey, Loaded, ServeOptions};
use crate::caption::{self, CaptionSession};
use crate::decide::Scorer;
use crate::export;
use crate::inputs::{self, Source};
use crate::job::{Level, Progress, Silent};
use crate::labels::PromptSet;
use crate::model::blip::BlipTask;
use crate::output::{Format, ResultWriter};
use crate::pipeline::PipelineOptions;
use crate::search::normalize;
use crate::session::Session;
use crate::source::registry::Task;

/// Label sets whose prompt embeddings are kept for `/v1/classify`.
const KEPT_SCORERS: usize = 32;

/// Labels (as given) and prompts: what a classify request's scorer depends on.
type ScorerKey = (Vec<String>, Vec<String>);

/// Scorers of recent label sets, the oldest dropped first.
#[derive(Default)]
struct Scorers {
    kept: HashMap<ScorerKey, Arc<Scorer>>,
    order: VecDeque<ScorerKey>,
}

/// The loaded model with its queue, and the queue's feed until the job takes it.
enum Model {
    Matching {
        session: Session,
        queue: Queue<Embed>,
        feed: Mutex<Option<Feed<Embed>>>,
    },
    Describing {
        session: CaptionSession,
        queue: Queue<Generate>,
        feed: Mutex<Option<Feed<Generate>>>,
    },
}

impl Model {
    fn new(loaded: Loaded, capacity: usize) -> Self {
        match loaded {
            Loaded::Matching(session) => {
                let (queue, feed) = Queue::new(capacity);
                Self::Matching {
                    session,
                    queue,
                    feed: Mutex::new(Some(feed)),
                }
            }
            Loaded::Describing(session) => {
                let (queue, feed) = Queue::new(capacity);
                Self::Describing {
                    session,
                    queue,
                    feed: Mutex::new(Some(feed)),
                }
            }
        }
    }
}

/// The feed of a queue, once.
fn take<A: Ask>(feed: &Mutex<Option<Feed<A>>>) -> Option<Feed<A>> {
    feed.lock().ok().and_then(|mut f| f.take())
}

/// What every handler shares: the model, the queue, the counters.
pub(super) struct Shared {
    model: Model,
    model_id: String,
    task: Task,
    pub(super) metrics: Metrics,
    scorers: Mutex<Scorers>,
    /// The text tower runs one request at a time, beside the image encoder.
    text: Semaphore,
    timeout: Duration,
    max_request_bytes: usize,
    api_key: Option<ApiKey>,
    pub(super) log: Arc<dyn Progress + Send + Sync>,
    draining: AtomicBool,
}

impl Shared {
    pub(super) fn new(
        loaded: Loaded,
        options: &ServeOptions,
        log: Arc<dyn Progress + Send + Sync>,
    ) -> Self {
        Self {
            model_id: loaded.id().to_string(),
            task: loaded.task(),
            model: Model::new(loaded, options.queue),
            metrics: Metrics::default(),
            scorers: Mutex::default(),
            text: Semaphore::new(1),
            timeout: options.timeout,
            max_request_bytes: options.max_request_bytes,
            api_key: options.api_key.clone(),
            log,
            draining: AtomicBool::new(false),
        }
    }

    /// Runs the job over the queue until it is closed (see [`queue::run_job`]): the
    /// embeddings of a matching model, the captions or answers of a BLIP model.
    pub(super) fn run_job(&self, pipeline: PipelineOptions) {
        let log = self.log.as_ref();
        match &self.model {
            Model::Matching { session, feed, .. } => {
                if let Some(feed) = take(feed) {
                    let cache = session.cache.as_ref();
                    let encoder = &session.checkpoint;
                    queue::run_job(
                        encoder,
                        cache,
                        pipeline,
                        feed,
                        &mut Replies,
                        &self.metrics,
                        log,
                    );
                }
            }
            Model::Describing { session, feed, .. } => {
                if let Some(feed) = take(feed) {
                    let mut generator = Generator {
                        captioner: &session.captioner,
                        metrics: &self.metrics,
                    };
                    let (encoder, cache) = (&session.captioner, session.cache.as_ref());
                    queue::run_job(
                        encoder,
                        cache,
                        pipeline,
                        feed,
                        &mut generator,
                        &self.metrics,
                        log,
                    );
                }
            }
        }
    }

    /// No more images: the job finishes those it has and ends.
    pub(super) fn close_queue(&self) {
        match &self.model {
            Model::Matching { queue, .. } => queue.close(),
            Model::Describing { queue, .. } => queue.close(),
        }
    }

    fn queue_state(&self) -> QueueState {
        let (depth, capacity) = match &self.model {
            Model::Matching { queue, .. } => (queue.depth(), queue.capacity()),
            Model::Describing { queue, .. } => (queue.depth(), queue.capacity()),
        };
        QueueState { depth, capacity }
    }

    /// The matching model and its queue, for `endpoint`; a 400 naming what fits a BLIP
    /// model.
    fn matching(&self, endpoint: &str) -> Result<(&Session, &Queue<Embed>), ApiError> {
        match &self.model {
            Model::Matching { session, queue, .. } => Ok((session, queue)),
            Model::Describing { .. } => Err(self.wrong_task(endpoint, Task::Classify)),
        }
    }

    /// The BLIP model and its queue, when it does `task`, for `endpoint`; else a 400
    /// naming what fits the model.
    fn describing(
        &self,
        endpoint: &str,
        task: Task,
    ) -> Result<(&CaptionSession, &Queue<Generate>), ApiError> {
        match &self.model {
            Model::Describing { session, queue, .. } if self.task == task => Ok((session, queue)),
            _ => Err(self.wrong_task(endpoint, task)),
        }
    }

    /// 400: `endpoint` needs a checkpoint of task `needs`; the message says what the loaded
    /// one is and which endpoints (and command) fit it, as the commands' refusals do.
    fn wrong_task(&self, endpoint: &str, needs: Task) -> ApiError {
        let fits = match self.task {
            Task::Classify => "POST /v1/classify and /v1/embeddings",
            Task::Caption => "POST /v1/caption",
            Task::Answer => "POST /v1/ask",
        };
        ApiError::bad(format!(
            "{} is {}, which cannot answer {endpoint}; use {fits} on this server (what `{}` \
             does), or serve {} for {endpoint} (`{}`)",
            self.model_id,
            self.task.checkpoint(),
            self.task.command(),
            needs.checkpoint(),
            needs.command()
        ))
    }

    /// Shutting down: `/health` says so while the requests in flight finish.
    pub(super) fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.log.say(
            Level::Note,
            &"stopping: no new connections; answering the requests in flight",
        );
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(key) = &self.api_key else {
            return true;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        given.is_some_and(|token| key.matches(token.as_bytes()))
    }
}

/// The routes, behind the guard and the body size limit.
pub(super) fn router(shared: Arc<Shared>, max_request_bytes: usize) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/classify", post(classify))
        .route("/v1/caption", post(caption))
        .route("/v1/ask", post(ask))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), guard))
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(shared)
}

/// The endpoint a path counts under in the metrics (any other path is "other", so that
/// random paths cannot grow the metrics).
fn endpoint(path: &str) -> &'static str {
    match path {
        "/health" => "/health",
        "/v1/models" => "/v1/models",
        "/metrics" => "/metrics",
        "/v1/embeddings" => "/v1/embeddings",
        "/v1/classify" => "/v1/classify",
        "/v1/caption" => "/v1/caption",
        "/v1/ask" => "/v1/ask",
        _ => "other",
    }
}

/// Every request: the API key (all but `/health`), the timeout, the metrics and, with
/// `--verbose`, a log line (method, path, status, time; never a header).
async fn guard(State(app): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let endpoint = endpoint(request.uri().path());
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = if endpoint != "/health" && !app.authorized(request.headers()) {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this server needs its API key: send the header Authorization: Bearer <key>",
        )
        .into_response()
    } else {
        match tokio::time::timeout(app.timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "not answered within {} s (--timeout-s); the server is busy: retry later",
                    app.timeout.as_secs_f64()
                ),
            )
            .retry_after(1)
            .into_response(),
        }
    };
    let status = response.status();
    let elapsed = started.elapsed();
    app.metrics.request(endpoint, status.as_u16(), elapsed);
    app.log.say(
        Level::Detail,
        &format_args!(
            "{method} {path} {} in {:.1} ms",
            status.as_u16(),
            elapsed.as_secs_f64() * 1e3
        ),
    );
    response
}

async fn health(State(app): State<Arc<Shared>>) -> Response {
    let draining = app.draining.load(Ordering::SeqCst);
    let body = serde_json::json!({
        "status": if draining { "stopping" } else { "ok" },
        "model": app.model_id,
        "task": app.task.name(),
    });
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(status, &body)
}

async fn models(State(app): State<Arc<Shared>>) -> Response {
    json(
        StatusCode::OK,
        &ModelList::of(&app.model_id, app.task.name()),
    )
}

async fn metrics(State(app): State<Arc<Shared>>) -> Response {
    let text = app.metrics.render(app.queue_state());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; this server has POST /v1/embeddings, POST /v1/classify (CLIP-style \
         models), POST /v1/caption, POST /v1/ask (BLIP), GET /v1/models, GET /health and \
         GET /metrics",
    )
}

async fn embeddings(
    State(app): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let request: EmbeddingsRequest = api::parse(&body, "embeddings")?;
    let format = request.encoding_format;
    let (session, _) = app.matching("/v1/embeddings")?;
    let dim = session.checkpoint.config().projection_dim;
    let (modality, inputs) = request.inputs(dim)?;
    let (rows, tokens) = match modality {
        Modality::Text => embed_texts(&app, inputs).await?,
        Modality::Image => (embed_images(&app, inputs).await?, 0),
    };
    let response = EmbeddingsResponse::new(rows, format, &app.model_id, tokens);
    Ok(json(StatusCode::OK, &response))
}

/// Texts through the text tower, as `vlm embed --text` embeds them (unit length); and the
/// tokens read.
async fn embed_texts(
    app: &Arc<Shared>,
    texts: Vec<String>,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let _turn = app.text.acquire().await.map_err(|_| ApiError::stopping())?;
    let shared = Arc::clone(app);
    blocking(move || {
        let (session, _) = shared.matching("/v1/embeddings")?;
        let checkpoint = &session.checkpoint;
        let mut tokens = 0;
        for text in &texts {
            tokens += checkpoint
                .tokenizer()
                .encode(text)
                .map_err(|e| ApiError::bad(e.to_string()))?
                .ids
                .len();
        }
        let rows = export::embed_texts(checkpoint, &session.files, texts, true, &Silent)
            .map_err(ApiError::internal)?;
        Ok((rows.rows().map(<[f32]>::to_vec).collect(), tokens))
    })
    .await
}

/// Images (references) through the queue, unit length, in order.
async fn embed_images(
    app: &Arc<Shared>,
    references: Vec<String>,
) -> Result<Vec<Vec<f32>>, ApiError> {
    let (_, queue) = app.matching("/v1/embeddings")?;
    let capacity = queue.capacity();
    if references.len() > capacity {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} images in one request; this server takes at most {capacity} (its --queue)",
                references.len()
            ),
        ));
    }
    let mut images = Vec::with_capacity(references.len());
    for (i, reference) in references.iter().enumerate() {
        let image = api::image_ref(reference, &format!("input {i}"))?;
        images.push(image);
    }
    let mut named = Vec::with_capacity(images.len());
    for (i, image) in images.into_iter().enumerate() {
        let name = match &image {
            ImageRef::Url(url) => url.clone(),
            ImageRef::Bytes(_) => format!("input {i}"),
        };
        named.push((name, image));
    }
    let images = fetch_all(app, named).await?;
    let replies = queue.submit(images.into_iter().map(|(n, b)| (n, b, Embed)).collect())?;
    let mut rows = Vec::with_capacity(replies.len());
    let mut failed = Vec::new();
    for reply in replies {
        match receive(reply).await? {
            Ok(mut row) => {
                normalize(&mut row);
                rows.push(row);
            }
            Err(message) => failed.push(message),
        }
    }
    if !failed.is_empty() {
        return Err(ApiError::bad(failed.join("; ")));
    }
    Ok(rows)
}

/// The bytes of every image: `data:` URIs as they are, URLs fetched side by side (each with
/// the CLI's timeouts and a size cap of the request limit).
async fn fetch_all(
    app: &Arc<Shared>,
    images: Vec<(String, ImageRef)>,
) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    let limit = app.max_request_bytes as u64;
    let mut pending = Vec::with_capacity(images.len());
    for (name, image) in images {
        pending.push(match image {
            ImageRef::Bytes(bytes) => (name, Ok(bytes)),
            ImageRef::Url(url) => (
                name,
                Err(tokio::task::spawn_blocking(move || {
                    inputs::read_bytes(&Source::Url(url), limit)
                })),
            ),
        });
    }
    let mut fetched = Vec::with_capacity(pending.len());
    for (name, image) in pending {
        let bytes = match image {
            Ok(bytes) => bytes,
            Err(task) => task
                .await
                .map_err(|_| ApiError::stopping())?
                .map_err(|e| ApiError::bad(e.to_string()))?,
        };
        fetched.push((name, bytes));
    }
    Ok(fetched)
}

/// One image's reply; a dropped reply means the model failed on its batch.
async fn receive<T>(
    reply: oneshot::Receiver<Result<T, String>>,
) -> Result<Result<T, String>, ApiError> {
    reply.await.map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the model failed on the batch that held this request's image; the server's log \
             says why",
        )
    })
}

async fn classify(
    State(app): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let (session, queue) = app.matching("/v1/classify")?;
    let plan = api::parse::<ClassifyRequest>(&body, "classify")?.plan()?;
    let scorer = scorer(&app, plan.labels, plan.prompts).await?;
    let checkpoint = &session.checkpoint;
    let decisions = plan
        .decisions
        .with_threshold_on(plan.threshold, scorer.thresholds_probability(checkpoint))
        .map_err(BadRequest::from)?;
    let image = fetch_all(&app, vec![(plan.name.clone(), plan.image)]).await?;
    let image = image.into_iter().map(|(n, b)| (n, b, Embed)).collect();
    let reply = queue.submit(image)?.into_iter().next();
    let embedding = match reply {
        Some(reply) => receive(reply).await?.map_err(ApiError::bad)?,
        None => return Err(ApiError::internal("no reply for the image")),
    };
    let scores = scorer
        .rank(checkpoint, &[&embedding])
        .map_err(ApiError::internal)?;
    let Some(scores) = scores.first() else {
        return Err(ApiError::internal("no scores for the image"));
    };
    let result = decisions.decide(&plan.name, scores, &scorer);
    // What `vlm classify --format json` writes for the image: one JSON Lines record is the
    // same object.
    let mut writer = ResultWriter::new(Vec::new(), Format::Jsonl)
        .with_scoring(scorer.scoring_name(checkpoint))
        .with_similarity_name(scorer.similarity_name());
    writer.write(&result).map_err(ApiError::internal)?;
    let mut record = writer.finish().map_err(ApiError::internal)?;
    if record.last() == Some(&b'\n') {
        record.pop();
    }
    Ok(json_bytes(StatusCode::OK, record))
}

async fn caption(
    State(app): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    // The task first: a caption request to a question-answering server is refused as such.
    let (session, queue) = app.describing("/v1/caption", Task::Caption)?;
    let plan = api::parse::<CaptionRequest>(&body, "caption")?.plan()?;
    describe(&app, session, queue, plan).await
}

async fn ask(
    State(app): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let (session, queue) = app.describing("/v1/ask", Task::Answer)?;
    let plan = api::parse::<AskRequest>(&body, "ask")?.plan()?;
    describe(&app, session, queue, plan).await
}

/// A caption or the answers for one image, through the queue (its generation shares the
/// batch's), answered as `vlm caption --format json` or `vlm ask --format json` writes it.
async fn describe(
    app: &Arc<Shared>,
    session: &CaptionSession,
    queue: &Queue<Generate>,
    plan: DescribePlan,
) -> Result<Response, ApiError> {
    let generate = plan.generate;
    let (blip_task, texts) = match &generate.request {
        caption::Request::Caption { prompt } => {
            (BlipTask::Caption, prompt.iter().collect::<Vec<_>>())
        }
        caption::Request::Ask { questions } => (BlipTask::Answer, questions.iter().collect()),
    };
    let texts: Vec<&str> = texts.into_iter().map(String::as_str).collect();
    // A prompt or question too long for the model, before the image is read.
    session
        .captioner
        .check(blip_task, &texts, &generate.options)
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let image = fetch_all(app, vec![(plan.name.clone(), plan.image)]).await?;
    let image = image
        .into_iter()
        .map(|(n, b)| (n, b, generate.clone()))
        .collect();
    let Some(reply) = queue.submit(image)?.into_iter().next() else {
        return Err(ApiError::internal("no reply for the image"));
    };
    let generated = receive(reply).await?.map_err(ApiError::bad)?;
    let body = generate
        .response(&plan.name, &app.model_id, &generated, plan.list)
        .map_err(ApiError::internal)?;
    Ok(json_bytes(StatusCode::OK, body))
}

/// The scorer of a label set: kept from an earlier request, or its prompts embedded now.
async fn scorer(
    app: &Arc<Shared>,
    labels: Vec<String>,
    prompts: PromptSet,
) -> Result<Arc<Scorer>, ApiError> {
    let key = (labels, prompts.prompts.clone());
    if let Some(kept) = app
        .scorers
        .lock()
        .ok()
        .and_then(|s| s.kept.get(&key).cloned())
    {
        return Ok(kept);
    }
    let _turn = app.text.acquire().await.map_err(|_| ApiError::stopping())?;
    let shared = Arc::clone(app);
    let scorer = blocking(move || {
        let (session, _) = shared.matching("/v1/classify")?;
        let text = session
            .checkpoint
            .embed_classes(&prompts)
            .map_err(|e| ApiError::bad(e.to_string()))?;
        Ok(Arc::new(Scorer::Prompts {
            prompts,
            text,
            examples: None,
        }))
    })
    .await?;
    if let Ok(mut scorers) = app.scorers.lock() {
        if scorers.order.len() >= KEPT_SCORERS {
            if let Some(oldest) = scorers.order.pop_front() {
                scorers.kept.remove(&oldest);
            }
        }
        if scorers
            .kept
            .insert(key.clone(), Arc::clone(&scorer))
            .is_none()
        {
            scorers.order.push_back(key);
        }
    }
    Ok(scorer)
}

/// Runs `work` on the blocking pool (model work, network reads).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| ApiError::stopping())?
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_bytes(status, bytes),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

fn json_bytes(status: StatusCode, bytes: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

/// An error answer: a status and a message in OpenAI's error shape.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the request (or its image) cannot be used.
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 500: the server's own failure.
    fn internal(error: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {error}"),
        )
    }

    /// 503: the server is going down.
    fn stopping() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is stopping; retry against a running one",
        )
    }

    fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// OpenAI's name for the kind of error.
    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_client_error() => "invalid_request_error",
            _ => "server_error",
        }
    }
}

impl From<BadRequest> for ApiError {
    fn from(error: BadRequest) -> Self {
        Self::bad(error.0)
    }
}

impl From<Full> for ApiError {
    fn from(_: Full) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "the queue is full (--queue); retry after the time in Retry-After",
        )
        .retry_after(1)
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                status,
                "the request body is larger than this server takes (--max-request-mib)",
            )
        } else {
            Self::new(status, rejection.body_text())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind(),
                param: None,
                code: None,
            },
        };
        let mut response = json(self.status, &body);
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
