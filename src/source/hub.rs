//! Hugging Face hub access sharing the Python cache layout; downloads are in [`super::download`].
//!
//! Cache layout (hf-hub 0.4.3 and Python `huggingface_hub` agree):
//! `{cache}/models--{owner}--{name}/refs/{revision}` holds the commit a named revision
//! resolved to; a revision with slashes such as `refs/pr/15` is stored as the nested file
//! `refs/refs/pr/15`. `snapshots/{commit}/{file}` is a relative symlink to
//! `blobs/{etag}`. A full 40-hex commit as revision has no ref file in Python's cache,
//! so it is looked up as `snapshots/{commit}` directly. In URLs `/` in the
//! revision as `%2F` (`/resolve/refs%2Fpr%2F15/...`), as the hub expects.
//!
//! Files already in the snapshot for a revision are used without any request (like hf-hub's
//! `ApiRepo::get`), so a cached `main` is not refreshed when the branch moves; pass a newer
//! `--revision` or delete the repo's cache folder to update.

use super::download::Downloader;
use super::{
    is_commit_hash, HubOptions, ModelFiles, SourceError, OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS,
};
use hf_hub::{Cache, Repo, RepoType};
use std::cell::OnceCell;
use std::path::PathBuf;

/// Default hub endpoint when `HF_ENDPOINT` is unset.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

const CONFIG: &str = "config.json";
const TOKENIZER: &str = "tokenizer.json";
const PREPROCESSOR: &str = "preprocessor_config.json";
const SAFETENSORS: &str = "model.safetensors";
const PYTORCH: &str = "pytorch_model.bin";
/// SigLIP's tokenizer class, case, pad token and padding side live here, and BLIP's
/// `clean_up_tokenization_spaces`.
const TOKENIZER_CONFIG: &str = "tokenizer_config.json";

/// Whether a `config.json` names a family whose tokenizer settings are needed too (SigLIP,
/// BLIP).
fn needs_tokenizer_config(config: &std::path::Path) -> bool {
    std::fs::read_to_string(config)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|v| {
            matches!(
                v.get("model_type").and_then(|t| t.as_str()),
                Some("siglip" | "blip")
            )
        })
}

/// Path of `file` for `repo` at `revision` in the cache, if present. Never touches the network.
pub(crate) fn cached_file(
    cache_dir: &std::path::Path,
    repo: &str,
    revision: &str,
    file: &str,
) -> Option<PathBuf> {
    let hf_repo = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    if is_commit_hash(revision) {
        let path = cache_dir
            .join(hf_repo.folder_name())
            .join("snapshots")
            .join(revision)
            .join(file);
        return path.exists().then_some(path);
    }
    Cache::new(cache_dir.to_path_buf()).repo(hf_repo).get(file)
}

/// Resolve the four checkpoint files of `repo` at `revision` from the cache or the hub.
pub(crate) fn resolve_repo(
    repo: &str,
    revision: &str,
    opts: &HubOptions,
) -> Result<ModelFiles, SourceError> {
    if opts.offline {
        return resolve_offline(repo, revision, opts);
    }
    let endpoint = endpoint(opts);
    let fetcher = Fetcher::new(repo, revision, opts, &endpoint);
    let config = match fetcher.get(CONFIG) {
        // A repo in open_clip's own layout (apple/DFN5B-*, timm/*) has no config.json.
        Err(SourceError::FileNotFound { .. }) => match fetcher.get(OPEN_CLIP_CONFIG) {
            Ok(config) => return fetcher.open_clip(config),
            Err(SourceError::FileNotFound { .. }) => fetcher.get(CONFIG)?,
            Err(other) => return Err(other),
        },
        other => other?,
    };
    let tokenizer = fetcher.get(TOKENIZER)?;
    if needs_tokenizer_config(&config) {
        match fetcher.get(TOKENIZER_CONFIG) {
            Ok(_) | Err(SourceError::FileNotFound { .. }) => {}
            Err(other) => return Err(other),
        }
    }
    let preprocessor = fetcher.get(PREPROCESSOR)?;
    let weights = fetcher.weights()?;
    Ok(ModelFiles {
        id: repo.to_string(),
        revision: Some(revision.to_string()),
        config,
        weights,
        tokenizer,
        preprocessor,
    })
}

fn resolve_offline(
    repo: &str,
    revision: &str,
    opts: &HubOptions,
) -> Result<ModelFiles, SourceError> {
    let dir = &opts.cache_dir;
    let find = |file: &str| cached_file(dir, repo, revision, file);
    let mut missing = Vec::new();
    let mut need = |file: &str| {
        let found = find(file);
        if found.is_none() {
            missing.push(file.to_string());
        }
        found
    };
    if find(CONFIG).is_none() {
        if let Some(config) = find(OPEN_CLIP_CONFIG) {
            if let Some(weights) = OPEN_CLIP_WEIGHTS.into_iter().find_map(&find) {
                return Ok(ModelFiles {
                    id: repo.to_string(),
                    revision: Some(revision.to_string()),
                    tokenizer: config.with_file_name(TOKENIZER),
                    preprocessor: config.clone(),
                    config,
                    weights,
                });
            }
        }
    }
    let config = need(CONFIG);
    let tokenizer = need(TOKENIZER);
    let preprocessor = need(PREPROCESSOR);
    let weights = find(SAFETENSORS).or_else(|| find(PYTORCH));
    if weights.is_none() {
        missing.push(format!("{SAFETENSORS} (or {PYTORCH})"));
    }
    match (config, weights, tokenizer, preprocessor) {
        (Some(config), Some(weights), Some(tokenizer), Some(preprocessor)) => Ok(ModelFiles {
            id: repo.to_string(),
            revision: Some(revision.to_string()),
            config,
            weights,
            tokenizer,
            preprocessor,
        }),
        _ => Err(SourceError::OfflineMissing {
            repo: repo.to_string(),
            revision: revision.to_string(),
            missing,
            cache_dir: dir.clone(),
        }),
    }
}

pub(super) fn endpoint(opts: &HubOptions) -> String {
    opts.endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .unwrap_or(DEFAULT_ENDPOINT)
        .trim_end_matches('/')
        .to_string()
}

/// Downloads files of one repo revision, cache first.
struct Fetcher<'a> {
    repo: &'a str,
    revision: &'a str,
    opts: &'a HubOptions,
    endpoint: &'a str,
    /// Made on the first download, so a fully cached model never trips over a bad proxy.
    downloader: OnceCell<Downloader>,
}

impl<'a> Fetcher<'a> {
    fn new(repo: &'a str, revision: &'a str, opts: &'a HubOptions, endpoint: &'a str) -> Self {
        Self {
            repo,
            revision,
            opts,
            endpoint,
            downloader: OnceCell::new(),
        }
    }

    fn downloader(&self) -> Result<&Downloader, SourceError> {
        if let Some(d) = self.downloader.get() {
            return Ok(d);
        }
        let d = Downloader::new(self.opts, self.endpoint)?;
        Ok(self.downloader.get_or_init(|| d))
    }

    /// The cached copy of `file`, else a download (which always asks the hub, so the cache
    /// is checked here first, also for commit revisions).
    fn get(&self, file: &str) -> Result<PathBuf, SourceError> {
        if let Some(path) = cached_file(&self.opts.cache_dir, self.repo, self.revision, file) {
            return Ok(path);
        }
        self.downloader()?.download(self.repo, self.revision, file)
    }

    /// The files of an open_clip-layout repo whose `open_clip_config.json` is `config`: the
    /// first weights file open_clip itself would take, and `tokenizer.json` when the repo
    /// has one (else the bundled CLIP BPE tokenizer applies).
    fn open_clip(&self, config: PathBuf) -> Result<ModelFiles, SourceError> {
        let mut weights = None;
        for file in OPEN_CLIP_WEIGHTS {
            match self.get(file) {
                Ok(path) => {
                    weights = Some(path);
                    break;
                }
                Err(SourceError::FileNotFound { .. }) => {}
                Err(other) => return Err(other),
            }
        }
        let weights = weights.ok_or_else(|| SourceError::NoWeights {
            repo: self.repo.to_string(),
            revision: self.revision.to_string(),
        })?;
        let tokenizer = match self.get(TOKENIZER) {
            Ok(path) => path,
            Err(SourceError::FileNotFound { .. }) => config.with_file_name(TOKENIZER),
            Err(other) => return Err(other),
        };
        Ok(ModelFiles {
            id: self.repo.to_string(),
            revision: Some(self.revision.to_string()),
            preprocessor: config.clone(),
            config,
            weights,
            tokenizer,
        })
    }

    /// `model.safetensors`, else `pytorch_model.bin`: cached copies first, then the hub.
    fn weights(&self) -> Result<PathBuf, SourceError> {
        for file in [SAFETENSORS, PYTORCH] {
            if let Some(path) = cached_file(&self.opts.cache_dir, self.repo, self.revision, file) {
                return Ok(path);
            }
        }
        match self.get(SAFETENSORS) {
            Err(SourceError::FileNotFound { .. }) => match self.get(PYTORCH) {
                Err(SourceError::FileNotFound { .. }) => Err(SourceError::NoWeights {
                    repo: self.repo.to_string(),
                    revision: self.revision.to_string(),
                }),
                other => other,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn classify(status: u16, code: Option<&str>) -> SourceError {
        SourceError::from_hub_status(
            status,
            code,
            Some("boom"),
            "http://h/o/n/resolve/main/f",
            "o/n",
            "main",
            "f",
            "http://h",
        )
    }

    #[test]
    fn status_codes_map_to_helpful_errors() {
        assert!(matches!(
            classify(401, Some("RepoNotFound")),
            SourceError::RepoNotFound { .. }
        ));
        assert!(matches!(
            classify(404, Some("RevisionNotFound")),
            SourceError::RevisionNotFound { .. }
        ));
        assert!(matches!(
            classify(404, None),
            SourceError::FileNotFound { .. }
        ));
        assert!(matches!(
            classify(404, Some("EntryNotFound")),
            SourceError::FileNotFound { .. }
        ));
        let denied = classify(403, Some("GatedRepo")).to_string();
        assert!(denied.contains("HF_TOKEN"), "{denied}");
        assert!(denied.contains("licence"), "{denied}");
        assert!(denied.contains("http://h/o/n"), "{denied}");
        assert!(classify(401, None).to_string().contains("HF_TOKEN"));
        let other = classify(500, None).to_string();
        assert!(
            other.contains("HTTP 500") && other.contains("hub says: boom"),
            "{other}"
        );
    }

    #[test]
    fn commit_hash_detection() {
        assert!(is_commit_hash(COMMIT));
        assert!(!is_commit_hash("main"));
        assert!(!is_commit_hash(&COMMIT.to_uppercase()));
        assert!(!is_commit_hash(&COMMIT[..39]));
    }

    #[test]
    fn endpoint_defaults_and_trims() {
        let mut opts = HubOptions {
            endpoint: None,
            token: None,
            cache_dir: PathBuf::from("unused"),
            offline: false,
            progress: false,
            timeout: super::super::DEFAULT_HUB_TIMEOUT,
            proxy: None,
        };
        assert_eq!(endpoint(&opts), DEFAULT_ENDPOINT);
        opts.endpoint = Some("http://127.0.0.1:9/".into());
        assert_eq!(endpoint(&opts), "http://127.0.0.1:9");
        opts.endpoint = Some("  ".into());
        assert_eq!(endpoint(&opts), DEFAULT_ENDPOINT);
    }

    /// Lay out a Python-style cache entry by hand: refs, snapshots, blobs.
    fn fake_cache(root: &std::path::Path, revision_ref: Option<&str>, files: &[&str]) {
        let repo_dir = root.join("models--o--n");
        let snap = repo_dir.join("snapshots").join(COMMIT);
        fs::create_dir_all(&snap).expect("mkdir");
        for f in files {
            fs::write(snap.join(f), f.as_bytes()).expect("write");
        }
        if let Some(r) = revision_ref {
            let ref_path = repo_dir.join("refs").join(r);
            fs::create_dir_all(ref_path.parent().expect("parent")).expect("mkdir");
            fs::write(ref_path, COMMIT).expect("write ref");
        }
    }

    #[test]
    fn cache_lookup_follows_refs_including_slashed_revisions() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fake_cache(tmp.path(), Some("refs/pr/15"), &["config.json"]);
        // refs/pr/15 lives at refs/refs/pr/15, as in Python's cache.
        assert!(tmp.path().join("models--o--n/refs/refs/pr/15").is_file());
        let found = cached_file(tmp.path(), "o/n", "refs/pr/15", "config.json");
        assert_eq!(
            found,
            Some(
                tmp.path()
                    .join("models--o--n/snapshots")
                    .join(COMMIT)
                    .join("config.json")
            )
        );
        assert_eq!(cached_file(tmp.path(), "o/n", "main", "config.json"), None);
        assert_eq!(
            cached_file(tmp.path(), "o/n", "refs/pr/15", "tokenizer.json"),
            None
        );
        // A commit needs no ref file.
        assert!(cached_file(tmp.path(), "o/n", COMMIT, "config.json").is_some());
    }

    #[test]
    fn offline_lists_every_missing_file_and_the_cache_dir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fake_cache(
            tmp.path(),
            Some("main"),
            &["config.json", "pytorch_model.bin"],
        );
        let opts = HubOptions {
            endpoint: Some("http://127.0.0.1:9".into()),
            token: None,
            cache_dir: tmp.path().to_path_buf(),
            offline: true,
            progress: false,
            timeout: super::super::DEFAULT_HUB_TIMEOUT,
            proxy: None,
        };
        let err = resolve_repo("o/n", "main", &opts).unwrap_err();
        let SourceError::OfflineMissing { missing, .. } = &err else {
            panic!("expected OfflineMissing, got {err}");
        };
        assert_eq!(missing, &["tokenizer.json", "preprocessor_config.json"]);
        let msg = err.to_string();
        assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
        assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");

        fake_cache(
            tmp.path(),
            None,
            &["tokenizer.json", "preprocessor_config.json"],
        );
        let files = resolve_repo("o/n", "main", &opts).expect("fully cached");
        assert!(files.weights.ends_with("pytorch_model.bin"));
        assert_eq!(files.revision.as_deref(), Some("main"));
        assert_eq!(files.id, "o/n");
    }

    #[test]
    fn an_open_clip_repo_resolves_from_the_cache() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fake_cache(
            tmp.path(),
            Some("main"),
            &["open_clip_config.json", "open_clip_pytorch_model.bin"],
        );
        let opts = HubOptions {
            endpoint: Some("http://127.0.0.1:9".into()),
            token: None,
            cache_dir: tmp.path().to_path_buf(),
            offline: true,
            progress: false,
            timeout: super::super::DEFAULT_HUB_TIMEOUT,
            proxy: None,
        };
        let files = resolve_repo("o/n", "main", &opts).expect("open_clip layout");
        assert!(files.config.ends_with("open_clip_config.json"));
        assert_eq!(files.preprocessor, files.config);
        assert!(files.weights.ends_with("open_clip_pytorch_model.bin"));
        // No tokenizer in the repo: the bundled one applies.
        assert!(!files.tokenizer.exists());
        fake_cache(tmp.path(), None, &["open_clip_model.safetensors"]);
        let files = resolve_repo("o/n", "main", &opts).expect("open_clip layout");
        assert!(files.weights.ends_with("open_clip_model.safetensors"));
    }
}
