//! Runs that mix cached, new and unreadable inputs: every command on the shared embedding
//! path finishes, with one result per input in input order, equal to an uncached run.
//!
//! Before the pipeline handed cache hits and failures on at once, about `3 * batch_size +
//! workers` of them ahead of a new image stalled every run for good; the earlier tests ran
//! all-cached or all-new folders and a handful of broken files, which never reached that
//! many. Every run here has a deadline that fails the test instead of hanging CI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use vlm::cache::EmbeddingCache;
use vlm::inputs::{Input, Source};
use vlm::job::Job;
use vlm::pipeline::PipelineOptions;
use vlm::session;
use vlm::source::ModelFiles;
use vlm::Checkpoint;

use crate::common::{self, stderr, vlm};

/// Runs `command` to the end, or kills it and fails past `limit`.
fn run_with_deadline(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vlm");
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut buf).ok();
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut buf).ok();
        buf
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for vlm") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vlm did not finish within {limit:?}: {command:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

const DEADLINE: Duration = Duration::from_secs(180);

/// `count` distinct 24x24 noise PNGs named `{prefix}NNN.png` (distinct bytes, so distinct
/// cache keys).
fn noise_pngs(dir: &Path, prefix: &str, count: usize, seed: u64) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = common::Rng::new(seed);
    (0..count)
        .map(|i| {
            let image = image::RgbImage::from_fn(24, 24, |_, _| {
                image::Rgb([
                    rng.below(256) as u8,
                    rng.below(256) as u8,
                    rng.below(256) as u8,
                ])
            });
            let path = dir.join(format!("{prefix}{i:03}.png"));
            image.save(&path).unwrap();
            path
        })
        .collect()
}

/// `count` files named like images that hold text.
fn broken_files(dir: &Path, prefix: &str, count: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..count)
        .map(|i| {
            let path = dir.join(format!("{prefix}{i:03}.png"));
            std::fs::write(&path, format!("not an image {i}\n")).unwrap();
            path
        })
        .collect()
}

fn file_input(path: PathBuf) -> Input {
    Input {
        display: path.display().to_string(),
        source: Source::File(path),
    }
}

fn load_tiny() -> (ModelFiles, Checkpoint) {
    let files = ModelFiles::from_dir(&common::tiny_model()).unwrap();
    let classifier = Checkpoint::load(&files, &Device::Cpu).unwrap();
    (files, classifier)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Cached,
    New,
    Broken,
}

/// Index sequences over `kinds` of the given counts, in one of four orders.
fn arrange(cached: usize, new: usize, broken: usize, order: usize) -> Vec<(Kind, usize)> {
    let runs: [Vec<(Kind, usize)>; 3] = [
        (0..cached).map(|i| (Kind::Cached, i)).collect(),
        (0..new).map(|i| (Kind::New, i)).collect(),
        (0..broken).map(|i| (Kind::Broken, i)).collect(),
    ];
    match order {
        0 => runs.concat(),
        1 => [runs[2].clone(), runs[1].clone(), runs[0].clone()].concat(),
        2 => [runs[1].clone(), runs[0].clone(), runs[2].clone()].concat(),
        _ => {
            let mut out = Vec::new();
            for i in 0..cached.max(new).max(broken) {
                for run in &runs {
                    if let Some(&k) = run.get(i) {
                        out.push(k);
                    }
                }
            }
            out
        }
    }
}

/// The library path every command shares, over (cached, new, unreadable) mixes in four
/// orders, batch sizes 1, 2, 16, 64 and 1, 2, 8 workers: one result per input, in order,
/// each equal to the uncached embedding within 1e-6.
#[test]
fn partly_cached_runs_finish_in_order_and_match_uncached() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, classifier) = load_tiny();
    let classifier = Arc::new(classifier);
    let pictures = noise_pngs(&tmp.path().join("img"), "p", 70, 11);
    let broken = broken_files(&tmp.path().join("bad"), "b", 70);

    // The uncached truth for every picture.
    let inputs: Vec<Input> = pictures.iter().map(|p| file_input(p.clone())).collect();
    let (truth, _) = Job::new(classifier.as_ref(), PipelineOptions::default())
        .collect(inputs)
        .unwrap();
    let truth: Vec<Vec<f32>> = truth.into_iter().map(|e| e.embedding.unwrap()).collect();
    let namespace = session::cache_namespace(&files, &classifier);

    // Cached pictures come first in `pictures`, new ones after them.
    let mixes = [
        (60, 5, 0),
        (5, 30, 0),
        (0, 10, 60),
        (20, 20, 20),
        (60, 1, 9),
    ];
    let mut case_no = 0;
    for &(cached, new, bad) in &mixes {
        for order in 0..4 {
            let plan = arrange(cached, new, bad, order);
            for batch_size in [1usize, 2, 16, 64] {
                for workers in [1usize, 2, 8] {
                    case_no += 1;
                    let case = format!(
                        "{cached} cached, {new} new, {bad} broken, order {order}, batch \
                         {batch_size}, workers {workers}"
                    );
                    let cache_dir = tmp.path().join(format!("cache{case_no}"));
                    let cache = EmbeddingCache::open(&cache_dir, namespace.clone()).unwrap();
                    for (i, picture) in pictures.iter().enumerate().take(cached) {
                        let key = EmbeddingCache::key(&std::fs::read(picture).unwrap());
                        cache.put(&key, &truth[i]).unwrap();
                    }
                    let inputs: Vec<Input> = plan
                        .iter()
                        .map(|&(kind, i)| match kind {
                            Kind::Cached => file_input(pictures[i].clone()),
                            Kind::New => file_input(pictures[cached + i].clone()),
                            Kind::Broken => file_input(broken[i].clone()),
                        })
                        .collect();
                    let options = PipelineOptions {
                        batch_size,
                        workers,
                        cancel: None,
                        max_wait: None,
                    };
                    let classifier = Arc::clone(&classifier);
                    let (tx, rx) = std::sync::mpsc::channel();
                    std::thread::spawn(move || {
                        let result = Job::new(classifier.as_ref(), options)
                            .with_cache(Some(&cache))
                            .collect(inputs)
                            .map(|(done, tally)| (done, tally, cache.stats()));
                        let _ = tx.send(result);
                    });
                    let (done, tally, stats) = rx
                        .recv_timeout(Duration::from_secs(60))
                        .unwrap_or_else(|_| panic!("{case}: the run stalled"))
                        .unwrap();
                    assert_eq!(done.len(), plan.len(), "{case}");
                    for (result, &(kind, i)) in done.iter().zip(&plan) {
                        let (path, want) = match kind {
                            Kind::Cached => (&pictures[i], Some(&truth[i])),
                            Kind::New => (&pictures[cached + i], Some(&truth[cached + i])),
                            Kind::Broken => (&broken[i], None),
                        };
                        assert_eq!(
                            result.input.display,
                            path.display().to_string(),
                            "{case}: out of order"
                        );
                        match (want, &result.embedding) {
                            (None, Err(_)) => {}
                            (Some(want), Ok(got)) => {
                                assert_eq!(result.reused, kind == Kind::Cached, "{case}");
                                // Relative to the embedding's largest value: the packed
                                // kernels block a batch of 1 and of 16 differently, which
                                // moves the last bit of a raw (unnormalised) projection.
                                let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
                                let diff = want
                                    .iter()
                                    .zip(got)
                                    .map(|(a, b)| (a - b).abs())
                                    .fold(0f32, f32::max)
                                    / scale;
                                assert!(diff <= 1e-6, "{case}: {path:?} differs by {diff}");
                            }
                            (want, got) => panic!(
                                "{case}: {path:?} expected {}, got {}",
                                if want.is_some() {
                                    "an embedding"
                                } else {
                                    "an error"
                                },
                                if got.is_ok() {
                                    "an embedding"
                                } else {
                                    "an error"
                                }
                            ),
                        }
                    }
                    assert_eq!(tally.stats.encoded, new, "{case}");
                    assert_eq!(tally.stats.reused, cached, "{case}");
                    assert_eq!(tally.stats.failed, bad, "{case}");
                    // The cache was filled with `cached` entries before the run.
                    assert_eq!(stats.writes as usize, cached + new, "{case}");
                    let _ = std::fs::remove_dir_all(&cache_dir);
                }
            }
        }
    }
}

/// A labelled folder (for eval and fit) whose images are partly cached, with runs of
/// broken files sorted ahead of the new ones in every class.
struct PartlyCached {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    cache_arg: String,
    /// Valid images in the folder.
    images: usize,
    /// Broken files in the folder.
    broken: usize,
}

fn partly_cached_domain() -> PartlyCached {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    // 3 classes x 20 pictures; the first 14 of each class are cached by an earlier run.
    let folders = common::draw_domain(&root, 3, 20, 5);
    let held = tmp.path().join("held");
    for folder in &folders {
        let name = folder.file_name().unwrap();
        std::fs::create_dir_all(held.join(name)).unwrap();
        for i in 14..20 {
            let file = format!("{i:02}.png");
            std::fs::rename(folder.join(&file), held.join(name).join(&file)).unwrap();
        }
    }
    let cache_arg = format!("--cache={}", tmp.path().join("cache").display());
    let first = run_with_deadline(
        vlm()
            .arg("embed")
            .args(["-q", &cache_arg, "--model"])
            .arg(common::tiny_model())
            .arg("-o")
            .arg(tmp.path().join("first.npy"))
            .arg(&root),
        DEADLINE,
    );
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    for folder in &folders {
        let name = folder.file_name().unwrap();
        for i in 14..20 {
            let file = format!("{i:02}.png");
            std::fs::rename(held.join(name).join(&file), folder.join(&file)).unwrap();
        }
        // 25 broken files per class that sort before the pictures ("!" < "0").
        broken_files(folder, "!bad", 25);
    }
    PartlyCached {
        _tmp: tmp,
        root,
        cache_arg,
        images: 60,
        broken: 75,
    }
}

/// The same paths in the same order, the same errors, and per image the same labels with
/// probabilities within 1e-6 (a batch's make-up may move the last bits of an embedding).
fn assert_same_records(a: &[serde_json::Value], b: &[serde_json::Value], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: record counts");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x["path"], y["path"], "{what}");
        let failed = |r: &serde_json::Value| r.get("error").is_some();
        assert_eq!(failed(x), failed(y), "{what}: {}", x["path"]);
        if let (Some(p), Some(q)) = (x["results"].as_array(), y["results"].as_array()) {
            assert_eq!(p.len(), q.len(), "{what}");
            for (r, s) in p.iter().zip(q) {
                assert_eq!(r["label"], s["label"], "{what}: {}", x["path"]);
                let prob = |v: &serde_json::Value| v["probability"].as_f64().unwrap_or(f64::NAN);
                let d = (prob(r) - prob(s)).abs();
                assert!(d <= 1e-6, "{what}: {} differs by {d}", x["path"]);
            }
        }
    }
}

fn records(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every command on the shared path finishes over a partly cached folder with long runs of
/// broken files, reports each broken file and reuses the cache.
#[test]
fn every_command_finishes_on_partly_cached_folders_with_broken_files() {
    let domain = partly_cached_domain();
    let model = common::tiny_model();
    let labels = "red,green,blue";
    // The first run finds the 42 pictures cached earlier and stores the 18 new ones; every
    // later command finds all 60.
    let reused = "image encoder ran on 18 images (42 embeddings reused";
    let all_reused = "image encoder ran on 0 images (60 embeddings reused";

    let base = |command: &str| {
        let mut c = vlm();
        c.arg(command)
            .args(["-v", "--batch-size", "4", &domain.cache_arg, "--model"])
            .arg(&model);
        c
    };

    // classify: one record per input, in the order an uncached run gives, same numbers.
    let cached = run_with_deadline(
        base("classify")
            .args(["--labels", labels, "--format", "jsonl"])
            .arg(&domain.root),
        DEADLINE,
    );
    assert_eq!(cached.status.code(), Some(1), "{}", stderr(&cached));
    assert!(stderr(&cached).contains(reused), "{}", stderr(&cached));
    let uncached = run_with_deadline(
        vlm()
            .arg("classify")
            .args(["-q", "--labels", labels, "--format", "jsonl", "--model"])
            .arg(&model)
            .arg(&domain.root),
        DEADLINE,
    );
    let (a, b) = (records(&cached), records(&uncached));
    assert_eq!(a.len(), domain.images + domain.broken);
    assert_same_records(&a, &b, "cached vs uncached classify");
    assert_eq!(
        a.iter().filter(|r| r.get("error").is_some()).count(),
        domain.broken
    );

    // embed: N rows = N valid images.
    let out = domain.root.parent().unwrap().join("e.jsonl");
    let embed = run_with_deadline(
        base("embed").arg("-o").arg(&out).arg(&domain.root),
        DEADLINE,
    );
    assert_eq!(embed.status.code(), Some(1), "{}", stderr(&embed));
    assert!(stderr(&embed).contains(all_reused), "{}", stderr(&embed));
    let rows = std::fs::read_to_string(&out).unwrap().lines().count();
    assert_eq!(rows, domain.images);

    // search: finishes and ranks the valid images.
    let search = run_with_deadline(
        base("search")
            .args(["--format", "jsonl", "--top", "100", "a red disc"])
            .arg(&domain.root),
        DEADLINE,
    );
    assert_eq!(search.status.code(), Some(1), "{}", stderr(&search));
    assert!(stderr(&search).contains(all_reused), "{}", stderr(&search));
    assert_eq!(records(&search).len(), domain.images);

    // eval: every valid image scored, the broken ones reported.
    let eval = run_with_deadline(
        base("eval").args(["--format", "json"]).arg(&domain.root),
        DEADLINE,
    );
    assert_eq!(eval.status.code(), Some(1), "{}", stderr(&eval));
    assert!(stderr(&eval).contains(all_reused), "{}", stderr(&eval));
    assert!(stderr(&eval).contains("!bad000.png"), "{}", stderr(&eval));
    let report: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    let report = report.get(0).unwrap_or(&report);
    assert_eq!(report["images"], 60, "{report}");
    assert_eq!(
        report["failed"].as_array().map(Vec::len),
        Some(domain.broken)
    );

    // fit, and --examples with the same folder.
    let probe = domain.root.parent().unwrap().join("p.safetensors");
    let fit = run_with_deadline(
        base("fit")
            .args(["--epochs", "20", "--out"])
            .arg(&probe)
            .arg(&domain.root),
        DEADLINE,
    );
    assert_eq!(fit.status.code(), Some(1), "{}", stderr(&fit));
    assert!(stderr(&fit).contains(all_reused), "{}", stderr(&fit));
    assert!(probe.exists(), "{}", stderr(&fit));
    let examples = run_with_deadline(
        base("classify")
            .args(["--labels", labels, "--format", "jsonl", "--examples"])
            .arg(&domain.root)
            .arg(domain.root.join("red")),
        DEADLINE,
    );
    assert_eq!(examples.status.code(), Some(1), "{}", stderr(&examples));
    assert_eq!(records(&examples).len(), 20 + 25);
}

/// Two and then four runs started together on one cache directory all finish with the
/// same results, and a half-written or corrupt entry is re-encoded, never read.
#[test]
fn concurrent_runs_on_one_cache_agree_and_torn_entries_are_misses() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("img");
    noise_pngs(&dir, "n", 120, 21);
    let model = common::tiny_model();
    let classify = |cache: &Path, verbosity: &str| {
        let mut c = vlm();
        c.arg("classify")
            .args([
                verbosity,
                "--batch-size",
                "4",
                "--labels",
                "a,b,c",
                "--format",
                "jsonl",
            ])
            .arg(format!("--cache={}", cache.display()))
            .arg("--model")
            .arg(&model)
            .arg(&dir);
        c
    };
    let truth = run_with_deadline(
        vlm()
            .arg("classify")
            .args(["-q", "--labels", "a,b,c", "--format", "jsonl", "--model"])
            .arg(&model)
            .arg(&dir),
        DEADLINE,
    );
    assert_eq!(truth.status.code(), Some(0), "{}", stderr(&truth));

    for runs in [2, 4] {
        let cache = tmp.path().join(format!("cache{runs}"));
        let children: Vec<_> = (0..runs)
            .map(|_| {
                let mut command = classify(&cache, "-q");
                std::thread::spawn(move || run_with_deadline(&mut command, DEADLINE))
            })
            .collect();
        for child in children {
            let output = child.join().expect("a run panicked");
            assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
            assert_same_records(
                &records(&output),
                &records(&truth),
                &format!("{runs} concurrent runs"),
            );
        }
    }

    // Tear every other entry of a filled cache: cut it in half, or flip a payload byte.
    let cache = tmp.path().join("cache2");
    let mut entries: Vec<PathBuf> = walkdir::WalkDir::new(&cache)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x != "json"))
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    entries.sort();
    assert_eq!(entries.len(), 120, "{entries:?}");
    for (i, entry) in entries.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let mut bytes = std::fs::read(entry).unwrap();
        if i % 4 == 0 {
            bytes.truncate(bytes.len() / 2);
        } else {
            let last = bytes.len() - 1;
            bytes[last] ^= 0x40;
        }
        std::fs::write(entry, bytes).unwrap();
    }
    let repaired = run_with_deadline(&mut classify(&cache, "-v"), DEADLINE);
    assert_eq!(repaired.status.code(), Some(0), "{}", stderr(&repaired));
    assert!(
        stderr(&repaired).contains("image encoder ran on 60 images (60 embeddings reused"),
        "{}",
        stderr(&repaired)
    );
    assert_same_records(&records(&repaired), &records(&truth), "torn entries");
}
