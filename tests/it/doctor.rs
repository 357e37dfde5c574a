//! `vlm doctor` and `vlm --version` through the built binary: the report matches this
//! machine, missing programs are facts (not errors), an unreachable hub is reported without
//! hanging, and `--json` parses.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::vlm;

fn doctor_json(command: &mut Command) -> Value {
    let output = command.args(["doctor", "--json"]).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        crate::common::stderr(&output)
    );
    serde_json::from_slice(&output.stdout).expect("doctor --json prints one JSON object")
}

/// The flags of the first processor in /proc/cpuinfo.
fn cpuinfo_flags() -> Option<Vec<String>> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("flags"))?;
    let (_, flags) = line.split_once(':')?;
    Some(flags.split_whitespace().map(str::to_string).collect())
}

#[cfg(target_arch = "x86_64")]
#[test]
fn cpu_features_match_proc_cpuinfo() {
    let Some(flags) = cpuinfo_flags() else {
        eprintln!("skipped: no /proc/cpuinfo here");
        return;
    };
    let report = doctor_json(&mut vlm());
    let named: Vec<&str> = report["cpu"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // The doctor's names (Rust's) and /proc/cpuinfo's for the same extension.
    let pairs = [
        ("sse4.2", "sse4_2"),
        ("avx", "avx"),
        ("avx2", "avx2"),
        ("fma", "fma"),
        ("f16c", "f16c"),
        ("avx512f", "avx512f"),
        ("avx512bw", "avx512bw"),
        ("avx512vl", "avx512vl"),
        ("avx512vnni", "avx512_vnni"),
        ("avx512bf16", "avx512_bf16"),
        ("avxvnni", "avx_vnni"),
        ("amx-bf16", "amx_bf16"),
    ];
    for (ours, linux) in pairs {
        assert_eq!(
            named.contains(&ours),
            flags.iter().any(|f| f == linux),
            "{ours} (cpuinfo {linux}): doctor says {named:?}"
        );
    }
    assert!(named
        .iter()
        .all(|n| pairs.iter().any(|(ours, _)| ours == n)));
    let model = report["cpu"]["model"].as_str().unwrap();
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    assert!(text.contains(model), "{model}");

    // The f32 kernel is the widest the flags allow; bf16 is there iff a bf16 extension is.
    let kernels = report["kernels"].as_array().unwrap();
    let kernel = |dtype: &str| {
        kernels
            .iter()
            .find(|k| k["dtype"] == dtype)
            .unwrap_or_else(|| panic!("no {dtype} in {kernels:?}"))
    };
    let has = |f: &str| flags.iter().any(|g| g == f);
    let f32_kernel = if has("avx512f") {
        "packed avx512"
    } else if has("avx2") && has("fma") {
        "packed avx2"
    } else {
        "packed portable"
    };
    assert_eq!(kernel("f32")["kernel"], f32_kernel);
    assert_eq!(kernel("f32")["available"], true);
    assert_eq!(
        kernel("bf16")["available"],
        has("amx_bf16") || (has("avx512_bf16") && has("avx512f"))
    );
}

#[test]
fn missing_programs_are_reported_missing_and_the_run_succeeds() {
    let empty = tempfile::tempdir().unwrap();
    let mut command = vlm();
    command.env("PATH", empty.path()).env_remove("BROWSER");
    let report = doctor_json(&mut command);
    let clients = report["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 3, "{clients:?}");
    for client in clients {
        assert!(client["found"].is_null(), "{client}");
        assert!(!client["looked_for"].as_array().unwrap().is_empty());
    }
    assert_eq!(clients[1]["built_in"], cfg!(feature = "postgres"));
    assert_eq!(clients[2]["built_in"], cfg!(feature = "milvus"));

    let output = vlm()
        .env("PATH", empty.path())
        .env_remove("BROWSER")
        .arg("doctor")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        crate::common::stderr(&output)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("missing (looked for chromium"), "{text}");
    assert!(text.contains("missing (looked for psql)"), "{text}");
    assert!(!text.to_lowercase().contains("error"), "{text}");
    // Offline (the harness sets HF_HUB_OFFLINE): the hub is not asked.
    assert_eq!(report["hub"]["check"]["status"], "skipped");
    assert!(text.contains("HF_HUB_OFFLINE=1"), "{text}");
}

#[test]
fn an_unreachable_hub_is_reported_as_such_without_hanging() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let start = Instant::now();
    let report = doctor_json(
        vlm()
            .env_remove("HF_HUB_OFFLINE")
            .env("HF_ENDPOINT", format!("http://127.0.0.1:{port}")),
    );
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    let hub = &report["hub"];
    assert_eq!(hub["check"]["status"], "unreachable", "{hub}");
    assert!(!hub["check"]["reason"].as_str().unwrap().is_empty());
    assert_eq!(hub["offline"], false);
    assert_eq!(hub["endpoint"], format!("http://127.0.0.1:{port}"));
}

#[test]
fn cache_directories_are_reported_with_their_sizes_and_secrets_hidden() {
    let cache = tempfile::tempdir().unwrap();
    std::fs::create_dir(cache.path().join("ns")).unwrap();
    std::fs::write(cache.path().join("ns/a.bin"), [0u8; 300]).unwrap();
    std::fs::write(cache.path().join("b.bin"), [0u8; 45]).unwrap();
    let hf = tempfile::tempdir().unwrap();
    let report = doctor_json(
        vlm()
            .env("VLM_CACHE_DIR", cache.path())
            .env("HF_HUB_CACHE", hf.path().join("absent"))
            .env("HF_TOKEN", "hf_do_not_print"),
    );
    let dirs = report["directories"].as_array().unwrap();
    let embeddings = &dirs[0];
    assert_eq!(embeddings["path"], cache.path().to_str().unwrap());
    assert_eq!(embeddings["exists"], true);
    assert_eq!(embeddings["files"], 2);
    assert_eq!(embeddings["bytes"], 345);
    let hub_cache = &dirs[2];
    assert_eq!(hub_cache["exists"], false, "{hub_cache}");
    assert_eq!(report["hub"]["token"], true);
    let text = report.to_string();
    assert!(!text.contains("hf_do_not_print"), "{text}");
    assert!(text.contains("\"HF_TOKEN\""), "{text}");
}

#[test]
fn version_names_the_commit_the_features_and_the_jpeg_decoder() {
    let output = vlm().arg("--version").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.starts_with(&format!("vlm {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let features = text
        .lines()
        .find_map(|l| l.strip_prefix("features: "))
        .unwrap_or_else(|| panic!("no features line in {text}"));
    let features: Vec<&str> = features.split(", ").collect();
    assert_eq!(
        features.contains(&"postgres"),
        cfg!(feature = "postgres"),
        "{text}"
    );
    assert_eq!(
        features.contains(&"milvus"),
        cfg!(feature = "milvus"),
        "{text}"
    );

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let head = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    if let Some(head) = head {
        let head = String::from_utf8(head.stdout).unwrap();
        assert!(
            text.contains(&format!("(commit {})", &head.trim()[..12])),
            "built from a checkout at {head}: {text}"
        );
    }

    let decoder = text
        .lines()
        .find_map(|l| l.strip_prefix("JPEG decoder: "))
        .unwrap_or_else(|| panic!("no JPEG decoder line in {text}"));
    let nasm_here = Command::new("nasm").arg("-v").output().is_ok();
    if cfg!(target_arch = "x86_64") && nasm_here {
        assert_eq!(
            decoder, "libjpeg-turbo with SIMD",
            "nasm is installed, yet the decoder was built without it: run \
             `cargo clean -p mozjpeg-sys` and build again"
        );
    }
}
