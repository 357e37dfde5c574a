//! The hub download path against a loopback server that imitates huggingface.co.
//!
//! The server speaks the subset of the hub protocol hf-hub 0.4.3's sync API uses: a
//! `GET {endpoint}/{owner}/{name}/resolve/{revision}/{file}` with `Range: bytes=0-0` whose
//! response must carry `x-repo-commit`, `etag` or `x-linked-etag`, and `content-range`,
//! then a `GET` with `Range: bytes=0-` for the body. Errors carry the hub's `x-error-code`.
//! No test touches the real network; all settings go through `HubOptions`, not the process
//! environment, so the tests run in parallel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Response, Server};
use vlm::source::{resolve, HubOptions, SourceError};

const TOKEN: &str = "hf_loopback_secret";

/// One fake repository.
#[derive(Clone)]
struct FakeRepo {
    commit: String,
    files: HashMap<String, Vec<u8>>,
    /// Serve only to requests with `Authorization: Bearer TOKEN` (else 401 GatedRepo).
    gated: bool,
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

struct FakeHub {
    endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
}

impl FakeHub {
    fn start(repos: HashMap<String, FakeRepo>) -> Self {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("bind loopback"));
        let addr = server.server_addr().to_ip().expect("ip listener");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let server = Arc::clone(&server);
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    let header = |name: &'static str| {
                        request
                            .headers()
                            .iter()
                            .find(|h| h.field.equiv(name))
                            .map(|h| h.value.as_str().to_string())
                    };
                    let range = header("Range");
                    let auth = header("Authorization");
                    let url = request.url().to_string();
                    let (status, response) = answer(&repos, &url, range.as_deref(), &auth);
                    seen.lock().expect("lock").push(Seen {
                        url,
                        range,
                        auth,
                        status,
                    });
                    let _ = request.respond(response);
                }
            })
        };
        Self {
            endpoint: format!("http://{addr}"),
            seen,
            server,
            thread: Some(thread),
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

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Reply = (u16, Response<std::io::Cursor<Vec<u8>>>);

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn hub_error(status: u16, code: &str) -> Reply {
    let body = format!("{{\"error\":\"{code}\"}}");
    (
        status,
        Response::from_data(body.into_bytes())
            .with_status_code(status)
            .with_header(header("x-error-code", code))
            .with_header(header("x-error-message", code)),
    )
}

/// A small stable digest for fake etags (FNV-1a, 64 bit).
fn etag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
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
    // Large files on the hub are LFS: their etag is in x-linked-etag.
    let etag_header = if file.ends_with(".safetensors") || file.ends_with(".bin") {
        "x-linked-etag"
    } else {
        "etag"
    };
    let mut response = Response::from_data(body)
        .with_status_code(status)
        .with_header(header("x-repo-commit", &repo.commit))
        .with_header(header(etag_header, &format!("\"{}\"", etag(data))));
    if let Some(cr) = content_range {
        response = response.with_header(header("content-range", &cr));
    }
    (status, response)
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
    let blob = repo_dir.join("blobs").join(etag(&weights_bytes()));
    assert_eq!(read(&blob), weights_bytes());
    #[cfg(unix)]
    assert_eq!(
        std::fs::read_link(&files.weights).expect("snapshot entry is a symlink"),
        PathBuf::from("../../blobs").join(etag(&weights_bytes()))
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
