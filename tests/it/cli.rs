//! The `vlm` binary end to end, on the committed tiny checkpoint.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::{self, fixtures, stderr, vlm};
use serde_json::Value;

const MODEL: &str = "tiny-quickgelu";

fn model_dir() -> PathBuf {
    fixtures().join("models").join(MODEL)
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join(format!("reference/{MODEL}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The reference's lossless images: (path, per-label probabilities).
fn lossless_images(reference: &Value) -> Vec<(PathBuf, Vec<f64>)> {
    reference["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|image| image["kind"] == "lossless" && image["file"] == image["compare_to"])
        .map(|image| {
            let probs = image["probs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_f64().unwrap())
                .collect();
            (fixtures().join(image["file"].as_str().unwrap()), probs)
        })
        .collect()
}

fn labels(reference: &Value) -> Vec<String> {
    reference["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn jsonl_ranks_labels_like_transformers() {
    let reference = reference();
    let labels = labels(&reference);
    let images = lossless_images(&reference);
    assert!(images.len() >= 2);
    let output = run(vlm()
        .args([
            "classify",
            "--format",
            "jsonl",
            "--labels",
            &labels.join(","),
        ])
        .arg("--model")
        .arg(model_dir())
        .args(images.iter().map(|(path, _)| path)));
    assert!(output.status.success(), "{}", stderr(&output));
    let lines: Vec<Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), images.len());
    for (line, (path, probs)) in lines.iter().zip(&images) {
        assert_eq!(line["path"], path.display().to_string());
        let results = line["results"].as_array().unwrap();
        assert_eq!(results.len(), labels.len());
        let mut previous = f64::INFINITY;
        for result in results {
            let label = result["label"].as_str().unwrap();
            let index = labels.iter().position(|l| l == label).unwrap();
            let probability = result["probability"].as_f64().unwrap();
            assert!(probability <= previous, "results are not sorted");
            previous = probability;
            assert!(
                (probability - probs[index]).abs() <= 3e-3,
                "{label}: {probability} vs {}",
                probs[index]
            );
            assert_eq!(result["prompt"], format!("a photo of a {label}."));
            assert!(result["similarity"].as_f64().unwrap().abs() <= 1.0);
        }
    }
}

#[test]
fn a_bad_file_is_reported_and_the_run_goes_on() {
    let reference = reference();
    let (good, _) = lossless_images(&reference).remove(0);
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("notes.jpg");
    std::fs::write(&broken, "this is text, not a JPEG").unwrap();
    let missing = dir.path().join("missing.png");

    let output = run(vlm()
        .args(["classify", "-f", "jsonl", "-l", "cat,dog", "-m"])
        .arg(model_dir())
        .arg(&broken)
        .arg(&good)
        .arg(&missing));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let lines: Vec<Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let find = |path: &Path| {
        lines
            .iter()
            .find(|l| l["path"] == path.display().to_string())
            .unwrap_or_else(|| panic!("no record for {}", path.display()))
    };
    assert!(find(&broken)["error"].as_str().unwrap().len() > 10);
    assert_eq!(find(&good)["results"].as_array().unwrap().len(), 2);
    assert!(find(&missing)["error"]
        .as_str()
        .unwrap()
        .contains("no such file"));
    let err = stderr(&output);
    assert!(
        err.contains("notes.jpg") && err.contains("missing.png"),
        "{err}"
    );
}

#[test]
fn csv_json_table_and_top_k() {
    let reference = reference();
    let images = lossless_images(&reference);
    let (first, second) = (&images[0].0, &images[1].0);
    let base = |format: &str| {
        let mut command = vlm();
        command
            .args([
                "classify",
                "--labels",
                "cat,dog,car",
                "--top-k",
                "2",
                "--format",
                format,
                "--model",
            ])
            .arg(model_dir())
            .arg(first)
            .arg(second);
        command
    };

    let csv = run(&mut base("csv"));
    assert!(csv.status.success(), "{}", stderr(&csv));
    let text = stdout(&csv);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(
        rows[0],
        "path,rank,label,prompt,probability,similarity,selected,uncertain,error,scoring"
    );
    assert_eq!(rows.len(), 1 + 2 * 2);
    assert!(rows[2].contains(",2,"));

    let json = run(&mut base("json"));
    let parsed: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed.as_array().unwrap().len(), 2);
    assert_eq!(parsed[1]["results"].as_array().unwrap().len(), 2);

    let table = run(&mut base("table"));
    let text = stdout(&table);
    assert!(text.contains(&first.display().to_string()));
    assert_eq!(
        text.lines().filter(|l| l.contains('%')).count(),
        4,
        "{text}"
    );
}

#[test]
fn a_bare_template_uses_the_label_as_prompt() {
    let (image, _) = lossless_images(&reference()).remove(0);
    let output = run(vlm()
        .args([
            "classify",
            "-f",
            "jsonl",
            "-l",
            "tabby cat",
            "--template",
            "{}",
            "-m",
        ])
        .arg(model_dir())
        .arg(image));
    assert!(output.status.success(), "{}", stderr(&output));
    let line: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(line["results"][0]["prompt"], "tabby cat");
    assert!((line["results"][0]["probability"].as_f64().unwrap() - 1.0).abs() < 1e-6);
}

#[test]
fn usage_errors_exit_2_and_say_what_to_do() {
    let output = run(vlm().args(["classify", "x.jpg"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--labels"));

    let output = run(vlm()
        .args(["classify", "x.jpg", "--labels", "cat,,dog", "-m"])
        .arg(model_dir()));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("label 2 is empty"),
        "{}",
        stderr(&output)
    );

    let output = run(vlm()
        .args([
            "classify",
            "x.jpg",
            "--labels",
            "cat",
            "--template",
            "a photo",
            "-m",
        ])
        .arg(model_dir()));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("placeholder"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn offline_miss_names_the_missing_files() {
    let cache = tempfile::tempdir().unwrap();
    let output = run(vlm()
        .args([
            "classify",
            "x.jpg",
            "--labels",
            "cat",
            "--model",
            "someone/not-cached",
        ])
        .env("HF_HUB_CACHE", cache.path()));
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("config.json") && err.contains("someone/not-cached"),
        "{err}"
    );
}

#[test]
fn truncated_jpegs_are_errors_unless_allowed() {
    // Baseline and progressive, 4:2:0 and 4:4:4, each cut at several points in its scans.
    let dir = tempfile::tempdir().unwrap();
    let mut cut_files = Vec::new();
    for name in [
        "chelsea_420_base",
        "chelsea_420_prog",
        "chelsea_444_base",
        "chelsea_444_prog",
    ] {
        let bytes = std::fs::read(fixtures().join(format!("jpeg_parity/{name}.jpg"))).unwrap();
        for (i, cut) in [
            bytes.len() / 4,
            bytes.len() / 2,
            bytes.len() - 100,
            bytes.len() - 2,
        ]
        .into_iter()
        .enumerate()
        {
            let path = dir.path().join(format!("{name}_cut{i}.jpg"));
            std::fs::write(&path, &bytes[..cut]).unwrap();
            cut_files.push(path);
        }
    }
    for extra in [&[][..], &["--jpeg-downscale"][..]] {
        let output = run(vlm()
            .args(["classify", "-f", "jsonl", "-l", "cat,dog", "-m"])
            .arg(model_dir())
            .args(extra)
            .args(&cut_files));
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        let records: Vec<Value> = stdout(&output)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), cut_files.len());
        for record in &records {
            let error = record["error"].as_str().unwrap_or_default();
            assert!(
                error.contains("is truncated")
                    && error.contains("scan")
                    && error.contains("--allow-truncated"),
                "{record}"
            );
        }
        assert!(
            stderr(&output).contains("is truncated"),
            "{}",
            stderr(&output)
        );

        let output = run(vlm()
            .args([
                "classify",
                "-f",
                "jsonl",
                "-l",
                "cat,dog",
                "--allow-truncated",
                "-m",
            ])
            .arg(model_dir())
            .args(extra)
            .args(&cut_files));
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let labelled = stdout(&output)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["results"].as_array().is_some_and(|r| r.len() == 2))
            .count();
        assert_eq!(labelled, cut_files.len());
    }
}

#[test]
fn junk_between_segments_does_not_hide_a_cut() {
    // Three bytes before the start of scan (libjpeg skips them with a warning), then the
    // file cut at 60%: refused as truncated, with and without --jpeg-downscale.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixtures().join("jpeg_parity/chelsea_420_base.jpg")).unwrap();
    let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let mut junk = bytes[..sos].to_vec();
    junk.extend_from_slice(&[0x12, 0x34, 0x56]);
    junk.extend_from_slice(&bytes[sos..]);
    let whole = dir.path().join("junk.jpg");
    let cut = dir.path().join("junk_cut.jpg");
    std::fs::write(&whole, &junk).unwrap();
    std::fs::write(&cut, &junk[..junk.len() * 6 / 10]).unwrap();
    for extra in [&[][..], &["--jpeg-downscale"][..]] {
        let output = run(vlm()
            .args(["classify", "-f", "jsonl", "-l", "cat,dog", "-m"])
            .arg(model_dir())
            .args(extra)
            .arg(&whole)
            .arg(&cut));
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        let records: Vec<Value> = stdout(&output)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), 2);
        assert!(records[0]["results"].is_array(), "{}", records[0]);
        let error = records[1]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("junk_cut.jpg is truncated") && error.contains("scan 1"),
            "{}",
            records[1]
        );
    }
}

#[test]
fn a_mistyped_alias_gets_a_hint() {
    let cache = tempfile::tempdir().unwrap();
    let output = run(vlm()
        .args([
            "classify", "x.jpg", "--labels", "cat", "--model", "clip-b23",
        ])
        .env("HF_HUB_CACHE", cache.path()));
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("did you mean `clip-b32`?"), "{err}");
}

#[test]
fn a_caption_checkpoint_given_to_classify_is_refused_with_the_command_that_fits() {
    // An alias: refused before anything is downloaded (an empty cache, no network).
    let cache = tempfile::tempdir().unwrap();
    for (spec, command) in [("blip-base", "vlm caption"), ("blip-vqa", "vlm ask")] {
        let output = run(vlm()
            .args(["classify", "x.jpg", "--labels", "cat", "--model", spec])
            .env("HF_HUB_CACHE", cache.path())
            .env("HF_HUB_OFFLINE", "1"));
        assert_eq!(output.status.code(), Some(2));
        let err = stderr(&output);
        assert!(err.contains(command), "{spec}: {err}");
    }
    // A local directory, by its config.json.
    let blip = fixtures().join("models/blip-caption");
    let output = run(vlm()
        .args(["classify", "x.jpg", "--labels", "cat", "--model"])
        .arg(&blip));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("vlm caption"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn models_lists_the_registry() {
    let output = run(vlm().arg("models"));
    assert!(output.status.success());
    let text = stdout(&output);
    assert!(
        text.contains("clip-b32") && text.contains("openai/clip-vit-base-patch32"),
        "{text}"
    );
    assert!(
        text.contains("laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
        "{text}"
    );
    // Every family, with its scoring.
    let row = |alias: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{alias} ")))
            .unwrap_or_else(|| panic!("no {alias} in {text}"))
            .to_string()
    };
    assert!(row("siglip-so400m").contains("siglip") && row("siglip-so400m").contains("sigmoid"));
    assert!(
        row("metaclip2-l14").contains("metaclip_2") && row("metaclip2-l14").contains("softmax")
    );
    assert!(row("dfn5b-h14-378").contains("open_clip") && row("dfn5b-h14-378").contains("378"));
    assert!(row("clip-b32").contains("605 MB"), "{}", row("clip-b32"));
    // Caption and answer checkpoints say their task (and have no scoring).
    let header = text.lines().next().unwrap();
    assert!(header.contains("TASK"), "{header}");
    assert!(
        row("clip-b32").contains(" classify "),
        "{}",
        row("clip-b32")
    );
    let blip = row("blip-base");
    assert!(
        blip.contains("Salesforce/blip-image-captioning-base")
            && blip.contains(" caption ")
            && blip.contains("BSD-3-Clause"),
        "{blip}"
    );
    assert!(row("blip-vqa").contains(" answer "), "{}", row("blip-vqa"));
    assert!(row("blip-vqa-capfilt-large").contains(" answer "));
}

#[test]
fn a_closed_pipe_ends_the_run_quietly() {
    let (image, _) = lossless_images(&reference()).remove(0);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..200 {
        std::fs::copy(&image, dir.path().join(format!("{i:03}.png"))).unwrap();
    }
    let mut child = vlm()
        .args(["classify", "-f", "jsonl", "-b", "4", "-l", "cat,dog", "-m"])
        .arg(model_dir())
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.contains("results"));
    drop(reader);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stderr(&output), "");
}

#[test]
fn multi_label_and_min_probability_decisions() {
    let (image, _) = lossless_images(&reference()).remove(0);
    let run = |extra: &[&str]| -> Value {
        let output = run(vlm()
            .args(["classify", "-f", "jsonl", "-l", "cat,dog,car", "-m"])
            .arg(model_dir())
            .args(extra)
            .arg(&image));
        assert!(output.status.success(), "{}", stderr(&output));
        serde_json::from_str(stdout(&output).trim()).unwrap()
    };
    let plain = run(&[]);
    let results = plain["results"].as_array().unwrap();
    let middle = results[1]["similarity"].as_f64().unwrap();

    // A threshold just below the second similarity selects exactly the labels at or above it.
    let threshold = format!("{}", middle - 1e-4);
    let multi = run(&["--multi-label", "--threshold", &threshold]);
    let want: Vec<&Value> = results
        .iter()
        .filter(|r| r["similarity"].as_f64().unwrap() >= middle - 1e-4)
        .map(|r| &r["label"])
        .collect();
    let got: Vec<&Value> = multi["labels"].as_array().unwrap().iter().collect();
    assert_eq!(got, want);
    for r in multi["results"].as_array().unwrap() {
        assert_eq!(
            r["selected"],
            r["similarity"].as_f64().unwrap() >= middle - 1e-4
        );
    }

    let top = results[0]["probability"].as_f64().unwrap();
    assert_eq!(
        run(&["--min-probability", &format!("{}", top + 1e-3)])["uncertain"],
        true
    );
    assert_eq!(
        run(&["--min-probability", &format!("{}", top - 1e-3)])["uncertain"],
        false
    );
    assert!(plain.get("uncertain").is_none() && plain.get("labels").is_none());
}

#[test]
fn finding_no_image_is_exit_1_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), b"not an image").unwrap();
    let shown = empty.display().to_string();
    for command in [
        &["classify", "-l", "cat,dog"][..],
        &["embed", "-o", "e.jsonl"][..],
    ] {
        let output = run(vlm()
            .current_dir(dir.path())
            .args(command)
            .arg("-m")
            .arg(model_dir())
            .arg(&empty));
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        let err = stderr(&output);
        assert!(
            err.contains(&format!(
                "no images found under {shown} (extensions looked for: jpg, jpeg, jpe, jfif, png"
            )) && err.contains("--allow-empty"),
            "{err}"
        );
        let output = run(vlm()
            .current_dir(dir.path())
            .args(command)
            .arg("-m")
            .arg(model_dir())
            .arg("--allow-empty")
            .arg(&empty));
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    }
    // The extensions named are those asked for.
    let output = run(vlm()
        .args(["classify", "-l", "cat,dog", "--ext", "avif,.HEIC", "-m"])
        .arg(model_dir())
        .arg(fixtures().join("images")));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("(extensions looked for: avif, heic)"),
        "{}",
        stderr(&output)
    );
}

#[cfg(target_os = "linux")]
#[test]
fn devices_are_refused_before_reading_and_fifos_are_read() {
    // /dev/zero would be read up to the 512 MiB cap for one image before being refused.
    let output = run(vlm()
        .args([
            "classify",
            "-l",
            "cat,dog",
            "-f",
            "jsonl",
            "--verbose",
            "-m",
        ])
        .arg(model_dir())
        .arg("/dev/zero"));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let record: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    let error = record["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("/dev/zero: a character device, not a regular file"),
        "{record}"
    );
    let peak = common::peak_mib(&output);
    assert!(peak < 150.0, "peak memory {peak} MiB refusing /dev/zero");
    // A FIFO, as `<(cat photo.png)` gives, is read.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("photo");
    let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path; it changes no memory.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    let png = std::fs::read(fixtures().join("images/chelsea.png")).unwrap();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(fifo, png).unwrap())
    };
    let output = run(vlm()
        .args(["classify", "-l", "cat,dog", "-f", "jsonl", "-m"])
        .arg(model_dir())
        .arg(&fifo));
    writer.join().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn fit_and_examples_take_the_files_the_filters_take() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train");
    let folders = crate::common::draw_domain(&train, 2, 4, 7);
    // Left out by --exclude, --ext and (by default) as hidden; each a real image.
    let red = &folders[0];
    std::fs::create_dir(red.join("skip")).unwrap();
    std::fs::copy(red.join("00.png"), red.join("skip/extra.png")).unwrap();
    std::fs::copy(red.join("01.png"), red.join(".hidden.png")).unwrap();
    image::open(red.join("02.png"))
        .unwrap()
        .save(red.join("other.jpg"))
        .unwrap();
    let filters = ["--exclude", "**/skip/**", "--ext", "png", "--verbose"];
    let output = run(vlm()
        .current_dir(dir.path())
        .args(["fit", "train", "--out", "probe.safetensors", "-m"])
        .arg(model_dir())
        .args(filters));
    assert!(output.status.success(), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("skip/extra.png: matches --exclude")
            && err.contains("other.jpg: image type not selected by --ext")
            && err.contains(".hidden.png: hidden"),
        "{err}"
    );
    let output = run(vlm()
        .args(["classify", "-l", "red,green", "--examples"])
        .arg(&train)
        .arg("-m")
        .arg(model_dir())
        .args(filters)
        .arg(red.join("03.png")));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("8 examples for 2 of 2 labels"),
        "{}",
        stderr(&output)
    );
    let output = run(vlm()
        .args(["classify", "-l", "red,green", "--hidden", "--examples"])
        .arg(&train)
        .arg("-m")
        .arg(model_dir())
        .args(filters)
        .arg(red.join("03.png")));
    assert!(
        stderr(&output).contains("9 examples for 2 of 2 labels"),
        "{}",
        stderr(&output)
    );
}
