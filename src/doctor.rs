//! `vlm doctor`: what vlm sees on this machine, for bug reports. The build (version,
//! commit, features, JPEG decoder), the CPU and the kernels each number type would run,
//! threads, the cache directories and their sizes, the Hugging Face settings and whether
//! the hub answers, and the outside programs the optional features work with.
//!
//! Nothing here fails: what cannot be read is reported as unknown or missing, so the
//! report is always complete enough to paste into an issue.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::build_info;
use crate::cache::EmbeddingCache;
use crate::device::{self, DeviceKind};
use crate::model::{self, Bf16Kernel, CpuKernel, Int8Kernel};
use crate::source::{self, HubOptions};

/// The longest the hub check waits, whatever `VLM_HUB_TIMEOUT` says: a report must not
/// hang on a network that drops packets.
pub const HUB_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the report asks beyond the environment.
#[derive(Debug, Clone, Default)]
pub struct DoctorOptions {
    /// The bf16 kernel forced by `VLM_BF16_KERNEL`, as loads would use it.
    pub bf16_kernel: Option<Bf16Kernel>,
    /// The int8 kernel forced by `VLM_INT8_KERNEL`, as loads would use it.
    pub int8_kernel: Option<Int8Kernel>,
}

/// Everything `vlm doctor` reports; `--json` prints it as is.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub vlm: Build,
    pub system: System,
    pub cpu: Cpu,
    /// For each number type, the kernel a CPU load would run.
    pub kernels: Vec<CpuKernel>,
    /// What `--device auto` picks in this build.
    pub device: String,
    pub threads: Threads,
    pub directories: Vec<Directory>,
    pub hub: Hub,
    /// The variables vlm reads, with secrets shown as `(set)`; unset ones are left out.
    pub environment: Vec<Variable>,
    /// Outside programs the optional features work with.
    pub clients: Vec<Client>,
}

/// This build of vlm.
#[derive(Debug, Clone, Serialize)]
pub struct Build {
    pub version: &'static str,
    pub commit: Option<&'static str>,
    pub features: Vec<&'static str>,
    pub target: &'static str,
    pub profile: &'static str,
    /// Whether the JPEG decoder has libjpeg-turbo's SIMD code (`None`: the build could not
    /// tell).
    pub jpeg_simd: Option<bool>,
    pub jpeg_decoder: &'static str,
}

/// The operating system.
#[derive(Debug, Clone, Serialize)]
pub struct System {
    /// `linux`, `macos`, `windows`, ...
    pub os: &'static str,
    /// The distribution's name (`PRETTY_NAME` of /etc/os-release), where there is one.
    pub distribution: Option<String>,
    /// The kernel release (Linux).
    pub kernel: Option<String>,
    /// Physical memory in bytes (Linux).
    pub memory_bytes: Option<u64>,
}

/// The CPU.
#[derive(Debug, Clone, Serialize)]
pub struct Cpu {
    pub arch: &'static str,
    /// The model name (`model name` of /proc/cpuinfo), where the OS tells it.
    pub model: Option<String>,
    /// The instruction-set extensions vlm's kernels and dependencies use that this CPU (and
    /// OS) has, as the Rust runtime detects them.
    pub features: Vec<&'static str>,
}

/// Threads.
#[derive(Debug, Clone, Serialize)]
pub struct Threads {
    /// CPUs this process may use (affinity and cgroup quota included).
    pub available: usize,
    /// Threads of the model's matrix products (`--threads`, else `RAYON_NUM_THREADS`, else
    /// one per available CPU).
    pub model: usize,
    /// Threads decoding and resizing images by default (`-j`).
    pub decode: usize,
}

/// A directory vlm writes, with what is in it.
#[derive(Debug, Clone, Serialize)]
pub struct Directory {
    /// What it holds.
    pub name: &'static str,
    /// The variable that moves it.
    pub variable: &'static str,
    /// `None` when this platform has no user cache directory.
    pub path: Option<PathBuf>,
    pub exists: bool,
    /// Regular files below it (links not followed).
    pub files: u64,
    pub bytes: u64,
}

/// The Hugging Face hub settings and whether it answers.
#[derive(Debug, Clone, Serialize)]
pub struct Hub {
    pub endpoint: String,
    pub offline: bool,
    /// Whether a token is set (never the token).
    pub token: bool,
    /// The proxy hub requests go through, password hidden.
    pub proxy: Option<String>,
    /// The check's time limit in seconds.
    pub timeout_s: f64,
    pub check: HubCheck,
}

/// The answer to one request for a model's information.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum HubCheck {
    /// The hub answered (any HTTP status counts: it is there).
    Answered { http_status: u16, millis: u64 },
    /// Nothing came back: the reason (unresolved, refused, timed out).
    Unreachable { reason: String },
    /// Not asked: offline mode.
    Skipped { reason: String },
}

/// An environment variable vlm reads, and its value.
#[derive(Debug, Clone, Serialize)]
pub struct Variable {
    pub name: &'static str,
    pub value: String,
}

/// An outside program an optional feature works with; missing is a fact, not an error.
#[derive(Debug, Clone, Serialize)]
pub struct Client {
    /// The feature, as users know it.
    pub feature: &'static str,
    /// Whether this build has the feature (the review page always; databases by cargo
    /// feature).
    pub built_in: bool,
    /// The programs looked for, in order.
    pub looked_for: Vec<String>,
    /// The first one found.
    pub found: Option<PathBuf>,
    /// What it is for, and what to do without it.
    pub note: &'static str,
}

/// The extensions reported in [`Cpu::features`], by the names Rust's detection uses.
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
const CPU_FEATURES: &[&str] = &[
    "sse4.2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512vnni",
    "avx512bf16",
    "avxvnni",
    "amx-bf16",
    "amx-int8",
];

/// The variables vlm reads; `true` marks a secret, shown only as set.
const VARIABLES: &[(&str, bool)] = &[
    ("VLM_MODEL", false),
    ("VLM_CACHE_DIR", false),
    ("VLM_PACK_CACHE_DIR", false),
    ("VLM_NO_PACK_CACHE", false),
    ("VLM_BF16_KERNEL", false),
    ("VLM_INT8_KERNEL", false),
    ("VLM_HUB_TIMEOUT", false),
    ("RAYON_NUM_THREADS", false),
    ("HF_HOME", false),
    ("HF_HUB_CACHE", false),
    ("HUGGINGFACE_HUB_CACHE", false),
    ("HF_ENDPOINT", false),
    ("HF_HUB_OFFLINE", false),
    ("HF_TOKEN", true),
    ("HUGGING_FACE_HUB_TOKEN", true),
    ("HF_TOKEN_PATH", false),
    ("https_proxy", true),
    ("HTTPS_PROXY", true),
    ("http_proxy", true),
    ("HTTP_PROXY", true),
    ("all_proxy", true),
    ("ALL_PROXY", true),
    ("no_proxy", false),
    ("NO_PROXY", false),
    ("PGHOST", false),
    ("PGPORT", false),
    ("PGUSER", false),
    ("PGDATABASE", false),
    ("PGPASSWORD", true),
];

/// Gathers the report. Asks the hub once (unless offline), waiting at most
/// [`HUB_CHECK_TIMEOUT`]; everything else is local.
pub fn examine(options: &DoctorOptions) -> Report {
    let hub_options = HubOptions::from_env();
    let threads = Threads {
        available: std::thread::available_parallelism().map_or(1, usize::from),
        model: rayon::current_num_threads(),
        decode: crate::pipeline::PipelineOptions::default().workers,
    };
    Report {
        vlm: Build {
            version: build_info::VERSION,
            commit: build_info::git_commit(),
            features: build_info::features().to_vec(),
            target: build_info::target(),
            profile: build_info::profile(),
            jpeg_simd: build_info::jpeg_simd(),
            jpeg_decoder: build_info::jpeg_decoder(),
        },
        system: system(),
        cpu: cpu(),
        kernels: model::cpu_kernels(&model::LoadOptions {
            pack_dir: None,
            bf16_kernel: options.bf16_kernel,
            int8_kernel: options.int8_kernel,
        }),
        device: match device::select(DeviceKind::Auto) {
            Ok(device) => match device.location() {
                candle_core::DeviceLocation::Cpu => "cpu".to_string(),
                candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
                candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
            },
            Err(e) => format!("none: {e}"),
        },
        threads,
        directories: directories(&hub_options),
        hub: hub(&hub_options),
        environment: environment(|name| std::env::var(name).ok()),
        clients: clients(
            std::env::var_os("PATH").as_deref(),
            std::env::var("BROWSER").ok(),
        ),
    }
}

fn system() -> System {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    System {
        os: std::env::consts::OS,
        distribution: read("/etc/os-release").and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim().trim_matches('"').to_string())
        }),
        kernel: read("/proc/sys/kernel/osrelease").map(|v| v.trim().to_string()),
        memory_bytes: read("/proc/meminfo").and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        }),
    }
}

fn cpu() -> Cpu {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        });
    Cpu {
        arch: std::env::consts::ARCH,
        model,
        features: cpu_features(),
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
fn cpu_features() -> Vec<&'static str> {
    let has = |name: &str| match name {
        "sse4.2" => std::arch::is_x86_feature_detected!("sse4.2"),
        "avx" => std::arch::is_x86_feature_detected!("avx"),
        "avx2" => std::arch::is_x86_feature_detected!("avx2"),
        "fma" => std::arch::is_x86_feature_detected!("fma"),
        "f16c" => std::arch::is_x86_feature_detected!("f16c"),
        "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
        "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
        "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
        "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
        "avx512bf16" => std::arch::is_x86_feature_detected!("avx512bf16"),
        "avxvnni" => std::arch::is_x86_feature_detected!("avxvnni"),
        // Rust's AMX detection is unstable; the bf16 kernels' own check (which also asks
        // Linux for the tile state) answers instead.
        "amx-bf16" => Bf16Kernel::Amx.supported(),
        "amx-int8" => Int8Kernel::Amx.supported(),
        _ => false,
    };
    CPU_FEATURES.iter().copied().filter(|f| has(f)).collect()
}

#[cfg(target_arch = "aarch64")]
fn cpu_features() -> Vec<&'static str> {
    let has = |name: &str| match name {
        "neon" => std::arch::is_aarch64_feature_detected!("neon"),
        "bf16" => std::arch::is_aarch64_feature_detected!("bf16"),
        "i8mm" => std::arch::is_aarch64_feature_detected!("i8mm"),
        "dotprod" => std::arch::is_aarch64_feature_detected!("dotprod"),
        _ => false,
    };
    ["neon", "dotprod", "i8mm", "bf16"]
        .into_iter()
        .filter(|f| has(f))
        .collect()
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "x86", target_arch = "aarch64")))]
fn cpu_features() -> Vec<&'static str> {
    Vec::new()
}

fn directories(hub: &HubOptions) -> Vec<Directory> {
    [
        (
            "embedding cache (--cache)",
            crate::cache::CACHE_DIR_ENV,
            EmbeddingCache::default_dir(),
        ),
        (
            "pack cache (packed weights)",
            model::PACK_DIR_ENV,
            model::default_pack_dir(),
        ),
        (
            "Hugging Face hub cache",
            "HF_HUB_CACHE",
            Some(hub.cache_dir.clone()),
        ),
    ]
    .into_iter()
    .map(|(name, variable, path)| {
        let (exists, files, bytes) = path.as_deref().map_or((false, 0, 0), usage);
        Directory {
            name,
            variable,
            path,
            exists,
            files,
            bytes,
        }
    })
    .collect()
}

/// Whether `dir` exists, and the count and total size of the regular files below it.
/// Links are not followed (the hub cache's snapshots link to its blobs, counted once).
fn usage(dir: &Path) -> (bool, u64, u64) {
    if !dir.is_dir() {
        return (false, 0, 0);
    }
    let (mut files, mut bytes) = (0, 0);
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if let Ok(meta) = entry.metadata() {
            if meta.is_file() {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    (true, files, bytes)
}

fn hub(options: &HubOptions) -> Hub {
    let endpoint = options
        .endpoint
        .clone()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| source::DEFAULT_ENDPOINT.to_string());
    let timeout = options.timeout.min(HUB_CHECK_TIMEOUT);
    let check = if options.offline {
        HubCheck::Skipped {
            reason: "offline mode (HF_HUB_OFFLINE): vlm uses only the local cache".into(),
        }
    } else {
        check_hub(options, timeout)
    };
    Hub {
        endpoint,
        offline: options.offline,
        token: options.token.is_some(),
        proxy: options.proxy.as_deref().map(source::redact_proxy),
        timeout_s: timeout.as_secs_f64(),
        check,
    }
}

/// One request on a thread of its own, waited for at most `timeout` (plus a moment): name
/// resolution is outside the HTTP client's timeouts, and a report must never hang.
pub fn check_hub(options: &HubOptions, timeout: Duration) -> HubCheck {
    let mut options = options.clone();
    options.timeout = timeout;
    options.progress = false;
    let (send, receive) = mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let _ = send.send(source::ping_hub(&options));
    });
    match receive.recv_timeout(timeout + Duration::from_millis(500)) {
        Ok(Ok(http_status)) => HubCheck::Answered {
            http_status,
            millis: start.elapsed().as_millis() as u64,
        },
        Ok(Err(reason)) => HubCheck::Unreachable { reason },
        Err(_) => HubCheck::Unreachable {
            reason: format!("no answer within {:.1} s", timeout.as_secs_f64()),
        },
    }
}

/// The set variables of [`VARIABLES`], read through `var`; secrets as `(set)`.
fn environment(var: impl Fn(&str) -> Option<String>) -> Vec<Variable> {
    VARIABLES
        .iter()
        .filter_map(|&(name, secret)| {
            let value = var(name)?;
            let value = if secret { "(set)".to_string() } else { value };
            Some(Variable { name, value })
        })
        .collect()
}

/// The programs the optional features work with, looked up on `path` (`BROWSER` first for
/// the browser).
fn clients(path: Option<&std::ffi::OsStr>, browser: Option<String>) -> Vec<Client> {
    let mut browsers: Vec<String> = browser
        .into_iter()
        .flat_map(|b| b.split(':').map(str::to_string).collect::<Vec<_>>())
        .filter(|b| !b.is_empty())
        .collect();
    browsers.extend(
        [
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
            "firefox",
            "microsoft-edge",
        ]
        .map(String::from),
    );
    let entry = |feature, built_in, looked_for: Vec<String>, note| Client {
        feature,
        built_in,
        found: looked_for.iter().find_map(|p| find_program(p, path)),
        looked_for,
        note,
    };
    vec![
        entry(
            "review page (vlm report)",
            true,
            browsers,
            "a browser to open the page vlm report writes; any browser on any machine will do",
        ),
        entry(
            "PostgreSQL store (--to/--in postgresql://)",
            cfg!(feature = "postgres"),
            vec!["psql".into()],
            "vlm talks to PostgreSQL itself; psql is only for looking at the tables",
        ),
        entry(
            "Milvus store (--to/--in milvus://)",
            cfg!(feature = "milvus"),
            vec!["milvus-lite".into()],
            "vlm talks to Milvus itself; milvus-lite (pip install milvus-lite) is a local \
             server; without the feature, build with --features milvus",
        ),
    ]
}

/// `name` if it is a path to a file, else the first `PATH` entry holding it as a file.
fn find_program(name: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let direct = Path::new(name);
    if direct.components().count() > 1 {
        return direct.is_file().then(|| direct.to_path_buf());
    }
    std::env::split_paths(path?)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file() || path.with_extension("exe").is_file()
}

/// "4.2 MB", "1.3 GB", "512 B".
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

impl Report {
    /// The report as text for people (and issues): one topic a paragraph.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "vlm {}", build_info::long_version());
        let s = &self.system;
        let mut system = vec![s.os.to_string()];
        system.extend(s.distribution.clone());
        system.extend(s.kernel.as_ref().map(|k| format!("kernel {k}")));
        system.extend(s.memory_bytes.map(|m| format!("{} memory", size(m))));
        let _ = writeln!(out, "\nsystem:  {}", system.join(", "));
        let c = &self.cpu;
        let _ = writeln!(
            out,
            "cpu:     {} ({}, {} CPUs available)",
            c.model.as_deref().unwrap_or("unknown model"),
            c.arch,
            self.threads.available
        );
        let features = if c.features.is_empty() {
            "none of those vlm uses".to_string()
        } else {
            c.features.join(" ")
        };
        let _ = writeln!(out, "         features: {features}");
        for (i, k) in self.kernels.iter().enumerate() {
            let head = if i == 0 { "kernels:" } else { "" };
            let kernel = if k.available {
                k.kernel.to_string()
            } else {
                format!("none on this CPU (--dtype {} is refused here)", k.dtype)
            };
            let _ = writeln!(out, "{head:<8} {:<5} {kernel}", k.dtype);
        }
        let _ = writeln!(out, "device:  --device auto runs on {}", self.device);
        let _ = writeln!(
            out,
            "threads: {} for the model (--threads, RAYON_NUM_THREADS), {} decoding (-j)",
            self.threads.model, self.threads.decode
        );
        let _ = writeln!(out, "\ndirectories:");
        let width = self
            .directories
            .iter()
            .map(|d| d.name.len())
            .max()
            .unwrap_or(0);
        for d in &self.directories {
            let place = d
                .path
                .as_ref()
                .map_or("(no user cache directory)".to_string(), |p| {
                    p.display().to_string()
                });
            let contents = if d.exists {
                format!("{} files, {}", d.files, size(d.bytes))
            } else {
                "not there yet".to_string()
            };
            let _ = writeln!(
                out,
                "  {:<width$}  {place}  {contents}  [{}]",
                d.name, d.variable
            );
        }
        let h = &self.hub;
        let answer = match &h.check {
            HubCheck::Answered {
                http_status,
                millis,
            } => format!("answers (HTTP {http_status} in {millis} ms)"),
            HubCheck::Unreachable { reason } => format!("unreachable: {reason}"),
            HubCheck::Skipped { reason } => format!("not asked: {reason}"),
        };
        let _ = writeln!(out, "\nhub:     {} {answer}", h.endpoint);
        let _ = writeln!(
            out,
            "         offline: {}, token: {}, proxy: {}, check timeout {:.1} s",
            if h.offline { "yes" } else { "no" },
            if h.token { "set" } else { "none" },
            h.proxy.as_deref().unwrap_or("none"),
            h.timeout_s
        );
        let _ = writeln!(out, "\nenvironment:");
        if self.environment.is_empty() {
            let _ = writeln!(out, "  (none of the variables vlm reads is set)");
        }
        for v in &self.environment {
            let _ = writeln!(out, "  {}={}", v.name, v.value);
        }
        let _ = writeln!(out, "\noptional features:");
        for c in &self.clients {
            let built = if c.built_in {
                ""
            } else {
                " [not in this build]"
            };
            let found = match &c.found {
                Some(p) => format!("found {}", p.display()),
                None => format!("missing (looked for {})", c.looked_for.join(", ")),
            };
            let _ = writeln!(out, "  {}{built}: {found}\n      {}", c.feature, c.note);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_only_said_to_be_set() {
        let vars = environment(|name| match name {
            "HF_TOKEN" => Some("hf_secret".into()),
            "https_proxy" => Some("http://u:pw@proxy:3128".into()),
            "HF_HUB_OFFLINE" => Some("1".into()),
            _ => None,
        });
        let shown: Vec<String> = vars
            .iter()
            .map(|v| format!("{}={}", v.name, v.value))
            .collect();
        assert_eq!(
            shown,
            ["HF_HUB_OFFLINE=1", "HF_TOKEN=(set)", "https_proxy=(set)"]
        );
    }

    #[test]
    fn missing_programs_are_reported_missing() {
        let empty = tempfile::tempdir().unwrap();
        let path = std::env::join_paths([empty.path()]).unwrap();
        let clients = clients(Some(&path), None);
        assert_eq!(clients.len(), 3);
        assert!(clients.iter().all(|c| c.found.is_none()), "{clients:?}");
        assert!(clients[0].built_in);
        assert_eq!(clients[1].built_in, cfg!(feature = "postgres"));
    }

    #[cfg(unix)]
    #[test]
    fn programs_are_found_on_path_and_browser_first() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for name in ["psql", "firefox", "mybrowser", "milvus-lite"] {
            let file = dir.path().join(name);
            std::fs::write(&file, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // Not executable: not a program.
        std::fs::write(dir.path().join("chromium"), "").unwrap();
        let path = std::env::join_paths([dir.path()]).unwrap();
        let clients = clients(Some(&path), Some("mybrowser".into()));
        assert_eq!(clients[0].found, Some(dir.path().join("mybrowser")));
        let clients = super::clients(Some(&path), None);
        assert_eq!(clients[0].found, Some(dir.path().join("firefox")));
        assert_eq!(clients[1].found, Some(dir.path().join("psql")));
        assert_eq!(clients[2].found, Some(dir.path().join("milvus-lite")));
    }

    #[test]
    fn usage_counts_regular_files_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("blobs/a"), vec![0u8; 1500]).unwrap();
        std::fs::write(dir.path().join("b"), vec![0u8; 20]).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("blobs/a"), dir.path().join("link")).unwrap();
        assert_eq!(usage(dir.path()), (true, 2, 1520));
        assert_eq!(usage(&dir.path().join("absent")), (false, 0, 0));
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(4_200_000), "4.2 MB");
        assert_eq!(size(1_300_000_000), "1.3 GB");
    }

    #[test]
    fn a_silent_hub_is_reported_unreachable_within_the_timeout() {
        // Accepts connections and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _keep = std::thread::spawn(move || {
            let held: Vec<_> = listener.incoming().take(4).collect();
            std::thread::sleep(Duration::from_secs(5));
            drop(held);
        });
        let options = HubOptions {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            token: None,
            cache_dir: PathBuf::from("unused"),
            offline: false,
            progress: false,
            timeout: Duration::from_secs(30),
            proxy: None,
        };
        let start = Instant::now();
        let check = check_hub(&options, Duration::from_millis(300));
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert!(matches!(check, HubCheck::Unreachable { .. }), "{check:?}");
    }

    #[test]
    fn a_refused_connection_is_unreachable_and_any_http_answer_counts() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let mut options = HubOptions {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            token: None,
            cache_dir: PathBuf::from("unused"),
            offline: false,
            progress: false,
            timeout: Duration::from_secs(2),
            proxy: None,
        };
        let check = check_hub(&options, Duration::from_secs(2));
        assert!(matches!(check, HubCheck::Unreachable { .. }), "{check:?}");

        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let answer = std::thread::spawn(move || {
            let request = server.recv().unwrap();
            let url = request.url().to_string();
            request
                .respond(tiny_http::Response::from_string("{}").with_status_code(401))
                .unwrap();
            url
        });
        options.endpoint = Some(format!("http://127.0.0.1:{port}"));
        let check = check_hub(&options, Duration::from_secs(2));
        assert!(
            matches!(
                check,
                HubCheck::Answered {
                    http_status: 401,
                    ..
                }
            ),
            "{check:?}"
        );
        assert_eq!(
            answer.join().unwrap(),
            "/api/models/openai/clip-vit-base-patch32"
        );
    }
}
