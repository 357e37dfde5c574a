//! Process and output faults through the `vlm` binary: Ctrl-C, full disks, unwritable
//! output paths.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{stderr, vlm};
use image::{Rgb, RgbImage};
use serde_json::Value;

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-quickgelu")
}

/// `count` PNGs of `side` x `side`: up to ten distinct pictures, copied under more names.
fn folder(root: &Path, count: u32, side: u32) {
    std::fs::create_dir_all(root).unwrap();
    for i in 0..count {
        let path = root.join(format!("{i:04}.png"));
        if i >= 10 {
            std::fs::copy(root.join(format!("{:04}.png", i % 10)), path).unwrap();
            continue;
        }
        let image = RgbImage::from_fn(side, side, |x, y| {
            Rgb([(x * 3 + i) as u8, (y * 5 + i) as u8, (x ^ y) as u8])
        });
        image.save(path).unwrap();
    }
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}")))
        .collect()
}

#[cfg(unix)]
#[test]
fn ctrl_c_keeps_finished_results_exits_130_and_resume_completes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    // Big enough that the run is still going when the signal lands.
    folder(&root, 300, 640);
    let out = dir.path().join("out.jsonl");
    let command = |resume: bool| {
        let mut command = vlm();
        command
            .args(["classify", "-l", "cat,dog", "-b", "2", "-j", "1", "-o"])
            .arg(&out)
            .arg("-m")
            .arg(model_dir())
            .arg(&root);
        if resume {
            command.arg("--resume");
        }
        command
    };

    let child = command(false).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(&out).map_or(0, |t| t.lines().count()) < 20
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{:?}: {}",
        output.status,
        stderr(&output)
    );
    assert!(stderr(&output).contains("--resume"), "{}", stderr(&output));
    let first = records(&out).len();
    assert!(
        (20..300).contains(&first),
        "interrupted after {first} results"
    );

    let output = command(true).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let all = records(&out);
    let paths: BTreeSet<&str> = all.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(all.len(), 300);
    assert_eq!(paths.len(), 300, "every image exactly once");
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_device_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    folder(&dir.path().join("imgs"), 3, 32);
    let output = vlm()
        .args([
            "classify",
            "-l",
            "cat,dog",
            "-o",
            "/dev/full",
            "-f",
            "jsonl",
            "-m",
        ])
        .arg(model_dir())
        .arg(dir.path().join("imgs"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("/dev/full") && err.contains("No space left"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// A real small filesystem that fills up mid-run, where this machine lets the test mount
/// one (root on Linux); the rollback itself is unit-tested in `output` everywhere.
#[cfg(target_os = "linux")]
#[test]
fn a_disk_that_fills_up_leaves_no_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
        .arg(&mount)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (needs root); the rollback is unit-tested in output.rs");
        return;
    }
    folder(&dir.path().join("imgs"), 200, 16);
    let out = mount.join("out.jsonl");
    let output = vlm()
        .args(["classify", "-l", "cat,dog,car,tree,boat", "-o"])
        .arg(&out)
        .arg("-m")
        .arg(model_dir())
        .arg(dir.path().join("imgs"))
        .output()
        .unwrap();
    let written = records(&out);
    let text = std::fs::read_to_string(&out).unwrap();
    let _ = Command::new("umount").arg(&mount).status();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("No space left"),
        "{}",
        stderr(&output)
    );
    assert!(
        !written.is_empty() && written.len() < 200,
        "{} lines",
        written.len()
    );
    assert!(text.ends_with('\n'), "the last line is torn");
}

#[test]
fn an_unwritable_output_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    folder(&dir.path().join("imgs"), 1, 32);
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "a file, not a folder").unwrap();
    let out = blocker.join("out.jsonl");
    let output = vlm()
        .args(["classify", "-l", "cat,dog", "-o"])
        .arg(&out)
        .arg("-m")
        .arg(model_dir())
        .arg(dir.path().join("imgs"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains(&out.display().to_string()), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
