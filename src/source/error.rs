//! Errors raised while resolving `--model` to checkpoint files.

use std::path::PathBuf;

/// Why a checkpoint could not be resolved; every message says what to try next.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The spec looks like a filesystem path but nothing is there.
    #[error(
        "model directory {} does not exist; pass a directory holding a Hugging Face checkpoint, \
         a registry alias or an owner/name repo id (run `vlm models` for the aliases)",
        path.display()
    )]
    DirNotFound {
        /// The path as given.
        path: PathBuf,
    },

    /// A local directory lacks some checkpoint files.
    #[error(
        "model directory {} is missing {}; a checkpoint needs config.json, tokenizer.json, \
         preprocessor_config.json and model.safetensors (or pytorch_model.bin)",
        dir.display(),
        missing.join(", ")
    )]
    MissingLocalFiles {
        /// The directory searched.
        dir: PathBuf,
        /// File names that were not found.
        missing: Vec<String>,
    },

    /// The spec is neither a directory, an alias nor an `owner/name` repo id.
    #[error(
        "`{spec}` is not a local directory, a registry alias or an owner/name repo id; {}\
         run `vlm models` to list the aliases, or pass e.g. openai/clip-vit-base-patch32",
        suggestion.as_ref().map(|s| format!("did you mean `{s}`? ")).unwrap_or_default()
    )]
    UnknownModel {
        /// The `--model` value as given.
        spec: String,
        /// The registry alias nearest to `spec`, when one is close enough to be a typo.
        suggestion: Option<String>,
    },

    /// Offline mode and the cache lacks some files for this revision.
    #[error(
        "offline mode (HF_HUB_OFFLINE) and {repo} at revision {revision} is not fully cached: \
         missing {} under {}; run once online to download it, or unset HF_HUB_OFFLINE",
        missing.join(", "),
        cache_dir.display()
    )]
    OfflineMissing {
        /// Repo id.
        repo: String,
        /// Revision looked up.
        revision: String,
        /// File names not found in the cache.
        missing: Vec<String>,
        /// Cache directory searched.
        cache_dir: PathBuf,
    },

    /// The hub says the repository does not exist (or is private and no token was sent).
    #[error(
        "repository {repo} was not found on {endpoint}; check the repo id (run `vlm models` \
         for the known checkpoints); if the repo is private, set HF_TOKEN to a token that can read it"
    )]
    RepoNotFound {
        /// Repo id.
        repo: String,
        /// Hub endpoint asked.
        endpoint: String,
    },

    /// The checkpoint does another task than the command runs (a caption model given to
    /// `classify`, a CLIP model to `caption`).
    #[error(
        "`{spec}` is {found}; {wanted} — use `{command}` with it (run `vlm models` for the \
         checkpoints of each task)"
    )]
    WrongTask {
        /// The `--model` value as given.
        spec: String,
        /// What the checkpoint is.
        found: &'static str,
        /// What the command needs.
        wanted: &'static str,
        /// The command that runs it.
        command: &'static str,
    },

    /// The hub says the revision does not exist in the repository.
    #[error(
        "revision {revision} was not found in {repo}; check --revision (a branch, tag, \
         refs/pr/N or a 40-hex commit)"
    )]
    RevisionNotFound {
        /// Repo id.
        repo: String,
        /// Revision asked for.
        revision: String,
    },

    /// A required file is not in the repository at this revision.
    #[error(
        "{file} was not found in {repo} at revision {revision}; the repo must be a CLIP \
         checkpoint in transformers layout: check the repo id and revision (run `vlm models`)"
    )]
    FileNotFound {
        /// Repo id.
        repo: String,
        /// Revision asked for.
        revision: String,
        /// File name in the repo.
        file: String,
    },

    /// Neither `model.safetensors` nor `pytorch_model.bin` exists in the repository.
    #[error(
        "{repo} at revision {revision} has neither model.safetensors nor pytorch_model.bin; \
         pick a transformers-format CLIP checkpoint (run `vlm models`) or another --revision"
    )]
    NoWeights {
        /// Repo id.
        repo: String,
        /// Revision asked for.
        revision: String,
    },

    /// HTTP 401/403: missing or insufficient token, or a gated model.
    #[error(
        "access to {file} in {repo} was denied (HTTP {status}); set HF_TOKEN to a token with \
         read access, and if the model is gated accept its licence on the model page \
         ({endpoint}/{repo})"
    )]
    Unauthorized {
        /// Repo id.
        repo: String,
        /// File being fetched.
        file: String,
        /// HTTP status (401 or 403).
        status: u16,
        /// Hub endpoint asked.
        endpoint: String,
    },

    /// Any other HTTP error status.
    #[error(
        "downloading {file} from {repo} failed: HTTP {status} from {url}; try again later{detail}"
    )]
    Http {
        /// Repo id.
        repo: String,
        /// File being fetched.
        file: String,
        /// HTTP status.
        status: u16,
        /// URL requested.
        url: String,
        /// Hub error message, prefixed with "; hub says: " when present.
        detail: String,
    },

    /// The hub could not be reached at all.
    #[error(
        "could not reach {endpoint} to download {file} of {repo}: {cause}; check the network, \
         proxy and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use only the local cache"
    )]
    Network {
        /// Repo id.
        repo: String,
        /// File being fetched.
        file: String,
        /// Hub endpoint asked.
        endpoint: String,
        /// Transport error text.
        cause: String,
    },

    /// The hub sent nothing for the whole timeout (connect, headers or mid-body).
    #[error(
        "no answer from {url} within {seconds} s while downloading {file} of {repo}; check the \
         network and proxy (HTTPS_PROXY, NO_PROXY), raise VLM_HUB_TIMEOUT (seconds) on a slow \
         link, or set HF_HUB_OFFLINE=1 to use only the local cache"
    )]
    Timeout {
        /// Repo id.
        repo: String,
        /// File being fetched.
        file: String,
        /// URL requested.
        url: String,
        /// The timeout that ran out, in seconds.
        seconds: f64,
    },

    /// The connection dropped mid-file on every attempt.
    #[error(
        "downloading {file} from {url} was interrupted after {received} of {expected} bytes \
         ({attempts} attempts; last error: {cause}); the partial file is kept in the \
         cache, never used as a model, and the next run resumes it: run the command again, and \
         check the network or proxy if this repeats"
    )]
    Interrupted {
        /// File being fetched (the URL names the repo; fewer fields keep the error small).
        file: String,
        /// URL requested.
        url: String,
        /// Bytes on disk so far.
        received: u64,
        /// Size the hub announced.
        expected: u64,
        /// Attempts made in this run.
        attempts: u32,
        /// Last transport error.
        cause: String,
    },

    /// The bytes received differ from what the hub announced (size or LFS sha256).
    #[error(
        "downloaded {file} of {repo} from {url} does not match what the hub announced ({cause}); \
         the bytes were discarded; run the command again, and if it repeats check HF_ENDPOINT \
         and any proxy in between"
    )]
    Corrupt {
        /// Repo id.
        repo: String,
        /// File being fetched.
        file: String,
        /// URL requested.
        url: String,
        /// Which check failed.
        cause: String,
    },

    /// The server answered, but not like a hub (missing or malformed headers).
    #[error(
        "{url} did not answer like a Hugging Face hub: {cause}; check HF_ENDPOINT (it must be \
         the hub or a mirror that keeps the x-repo-commit, etag and content-range headers)"
    )]
    BadResponse {
        /// URL requested.
        url: String,
        /// What was wrong.
        cause: String,
    },

    /// The proxy from the environment cannot be used.
    #[error(
        "proxy {proxy} (from HTTPS_PROXY, HTTP_PROXY or ALL_PROXY) cannot be used: {cause}; set \
         it to http://host:port (user:password@ allowed), or unset it or list the hub's host in \
         NO_PROXY"
    )]
    Proxy {
        /// Proxy URL, password hidden.
        proxy: String,
        /// Why it was rejected.
        cause: String,
    },

    /// Writing the download into the cache failed (disk full, permissions ...).
    #[error(
        "downloading {file} of {repo} into {} failed: {cause}; check free space and permissions \
         of the cache (HF_HUB_CACHE / HF_HOME) and retry",
        cache_dir.display()
    )]
    Download {
        /// Repo id.
        repo: String,
        /// File being fetched.
        file: String,
        /// Cache directory written to.
        cache_dir: PathBuf,
        /// Underlying error text.
        cause: String,
    },

    /// An embedded registry file is malformed (a build-time bug, caught by tests).
    #[error("model registry entry models/{file} is invalid: {cause}; fix the file and rebuild")]
    Registry {
        /// File name in `models/`.
        file: String,
        /// What is wrong.
        cause: String,
    },
}

impl SourceError {
    /// Turn an HTTP error status (plus the hub's `x-error-code`) into a [`SourceError`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_hub_status(
        status: u16,
        code: Option<&str>,
        message: Option<&str>,
        url: &str,
        repo: &str,
        revision: &str,
        file: &str,
        endpoint: &str,
    ) -> Self {
        match (code, status) {
            // The hub answers 401 + RepoNotFound for unknown repos when no token is sent.
            (Some("RepoNotFound"), _) => SourceError::RepoNotFound {
                repo: repo.to_string(),
                endpoint: endpoint.to_string(),
            },
            (Some("RevisionNotFound"), _) => SourceError::RevisionNotFound {
                repo: repo.to_string(),
                revision: revision.to_string(),
            },
            (Some("EntryNotFound"), _) | (None, 404) => SourceError::FileNotFound {
                repo: repo.to_string(),
                revision: revision.to_string(),
                file: file.to_string(),
            },
            (Some("GatedRepo"), _) | (_, 401 | 403) => SourceError::Unauthorized {
                repo: repo.to_string(),
                file: file.to_string(),
                status,
                endpoint: endpoint.to_string(),
            },
            _ => SourceError::Http {
                repo: repo.to_string(),
                file: file.to_string(),
                status,
                url: url.to_string(),
                detail: message
                    .map(|m| format!("; hub says: {m}"))
                    .unwrap_or_default(),
            },
        }
    }
}
