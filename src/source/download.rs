//! One file from the hub into the Hugging Face cache, with timeouts, proxy, retry and checks.
//!
//! Written here rather than using hf-hub 0.4.3's `ApiRepo::download`, whose ureq agents have
//! no read timeout (a stalled server hangs forever), read proxies only from the process
//! environment (no `NO_PROXY`), panic on a 3xx without `Location`, take the etag header as a
//! path component unchecked, and resume a `.part` file without checking that the server
//! honoured the `Range` or that the final size is right. hf-hub still supplies the repo naming
//! (`Repo::folder_name`, `url_revision`) so the layout matches `huggingface_hub`'s:
//! `blobs/{etag}`, `snapshots/{commit}/{file}` -> `../../blobs/{etag}`, `refs/{revision}`.
//!
//! A file is fetched as `GET Range: bytes=0-0` (commit, etag and size from the headers, relative
//! redirects followed like hf-hub and Python), then `GET Range: bytes={have}-` into a partial file
//! in `blobs/`. Only a partial whose length equals the announced size (and, for LFS files, whose
//! sha256 equals the `x-linked-etag`) is renamed to `blobs/{etag}`; the snapshot link and the ref
//! are written after that, each by an atomic rename, so an interrupted run never leaves a cache
//! entry that looks complete.

use super::{is_commit_hash, HubOptions, SourceError};
use hf_hub::{Repo, RepoType};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Attempts at one file body while the connection keeps dropping mid-transfer.
const ATTEMPTS: u32 = 3;
/// Pause before retry `n`, times `n`.
const BACKOFF: Duration = Duration::from_millis(250);
/// Connecting never waits longer than this, even with a long read timeout.
const MAX_CONNECT: Duration = Duration::from_secs(10);
/// A private partial untouched this long belongs to a killed process (a live one writes
/// continuously, or gives up within its timeout and releases it); adopt it.
const STALE: Duration = Duration::from_secs(120);
/// Relative redirects followed when asking for metadata.
const MAX_REDIRECTS: usize = 10;
/// Suffix of partial downloads in `blobs/`, as in Python `huggingface_hub`.
const INCOMPLETE: &str = "incomplete";

/// What the hub says about a file.
#[derive(Debug)]
struct Meta {
    commit: String,
    etag: String,
    size: u64,
    /// The etag came from `x-linked-etag`: an LFS file, whose etag is its sha256.
    lfs: bool,
}

/// Names used in errors for one download.
struct Ctx<'a> {
    repo: &'a str,
    revision: &'a str,
    file: &'a str,
    url: &'a str,
}

impl Ctx<'_> {
    fn bad(&self, cause: impl Into<String>) -> SourceError {
        SourceError::BadResponse {
            url: self.url.to_string(),
            cause: cause.into(),
        }
    }

    fn disk(&self, cache_dir: &Path, path: &Path, err: io::Error) -> SourceError {
        SourceError::Download {
            repo: self.repo.to_string(),
            file: self.file.to_string(),
            cache_dir: cache_dir.to_path_buf(),
            cause: format!("{}: {err}", path.display()),
        }
    }
}

/// Outcome of one attempt at a file body.
enum Attempt {
    /// The connection dropped or could not be made; what is on disk so far is good.
    Retry(String),
    /// Retrying cannot help.
    Fail(SourceError),
}

/// Downloads files of hub repos into one cache.
pub(crate) struct Downloader {
    /// Follows redirects (file bodies may live on a CDN).
    follow: ureq::Agent,
    /// Follows none, so the hub's own headers can be read (metadata).
    direct: ureq::Agent,
    token: Option<String>,
    endpoint: String,
    cache_dir: PathBuf,
    timeout: Duration,
    progress: bool,
}

impl Downloader {
    /// Agents for `opts`: its timeout and proxy only, never the process environment.
    pub(crate) fn new(opts: &HubOptions, endpoint: &str) -> Result<Self, SourceError> {
        let proxy = opts.proxy.as_deref().map(parse_proxy).transpose()?;
        let agent = |redirects: u32| {
            let mut builder = ureq::AgentBuilder::new()
                .try_proxy_from_env(false)
                .timeout_connect(opts.timeout.min(MAX_CONNECT))
                .timeout_read(opts.timeout)
                .timeout_write(opts.timeout)
                .redirects(redirects)
                // A CDN redirect must not receive the hub token.
                .redirect_auth_headers(ureq::RedirectAuthHeaders::SameHost)
                .user_agent(concat!("vlm/", env!("CARGO_PKG_VERSION")));
            if let Some(proxy) = &proxy {
                builder = builder.proxy(proxy.clone());
            }
            builder.build()
        };
        Ok(Self {
            follow: agent(5),
            direct: agent(0),
            token: opts.token.clone(),
            endpoint: endpoint.to_string(),
            cache_dir: opts.cache_dir.clone(),
            timeout: opts.timeout,
            progress: opts.progress,
        })
    }

    /// Download `file` of `repo` at `revision`; returns its snapshot path.
    pub(crate) fn download(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
    ) -> Result<PathBuf, SourceError> {
        let hf_repo = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
        let url = format!(
            "{}/{}/resolve/{}/{file}",
            self.endpoint,
            hf_repo.url(),
            hf_repo.url_revision()
        );
        let ctx = Ctx {
            repo,
            revision,
            file,
            url: &url,
        };
        let meta = self.metadata(&ctx)?;
        let repo_dir = self.cache_dir.join(hf_repo.folder_name());
        let blobs = repo_dir.join("blobs");
        fs::create_dir_all(&blobs).map_err(|e| ctx.disk(&self.cache_dir, &blobs, e))?;
        let blob = blobs.join(&meta.etag);
        if !blob_complete(&blob, meta.size) {
            self.fetch_blob(&ctx, &meta, &blobs, &blob)?;
        }
        let pointer = repo_dir.join("snapshots").join(&meta.commit).join(file);
        link_snapshot(&blob, &pointer, file).map_err(|e| ctx.disk(&self.cache_dir, &pointer, e))?;
        // Python's cache has no ref for a commit revision; snapshots/{commit} is found directly.
        if !is_commit_hash(revision) {
            let ref_path = repo_dir.join("refs").join(revision);
            write_atomic(&ref_path, meta.commit.as_bytes())
                .map_err(|e| ctx.disk(&self.cache_dir, &ref_path, e))?;
        }
        Ok(pointer)
    }

    /// Asks the hub for `repo`'s model information (no redirects, no token): the HTTP
    /// status of any answer, even an error status, since the hub answered; else why
    /// nothing came back (refused, unresolved, timed out).
    pub(crate) fn ping(&self, repo: &str) -> Result<u16, String> {
        let url = format!("{}/api/models/{repo}", self.endpoint);
        match self.direct.get(&url).call() {
            Ok(response) => Ok(response.status()),
            Err(ureq::Error::Status(status, _)) => Ok(status),
            Err(ureq::Error::Transport(t)) if is_timeout(&t) => Err(format!(
                "no answer from {} within {:.1} s",
                self.endpoint,
                self.timeout.as_secs_f64()
            )),
            Err(ureq::Error::Transport(t)) => Err(t.to_string()),
        }
    }

    /// A ranged GET of a hub URL, with the token.
    fn get(&self, agent: &ureq::Agent, url: &str, range: &str) -> ureq::Request {
        let request = agent.get(url).set("Range", range);
        match &self.token {
            Some(token) => request.set("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    /// Commit, etag and size from a `Range: bytes=0-0` request, as hf-hub and Python ask.
    fn metadata(&self, ctx: &Ctx) -> Result<Meta, SourceError> {
        let mut url = ctx.url.to_string();
        let mut redirects = 0;
        let response = loop {
            let response = self
                .get(&self.direct, &url, "bytes=0-0")
                .call()
                .map_err(|e| self.request_error(ctx, &url, e))?;
            let relative = (300..400)
                .contains(&response.status())
                .then(|| response.header("Location"))
                .flatten()
                .filter(|l| l.starts_with('/') && !l.starts_with("//"));
            // Only relative redirects stay on the hub (renamed repos); an absolute one goes to
            // the CDN, and the hub's own response carries the commit and etag.
            match relative {
                Some(location) if redirects < MAX_REDIRECTS => {
                    url = format!("{}{location}", origin(&url));
                    redirects += 1;
                }
                Some(_) => return Err(ctx.bad(format!("more than {MAX_REDIRECTS} redirects"))),
                None => break response,
            }
        };
        let commit = response
            .header("x-repo-commit")
            .ok_or_else(|| ctx.bad("no x-repo-commit header"))?
            .trim()
            .to_string();
        if !is_commit_hash(&commit) {
            return Err(ctx.bad(format!("x-repo-commit {commit:?} is not a 40-hex commit")));
        }
        let linked = response.header("x-linked-etag");
        let lfs = linked.is_some();
        let etag = linked
            .or_else(|| response.header("etag"))
            .ok_or_else(|| ctx.bad("no etag or x-linked-etag header"))?;
        let etag = etag.trim().trim_start_matches("W/").trim_matches('"');
        // The etag becomes a file name in blobs/: nothing that could leave that directory.
        if etag.is_empty()
            || etag.len() > 128
            || !etag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ctx.bad(format!("etag {etag:?} is not a plain hash")));
        }
        let etag = etag.to_string();
        let size = if let Some(size) = response.header("x-linked-size") {
            parse_u64(size).ok_or_else(|| ctx.bad(format!("x-linked-size {size:?}")))?
        } else if (300..400).contains(&response.status()) {
            let location = response
                .header("Location")
                .ok_or_else(|| ctx.bad(format!("HTTP {} without Location", response.status())))?;
            // A CDN URL: no token (hf-hub sends it here; the hub never needs it).
            let probe = self
                .follow
                .get(location)
                .set("Range", "bytes=0-0")
                .call()
                .map_err(|e| self.request_error(ctx, location, e))?;
            total_size(&probe).ok_or_else(|| ctx.bad("no usable content-range"))?
        } else {
            total_size(&response).ok_or_else(|| ctx.bad("no usable content-range"))?
        };
        Ok(Meta {
            commit,
            etag,
            size,
            lfs,
        })
    }

    /// Download into a partial file, check it and rename it to `blob`.
    fn fetch_blob(
        &self,
        ctx: &Ctx,
        meta: &Meta,
        blobs: &Path,
        blob: &Path,
    ) -> Result<(), SourceError> {
        let disk = |path: &Path, e| ctx.disk(&self.cache_dir, path, e);
        let free = blobs.join(format!("{}.{INCOMPLETE}", meta.etag));
        let mut part = claim_partial(blobs, &meta.etag, &free).map_err(|e| disk(blobs, e))?;
        let bar = self.progress.then(|| progress_bar(ctx.file, meta.size));
        let mut attempt = 1;
        loop {
            match self.attempt(ctx, meta, &mut part, bar.as_ref()) {
                Ok(()) => break,
                Err(Attempt::Retry(cause)) if attempt >= ATTEMPTS => {
                    let received = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
                    release(&part, &free);
                    return Err(SourceError::Interrupted {
                        file: ctx.file.to_string(),
                        url: ctx.url.to_string(),
                        received,
                        expected: meta.size,
                        attempts: attempt,
                        cause,
                    });
                }
                Err(Attempt::Retry(_)) => {
                    std::thread::sleep(BACKOFF * attempt);
                    attempt += 1;
                }
                Err(Attempt::Fail(err)) => {
                    release(&part, &free);
                    return Err(err);
                }
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let corrupt = |cause: String| SourceError::Corrupt {
            repo: ctx.repo.to_string(),
            file: ctx.file.to_string(),
            url: ctx.url.to_string(),
            cause,
        };
        let len = match fs::metadata(&part) {
            Ok(m) => m.len(),
            // A concurrent run finished the same blob and tidied our partial away.
            Err(_) if blob_complete(blob, meta.size) => return Ok(()),
            Err(e) => return Err(disk(&part, e)),
        };
        if len != meta.size {
            let _ = fs::remove_file(&part);
            return Err(corrupt(format!("{len} bytes instead of {}", meta.size)));
        }
        // An LFS etag is the file's sha256: proof that resumed pieces fit together.
        if meta.lfs && meta.etag.len() == 64 && meta.etag.bytes().all(|b| b.is_ascii_hexdigit()) {
            let digest = sha256_file(&part).map_err(|e| disk(&part, e))?;
            if !digest.eq_ignore_ascii_case(&meta.etag) {
                let _ = fs::remove_file(&part);
                return Err(corrupt(format!("sha256 {digest} instead of {}", meta.etag)));
            }
        }
        if let Err(e) = fs::rename(&part, blob) {
            if !blob_complete(blob, meta.size) {
                return Err(disk(blob, e));
            }
        }
        remove_partials(blobs, &meta.etag);
        Ok(())
    }

    /// One `GET Range: bytes={have}-`, appended to `part`.
    fn attempt(
        &self,
        ctx: &Ctx,
        meta: &Meta,
        part: &mut PathBuf,
        bar: Option<&indicatif::ProgressBar>,
    ) -> Result<(), Attempt> {
        let disk = |path: &Path, e| Attempt::Fail(ctx.disk(&self.cache_dir, path, e));
        let mut start = fs::metadata(&*part).map_err(|e| disk(part, e))?.len();
        if start > meta.size {
            *part = restart(part).map_err(|e| disk(part, e))?;
            start = 0;
        }
        if start == meta.size {
            return Ok(());
        }
        let response = match self
            .get(&self.follow, ctx.url, &format!("bytes={start}-"))
            .call()
        {
            Ok(response) => response,
            Err(ureq::Error::Transport(t)) if !is_timeout(&t) => {
                return Err(Attempt::Retry(t.to_string()))
            }
            Err(e) => return Err(Attempt::Fail(self.request_error(ctx, ctx.url, e))),
        };
        let range_start = (response.status() == 206)
            .then(|| response.header("Content-Range"))
            .flatten()
            .and_then(|r| r.trim().strip_prefix("bytes "))
            .and_then(|r| r.split('-').next())
            .and_then(parse_u64);
        match (response.status(), range_start) {
            (206, Some(s)) if s == start => {}
            // The server ignored the Range and sent the whole file: start over.
            (200, _) if start > 0 => {
                *part = restart(part).map_err(|e| disk(part, e))?;
                start = 0;
            }
            (200, _) => {}
            (status, _) => {
                return Err(Attempt::Fail(ctx.bad(format!(
                    "HTTP {status} with content-range {:?} to a request for bytes {start}-",
                    response.header("Content-Range")
                ))))
            }
        }
        let mut file = OpenOptions::new()
            .write(true)
            .open(&*part)
            .map_err(|e| disk(part, e))?;
        // Positional writes, not append: a process that adopted this file writes the same bytes.
        file.seek(SeekFrom::Start(start))
            .map_err(|e| disk(part, e))?;
        if let Some(bar) = bar {
            bar.set_position(start);
        }
        let want = meta.size - start;
        let mut reader = response.into_reader().take(want);
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_io_timeout(&e) => {
                    return Err(Attempt::Fail(self.timeout_error(ctx, ctx.url)))
                }
                Err(e) => return Err(Attempt::Retry(e.to_string())),
            };
            file.write_all(&buf[..n]).map_err(|e| disk(part, e))?;
            got += n as u64;
            if let Some(bar) = bar {
                bar.inc(n as u64);
            }
        }
        file.flush().map_err(|e| disk(part, e))?;
        if got < want {
            // A chunked body that ends early is a clean close, not a read error.
            return Err(Attempt::Retry(format!(
                "connection closed after {} of {} bytes",
                start + got,
                meta.size
            )));
        }
        Ok(())
    }

    fn timeout_error(&self, ctx: &Ctx, url: &str) -> SourceError {
        SourceError::Timeout {
            repo: ctx.repo.to_string(),
            file: ctx.file.to_string(),
            url: url.to_string(),
            seconds: self.timeout.as_secs_f64(),
        }
    }

    /// A failed request as a [`SourceError`]: HTTP status, timeout or unreachable hub.
    fn request_error(&self, ctx: &Ctx, url: &str, err: ureq::Error) -> SourceError {
        match err {
            ureq::Error::Status(status, response) => SourceError::from_hub_status(
                status,
                response.header("x-error-code"),
                response.header("x-error-message"),
                response.get_url(),
                ctx.repo,
                ctx.revision,
                ctx.file,
                &self.endpoint,
            ),
            ureq::Error::Transport(t) if is_timeout(&t) => self.timeout_error(ctx, url),
            ureq::Error::Transport(t) => SourceError::Network {
                repo: ctx.repo.to_string(),
                file: ctx.file.to_string(),
                endpoint: self.endpoint.clone(),
                cause: t.to_string(),
            },
        }
    }
}

/// A ureq proxy from `proxy`; ureq speaks only to plain HTTP proxies here (CONNECT for https).
fn parse_proxy(proxy: &str) -> Result<ureq::Proxy, SourceError> {
    let proxy = proxy.trim();
    let error = |cause: &str| SourceError::Proxy {
        proxy: redact(proxy),
        cause: cause.to_string(),
    };
    if let Some((scheme, _)) = proxy.split_once("://") {
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(error(&format!(
                "{scheme}:// proxies are not supported, only http://"
            )));
        }
    }
    ureq::Proxy::new(proxy).map_err(|e| error(&e.to_string()))
}

/// `proxy` with any password replaced, for messages.
pub(crate) fn redact(proxy: &str) -> String {
    let (scheme, rest) = proxy.split_once("://").unwrap_or(("", proxy));
    let prefix = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{prefix}{user}:***@{host}")
        }
        None => proxy.to_string(),
    }
}

/// `scheme://host[:port]` of `url`.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

/// Total size from `Content-Range: bytes 0-0/N`, else the length of a plain 200 answer.
fn total_size(response: &ureq::Response) -> Option<u64> {
    match response.header("Content-Range") {
        Some(range) => range.rsplit('/').next().and_then(parse_u64),
        None if response.status() == 200 => response.header("Content-Length").and_then(parse_u64),
        None => None,
    }
}

fn is_io_timeout(err: &io::Error) -> bool {
    // Linux reports an expired SO_RCVTIMEO as WouldBlock.
    matches!(
        err.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Whether a transport error (or anything it wraps) is a timeout.
fn is_timeout(err: &ureq::Transport) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if e.downcast_ref::<io::Error>().is_some_and(is_io_timeout) {
            return true;
        }
        source = e.source();
    }
    err.message().is_some_and(|m| m.contains("timed out"))
}

/// A partial download of `etag` that this process owns: the released one (`free`) if
/// present, else one a dead process left, else a new empty file.
///
/// Ownership goes by renaming to a name with this process's id, so two runs never append to
/// the same partial.
fn claim_partial(blobs: &Path, etag: &str, free: &Path) -> io::Result<PathBuf> {
    let private = private_name(blobs, etag);
    if fs::rename(free, &private).is_ok() {
        return Ok(private);
    }
    let prefix = format!("{etag}.");
    let suffix = format!(".{INCOMPLETE}");
    for entry in fs::read_dir(blobs)?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE);
        if name.starts_with(&prefix)
            && name.ends_with(&suffix)
            && stale
            && fs::rename(entry.path(), &private).is_ok()
        {
            return Ok(private);
        }
    }
    File::create(&private)?;
    Ok(private)
}

fn private_name(blobs: &Path, etag: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    blobs.join(format!("{etag}.{}-{n}.{INCOMPLETE}", std::process::id()))
}

/// A fresh empty partial in place of `part` (a new file, so a process still writing the old
/// one cannot clobber it).
fn restart(part: &Path) -> io::Result<PathBuf> {
    let _ = fs::remove_file(part);
    File::create(part)?;
    Ok(part.to_path_buf())
}

/// Whether `blob` is there at full size; blobs only appear by rename after the checks.
fn blob_complete(blob: &Path, size: u64) -> bool {
    fs::metadata(blob).is_ok_and(|m| m.is_file() && m.len() == size)
}

/// Remove every partial of `etag` once its blob exists (also ones a killed run left).
fn remove_partials(blobs: &Path, etag: &str) {
    let prefix = format!("{etag}.");
    let suffix = format!(".{INCOMPLETE}");
    let Ok(dir) = fs::read_dir(blobs) else { return };
    for entry in dir.flatten() {
        let name = entry.file_name();
        if name
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(&suffix))
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Hand `part` back under its shared name so the next run resumes it.
fn release(part: &Path, free: &Path) {
    if fs::rename(part, free).is_err() {
        let _ = fs::remove_file(part);
    }
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Point `pointer` at `blob`, replacing whatever is there, by an atomic rename.
fn link_snapshot(blob: &Path, pointer: &Path, file: &str) -> io::Result<()> {
    let dir = pointer
        .parent()
        .ok_or_else(|| io::Error::other("snapshot path has no parent"))?;
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file.replace('/', "_"),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    #[cfg(unix)]
    {
        // snapshots/{commit}/{file} -> ../../blobs/{etag}, one more `..` per folder in `file`.
        let depth = 2 + file.matches('/').count();
        let mut target: PathBuf = std::iter::repeat_n("..", depth).collect();
        target.push("blobs");
        target.push(blob.file_name().unwrap_or_default());
        std::os::unix::fs::symlink(target, &tmp)?;
    }
    #[cfg(not(unix))]
    {
        // Windows symlinks need privileges; a copy is what Python falls back to as well.
        fs::copy(blob, &tmp)?;
    }
    fs::rename(&tmp, pointer).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Write `contents` to `path` by rename, so a crash never leaves a half-written ref.
fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("ref path has no parent"))?;
    fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    fs::write(&tmp, contents)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

fn progress_bar(file: &str, size: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(size).with_message(file.to_string());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_passwords_are_hidden_and_schemes_checked() {
        assert_eq!(
            redact("http://me:secret@proxy:3128"),
            "http://me:***@proxy:3128"
        );
        assert_eq!(redact("proxy:3128"), "proxy:3128");
        assert!(parse_proxy("http://proxy.example:3128").is_ok());
        assert!(parse_proxy("proxy.example:3128").is_ok());
        let err = parse_proxy("socks5://u:pw@proxy:1080")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("only http://") && !err.contains("pw@"),
            "{err}"
        );
    }

    #[test]
    fn origin_keeps_scheme_host_and_port() {
        assert_eq!(origin("http://127.0.0.1:9/a/b"), "http://127.0.0.1:9");
        assert_eq!(origin("https://huggingface.co"), "https://huggingface.co");
    }

    #[test]
    fn partials_are_claimed_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let free = tmp.path().join("e.incomplete");
        fs::write(&free, b"half").expect("write");
        let mine = claim_partial(tmp.path(), "e", &free).expect("claim");
        assert_eq!(fs::read(&mine).expect("read"), b"half");
        assert!(!free.exists());
        // A second claimant gets a fresh file, not the one in use.
        let other = claim_partial(tmp.path(), "e", &free).expect("claim");
        assert_ne!(other, mine);
        assert_eq!(fs::read(&other).expect("read"), b"");
        release(&mine, &free);
        assert_eq!(fs::read(&free).expect("read"), b"half");
    }

    #[test]
    fn sha256_of_a_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("f");
        fs::write(&path, b"abc").expect("write");
        assert_eq!(
            sha256_file(&path).expect("hash"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
