//! `vlm classify --write-xmp` and `vlm caption --write-xmp` read back by a reader nobody
//! here wrote: exiftool (Debian's `libimage-exiftool-perl`).
//!
//! Without exiftool these tests print a notice and pass, unless `VLM_REQUIRE_EXIFTOOL=1`
//! (set by `.ci/test`, whose `.ci/install` installs it), where a missing exiftool fails them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vlm::xmp::{Naming, SidecarWriter, Tags, XmpOptions};

use crate::common::{self, vlm};

/// Whether exiftool runs here; a notice (or, when required, a failure) when it does not.
fn have_exiftool() -> bool {
    let found = Command::new("exiftool")
        .arg("-ver")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let required = std::env::var("VLM_REQUIRE_EXIFTOOL").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "VLM_REQUIRE_EXIFTOOL=1 but exiftool was not found; install it with `apt-get install libimage-exiftool-perl` (.ci/install does)"
        );
        eprintln!("NOTICE: skipping the exiftool tests of --write-xmp: no exiftool found. Run `.ci/test`, which installs it and requires these tests.");
    }
    found
}

/// Every XMP tag exiftool reads from `path`, by group and name (`XMP-dc:Subject`); lists
/// as JSON arrays.
fn exif_xmp(path: &Path) -> BTreeMap<String, Value> {
    let output = Command::new("exiftool")
        .args(["-j", "-G1", "-struct", "-XMP:all"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "exiftool {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut tags: BTreeMap<String, Value> = parsed[0]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    tags.remove("SourceFile");
    for (key, value) in &tags {
        assert!(
            !key.contains("Warning") && !key.contains("Error"),
            "{}: exiftool says {key}: {value}",
            path.display()
        );
    }
    tags
}

/// A tag's items: a list stays a list, a single value (exiftool's form of a one-item
/// list) becomes one item.
fn items(tags: &BTreeMap<String, Value>, key: &str) -> Vec<String> {
    match tags.get(key) {
        None => Vec::new(),
        Some(Value::Array(values)) => values.iter().map(text).collect(),
        Some(value) => vec![text(value)],
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `tags` less vlm's own items (under the root `vlm`, and the keywords `own`).
fn without_vlm(tags: &BTreeMap<String, Value>, own: &[String]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (key, value) in tags {
        let keep = |item: &String| match key.as_str() {
            "XMP-dc:Subject" => !own.contains(item),
            "XMP-lr:HierarchicalSubject" => !item.starts_with("vlm|"),
            "XMP-digiKam:TagsList" => !item.starts_with("vlm/"),
            _ => true,
        };
        let list = items(tags, key);
        let kept: Vec<String> = list.iter().filter(|i| keep(i)).cloned().collect();
        if kept.len() == list.len() {
            out.insert(key.clone(), value.clone());
        } else if !kept.is_empty() {
            out.insert(key.clone(), Value::from(kept));
        }
    }
    out
}

/// Images of two colours, 3 each, in `dir/red/` and `dir/green/`.
fn images(dir: &Path) -> Vec<PathBuf> {
    common::draw_domain(dir, 2, 3, 23);
    let mut files: Vec<PathBuf> = ["red", "green"]
        .iter()
        .flat_map(|c| (0..3).map(move |i| dir.join(c).join(format!("{i:02}.png"))))
        .collect();
    files.sort();
    files
}

/// `vlm classify` on `inputs` with `args`, JSON Lines on stdout, parsed by path.
fn classify(inputs: &[&Path], args: &[&str]) -> BTreeMap<String, Value> {
    let (records, output) = run_jsonl("classify", &common::tiny_model(), inputs, args);
    assert!(output.status.success(), "{}", common::stderr(&output));
    records
}

/// `vlm caption` (the BLIP fixture) on `inputs` with `args`: its records by path, and its
/// output (it may fail for some inputs).
fn caption(inputs: &[&Path], args: &[&str]) -> (BTreeMap<String, Value>, Output) {
    let model = common::fixtures().join("models/blip-caption");
    run_jsonl("caption", &model, inputs, args)
}

/// `vlm COMMAND` with JSON Lines on stdout, parsed by path.
fn run_jsonl(
    command: &str,
    model: &Path,
    inputs: &[&Path],
    args: &[&str],
) -> (BTreeMap<String, Value>, Output) {
    let output = vlm()
        .arg(command)
        .args(inputs)
        .arg("--model")
        .arg(model)
        .args(["--format", "jsonl", "-q"])
        .args(args)
        .output()
        .unwrap();
    let records = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            (v["path"].as_str().unwrap().to_string(), v)
        })
        .collect();
    (records, output)
}

fn digest(paths: &[PathBuf]) -> Vec<Vec<u8>> {
    paths.iter().map(|p| fs::read(p).unwrap()).collect()
}

#[test]
fn exiftool_reads_the_keywords_paths_and_tags_as_written() {
    if !have_exiftool() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = images(dir.path());
    let before = digest(&files);
    // Every label selected, so each sidecar holds several, best first.
    let results = classify(
        &[dir.path()],
        &[
            "-l",
            "red,green,blue",
            "--multi-label",
            "--threshold=-1",
            "--write-xmp",
        ],
    );
    assert_eq!(results.len(), files.len());
    for (path, result) in &results {
        let labels: Vec<String> = result["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(text)
            .collect();
        assert_eq!(labels.len(), 3);
        let tags = exif_xmp(&PathBuf::from(format!("{path}.xmp")));
        assert_eq!(items(&tags, "XMP-dc:Subject"), labels, "{path}");
        let paths: Vec<String> = labels.iter().map(|l| format!("vlm|{l}")).collect();
        assert_eq!(items(&tags, "XMP-lr:HierarchicalSubject"), paths);
        let paths: Vec<String> = labels.iter().map(|l| format!("vlm/{l}")).collect();
        assert_eq!(items(&tags, "XMP-digiKam:TagsList"), paths);
    }
    assert_eq!(digest(&files), before, "the images were touched");
    // Single-label: the top label only; Lightroom naming and another root.
    let results = classify(
        &[dir.path()],
        &[
            "-l",
            "red,green",
            "--write-xmp",
            "--xmp-naming",
            "basename",
            "--xmp-root",
            "auto|vlm",
        ],
    );
    for (path, result) in &results {
        let top = text(&result["results"][0]["label"]);
        let tags = exif_xmp(&Path::new(path).with_extension("xmp"));
        assert_eq!(items(&tags, "XMP-dc:Subject"), std::slice::from_ref(&top));
        assert_eq!(
            items(&tags, "XMP-lr:HierarchicalSubject"),
            [format!("auto|vlm|{top}")]
        );
        assert_eq!(
            items(&tags, "XMP-digiKam:TagsList"),
            [format!("auto/vlm/{top}")]
        );
    }
}

#[test]
fn exiftool_reads_a_caption_and_hostile_labels_exactly() {
    if !have_exiftool() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("photo.jpg");
    fs::write(&image, b"never read").unwrap();
    let hostile: Vec<String> = [
        "<b>&amp;</b>",
        "say \"cheese\" & 'smile'",
        "café 日本 ünïcödé",
        "صورة \u{202e}gnp.exe",
        "]]> <!-- -->",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let caption = "A cat <on> a \"mat\" & a دفتر";
    let mut writer = SidecarWriter::new(XmpOptions::new(Naming::Appended, "vlm").unwrap(), false);
    writer
        .write(
            &image,
            Tags {
                labels: Some(&hostile),
                description: Some(caption),
            },
        )
        .unwrap();
    let tags = exif_xmp(&dir.path().join("photo.jpg.xmp"));
    assert_eq!(items(&tags, "XMP-dc:Subject"), hostile);
    assert_eq!(items(&tags, "XMP-dc:Description"), [caption]);
    let paths: Vec<String> = hostile.iter().map(|l| format!("vlm|{l}")).collect();
    assert_eq!(items(&tags, "XMP-lr:HierarchicalSubject"), paths);
    // A / inside a label would make a level in digiKam's paths, so it is written as |.
    let paths: Vec<String> = hostile
        .iter()
        .map(|l| format!("vlm/{}", l.replace('/', "|")))
        .collect();
    assert_eq!(items(&tags, "XMP-digiKam:TagsList"), paths);
    assert_eq!(fs::read(&image).unwrap(), b"never read");

    // The same through the command line: a labels file (one per line).
    let labels_file = dir.path().join("labels.txt");
    fs::write(&labels_file, hostile.join("\n")).unwrap();
    common::draw_domain(dir.path(), 1, 1, 5);
    let png = dir.path().join("red/00.png");
    classify(
        &[&png],
        &[
            "--labels-file",
            labels_file.to_str().unwrap(),
            "--template",
            "{}",
            "--multi-label",
            "--threshold=-1",
            "--write-xmp",
        ],
    );
    let mut read = items(
        &exif_xmp(&dir.path().join("red/00.png.xmp")),
        "XMP-dc:Subject",
    );
    read.sort();
    let mut want = hostile.clone();
    want.sort();
    assert_eq!(read, want);
}

#[test]
fn foreign_tags_and_namespaces_survive_and_a_rerun_changes_no_byte() {
    if !have_exiftool() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = images(dir.path());
    let shapes = [
        "darktable.jpg.xmp",
        "digikam.jpg.xmp",
        "lightroom.xmp",
        "bare-rdf.xmp",
    ];
    let fixtures = common::fixtures().join("xmp");
    let mut sidecars = Vec::new();
    for (file, shape) in files.iter().zip(shapes.iter().cycle()) {
        let sidecar = PathBuf::from(format!("{}.xmp", file.display()));
        fs::copy(fixtures.join(shape), &sidecar).unwrap();
        sidecars.push(sidecar);
    }
    let before: Vec<_> = sidecars.iter().map(|s| exif_xmp(s)).collect();
    let labels = ["red", "green", "blue"].map(String::from);
    let args = [
        "-l",
        "red,green,blue",
        "--multi-label",
        "--threshold=-1",
        "--write-xmp",
    ];
    classify(&[dir.path()], &args);
    let written = digest(&sidecars);
    for ((sidecar, old), shape) in sidecars.iter().zip(&before).zip(shapes.iter().cycle()) {
        let new = exif_xmp(sidecar);
        // The user's own keywords that equal a label stay theirs; none here do.
        assert_eq!(without_vlm(&new, &labels), *old, "{shape}");
        assert_eq!(
            items(&new, "XMP-lr:HierarchicalSubject")
                .iter()
                .filter(|s| s.starts_with("vlm|"))
                .count(),
            3,
            "{shape}"
        );
    }
    let stamps: Vec<_> = sidecars
        .iter()
        .map(|s| fs::metadata(s).unwrap().modified().unwrap())
        .collect();
    classify(&[dir.path()], &args);
    assert_eq!(
        digest(&sidecars),
        written,
        "a second identical run changed bytes"
    );
    let again: Vec<_> = sidecars
        .iter()
        .map(|s| fs::metadata(s).unwrap().modified().unwrap())
        .collect();
    assert_eq!(again, stamps, "a second identical run rewrote a sidecar");
    // New labels replace vlm's earlier ones and nothing else.
    classify(&[dir.path()], &["-l", "cyan", "--write-xmp"]);
    for (sidecar, old) in sidecars.iter().zip(&before) {
        let new = exif_xmp(sidecar);
        assert_eq!(without_vlm(&new, &["cyan".to_string()]), *old);
        assert!(items(&new, "XMP-dc:Subject").contains(&"cyan".to_string()));
        assert!(!items(&new, "XMP-dc:Subject").contains(&"red".to_string()));
    }
    // A dry run prints the change and writes nothing.
    let output = vlm()
        .arg("classify")
        .arg(dir.path())
        .arg("--model")
        .arg(common::tiny_model())
        .args([
            "-l",
            "magenta",
            "--write-xmp",
            "--dry-run",
            "-q",
            "-f",
            "jsonl",
        ])
        .output()
        .unwrap();
    let stderr = common::stderr(&output);
    assert!(
        stderr.contains(&format!(
            "would update {}: -\"cyan\" +\"magenta\"",
            sidecars[0].display()
        )),
        "{stderr}"
    );
    for sidecar in &sidecars {
        assert!(items(&exif_xmp(sidecar), "XMP-dc:Subject").contains(&"cyan".to_string()));
    }
}

#[test]
fn a_killed_run_leaves_no_torn_sidecar() {
    if !have_exiftool() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Large sidecars (a long darktable history, 8 MiB): a sidecar written in place would
    // be seen half-written for milliseconds, and the kill comes as soon as any sidecar
    // changes, so it lands inside such a write (a writer that truncates and rewrites in
    // place fails this test every time); an atomic writer changes a sidecar only when it
    // is complete.
    const IMAGES: usize = 12;
    common::draw_domain(dir.path(), 1, IMAGES, 77);
    let template = fs::read_to_string(common::fixtures().join("xmp/darktable.jpg.xmp")).unwrap();
    let blob = "0123456789abcdef".repeat(1 << 19);
    let big = template.replace("cdcc4c3e0000484200000000", &blob);
    let mut sidecars = Vec::new();
    for i in 0..IMAGES {
        let sidecar = dir.path().join(format!("red/{i:02}.png.xmp"));
        fs::write(&sidecar, &big).unwrap();
        sidecars.push(sidecar);
    }
    let mut child = vlm()
        .arg("classify")
        .arg(dir.path())
        .arg("--model")
        .arg(common::tiny_model())
        .args(["-l", "red,green", "--write-xmp", "-b", "1", "-j", "1", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let changed = sidecars
            .iter()
            .any(|s| fs::metadata(s).map(|m| m.len()).unwrap_or(0) != big.len() as u64);
        if changed || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut old = 0;
    for sidecar in &sidecars {
        let text = fs::read_to_string(sidecar).unwrap();
        if text == big {
            old += 1;
            continue;
        }
        // A complete merge: the foreign history and vlm's keyword, read without complaint.
        assert!(
            text.contains(&blob) && text.ends_with("</x:xmpmeta>\n"),
            "{}",
            sidecar.display()
        );
        let tags = exif_xmp(sidecar);
        assert_eq!(
            items(&tags, "XMP-dc:Subject").len(),
            2,
            "{}",
            sidecar.display()
        );
    }
    assert!(
        old > 0,
        "the run finished before the kill; the test proves nothing"
    );
    // Nothing else named like a sidecar was left.
    let stray: Vec<_> = fs::read_dir(dir.path().join("red"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".xmp") && !n.ends_with(".png.xmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

/// `tags` without the description (every language of it).
fn without_description(tags: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    let mut tags = tags.clone();
    tags.retain(|key, _| !key.starts_with("XMP-dc:Description"));
    tags
}

#[test]
fn captions_become_descriptions_beside_the_keywords_of_classify() {
    if !have_exiftool() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = images(dir.path());
    // One image already has a sidecar from digiKam: keywords and a description in two
    // languages.
    let digikam = PathBuf::from(format!("{}.xmp", files[0].display()));
    fs::copy(common::fixtures().join("xmp/digikam.jpg.xmp"), &digikam).unwrap();
    // Beside them (given only to the first caption run): a file that is no picture.
    let elsewhere = tempfile::tempdir().unwrap();
    let broken = elsewhere.path().join("broken.png");
    fs::write(&broken, b"not a picture").unwrap();
    let before = digest(&files);
    let sidecars: Vec<PathBuf> = files
        .iter()
        .map(|f| PathBuf::from(format!("{}.xmp", f.display())))
        .collect();
    classify(
        &[dir.path()],
        &[
            "-l",
            "red,green",
            "--multi-label",
            "--threshold=-1",
            "--write-xmp",
        ],
    );
    let labelled: Vec<_> = sidecars.iter().map(|s| exif_xmp(s)).collect();

    // A prompt the caption starts with, with what XML must escape.
    let prompt = "<b>bold</b> & \"quoted\" 'apostrophes' café";
    let args = ["--write-xmp", "--prompt", prompt];
    let (captions, output) = caption(&[dir.path(), &broken], &args);
    assert_eq!(output.status.code(), Some(1), "{}", common::stderr(&output));
    assert!(!PathBuf::from(format!("{}.xmp", broken.display())).exists());
    assert!(captions[broken.to_str().unwrap()]["error"].is_string());
    for ((file, sidecar), old) in files.iter().zip(&sidecars).zip(&labelled) {
        let text = captions[file.to_str().unwrap()]["caption"]
            .as_str()
            .unwrap()
            .to_string();
        // The fixture's tokenizer drops `<`, `&` and `"` (an apostrophe stays); hostile
        // text is written through the library below.
        assert!(
            text.contains("bold") && text.contains('\''),
            "the caption lost the prompt: {text}"
        );
        let tags = exif_xmp(sidecar);
        assert_eq!(items(&tags, "XMP-dc:Description"), [text]);
        // classify's keywords, and everything else but the description, are kept.
        assert_eq!(without_description(&tags), without_description(old));
    }
    let foreign = exif_xmp(&digikam);
    assert_eq!(
        items(&foreign, "XMP-dc:Description-de-DE"),
        ["Alice am See"]
    );
    assert!(items(&foreign, "XMP-dc:Subject").contains(&"Alice".to_string()));
    assert_eq!(digest(&files), before, "the images were touched");

    // A second identical run changes no byte.
    let written = digest(&sidecars);
    caption(&[dir.path()], &args);
    assert_eq!(
        digest(&sidecars),
        written,
        "a second identical run changed bytes"
    );

    // Labels written after the captions keep them.
    classify(&[dir.path()], &["-l", "cyan", "--write-xmp"]);
    for (file, sidecar) in files.iter().zip(&sidecars) {
        let tags = exif_xmp(sidecar);
        assert_eq!(
            items(&tags, "XMP-dc:Description"),
            [captions[file.to_str().unwrap()]["caption"]
                .as_str()
                .unwrap()]
        );
        assert!(items(&tags, "XMP-dc:Subject").contains(&"cyan".to_string()));
        assert!(!items(&tags, "XMP-dc:Subject").contains(&"red".to_string()));
    }

    // A dry run says what would change and writes nothing.
    let written = digest(&sidecars);
    let (dry, output) = caption(
        &[files[1].as_path()],
        &["--write-xmp", "--dry-run", "--prompt", "another start"],
    );
    let new = dry[files[1].to_str().unwrap()]["caption"].as_str().unwrap();
    let said = common::stderr(&output);
    assert!(
        said.contains(&format!(
            "would update {}: description {new:?}",
            sidecars[1].display()
        )),
        "{said}"
    );
    assert_eq!(digest(&sidecars), written, "a dry run wrote");

    // A caption with everything XML must escape, right-to-left text and non-ASCII, over
    // classify's keywords: read back exactly, the keywords kept.
    let hostile = "A <b>cat</b> & \"mat\" 'q' ]]> café 日本 صورة \u{202e}gnp.exe";
    let before = exif_xmp(&sidecars[3]);
    let mut writer = SidecarWriter::new(XmpOptions::default(), false);
    let tags = Tags {
        labels: None,
        description: Some(hostile),
    };
    writer.write(&files[3], tags).unwrap();
    let after = exif_xmp(&sidecars[3]);
    assert_eq!(items(&after, "XMP-dc:Description"), [hostile]);
    assert_eq!(without_description(&after), without_description(&before));

    // Lightroom naming: photo.xmp.
    let (named, _) = caption(
        &[files[2].as_path()],
        &["--write-xmp", "--xmp-naming", "basename"],
    );
    let tags = exif_xmp(&files[2].with_extension("xmp"));
    assert_eq!(
        items(&tags, "XMP-dc:Description"),
        [named[files[2].to_str().unwrap()]["caption"]
            .as_str()
            .unwrap()]
    );
}
