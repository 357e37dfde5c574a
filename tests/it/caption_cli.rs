//! `vlm caption` and `vlm ask` through the binary: the ids transformers generates for the
//! fixture checkpoints come out of the command too (greedy, beams, a prompt, questions),
//! in every output format; folders with broken files, kill and resume, the encoding
//! cache, `--questions-file` encoding each image once, streaming and shards, and the
//! refusals of checkpoints made for another command.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use crate::batch::{jsonl, kill_mid_run, many_pictures, messy_tree, picture, save};
use crate::common::{fixtures, stderr, vlm};
use serde_json::Value;

fn blip(name: &str) -> PathBuf {
    fixtures().join("models").join(format!("blip-{name}"))
}

fn reference(name: &str) -> Value {
    let path = fixtures().join(format!("reference/blip-{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The reference's image paths (absolute), by index.
fn images(reference: &Value) -> Vec<String> {
    reference["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| fixtures().join(p.as_str().unwrap()).display().to_string())
        .collect()
}

fn case<'a>(reference: &'a Value, name: &str) -> &'a Value {
    reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

fn ok(output: Output) -> Output {
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        stderr(&output)
    );
    output
}

fn records(output: &Output) -> Vec<Value> {
    jsonl(&String::from_utf8_lossy(&output.stdout))
}

/// Asserts that the command's records hold the reference case's ids, text and
/// log-probability for each of its images (and `question`).
fn assert_reference(records: &[Value], case: &Value, images: &[String], key: &str) {
    for result in case["results"].as_array().unwrap() {
        let path = &images[result["image"].as_u64().unwrap() as usize];
        let record = records
            .iter()
            .find(|r| {
                r["path"] == path.as_str()
                    && case.get("question").is_none_or(|q| r["question"] == *q)
            })
            .unwrap_or_else(|| panic!("{}: no record for {path}", case["name"]));
        assert_eq!(
            record["tokens"], result["tokens"],
            "{} {path}",
            case["name"]
        );
        assert_eq!(record[key], result["text"], "{} {path}", case["name"]);
        let (got, want) = (
            record["log_prob"].as_f64().unwrap(),
            result["log_prob"].as_f64().unwrap(),
        );
        assert!(
            (got - want).abs() < 1e-3,
            "{} {path}: {got} vs {want}",
            case["name"]
        );
        assert_eq!(
            record["model"],
            blip(if key == "caption" { "caption" } else { "vqa" })
                .display()
                .to_string()
        );
    }
}

fn caption(args: &[&str], inputs: &[String]) -> Output {
    vlm()
        .arg("caption")
        .args(args)
        .arg("--model")
        .arg(blip("caption"))
        .args(inputs)
        .output()
        .unwrap()
}

#[test]
fn captions_are_transformers_ids_greedy_with_beams_and_with_a_prompt() {
    let reference = reference("caption");
    let images = images(&reference);
    for (case_name, args) in [
        ("greedy", vec!["-f", "jsonl"]),
        ("beam3", vec!["-f", "jsonl", "--beams", "3", "-b", "5"]),
        (
            "greedy_prompt",
            vec!["-f", "jsonl", "--prompt", "a photograph of"],
        ),
        (
            "greedy_max_new_4",
            vec!["-f", "jsonl", "--max-new-tokens", "4"],
        ),
    ] {
        let output = ok(caption(&args, &images));
        let records = records(&output);
        assert_eq!(records.len(), images.len(), "{case_name}");
        assert_reference(&records, case(&reference, case_name), &images, "caption");
    }
}

#[test]
fn every_output_format_holds_the_same_captions() {
    let reference = reference("caption");
    let images: Vec<String> = images(&reference).into_iter().take(6).collect();
    let expected: BTreeMap<String, String> = case(&reference, "greedy")["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| (r["image"].as_u64().unwrap() as usize) < images.len())
        .map(|r| {
            (
                images[r["image"].as_u64().unwrap() as usize].clone(),
                r["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();

    let json_out = dir.path().join("out.json");
    ok(caption(&["--output", json_out.to_str().unwrap()], &images));
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&json_out).unwrap()).unwrap();
    let from_json: BTreeMap<String, String> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["tokens"].is_array() && r["log_prob"].is_f64() && r["model"].is_string());
            (
                r["path"].as_str().unwrap().to_string(),
                r["caption"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(from_json, expected);

    for (format, separator) in [("csv", ','), ("tsv", '\t')] {
        let output = ok(caption(&["-f", format], &images));
        let text = String::from_utf8(output.stdout).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(separator).collect();
        assert_eq!(
            header,
            ["path", "caption", "log_prob", "tokens", "model", "error"]
        );
        // No caption of this tiny model holds a separator or a quote.
        let rows: BTreeMap<String, String> = lines
            .map(|l| {
                let fields: Vec<&str> = l.split(separator).collect();
                assert_eq!(fields.len(), 6, "{l}");
                (fields[0].to_string(), fields[1].to_string())
            })
            .collect();
        assert_eq!(rows, expected, "{format}");
    }

    let output = ok(caption(&[], &images));
    let table = String::from_utf8(output.stdout).unwrap();
    for (path, text) in &expected {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(&format!("{path}  {text}  (log p "))),
            "{path}: {table}"
        );
    }
}

#[test]
fn a_folder_with_broken_files_is_captioned_once_per_image_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    let (good, broken) = messy_tree(&root);
    let output = vlm()
        .args(["caption", "-f", "jsonl", "--model"])
        .arg(blip("caption"))
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let records = records(&output);
    let captioned: Vec<&str> = records
        .iter()
        .filter(|r| r.get("caption").is_some())
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    let failed: BTreeSet<String> = records
        .iter()
        .filter(|r| r.get("error").is_some())
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        captioned.len(),
        good.len(),
        "each image once: {captioned:?}"
    );
    assert_eq!(
        captioned
            .iter()
            .map(|p| p.to_string())
            .collect::<BTreeSet<_>>(),
        good
    );
    assert_eq!(failed, broken);
    let summary = stderr(&output);
    assert!(
        summary.contains(&format!(
            "captioned {}, failed {}",
            good.len(),
            broken.len()
        )),
        "{summary}"
    );
}

#[test]
fn a_killed_caption_run_resumes_to_exactly_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("many");
    many_pictures(&root, 400, 800, 600);
    let run = |out: &Path, resume: bool| {
        let mut command = vlm();
        command
            .args(["caption", "-q", "-b", "2", "-j", "1", "--output"])
            .arg(out)
            .arg("--model")
            .arg(blip("caption"))
            .arg(&root);
        if resume {
            command.arg("--resume");
        }
        command
    };
    let whole = dir.path().join("whole.jsonl");
    assert!(run(&whole, false).status().unwrap().success());
    let expected = jsonl(&std::fs::read_to_string(&whole).unwrap());
    assert_eq!(expected.len(), 400);

    let partial = dir.path().join("partial.jsonl");
    kill_mid_run(&mut run(&partial, false), &partial, 30, 400);

    assert!(run(&partial, true).status().unwrap().success());
    let resumed = jsonl(&std::fs::read_to_string(&partial).unwrap());
    let by_path = |records: &[Value]| -> BTreeMap<String, Value> {
        records
            .iter()
            .map(|r| (r["path"].as_str().unwrap().to_string(), r["tokens"].clone()))
            .collect()
    };
    assert_eq!(resumed.len(), 400, "every image exactly once");
    assert_eq!(by_path(&resumed), by_path(&expected));
}

#[test]
fn questions_are_answered_as_transformers_answers_and_each_image_is_encoded_once() {
    let reference = reference("vqa");
    let images: Vec<String> = images(&reference).into_iter().take(4).collect();
    let (q0, q1) = (case(&reference, "greedy_q0"), case(&reference, "greedy_q1"));
    let dir = tempfile::tempdir().unwrap();
    let questions = dir.path().join("questions.txt");
    std::fs::write(
        &questions,
        format!(
            "# asked of every image\n{}\n\n{}\n",
            q0["question"].as_str().unwrap(),
            q1["question"].as_str().unwrap()
        ),
    )
    .unwrap();
    let output = ok(vlm()
        .args(["ask", "-f", "jsonl", "--verbose", "--model"])
        .arg(blip("vqa"))
        .arg("--questions-file")
        .arg(&questions)
        .args(&images)
        .output()
        .unwrap());
    let records = records(&output);
    assert_eq!(records.len(), 2 * images.len());
    let only_these = |case: &Value| {
        let mut case = case.clone();
        let results = case["results"].as_array_mut().unwrap();
        results.retain(|r| (r["image"].as_u64().unwrap() as usize) < images.len());
        assert_eq!(results.len(), images.len());
        case
    };
    assert_reference(&records, &only_these(q0), &images, "answer");
    assert_reference(&records, &only_these(q1), &images, "answer");
    let err = stderr(&output);
    assert!(
        err.contains(&format!("image encoder ran on {} images", images.len())),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "answered 8 questions about {} images",
            images.len()
        )),
        "{err}"
    );

    // Many images and one question, the question last.
    let mut command = vlm();
    command
        .args(["ask", "-f", "jsonl", "--model"])
        .arg(blip("vqa"))
        .args(&images)
        .arg(q0["question"].as_str().unwrap());
    let records = self::records(&ok(command.output().unwrap()));
    assert_eq!(records.len(), images.len());
    assert_reference(&records, &only_these(q0), &images, "answer");
}

#[test]
fn the_cache_makes_a_second_question_about_a_folder_encode_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    for i in 0..5 {
        save(&picture(i, 90, 70), &root.join(format!("{i}.png")));
    }
    let cache = dir.path().join("cache");
    let ask = |question: &str, cached: bool| {
        let mut command = vlm();
        command
            .args(["ask", "-f", "jsonl", "--verbose", "--model"])
            .arg(blip("vqa"))
            .arg(&root)
            .arg(question);
        if cached {
            command.arg(format!("--cache={}", cache.display()));
        }
        ok(command.output().unwrap())
    };
    let first = ask("what is in the picture?", true);
    assert!(
        stderr(&first).contains("image encoder ran on 5 images (0 embeddings reused"),
        "{}",
        stderr(&first)
    );
    let second = ask("How many cats are there?", true);
    assert!(
        stderr(&second).contains("image encoder ran on 0 images (5 embeddings reused"),
        "{}",
        stderr(&second)
    );
    let uncached = ask("How many cats are there?", false);
    assert_eq!(records(&second), records(&uncached));

    // Captions keep their own encodings: another checkpoint, another namespace.
    let caption = |cached: bool| {
        let mut command = vlm();
        command
            .args(["caption", "-f", "jsonl", "--verbose", "--model"])
            .arg(blip("caption"))
            .arg(&root);
        if cached {
            command.arg(format!("--cache={}", cache.display()));
        }
        ok(command.output().unwrap())
    };
    assert!(stderr(&caption(true)).contains("image encoder ran on 5 images"));
    let again = caption(true);
    assert!(
        stderr(&again).contains("image encoder ran on 0 images (5 embeddings reused"),
        "{}",
        stderr(&again)
    );
    assert_eq!(records(&again), records(&caption(false)));
}

/// `--dtype int8` captions every image, keeps its encodings apart from f32's in the cache
/// (an int8 run after an f32 one encodes again), and reads its own back.
#[test]
fn int8_captions_keep_their_own_encodings_in_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    for i in 0..4 {
        save(&picture(i, 90, 70), &root.join(format!("{i}.png")));
    }
    let cache = dir.path().join("cache");
    let run = |dtype: &str, cached: bool| {
        let mut command = vlm();
        command
            .args([
                "caption",
                "-f",
                "jsonl",
                "--verbose",
                "--dtype",
                dtype,
                "--model",
            ])
            .arg(blip("caption"))
            .arg(&root);
        if cached {
            command.arg(format!("--cache={}", cache.display()));
        }
        ok(command.output().unwrap())
    };
    let f32_run = run("f32", true);
    assert!(stderr(&f32_run).contains("image encoder ran on 4 images (0 embeddings reused"));
    let int8 = run("int8", true);
    assert!(
        stderr(&int8).contains("image encoder ran on 4 images (0 embeddings reused"),
        "{}",
        stderr(&int8)
    );
    let again = run("int8", true);
    assert!(
        stderr(&again).contains("image encoder ran on 0 images (4 embeddings reused"),
        "{}",
        stderr(&again)
    );
    let int8_records = records(&int8);
    assert_eq!(int8_records.len(), 4);
    assert!(int8_records.iter().all(|r| r["caption"].is_string()));
    assert_eq!(records(&again), int8_records);
    assert_eq!(records(&run("int8", false)), int8_records);
}

#[test]
fn inputs_stream_from_stdin_and_split_into_shards() {
    let reference = reference("caption");
    let images: Vec<String> = images(&reference).into_iter().take(8).collect();
    let mut child = vlm()
        .args(["caption", "-f", "jsonl", "--files-from", "-", "--model"])
        .arg(blip("caption"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for path in &images {
        writeln!(stdin, "{path}").unwrap();
    }
    drop(stdin);
    let streamed = records(&ok(child.wait_with_output().unwrap()));
    let paths: Vec<&str> = streamed
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, images.iter().map(String::as_str).collect::<Vec<_>>());

    let mut union = BTreeSet::new();
    for shard in ["1/2", "2/2"] {
        let records = records(&ok(caption(&["-f", "jsonl", "--shard", shard], &images)));
        for r in records {
            assert!(
                union.insert(r["path"].as_str().unwrap().to_string()),
                "twice: {r}"
            );
        }
    }
    assert_eq!(union, images.iter().cloned().collect());
}

#[test]
fn checkpoints_of_another_task_are_refused_with_the_command_that_fits() {
    let image = fixtures().join("images/chelsea.png");
    let empty_hub = tempfile::tempdir().unwrap();
    let refused = |command: &str, model: &Path, fits: &str| {
        let mut run = vlm();
        run.arg(command).arg(&image);
        if command == "ask" {
            run.arg("what is this?");
        }
        let output = run
            .arg("--model")
            .arg(model)
            .env("HF_HUB_CACHE", empty_hub.path())
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{command} {}",
            model.display()
        );
        let err = stderr(&output);
        assert!(err.contains(fits), "{command} {}: {err}", model.display());
        assert!(output.stdout.is_empty());
    };
    refused(
        "caption",
        &fixtures().join("models/tiny-quickgelu"),
        "vlm classify",
    );
    refused("caption", &blip("vqa"), "vlm ask");
    refused("ask", &blip("caption"), "vlm caption");
    refused(
        "ask",
        &fixtures().join("models/tiny-quickgelu"),
        "vlm classify",
    );
    // Aliases are refused before anything is looked up (an empty cache, no network).
    refused("caption", Path::new("blip-vqa"), "vlm ask");
    refused("ask", Path::new("blip-base"), "vlm caption");
    refused("caption", Path::new("clip-b32"), "vlm classify");
}
