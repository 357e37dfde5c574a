//! Where a checkpoint comes from: local directory, registry alias or hub repo.
//!
//! [`resolve`] turns a `--model` value into the four files of a Hugging Face-layout CLIP
//! checkpoint on disk ([`ModelFiles`]). Hub downloads go through `hf-hub` into the same
//! cache the Python tools use, configured by [`HubOptions`].

mod download;
mod error;
mod hub;
pub mod registry;

pub(crate) use download::redact as redact_proxy;
pub use error::SourceError;
pub use hub::DEFAULT_ENDPOINT;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Hub timeout when `VLM_HUB_TIMEOUT` is unset.
pub const DEFAULT_HUB_TIMEOUT: Duration = Duration::from_secs(30);

/// open_clip's own config file: its presence (without `config.json`) marks the open_clip layout.
pub const OPEN_CLIP_CONFIG: &str = "open_clip_config.json";

/// open_clip weight files, in the order open_clip 3.3.0's `_find_checkpoint_in_dir` tries them.
pub const OPEN_CLIP_WEIGHTS: [&str; 3] = [
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
];

/// Repo id of the model used when `--model` is not given.
pub const DEFAULT_MODEL: &str = "openai/clip-vit-base-patch32";

/// The files of a checkpoint, resolved on disk: the four of the Hugging Face layout, or, for
/// the open_clip layout, `open_clip_config.json` as both `config` and `preprocessor`, the
/// open_clip weights, and a `tokenizer` path that may not exist (the bundled CLIP BPE
/// tokenizer is used then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// Repo id, the alias's repo, or the directory as given.
    pub id: String,
    /// Hub revision used; `None` for a local directory.
    pub revision: Option<String>,
    /// `config.json`.
    pub config: PathBuf,
    /// `model.safetensors` (preferred) or `pytorch_model.bin`.
    pub weights: PathBuf,
    /// `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// `preprocessor_config.json`.
    pub preprocessor: PathBuf,
}

impl ModelFiles {
    /// The checkpoint files in local directory `dir`; errors name every missing file.
    pub fn from_dir(dir: &Path) -> Result<Self, SourceError> {
        if !dir.is_dir() {
            return Err(SourceError::DirNotFound {
                path: dir.to_path_buf(),
            });
        }
        if !dir.join("config.json").is_file() && dir.join(OPEN_CLIP_CONFIG).is_file() {
            return Self::open_clip_dir(dir);
        }
        let mut missing = Vec::new();
        let mut need = |name: &str| {
            let path = dir.join(name);
            if !path.is_file() {
                missing.push(name.to_string());
            }
            path
        };
        let config = need("config.json");
        let tokenizer = need("tokenizer.json");
        let preprocessor = need("preprocessor_config.json");
        let weights = ["model.safetensors", "pytorch_model.bin"]
            .into_iter()
            .map(|name| dir.join(name))
            .find(|path| path.is_file());
        let Some(weights) = weights else {
            missing.push("model.safetensors (or pytorch_model.bin)".to_string());
            return Err(SourceError::MissingLocalFiles {
                dir: dir.to_path_buf(),
                missing,
            });
        };
        if !missing.is_empty() {
            return Err(SourceError::MissingLocalFiles {
                dir: dir.to_path_buf(),
                missing,
            });
        }
        Ok(Self {
            id: dir.display().to_string(),
            revision: None,
            config,
            weights,
            tokenizer,
            preprocessor,
        })
    }
}

impl ModelFiles {
    fn open_clip_dir(dir: &Path) -> Result<Self, SourceError> {
        let config = dir.join(OPEN_CLIP_CONFIG);
        let Some(weights) = OPEN_CLIP_WEIGHTS
            .into_iter()
            .map(|name| dir.join(name))
            .find(|path| path.is_file())
        else {
            return Err(SourceError::MissingLocalFiles {
                dir: dir.to_path_buf(),
                missing: vec![format!(
                    "{} (or {} / {})",
                    OPEN_CLIP_WEIGHTS[0], OPEN_CLIP_WEIGHTS[1], OPEN_CLIP_WEIGHTS[2]
                )],
            });
        };
        Ok(Self {
            id: dir.display().to_string(),
            revision: None,
            preprocessor: config.clone(),
            config,
            weights,
            tokenizer: dir.join("tokenizer.json"),
        })
    }
}

/// Whether the hub at `opts`'s endpoint answers one request for [`DEFAULT_MODEL`]'s
/// information, through `opts`'s proxy and within `opts.timeout` per step: the HTTP status
/// it answered with, or why nothing came back. Makes the request even when `opts.offline`
/// is set (the caller decides whether to ask).
pub fn ping_hub(opts: &HubOptions) -> Result<u16, String> {
    let endpoint = hub::endpoint(opts);
    download::Downloader::new(opts, &endpoint)
        .map_err(|e| e.to_string())?
        .ping(DEFAULT_MODEL)
}

/// Hub settings, normally from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// Hub URL (`HF_ENDPOINT`); `None` means <https://huggingface.co>.
    pub endpoint: Option<String>,
    /// Access token (`HF_TOKEN`, else the token file written by `huggingface-cli login`).
    pub token: Option<String>,
    /// Cache root: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub cache_dir: PathBuf,
    /// Never touch the network (`HF_HUB_OFFLINE=1/true/yes/on`).
    pub offline: bool,
    /// Show download progress bars on stderr.
    pub progress: bool,
    /// Longest wait for the hub to send anything: connecting (at most 10 s of it), headers or
    /// the next piece of a body (`VLM_HUB_TIMEOUT` seconds, default 30). Not a cap on a whole
    /// download, which may take as long as it keeps moving.
    pub timeout: Duration,
    /// HTTP proxy for hub requests: `https_proxy`/`HTTPS_PROXY` (`http_proxy`/`HTTP_PROXY` for
    /// an `http://` endpoint), else `all_proxy`/`ALL_PROXY`; `None` when `NO_PROXY` lists the
    /// endpoint's host. Redirects to a CDN go the same way.
    pub proxy: Option<String>,
}

impl HubOptions {
    /// Settings from the environment, following Python `huggingface_hub`'s variables.
    /// `progress` is on when stderr is a terminal.
    pub fn from_env() -> Self {
        Self::from_vars(
            |name| std::env::var(name).ok(),
            std::io::stderr().is_terminal(),
        )
    }

    /// [`HubOptions::from_env`] with the variables read through `var` (testable).
    fn from_vars(var: impl Fn(&str) -> Option<String>, progress: bool) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let home = || {
            var("HOME")
                .or_else(|| var("USERPROFILE"))
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
        };
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home().join(".cache"))
                .join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token_file = var("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("token"));
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| std::fs::read_to_string(token_file).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        // Out-of-range values fall back to the default rather than failing every command.
        let timeout = var("VLM_HUB_TIMEOUT")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(DEFAULT_HUB_TIMEOUT, |s| {
                Duration::from_secs_f64(s.min(7.0 * 24.0 * 3600.0))
            });
        let endpoint = var("HF_ENDPOINT");
        let proxy = proxy_for(endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT), &var);
        Self {
            endpoint,
            token,
            cache_dir,
            offline,
            progress,
            timeout,
            proxy,
        }
    }
}

/// The proxy the environment gives for `endpoint`, as curl and Python `requests` pick it.
fn proxy_for(endpoint: &str, var: &impl Fn(&str) -> Option<String>) -> Option<String> {
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("https", endpoint));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    let no_proxy = var("no_proxy").or_else(|| var("NO_PROXY"));
    if no_proxy.is_some_and(|list| no_proxy_matches(host, &list)) {
        return None;
    }
    let names: [&str; 4] = if scheme.eq_ignore_ascii_case("http") {
        ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
    } else {
        ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
    };
    names
        .into_iter()
        .find_map(var)
        .map(|p| p.trim().to_string())
}

/// Whether `NO_PROXY`-style `list` (comma or space separated hosts, `.domain` suffixes, `*`)
/// covers `host`. Ports in entries are ignored; CIDR ranges are not understood.
fn no_proxy_matches(host: &str, list: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    list.split([',', ' '])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let entry = entry.to_ascii_lowercase();
            let entry = match entry.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or("").to_string(),
                None if entry.matches(':').count() == 1 => {
                    entry.split(':').next().unwrap_or("").to_string()
                }
                None => entry,
            };
            let entry = entry.trim_start_matches("*.").trim_start_matches('.');
            !entry.is_empty() && (host == entry || host.ends_with(&format!(".{entry}")))
        })
}

/// Resolve `spec` to checkpoint files.
///
/// `spec` is, in order: an existing local directory; anything else that looks like a path
/// (starts with `.`, `/` or `~`, or is not in `owner/name` form yet contains a separator),
/// which is then an error; a registry alias (see [`registry`]); or an `owner/name` hub repo
/// id. `revision` overrides the registry's pinned revision (default `main` for other repos).
pub fn resolve(
    spec: &str,
    revision: Option<&str>,
    opts: &HubOptions,
) -> Result<ModelFiles, SourceError> {
    let path = Path::new(spec);
    if path.is_dir() {
        return ModelFiles::from_dir(path);
    }
    if looks_like_path(spec) {
        return Err(SourceError::DirNotFound {
            path: path.to_path_buf(),
        });
    }
    let entry = registry::lookup(spec).or_else(|| registry::lookup_repo(spec));
    let repo = match &entry {
        Some(e) => e.repo.as_str(),
        None if is_repo_id(spec) => spec,
        None => {
            return Err(SourceError::UnknownModel {
                spec: spec.to_string(),
                suggestion: registry::suggest(spec),
            })
        }
    };
    let revision = revision
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .or(entry.as_ref().map(|e| e.revision.as_str()))
        .unwrap_or("main");
    hub::resolve_repo(repo, revision, opts)
}

/// Refuses `spec` before anything is downloaded or loaded when it names a checkpoint of
/// another task than `want`: a registry alias or repo of another task, or a local directory
/// whose `config.json` says so. Anything else passes (a hub repo outside the registry is
/// checked by its config once resolved).
pub fn check_task(spec: &str, want: registry::Task) -> Result<(), SourceError> {
    match task_of(spec) {
        Some(task) if task != want => Err(SourceError::WrongTask {
            spec: spec.to_string(),
            found: task.checkpoint(),
            wanted: match want {
                registry::Task::Classify => "this command needs an image-text matching model",
                registry::Task::Caption => "captions need a BLIP captioning model",
                registry::Task::Answer => "answers need a BLIP question-answering model",
            },
            command: task.command(),
        }),
        _ => Ok(()),
    }
}

/// What the checkpoint `spec` does, when the registry (an alias or repo) or its local
/// directory tells; `None` for a hub repo outside the registry (its config tells once
/// resolved) or a directory whose config does not say.
pub fn task_of(spec: &str) -> Option<registry::Task> {
    let path = Path::new(spec);
    if path.is_dir() {
        task_of_dir(path)
    } else {
        registry::lookup(spec)
            .or_else(|| registry::lookup_repo(spec))
            .map(|e| e.task)
    }
}

/// The task of the checkpoint in `dir`, from its `config.json` (`model_type` and
/// `architectures`) or the open_clip layout; `None` when it cannot tell.
fn task_of_dir(dir: &Path) -> Option<registry::Task> {
    let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else {
        return dir
            .join(OPEN_CLIP_CONFIG)
            .is_file()
            .then_some(registry::Task::Classify);
    };
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    match config.get("model_type")?.as_str()? {
        "blip" => {
            let answers = config
                .get("architectures")
                .and_then(|a| a.as_array())
                .is_some_and(|a| a.iter().any(|n| n == "BlipForQuestionAnswering"));
            Some(if answers {
                registry::Task::Answer
            } else {
                registry::Task::Caption
            })
        }
        "clip" | "siglip" | "metaclip_2" => Some(registry::Task::Classify),
        _ => None,
    }
}

/// Whether `spec` reads as a filesystem path rather than an alias or repo id.
fn looks_like_path(spec: &str) -> bool {
    spec.starts_with('.')
        || spec.starts_with('/')
        || spec.starts_with('~')
        || spec.contains('\\')
        || Path::new(spec).is_absolute()
        || (spec.contains('/') && !is_repo_id(spec))
}

/// Whether `s` has hub repo-id form `owner/name` (letters, digits, `-`, `_`, `.`).
pub(crate) fn is_repo_id(s: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && !p.starts_with(['.', '-'])
            && !p.contains("..")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(s.split_once('/'), Some((owner, name)) if part(owner) && part(name))
}

/// Whether `revision` is a full commit hash (40 lowercase hex digits).
pub(crate) fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40
        && revision
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::fs;

    fn offline_opts(cache: &Path) -> HubOptions {
        HubOptions {
            endpoint: None,
            token: None,
            cache_dir: cache.to_path_buf(),
            offline: true,
            progress: false,
            timeout: DEFAULT_HUB_TIMEOUT,
            proxy: None,
        }
    }

    fn write_checkpoint(dir: &Path, weights: &str) {
        for f in [
            "config.json",
            "tokenizer.json",
            "preprocessor_config.json",
            weights,
        ] {
            fs::write(dir.join(f), f).expect("write");
        }
    }

    #[test]
    fn from_dir_finds_all_files_and_prefers_safetensors() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write_checkpoint(tmp.path(), "pytorch_model.bin");
        let files = ModelFiles::from_dir(tmp.path()).expect("complete");
        assert_eq!(files.weights, tmp.path().join("pytorch_model.bin"));
        assert_eq!(files.revision, None);
        assert_eq!(files.id, tmp.path().display().to_string());
        fs::write(tmp.path().join("model.safetensors"), "x").expect("write");
        let files = ModelFiles::from_dir(tmp.path()).expect("complete");
        assert_eq!(files.weights, tmp.path().join("model.safetensors"));
        assert_eq!(files.config, tmp.path().join("config.json"));
        assert_eq!(files.tokenizer, tmp.path().join("tokenizer.json"));
        assert_eq!(
            files.preprocessor,
            tmp.path().join("preprocessor_config.json")
        );
    }

    #[test]
    fn from_dir_names_every_missing_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join("config.json"), "{}").expect("write");
        let err = ModelFiles::from_dir(tmp.path()).unwrap_err();
        let SourceError::MissingLocalFiles { missing, .. } = &err else {
            panic!("unexpected {err}");
        };
        assert_eq!(
            missing,
            &[
                "tokenizer.json",
                "preprocessor_config.json",
                "model.safetensors (or pytorch_model.bin)"
            ]
        );
        assert!(err.to_string().contains(&tmp.path().display().to_string()));
        let gone = tmp.path().join("nope");
        let err = ModelFiles::from_dir(&gone).unwrap_err().to_string();
        assert!(
            err.contains("does not exist") && err.contains("nope"),
            "{err}"
        );
    }

    #[test]
    fn resolve_prefers_an_existing_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write_checkpoint(tmp.path(), "model.safetensors");
        let spec = tmp.path().to_str().expect("utf-8 temp path");
        let files = resolve(spec, Some("ignored"), &offline_opts(tmp.path())).expect("local");
        assert_eq!(files.id, spec);
        assert_eq!(files.revision, None);
    }

    #[test]
    fn resolve_classifies_specs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let opts = offline_opts(tmp.path());
        // Path-like but absent: a directory error, never a hub lookup.
        for spec in ["./missing-model", "/no/such/dir", "a/b/c", "~/m"] {
            let err = resolve(spec, None, &opts).unwrap_err();
            assert!(
                matches!(err, SourceError::DirNotFound { .. }),
                "{spec}: {err}"
            );
        }
        let err = resolve("not-an-alias", None, &opts).unwrap_err();
        assert!(matches!(err, SourceError::UnknownModel { .. }), "{err}");
        assert!(err.to_string().contains("vlm models"));
        assert!(!err.to_string().contains("did you mean"), "{err}");
        let err = resolve("clip-b23", None, &opts).unwrap_err().to_string();
        assert!(err.contains("did you mean `clip-b32`?"), "{err}");
        // Alias and repo id go to the (offline) hub cache with the right repo and revision.
        let err = resolve("clip-l14", None, &opts).unwrap_err();
        let SourceError::OfflineMissing { repo, revision, .. } = &err else {
            panic!("unexpected {err}");
        };
        assert_eq!(repo, "openai/clip-vit-large-patch14");
        assert_eq!(revision, "main");
        let err = resolve("someone/some-model", Some("refs/pr/15"), &opts).unwrap_err();
        let SourceError::OfflineMissing { repo, revision, .. } = &err else {
            panic!("unexpected {err}");
        };
        assert_eq!(repo, "someone/some-model");
        assert_eq!(revision, "refs/pr/15");
    }

    #[test]
    fn a_checkpoint_of_another_task_is_refused_before_download() {
        use registry::Task;
        let err = check_task("blip-base", Task::Classify)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("vlm caption") && err.contains("captioning"),
            "{err}"
        );
        let err = check_task("Salesforce/blip-vqa-base", Task::Caption)
            .unwrap_err()
            .to_string();
        assert!(err.contains("vlm ask"), "{err}");
        let err = check_task("clip-b32", Task::Caption)
            .unwrap_err()
            .to_string();
        assert!(err.contains("vlm classify"), "{err}");
        assert!(check_task("blip-vqa", Task::Answer).is_ok());
        assert!(check_task("someone/unknown", Task::Caption).is_ok());
        // A local directory, by its config.json.
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(
            tmp.path().join("config.json"),
            r#"{"model_type": "blip", "architectures": ["BlipForQuestionAnswering"]}"#,
        )
        .expect("write");
        let spec = tmp.path().to_str().expect("utf-8 temp path");
        let err = check_task(spec, Task::Classify).unwrap_err().to_string();
        assert!(err.contains("vlm ask"), "{err}");
        assert!(check_task(spec, Task::Answer).is_ok());
    }

    #[test]
    fn repo_id_form() {
        assert!(is_repo_id("openai/clip-vit-base-patch32"));
        assert!(is_repo_id("laion/CLIP-ViT-H-14-laion2B-s32B-b79K"));
        assert!(is_repo_id("a_b/c.d"));
        for bad in [
            "", "x", "/x", "x/", "a/b/c", "../x", "a/..", "a b/c", "a/b?c",
        ] {
            assert!(!is_repo_id(bad), "{bad}");
        }
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn options_follow_huggingface_hub_variables() {
        let o = HubOptions::from_vars(env(&[("HOME", "/h")]), false);
        assert_eq!(o.cache_dir, Path::new("/h/.cache/huggingface/hub"));
        assert_eq!((o.endpoint, o.offline, o.progress), (None, false, false));

        let o = HubOptions::from_vars(env(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]), true);
        assert_eq!(o.cache_dir, Path::new("/x/huggingface/hub"));
        assert!(o.progress);

        let o = HubOptions::from_vars(env(&[("HOME", "/h"), ("HF_HOME", "/hf")]), false);
        assert_eq!(o.cache_dir, Path::new("/hf/hub"));

        let o = HubOptions::from_vars(
            env(&[
                ("HF_HOME", "/hf"),
                ("HF_HUB_CACHE", "/c"),
                ("HF_ENDPOINT", "http://mirror"),
                ("HF_TOKEN", " hf_abc \n"),
                ("HF_HUB_OFFLINE", "YES"),
            ]),
            false,
        );
        assert_eq!(o.cache_dir, Path::new("/c"));
        assert_eq!(o.endpoint.as_deref(), Some("http://mirror"));
        assert_eq!(o.token.as_deref(), Some("hf_abc"));
        assert!(o.offline);

        for (value, offline) in [("1", true), ("true", true), ("0", false), ("no", false)] {
            let o = HubOptions::from_vars(env(&[("HF_HUB_OFFLINE", value)]), false);
            assert_eq!(o.offline, offline, "{value}");
        }
    }

    #[test]
    fn timeout_comes_from_vlm_hub_timeout() {
        let o = HubOptions::from_vars(env(&[]), false);
        assert_eq!(o.timeout, DEFAULT_HUB_TIMEOUT);
        let o = HubOptions::from_vars(env(&[("VLM_HUB_TIMEOUT", " 2.5 ")]), false);
        assert_eq!(o.timeout, Duration::from_millis(2500));
        for bad in ["0", "-3", "soon", "NaN", "inf"] {
            let o = HubOptions::from_vars(env(&[("VLM_HUB_TIMEOUT", bad)]), false);
            assert_eq!(o.timeout, DEFAULT_HUB_TIMEOUT, "{bad}");
        }
        let o = HubOptions::from_vars(env(&[("VLM_HUB_TIMEOUT", "1e300")]), false);
        assert_eq!(o.timeout, Duration::from_secs(7 * 24 * 3600));
    }

    #[test]
    fn proxy_follows_scheme_then_all_proxy_and_no_proxy() {
        let proxy = |pairs: &[(&str, &str)]| HubOptions::from_vars(env(pairs), false).proxy;
        assert_eq!(proxy(&[]), None);
        // The default endpoint is https.
        assert_eq!(
            proxy(&[("HTTPS_PROXY", "http://s:1"), ("HTTP_PROXY", "http://p:1")]).as_deref(),
            Some("http://s:1")
        );
        assert_eq!(
            proxy(&[
                ("https_proxy", "http://low:1"),
                ("HTTPS_PROXY", "http://up:1")
            ])
            .as_deref(),
            Some("http://low:1")
        );
        assert_eq!(
            proxy(&[("ALL_PROXY", "http://a:1")]).as_deref(),
            Some("http://a:1")
        );
        assert_eq!(
            proxy(&[
                ("HF_ENDPOINT", "http://mirror.local:8080"),
                ("HTTPS_PROXY", "http://s:1"),
                ("HTTP_PROXY", "http://p:1"),
            ])
            .as_deref(),
            Some("http://p:1")
        );
        for no_proxy in [
            "huggingface.co",
            ".huggingface.co",
            "x, *.Huggingface.co:443",
            "*",
        ] {
            assert_eq!(
                proxy(&[("HTTPS_PROXY", "http://s:1"), ("NO_PROXY", no_proxy)]),
                None,
                "{no_proxy}"
            );
        }
        for no_proxy in ["gingface.co", "hf.co", ""] {
            assert!(
                proxy(&[("HTTPS_PROXY", "http://s:1"), ("no_proxy", no_proxy)]).is_some(),
                "{no_proxy}"
            );
        }
        assert_eq!(
            proxy(&[
                ("HF_ENDPOINT", "http://127.0.0.1:9"),
                ("HTTP_PROXY", "http://p:1"),
                ("NO_PROXY", "localhost,127.0.0.1"),
            ]),
            None
        );
    }

    #[test]
    fn token_falls_back_to_the_login_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join("token"), "hf_from_file\n").expect("write");
        let home = tmp.path().to_str().expect("utf-8 temp path");
        let o = HubOptions::from_vars(env(&[("HF_HOME", home)]), false);
        assert_eq!(o.token.as_deref(), Some("hf_from_file"));
        let o = HubOptions::from_vars(env(&[("HF_HOME", home), ("HF_TOKEN", "hf_env")]), false);
        assert_eq!(o.token.as_deref(), Some("hf_env"));
    }
}
