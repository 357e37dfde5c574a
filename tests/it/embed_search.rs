//! `vlm embed` and `vlm search` end to end, on the tiny checkpoint and a generated domain,
//! checked against readers and rankings computed here, independently of vlm's own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{self, stderr};
use candle_core::Device;
use serde_json::Value;
use vlm::source::ModelFiles;
use vlm::Checkpoint;

fn vlm(subcommand: &str) -> Command {
    let mut command = common::vlm();
    command
        .arg(subcommand)
        .arg("--model")
        .arg(common::tiny_model());
    command
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Draws `per_class` images of each of the four classes into `dir/domain`; returns the
/// folder and the images, in the order vlm walks them (sorted by name at every level).
fn domain(dir: &Path, per_class: usize) -> (PathBuf, Vec<String>) {
    let root = dir.join("domain");
    common::draw_domain(&root, 4, per_class, 7);
    let mut images = Vec::new();
    for (colour, _) in common::COLOURS {
        for i in 0..per_class {
            let path = root.join(colour).join(format!("{i:02}.png"));
            images.push(path.display().to_string());
        }
    }
    images.sort();
    (root, images)
}

fn classifier() -> Checkpoint {
    let files = ModelFiles::from_dir(&common::tiny_model()).unwrap();
    Checkpoint::load(&files, &Device::Cpu).unwrap()
}

/// The encoder's raw embedding of each image, computed in this process, in one batch.
fn library_embeddings(classifier: &Checkpoint, images: &[String]) -> HashMap<String, Vec<f32>> {
    let pixels: Vec<Vec<f32>> = images
        .iter()
        .map(|p| classifier.load_pixels(Path::new(p)).unwrap())
        .collect();
    let rows = classifier.embed_pixels_rows(&pixels).unwrap();
    images.iter().cloned().zip(rows).collect()
}

fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    v.iter().map(|&x| (f64::from(x) / norm) as f32).collect()
}

fn cos(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Every candidate ranked by cosine to `query`, best first, ties in the given order.
fn brute_force(query: &[f32], candidates: &[(String, Vec<f32>)]) -> Vec<(String, f64)> {
    let mut ranked: Vec<(usize, f64)> = candidates
        .iter()
        .enumerate()
        .map(|(i, (_, e))| (i, cos(query, e)))
        .collect();
    ranked.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
    ranked
        .into_iter()
        .map(|(i, s)| (candidates[i].0.clone(), s))
        .collect()
}

fn assert_close(a: &[f32], b: &[f32], tolerance: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tolerance, "{what}: {x} vs {y}");
    }
}

/// Parses a .npy file by hand: a float32 C-order 2-D array.
fn parse_npy(path: &Path) -> (usize, usize, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape = header.split("'shape': (").nth(1).unwrap();
    let shape = &shape[..shape.find(')').unwrap()];
    let dims: Vec<usize> = shape
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data: Vec<f32> = bytes[10 + len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(data.len(), dims[0] * dims[1]);
    (dims[0], dims[1], data)
}

/// The rows of a safetensors export (through candle's loader) and its metadata.
fn parse_safetensors(path: &Path) -> (Vec<Vec<f32>>, serde_json::Map<String, Value>) {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let rows = tensors["embeddings"].to_vec2::<f32>().unwrap();
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    (rows, header["__metadata__"].as_object().unwrap().clone())
}

fn parse_jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn embed_formats_agree_skip_broken_files_and_reuse_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, images) = domain(tmp.path(), 3);
    let broken = root.join("green").join("zz-broken.png");
    std::fs::write(&broken, b"not a picture").unwrap();
    let cache = tmp.path().join("cache");
    let cache_arg = format!("--cache={}", cache.display());

    let embed = |name: &str| {
        let out = tmp.path().join(name);
        let output = run(vlm("embed")
            .args(["-v", &cache_arg, "-o"])
            .arg(&out)
            .arg(&root));
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        let err = stderr(&output);
        assert!(err.contains("zz-broken.png"), "{err}");
        (out, err)
    };
    let (jsonl, first) = embed("e.jsonl");
    assert!(first.contains("image encoder ran on 12 images"), "{first}");
    assert!(first.contains("embedded 12, failed 1"), "{first}");
    let (npy, second) = embed("e.npy");
    assert!(
        second.contains("image encoder ran on 0 images (12 embeddings reused from the cache)"),
        "{second}"
    );
    let (safetensors, _) = embed("e.safetensors");

    // JSON Lines: the reference the others are held to.
    let lines = parse_jsonl(&std::fs::read_to_string(&jsonl).unwrap());
    let paths: Vec<String> = lines
        .iter()
        .map(|l| l["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, images, "rows are the readable images, in walk order");
    let rows: Vec<Vec<f32>> = lines.iter().map(|l| floats(&l["embedding"])).collect();
    assert_eq!(lines[0]["normalized"], true);

    // .npy, parsed by hand, and its sidecar.
    let (n, d, data) = parse_npy(&npy);
    assert_eq!((n, d), (12, rows[0].len()));
    let sidecar = std::fs::read_to_string(tmp.path().join("e.paths.txt")).unwrap();
    assert_eq!(sidecar.lines().collect::<Vec<_>>(), paths);
    for (i, row) in rows.iter().enumerate() {
        assert_close(&data[i * d..(i + 1) * d], row, 1e-6, "npy vs jsonl");
    }

    // .safetensors, through candle's loader.
    let (st_rows, meta) = parse_safetensors(&safetensors);
    let st_paths: Vec<String> = serde_json::from_str(meta["paths"].as_str().unwrap()).unwrap();
    assert_eq!(st_paths, paths);
    assert_eq!(meta["model"], common::tiny_model().display().to_string());
    assert_eq!(meta["normalized"], "true");
    assert_eq!(meta["dim"], d.to_string());
    assert_eq!(st_rows.len(), 12);
    for (a, b) in st_rows.iter().zip(&rows) {
        assert_close(a, b, 1e-6, "safetensors vs jsonl");
    }

    // Each row is its own image's embedding, normalised.
    let classifier = classifier();
    let library = library_embeddings(&classifier, &images);
    for (path, row) in paths.iter().zip(&rows) {
        assert_close(row, &unit(&library[path]), 1e-6, path);
    }
}

#[test]
fn raw_and_text_embeddings_are_the_encoders_output() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, images) = domain(tmp.path(), 1);
    let classifier = classifier();

    let raw = tmp.path().join("raw.jsonl");
    let output = run(vlm("embed")
        .args(["--raw", "-q", "-o"])
        .arg(&raw)
        .arg(&root));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let lines = parse_jsonl(&std::fs::read_to_string(&raw).unwrap());
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["normalized"], false);
    let library = library_embeddings(&classifier, &images);
    for line in &lines {
        let path = line["path"].as_str().unwrap();
        assert_close(&floats(&line["embedding"]), &library[path], 1e-6, path);
    }

    let prompts = ["a red square", "a blue disc, small", "a photo of a dog."];
    let expected = classifier
        .embed_prompts(&prompts.map(String::from))
        .unwrap()
        .embeddings
        .to_vec2::<f32>()
        .unwrap();

    let npy = tmp.path().join("text.npy");
    let output = run(vlm("embed")
        .args(["--text", "a red square, a photo of a dog.", "-o"])
        .arg(&npy));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let (n, d, data) = parse_npy(&npy);
    assert_eq!(n, 2);
    let names = std::fs::read_to_string(tmp.path().join("text.paths.txt")).unwrap();
    assert_eq!(names, "a red square\na photo of a dog.\n");
    assert_close(&data[..d], &unit(&expected[0]), 1e-6, "first prompt");
    assert_close(&data[d..], &unit(&expected[2]), 1e-6, "second prompt");

    let file = tmp.path().join("prompts.txt");
    std::fs::write(&file, prompts.join("\n")).unwrap();
    let st = tmp.path().join("text.safetensors");
    let output = run(vlm("embed")
        .args(["--no-normalize", "--text-file"])
        .arg(&file)
        .arg("-o")
        .arg(&st));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let (rows, meta) = parse_safetensors(&st);
    let texts: Vec<String> = serde_json::from_str(meta["texts"].as_str().unwrap()).unwrap();
    assert_eq!(texts, prompts);
    assert_eq!(meta["kind"], "text");
    assert_eq!(meta["normalized"], "false");
    for (row, want) in rows.iter().zip(&expected) {
        assert_close(row, want, 1e-6, "prompt embedding");
    }
}

/// (path, similarity) pairs of search output in JSON Lines.
fn hits(output: &Output) -> Vec<(String, f64)> {
    parse_jsonl(&stdout(output))
        .iter()
        .enumerate()
        .map(|(i, hit)| {
            assert_eq!(hit["rank"], i + 1);
            (
                hit["path"].as_str().unwrap().to_string(),
                hit["similarity"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn assert_same_ranking(got: &[(String, f64)], want: &[(String, f64)]) {
    assert_eq!(got.len(), want.len());
    for ((gp, gs), (wp, ws)) in got.iter().zip(want) {
        assert_eq!(gp, wp, "got {got:?}\nwant {want:?}");
        assert!((gs - ws).abs() < 1e-5, "{gp}: {gs} vs {ws}");
    }
}

#[test]
fn text_search_ranks_like_a_brute_force_cosine() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, images) = domain(tmp.path(), 4);
    std::fs::write(root.join("red").join("zz-broken.png"), b"nope").unwrap();
    let classifier = classifier();
    let library = library_embeddings(&classifier, &images);
    let candidates: Vec<(String, Vec<f32>)> = images
        .iter()
        .map(|p| (p.clone(), library[p].clone()))
        .collect();
    let query = "a red square";
    let text = classifier
        .embed_prompts(&[query.to_string()])
        .unwrap()
        .embeddings
        .to_vec2::<f32>()
        .unwrap();
    let want = brute_force(&text[0], &candidates);

    let output = run(vlm("search")
        .arg(query)
        .arg(&root)
        .args(["--top", "5", "--format", "jsonl"]));
    assert_eq!(output.status.code(), Some(1), "the broken file fails");
    assert!(stderr(&output).contains("zz-broken.png"));
    assert_same_ranking(&hits(&output), &want[..5]);

    // The default is the top 10, as a table with a header.
    let output = run(vlm("search").arg(query).arg(&root));
    let table = stdout(&output);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 11, "{table}");
    assert!(lines[0].contains("similarity"), "{table}");
    assert!(lines[1].trim_start().starts_with('1'));
    assert!(lines[1].ends_with(&want[0].0), "{table}");

    // CSV to a file, every image.
    let csv = tmp.path().join("hits.csv");
    let output = run(vlm("search")
        .arg(query)
        .arg(&root)
        .args(["-n", "100", "-q", "-o"])
        .arg(&csv));
    assert_eq!(output.status.code(), Some(1));
    let csv = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "rank,path,similarity");
    assert_eq!(rows.len(), 1 + images.len());
    let last: Vec<&str> = rows[16].split(',').collect();
    assert_eq!(last[0], "16");
    assert_eq!(last[1], want[15].0);
}

#[test]
fn image_search_leaves_out_the_query_and_reuses_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, images) = domain(tmp.path(), 4);
    let classifier = classifier();
    let library = library_embeddings(&classifier, &images);
    let query = root.join("blue").join("01.png").display().to_string();
    let candidates: Vec<(String, Vec<f32>)> = images
        .iter()
        .filter(|p| **p != query)
        .map(|p| (p.clone(), library[p].clone()))
        .collect();
    let want = brute_force(&library[&query], &candidates);
    let cache_arg = format!("--cache={}", tmp.path().join("cache").display());

    let search = || {
        let output = run(vlm("search")
            .args(["-v", "-f", "jsonl", "-n", "8", &cache_arg, "--image"])
            .arg(&query)
            .arg(&root));
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        output
    };
    let first = search();
    assert_same_ranking(&hits(&first), &want[..8]);
    assert!(
        stderr(&first).contains("image encoder ran on 15 images"),
        "{}",
        stderr(&first)
    );
    assert!(!stdout(&first).contains(&query));

    let second = search();
    assert_eq!(stdout(&second), stdout(&first));
    assert!(
        stderr(&second)
            .contains("image encoder ran on 0 images (15 embeddings reused from the cache)"),
        "{}",
        stderr(&second)
    );

    // A text search over the same folder reuses every image embedding, the query's too.
    let output = run(vlm("search")
        .args(["-v", &cache_arg, "a blue disc"])
        .arg(&root));
    assert!(
        stderr(&output)
            .contains("image encoder ran on 0 images (16 embeddings reused from the cache)"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn unusable_arguments_fail_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, _) = domain(tmp.path(), 1);

    let output = run(vlm("embed")
        .args(["--text", "a cat", "-o"])
        .arg(tmp.path().join("e.csv")));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(".safetensors"),
        "{}",
        stderr(&output)
    );

    let output = run(vlm("embed")
        .arg("-o")
        .arg(tmp.path().join("missing").join("e.npy"))
        .arg(&root));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot write"),
        "{}",
        stderr(&output)
    );

    let output = run(vlm("search")
        .arg("--image")
        .arg(tmp.path().join("nowhere.png"))
        .arg(&root));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("nowhere.png"),
        "{}",
        stderr(&output)
    );

    let output = run(vlm("search").arg("only a query"));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("no images to search"),
        "{}",
        stderr(&output)
    );
}
