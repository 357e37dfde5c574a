//! The hub download path against a loopback server that imitates huggingface.co.
//!
//! The server speaks the subset of the hub protocol the downloader uses (the same as hf-hub
//! 0.4.3 and Python): a `GET {endpoint}/{owner}/{name}/resolve/{revision}/{file}` with
//! `Range: bytes=0-0` whose response carries `x-repo-commit`, `etag` or `x-linked-etag` (the
//! sha256 of an LFS file) and `content-range`, then a `GET` with `Range: bytes={start}-` for the
//! body. Errors carry the hub's `x-error-code`. It is a raw TCP server, one request per
//! connection, so tests can cut a body short or stall it. No test touches the real network;
//! all settings go through `HubOptions`, not the process environment, so the tests run in
//! parallel.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use vlm::source::{resolve, HubOptions, SourceError};

const TOKEN: &str = "hf_loopback_secret";

/// One fake repository.
#[derive(Clone)]
struct FakeRepo {
    commit: String,
    files: HashMap<String, Vec<u8>>,
    /// Serve only to requests with `Authorization: Bearer TOKEN` (else 401 GatedRepo).
    gated: bool,
    /// Answer every file request with a bare 403 (token without read access).
    forbidden: bool,
}

impl FakeRepo {
    fn new(commit_digit: char, files: &[(&str, &[u8])]) -> Self {
        Self {
            commit: std::iter::repeat_n(commit_digit, 40).collect(),
            files: files
                .iter()
                .map(|(n, c)| (n.to_string(), c.to_vec()))
                .collect(),
            gated: false,
            forbidden: false,
        }
    }
}

/// A request the server saw.
#[derive(Clone, Debug)]
struct Seen {
    url: String,
    range: Option<String>,
    auth: Option<String>,
    status: u16,
}

/// Faults the fake hub injects.
#[derive(Default)]
struct Faults {
    /// This many body requests for LFS files get the headers (full Content-Length) and half
    /// the bytes, then the connection closes.
    drop_bodies: AtomicUsize,
    /// Body requests for LFS files get these bytes flipped (a broken mirror or proxy).
    corrupt_bodies: AtomicBool,
    /// Wait this long (ms) before answering anything.
    stall_ms: AtomicUsize,
    /// LFS body requests get half the bytes, then a pause this long (ms), then the rest.
    stall_body_ms: AtomicUsize,
}

/// A parsed request head.
struct RawRequest {
    target: String,
    headers: HashMap<String, String>,
}

/// Loopback HTTP/1.1 server, one request per connection (`Connection: close`), so a test
/// can cut a body short by closing the socket.
struct TestServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start(handler: impl Fn(RawRequest, TcpStream) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let handler = Arc::clone(&handler);
                    std::thread::spawn(move || {
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                        if let Some(request) = read_request(&stream) {
                            handler(request, stream);
                        }
                    });
                }
            })
        };
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_request(stream: &TcpStream) -> Option<RawRequest> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let target = line.split_whitespace().nth(1)?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Some(RawRequest { target, headers })
}

/// An answer: status, headers, body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Write the head (with the full Content-Length) and the first `send` body bytes, then
    /// close.
    fn write(&self, stream: &mut TcpStream, send: usize) {
        self.write_head(stream);
        let _ = stream.write_all(&self.body[..send.min(self.body.len())]);
        let _ = stream.flush();
        let _ = stream.shutdown(Shutdown::Both);
    }

    /// Write the head and `first` body bytes, pause, then send the rest.
    fn write_slowly(&self, stream: &mut TcpStream, first: usize, pause: Duration) {
        self.write_head(stream);
        let _ = stream.write_all(&self.body[..first]);
        let _ = stream.flush();
        std::thread::sleep(pause);
        let _ = stream.write_all(&self.body[first..]);
        let _ = stream.shutdown(Shutdown::Both);
    }

    fn write_head(&self, stream: &mut TcpStream) {
        let mut head = format!("HTTP/1.1 {} Fake\r\n", self.status);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        let _ = stream.write_all(head.as_bytes());
    }
}

struct FakeHub {
    endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    faults: Arc<Faults>,
    _server: TestServer,
}

impl FakeHub {
    fn start(repos: HashMap<String, FakeRepo>) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Faults::default());
        let server = {
            let seen = Arc::clone(&seen);
            let faults = Arc::clone(&faults);
            TestServer::start(move |request, mut stream| {
                let range = request.headers.get("range").cloned();
                let auth = request.headers.get("authorization").cloned();
                let url = request.target;
                let reply = answer(&repos, &url, range.as_deref(), &auth);
                seen.lock().expect("lock").push(Seen {
                    url: url.clone(),
                    range: range.clone(),
                    auth,
                    status: reply.status,
                });
                let stall = faults.stall_ms.load(Ordering::SeqCst);
                if stall > 0 {
                    std::thread::sleep(Duration::from_millis(stall as u64));
                }
                let body_of_lfs =
                    reply.status < 300 && is_lfs(&url) && range.as_deref() != Some("bytes=0-0");
                let mut reply = reply;
                if body_of_lfs && faults.corrupt_bodies.load(Ordering::SeqCst) {
                    for b in reply.body.iter_mut().step_by(1000) {
                        *b ^= 0xff;
                    }
                }
                let dropped = body_of_lfs
                    && faults
                        .drop_bodies
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                let half = reply.body.len() / 2;
                let stall_body = faults.stall_body_ms.load(Ordering::SeqCst);
                if dropped {
                    reply.write(&mut stream, half);
                } else if body_of_lfs && stall_body > 0 {
                    reply.write_slowly(&mut stream, half, Duration::from_millis(stall_body as u64));
                } else {
                    reply.write(&mut stream, reply.body.len());
                }
            })
        };
        Self {
            endpoint: format!("http://{}", server.addr),
            seen,
            faults,
            _server: server,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    fn opts(&self, cache: &Path) -> HubOptions {
        HubOptions {
            endpoint: Some(self.endpoint.clone()),
            token: None,
            cache_dir: cache.to_path_buf(),
            offline: false,
            progress: false,
            timeout: Duration::from_secs(10),
            proxy: None,
        }
    }
}

fn is_lfs(url: &str) -> bool {
    url.ends_with(".safetensors") || url.ends_with(".bin")
}

fn hub_error(status: u16, code: &str) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: format!("{{\"error\":\"{code}\"}}").into_bytes(),
    }
    .header("x-error-code", code)
    .header("x-error-message", code)
}

/// A small stable digest for the git etags of small files (FNV-1a, 64 bit).
fn etag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// The etag of an LFS file: its sha256, as on the hub.
fn lfs_oid(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn answer(
    repos: &HashMap<String, FakeRepo>,
    url: &str,
    range: Option<&str>,
    auth: &Option<String>,
) -> Reply {
    // /{owner}/{name}/resolve/{revision}/{file}; the revision arrives URL-encoded.
    let parts: Vec<&str> = url.trim_start_matches('/').splitn(5, '/').collect();
    let [owner, name, "resolve", revision, file] = parts[..] else {
        return hub_error(404, "NotFound");
    };
    let Some(repo) = repos.get(&format!("{owner}/{name}")) else {
        return hub_error(404, "RepoNotFound");
    };
    if repo.gated && auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        return hub_error(401, "GatedRepo");
    }
    if repo.forbidden {
        return Reply {
            status: 403,
            headers: Vec::new(),
            body: b"Forbidden".to_vec(),
        };
    }
    if !["main", "refs%2Fpr%2F15", repo.commit.as_str()].contains(&revision) {
        return hub_error(404, "RevisionNotFound");
    }
    let Some(data) = repo.files.get(file) else {
        return hub_error(404, "EntryNotFound");
    };
    let len = data.len();
    let (status, body, content_range) = match range.and_then(|r| r.strip_prefix("bytes=")) {
        Some(spec) => {
            let (start, end) = spec.split_once('-').unwrap_or((spec, ""));
            let start: usize = start.parse().unwrap_or(0).min(len);
            let end: usize = end
                .parse()
                .map(|e: usize| e + 1)
                .unwrap_or(len)
                .min(len)
                .max(start);
            (
                206,
                data[start..end].to_vec(),
                Some(format!("bytes {start}-{}/{len}", end.saturating_sub(1))),
            )
        }
        None => (200, data.clone(), None),
    };
    // Large files on the hub are LFS: their etag (the sha256) is in x-linked-etag.
    let (etag_header, etag_value) = if is_lfs(file) {
        ("x-linked-etag", lfs_oid(data))
    } else {
        ("etag", etag(data))
    };
    let mut reply = Reply {
        status,
        headers: Vec::new(),
        body,
    }
    .header("x-repo-commit", &repo.commit)
    .header(etag_header, &format!("\"{etag_value}\""));
    if let Some(cr) = content_range {
        reply = reply.header("content-range", &cr);
    }
    reply
}

const CONFIG: &[u8] = b"{\"projection_dim\": 8}";
const TOKENIZER: &[u8] = b"{\"model\": {\"type\": \"BPE\"}}";
const PREPROCESSOR: &[u8] = b"{\"crop_size\": 4}";

fn weights_bytes() -> Vec<u8> {
    (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn checkpoint(weights_name: Option<&str>, commit_digit: char) -> FakeRepo {
    let weights = weights_bytes();
    let mut files: Vec<(&str, &[u8])> = vec![
        ("config.json", CONFIG),
        ("tokenizer.json", TOKENIZER),
        ("preprocessor_config.json", PREPROCESSOR),
    ];
    if let Some(name) = weights_name {
        files.push((name, &weights));
    }
    FakeRepo::new(commit_digit, &files)
}

fn hub_with(repos: &[(&str, FakeRepo)]) -> FakeHub {
    FakeHub::start(
        repos
            .iter()
            .map(|(id, r)| (id.to_string(), r.clone()))
            .collect(),
    )
}

fn file_gets(seen: &[Seen]) -> usize {
    seen.iter().filter(|s| s.url.contains("/resolve/")).count()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("readable downloaded file")
}

#[test]
fn download_lays_out_the_hf_cache_then_reuses_it_online_and_offline() {
    let hub = hub_with(&[("test/tiny", checkpoint(Some("model.safetensors"), 'a'))]);
    let cache = tempfile::tempdir().expect("tempdir");
    let opts = hub.opts(cache.path());

    // (1) First resolve downloads the four files.
    let files = resolve("test/tiny", None, &opts).expect("download");
    assert_eq!(files.id, "test/tiny");
    assert_eq!(files.revision.as_deref(), Some("main"));
    assert_eq!(read(&files.config), CONFIG);
    assert_eq!(read(&files.tokenizer), TOKENIZER);
    assert_eq!(read(&files.preprocessor), PREPROCESSOR);
    assert_eq!(read(&files.weights), weights_bytes());
    assert!(files.weights.ends_with("model.safetensors"));

    // Standard layout: refs/main -> commit, snapshots/<commit>/<file> -> ../../blobs/<etag>.
    let commit = "a".repeat(40);
    let repo_dir = cache.path().join("models--test--tiny");
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).expect("ref"),
        commit
    );
    let snapshot = repo_dir.join("snapshots").join(&commit);
    assert_eq!(files.config, snapshot.join("config.json"));
    assert_eq!(files.weights, snapshot.join("model.safetensors"));
    let blob = repo_dir.join("blobs").join(lfs_oid(&weights_bytes()));
    assert_eq!(read(&blob), weights_bytes());
    #[cfg(unix)]
    assert_eq!(
        std::fs::read_link(&files.weights).expect("snapshot entry is a symlink"),
        PathBuf::from("../../blobs").join(lfs_oid(&weights_bytes()))
    );
    // hf-hub first probes with `Range: bytes=0-0`, then fetches `bytes=0-`.
    let seen = hub.seen();
    assert_eq!(file_gets(&seen), 8, "{seen:#?}");
    assert!(seen.iter().any(|s| s.range.as_deref() == Some("bytes=0-0")));
    assert!(seen.iter().all(|s| s.status == 206 && s.auth.is_none()));
    assert!(!seen.iter().any(|s| s.url.contains("pytorch_model.bin")));

    // (2) A second resolve is served from the cache: no request at all.
    let again = resolve("test/tiny", None, &opts).expect("cached");
    assert_eq!(again, files);
    assert_eq!(hub.seen().len(), seen.len());

    // (3b) Offline after the download works and never calls the server.
    let offline = HubOptions {
        offline: true,
        ..opts.clone()
    };
    assert_eq!(
        resolve("test/tiny", None, &offline).expect("offline"),
        files
    );
    // A full commit as revision finds the snapshot directly.
    let by_commit = resolve("test/tiny", Some(&commit), &offline).expect("by commit");
    assert_eq!(by_commit.weights, files.weights);
    assert_eq!(hub.seen().len(), seen.len());
}

#[test]
fn offline_with_an_empty_cache_names_the_missing_files_and_makes_no_request() {
    let hub = hub_with(&[("test/tiny", checkpoint(Some("model.safetensors"), 'a'))]);
    let cache = tempfile::tempdir().expect("tempdir");
    let opts = HubOptions {
        offline: true,
        ..hub.opts(cache.path())
    };
    let err = resolve("test/tiny", None, &opts).unwrap_err();
    assert!(matches!(err, SourceError::OfflineMissing { .. }), "{err}");
    let msg = err.to_string();
    for needle in [
        "test/tiny",
        "config.json",
        "tokenizer.json",
        "preprocessor_config.json",
        "model.safetensors (or pytorch_model.bin)",
        "HF_HUB_OFFLINE",
        "online",
    ] {
        assert!(msg.contains(needle), "{needle} not in: {msg}");
    }
    assert!(msg.contains(&cache.path().display().to_string()), "{msg}");
    assert!(hub.seen().is_empty());
}

#[test]
fn missing_safetensors_falls_back_to_pytorch_model_bin() {
    let hub = hub_with(&[("test/old", checkpoint(Some("pytorch_model.bin"), 'b'))]);
    let cache = tempfile::tempdir().expect("tempdir");
    let opts = hub.opts(cache.path());
    let files = resolve("test/old", None, &opts).expect("fallback");
    assert!(files.weights.ends_with("pytorch_model.bin"));
    assert_eq!(read(&files.weights), weights_bytes());
    let seen = hub.seen();
    let safetensors: Vec<_> = seen
        .iter()
        .filter(|s| s.url.ends_with("model.safetensors"))
        .collect();
    assert_eq!(safetensors.len(), 1, "{seen:#?}");
    assert_eq!(safetensors[0].status, 404);

    // Cached .bin is used next time without asking for safetensors again.
    let before = hub.seen().len();
    let again = resolve("test/old", None, &opts).expect("cached");
    assert_eq!(again.weights, files.weights);
    assert_eq!(hub.seen().len(), before);
}

#[test]
fn a_repo_without_weights_is_a_clear_error() {
    let hub = hub_with(&[("test/empty", checkpoint(None, 'c'))]);
    let cache = tempfile::tempdir().expect("tempdir");
    let err = resolve("test/empty", None, &hub.opts(cache.path())).unwrap_err();
    assert!(matches!(err, SourceError::NoWeights { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("pytorch_model.bin"),
        "{msg}"
    );
}

#[test]
fn unknown_repo_says_to_check_the_repo_id() {
    let hub = hub_with(&[]);
    let cache = tempfile::tempdir().expect("tempdir");
    let err = resolve("nobody/nothing", None, &hub.opts(cache.path())).unwrap_err();
    assert!(matches!(err, SourceError::RepoNotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("nobody/nothing"), "{msg}");
    assert!(msg.contains("vlm models"), "{msg}");
    assert!(msg.contains(&hub.endpoint), "{msg}");
}

#[test]
fn unknown_revision_and_missing_file_are_named() {
    let hub = hub_with(&[(
        "test/partial",
        FakeRepo::new('d', &[("config.json", CONFIG)]),
    )]);
    let cache = tempfile::tempdir().expect("tempdir");
    let opts = hub.opts(cache.path());
    let err = resolve("test/partial", Some("v9"), &opts).unwrap_err();
    assert!(matches!(err, SourceError::RevisionNotFound { .. }), "{err}");
    assert!(err.to_string().contains("v9"));
    let err = resolve("test/partial", None, &opts).unwrap_err();
    let SourceError::FileNotFound { file, .. } = &err else {
        panic!("unexpected {err}");
    };
    assert_eq!(file, "tokenizer.json");
}

#[test]
fn gated_repo_needs_hf_token_and_the_token_is_sent() {
    let mut repo = checkpoint(Some("model.safetensors"), 'e');
    repo.gated = true;
    let hub = hub_with(&[("test/gated", repo)]);
    let cache = tempfile::tempdir().expect("tempdir");
    let opts = hub.opts(cache.path());
    let err = resolve("test/gated", None, &opts).unwrap_err();
    assert!(
        matches!(err, SourceError::Unauthorized { status: 401, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("HF_TOKEN"), "{msg}");
    assert!(msg.contains("licence"), "{msg}");
    assert!(msg.contains("test/gated"), "{msg}");

    let with_token = HubOptions {
        token: Some(TOKEN.to_string()),
        ..opts
    };
    let files = resolve("test/gated", None, &with_token).expect("authorised");
    assert_eq!(read(&files.config), CONFIG);
    let expected = format!("Bearer {TOKEN}");
    assert!(hub
        .seen()
        .iter()
        .filter(|s| s.status == 206)
        .all(|s| s.auth.as_deref() == Some(expected.as_str())));
}

#[test]
fn slashed_revision_is_escaped_in_urls_and_nested_in_refs() {
    let hub = hub_with(&[("test/tiny", checkpoint(Some("model.safetensors"), 'f'))]);
    let cache = tempfile::tempdir().expect("tempdir");
    let opts = hub.opts(cache.path());
    let files = resolve("test/tiny", Some("refs/pr/15"), &opts).expect("pr revision");
    assert_eq!(files.revision.as_deref(), Some("refs/pr/15"));
    assert!(hub
        .seen()
        .iter()
        .all(|s| s.url.starts_with("/test/tiny/resolve/refs%2Fpr%2F15/")));
    let ref_file = cache.path().join("models--test--tiny/refs/refs/pr/15");
    assert_eq!(
        std::fs::read_to_string(ref_file).expect("nested ref"),
        "f".repeat(40)
    );
    let offline = HubOptions {
        offline: true,
        ..opts
    };
    assert_eq!(
        resolve("test/tiny", Some("refs/pr/15"), &offline).expect("offline"),
        files
    );
    // `main` was never fetched, so offline `main` is a miss.
    assert!(resolve("test/tiny", None, &offline).is_err());
}

#[test]
fn registry_alias_resolves_to_its_repo_on_the_endpoint() {
    let hub = hub_with(&[(
        "openai/clip-vit-base-patch32",
        checkpoint(Some("model.safetensors"), '1'),
    )]);
    let cache = tempfile::tempdir().expect("tempdir");
    let files = resolve("clip-b32", None, &hub.opts(cache.path())).expect("alias");
    assert_eq!(files.id, "openai/clip-vit-base-patch32");
    assert_eq!(files.revision.as_deref(), Some("main"));
    assert!(cache
        .path()
        .join("models--openai--clip-vit-base-patch32/refs/main")
        .is_file());
}

#[test]
fn unreachable_endpoint_suggests_offline_mode() {
    // Bind then drop a listener: the port is then (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let cache = tempfile::tempdir().expect("tempdir");
    let opts = HubOptions {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        token: None,
        cache_dir: cache.path().to_path_buf(),
        offline: false,
        progress: false,
        timeout: Duration::from_secs(10),
        proxy: None,
    };
    let err = resolve("test/tiny", None, &opts).unwrap_err();
    assert!(matches!(err, SourceError::Network { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
}

#[test]
fn forbidden_repo_says_to_set_hf_token() {
    let mut repo = checkpoint(Some("model.safetensors"), '9');
    repo.forbidden = true;
    let hub = hub_with(&[("test/private", repo)]);
    let cache = tempfile::tempdir().expect("tempdir");
    let err = resolve("test/private", None, &hub.opts(cache.path())).unwrap_err();
    assert!(
        matches!(err, SourceError::Unauthorized { status: 403, .. }),
        "{err}"
    );
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        msg.contains("HTTP 403") && msg.contains("HF_TOKEN"),
        "{msg}"
    );
    assert!(msg.contains("test/private"), "{msg}");
}

/// The cache entry for the weights of `repo` at `commit`: blob, snapshot link, partials.
struct WeightsState {
    blob: bool,
    snapshot: bool,
    partials: Vec<(String, u64)>,
}

fn weights_state(cache: &Path, folder: &str, commit: &str) -> WeightsState {
    let repo_dir = cache.join(folder);
    let oid = lfs_oid(&weights_bytes());
    let partials = std::fs::read_dir(repo_dir.join("blobs"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let len = e.metadata().ok()?.len();
                    (name.starts_with(&oid) && name != oid).then_some((name, len))
                })
                .collect()
        })
        .unwrap_or_default();
    WeightsState {
        blob: repo_dir.join("blobs").join(&oid).exists(),
        snapshot: repo_dir
            .join("snapshots")
            .join(commit)
            .join("model.safetensors")
            .symlink_metadata()
            .is_ok(),
        partials,
    }
}

#[test]
fn a_dropped_connection_is_retried_and_resumed_with_range() {
    let hub = hub_with(&[("test/flaky", checkpoint(Some("model.safetensors"), '2'))]);
    hub.faults.drop_bodies.store(1, Ordering::SeqCst);
    let cache = tempfile::tempdir().expect("tempdir");
    let files = resolve("test/flaky", None, &hub.opts(cache.path())).expect("retry succeeds");
    assert_eq!(read(&files.weights), weights_bytes());
    let half = weights_bytes().len() / 2;
    let bodies: Vec<_> = hub
        .seen()
        .into_iter()
        .filter(|s| s.url.ends_with("model.safetensors") && s.range.as_deref() != Some("bytes=0-0"))
        .map(|s| s.range.unwrap_or_default())
        .collect();
    // The second request asks only for what the first did not deliver.
    assert_eq!(bodies, ["bytes=0-".to_string(), format!("bytes={half}-")]);
    let state = weights_state(cache.path(), "models--test--flaky", &"2".repeat(40));
    assert!(state.blob && state.snapshot && state.partials.is_empty());
}

#[test]
fn a_connection_that_keeps_dropping_fails_clearly_and_caches_nothing_for_the_file() {
    let hub = hub_with(&[("test/flaky", checkpoint(Some("model.safetensors"), '3'))]);
    hub.faults.drop_bodies.store(usize::MAX, Ordering::SeqCst);
    let cache = tempfile::tempdir().expect("tempdir");
    let opts = hub.opts(cache.path());
    let err = resolve("test/flaky", None, &opts).unwrap_err();
    let SourceError::Interrupted {
        received, expected, ..
    } = &err
    else {
        panic!("expected Interrupted, got {err}");
    };
    let total = weights_bytes().len() as u64;
    assert_eq!(*expected, total);
    assert!(*received < total, "{received}");
    let msg = err.to_string();
    eprintln!("{msg}");
    for needle in [
        "model.safetensors",
        "test/flaky",
        "interrupted",
        "run the command again",
        &format!("{}/test/flaky/resolve/main/model.safetensors", hub.endpoint),
    ] {
        assert!(msg.contains(needle), "{needle} not in: {msg}");
    }
    // Nothing that looks complete: no blob, no snapshot entry; offline sees the weights missing.
    let commit = "3".repeat(40);
    let state = weights_state(cache.path(), "models--test--flaky", &commit);
    assert!(!state.blob && !state.snapshot);
    let offline = HubOptions {
        offline: true,
        ..opts.clone()
    };
    let err = resolve("test/flaky", None, &offline).unwrap_err();
    let SourceError::OfflineMissing { missing, .. } = &err else {
        panic!("expected OfflineMissing, got {err}");
    };
    assert_eq!(missing, &["model.safetensors (or pytorch_model.bin)"]);
    // Only the released partial is left, for the next run to resume.
    let oid = lfs_oid(&weights_bytes());
    assert_eq!(state.partials.len(), 1, "{:?}", state.partials);
    let (name, have) = &state.partials[0];
    assert_eq!(name, &format!("{oid}.incomplete"));
    assert_eq!(have, received);

    // Once the network behaves, the next run resumes and ends with the right bytes.
    hub.faults.drop_bodies.store(0, Ordering::SeqCst);
    let files = resolve("test/flaky", None, &opts).expect("later run succeeds");
    assert_eq!(read(&files.weights), weights_bytes());
    let last = hub.seen().last().cloned().expect("requests");
    assert_eq!(last.range, Some(format!("bytes={have}-")));
    let state = weights_state(cache.path(), "models--test--flaky", &commit);
    assert!(state.blob && state.snapshot && state.partials.is_empty());
}

#[test]
fn bytes_that_do_not_match_the_lfs_sha256_are_discarded() {
    let hub = hub_with(&[("test/bent", checkpoint(Some("model.safetensors"), '4'))]);
    hub.faults.corrupt_bodies.store(true, Ordering::SeqCst);
    let cache = tempfile::tempdir().expect("tempdir");
    let opts = hub.opts(cache.path());
    let err = resolve("test/bent", None, &opts).unwrap_err();
    assert!(matches!(err, SourceError::Corrupt { .. }), "{err}");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        msg.contains("sha256") && msg.contains("model.safetensors"),
        "{msg}"
    );
    let state = weights_state(cache.path(), "models--test--bent", &"4".repeat(40));
    assert!(!state.blob && !state.snapshot && state.partials.is_empty());

    hub.faults.corrupt_bodies.store(false, Ordering::SeqCst);
    let files = resolve("test/bent", None, &opts).expect("clean run");
    assert_eq!(read(&files.weights), weights_bytes());
}

#[test]
fn a_silent_hub_times_out_naming_the_url() {
    let hub = hub_with(&[("test/slow", checkpoint(Some("model.safetensors"), '5'))]);
    let cache = tempfile::tempdir().expect("tempdir");
    let opts = HubOptions {
        timeout: Duration::from_secs(1),
        ..hub.opts(cache.path())
    };
    // No answer at all (headers never come).
    hub.faults.stall_ms.store(4000, Ordering::SeqCst);
    let started = Instant::now();
    let err = resolve("test/slow", None, &opts).unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, SourceError::Timeout { .. }), "{err}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    let msg = err.to_string();
    eprintln!("{msg}");
    for needle in [
        &format!("{}/test/slow/resolve/main/config.json", hub.endpoint),
        "1 s",
        "VLM_HUB_TIMEOUT",
        "HF_HUB_OFFLINE",
    ] {
        assert!(msg.contains(needle), "{needle} not in: {msg}");
    }
    assert!(!cache.path().join("models--test--slow/snapshots").exists());

    // Headers come, then the body stalls half way.
    hub.faults.stall_ms.store(0, Ordering::SeqCst);
    hub.faults.stall_body_ms.store(4000, Ordering::SeqCst);
    let started = Instant::now();
    let err = resolve("test/slow", None, &opts).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    eprintln!("{err}");
    let SourceError::Timeout { url, .. } = &err else {
        panic!("expected Timeout, got {err}");
    };
    assert!(
        url.ends_with("/test/slow/resolve/main/model.safetensors"),
        "{url}"
    );
    let state = weights_state(cache.path(), "models--test--slow", &"5".repeat(40));
    assert!(!state.blob && !state.snapshot);
}

/// A loopback HTTP proxy: takes absolute-form requests and relays them upstream.
fn start_proxy(targets: Arc<Mutex<Vec<String>>>) -> TestServer {
    TestServer::start(move |request, mut client| {
        targets.lock().expect("lock").push(request.target.clone());
        let Some(rest) = request.target.strip_prefix("http://") else {
            let _ = client.write_all(b"HTTP/1.1 400 Not absolute\r\nContent-Length: 0\r\n\r\n");
            return;
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let Ok(mut upstream) = TcpStream::connect(authority) else {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
            return;
        };
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
        for name in ["range", "authorization", "user-agent"] {
            if let Some(value) = request.headers.get(name) {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        head.push_str("\r\n");
        if upstream.write_all(head.as_bytes()).is_ok() {
            let mut response = Vec::new();
            let _ = upstream.read_to_end(&mut response);
            let _ = client.write_all(&response);
        }
        let _ = client.shutdown(Shutdown::Both);
    })
}

#[test]
fn downloads_go_through_the_configured_proxy() {
    let hub = hub_with(&[("test/proxied", checkpoint(Some("model.safetensors"), '6'))]);
    let targets = Arc::new(Mutex::new(Vec::new()));
    let proxy = start_proxy(Arc::clone(&targets));
    let cache = tempfile::tempdir().expect("tempdir");
    let opts = HubOptions {
        proxy: Some(format!("http://{}", proxy.addr)),
        ..hub.opts(cache.path())
    };
    let files = resolve("test/proxied", None, &opts).expect("download through the proxy");
    assert_eq!(read(&files.weights), weights_bytes());
    let targets = targets.lock().expect("lock").clone();
    // Every hub request went through the proxy, in absolute form.
    assert_eq!(targets.len(), 8, "{targets:#?}");
    assert_eq!(hub.seen().len(), 8);
    let prefix = format!("{}/test/proxied/resolve/main/", hub.endpoint);
    assert!(
        targets.iter().all(|t| t.starts_with(&prefix)),
        "{targets:#?}"
    );

    // A proxy ureq cannot speak is refused up front, password hidden.
    let bad = HubOptions {
        proxy: Some("socks5://me:hunter2@127.0.0.1:1".into()),
        ..hub.opts(cache.path())
    };
    let err = resolve("test/other", None, &bad).unwrap_err();
    assert!(matches!(err, SourceError::Proxy { .. }), "{err}");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(!msg.contains("hunter2") && msg.contains("http://"), "{msg}");
    // ... but only when something must be downloaded: a cached model still resolves.
    assert_eq!(resolve("test/proxied", None, &bad).expect("cached"), files);
}
