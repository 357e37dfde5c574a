//! `vlm classify --files-from -` as a long-lived worker: one result line per input line,
//! written while stdin stays open (what the Spark and Ray examples rely on).

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::common::{self, vlm};

#[test]
fn stdin_lines_are_labelled_while_stdin_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let folders = common::draw_domain(dir.path(), 2, 3, 9);
    let images: Vec<_> = folders
        .iter()
        .flat_map(|f| (0..3).map(move |i| f.join(format!("{i:02}.png"))))
        .collect();
    let mut child = vlm()
        .arg("classify")
        .args([
            "--files-from",
            "-",
            "--format",
            "jsonl",
            "--labels",
            "red,green",
        ])
        .args(["--batch-size", "16", "--model"])
        .arg(common::tiny_model())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no result line for {what} while stdin is open"));
        serde_json::from_str::<serde_json::Value>(&line).unwrap()
    };

    // Two images, fewer than a batch: both results arrive with stdin still open.
    for image in &images[..2] {
        writeln!(stdin, "{}", image.display()).unwrap();
    }
    stdin.flush().unwrap();
    for image in &images[..2] {
        assert_eq!(next("the first two")["path"], image.display().to_string());
    }
    // A missing file is an error record in its place, then the stream goes on.
    let missing = dir.path().join("missing.png");
    writeln!(stdin, "{}", missing.display()).unwrap();
    writeln!(stdin, "{}", images[2].display()).unwrap();
    stdin.flush().unwrap();
    let record = next("the missing file");
    assert_eq!(record["path"], missing.display().to_string());
    assert!(record["error"].as_str().is_some(), "{record}");
    assert_eq!(next("the third")["path"], images[2].display().to_string());
    // The rest, then the end of input ends the run.
    for image in &images[3..] {
        writeln!(stdin, "{}", image.display()).unwrap();
    }
    drop(stdin);
    for image in &images[3..] {
        assert_eq!(next("the rest")["path"], image.display().to_string());
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert_eq!(status.code(), Some(1), "one input failed");
}
