//! `vlm report` and `vlm eval --report` opened in a real browser: headless Chromium (Debian's
//! `chromium` package) driven over the DevTools protocol by `headless_chrome`.
//!
//! Without a browser these tests print a notice and pass, unless `VLM_REQUIRE_BROWSER=1`
//! (set by `.ci/test`, which installs one), where a missing browser is a failure.
//!
//! Screenshots of each view are written to `target/report-screenshots/`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::protocol::cdp::{Network, Page};
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::{json, Value};

use crate::common::{self, vlm};

const LABELS: [&str; 3] = ["cat", "dog", "bird"];
/// Becomes a tag if a name is ever parsed as HTML; sets a global if its handler ever runs.
const HOSTILE_IMG: &str = "<img src=x onerror=\"window.__pwned=1\"> 'q' \"dq\".png";
/// A folder and a file whose joined path reads as a script element.
const HOSTILE_DIR: &str = "<script>window.__pwned=2<";
const HOSTILE_FILE: &str = "script>.png";
const RTL: &str = "صورة \u{202e}gnp.exe.png";
const ACCENTS: &str = "café 日本 ünïcödé.png";

/// The key hints above the grid.
const KEY_HINTS: &str = "document.getElementById('keys').textContent";
/// The file names of the cards on screen, in reading order (top to bottom, left to right).
const CARDS_IN_ORDER: &str = "[...document.querySelectorAll('#grid .card')].map(c => [c.getBoundingClientRect(), c.querySelector('.name').textContent]).sort((a, b) => a[0].top - b[0].top || a[0].left - b[0].left).map(([, name]) => name)";

/// Whether "group by label", "uncertain below" and the "uncertain" chip are on the page.
const LABEL_CONTROLS_SHOWN: &str = "[document.getElementById('group').parentElement, document.getElementById('threshold-label')].map(e => e.offsetParent !== null).concat([[...document.querySelectorAll('#filters .chip bdi')].some(b => b.textContent === 'uncertain')])";

fn run_ok(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

// ---------------------------------------------------------------- the browser

const CANDIDATES: [&str; 4] = [
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/usr/bin/google-chrome-stable",
];

/// Headless Chromium, or `None` (with a notice) when there is none and it is not required.
fn browser() -> Option<Browser> {
    // $VLM_CHROMIUM, when set, is the only browser tried (a path that is not a file means
    // none, which is how the skipping itself can be checked).
    let path = match std::env::var_os("VLM_CHROMIUM") {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file()),
    };
    let required = std::env::var("VLM_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let Some(path) = path else {
        assert!(
            !required,
            "VLM_REQUIRE_BROWSER=1 but no Chromium was found (looked for {CANDIDATES:?} and $VLM_CHROMIUM); install it with `apt-get install chromium`"
        );
        eprintln!(
            "NOTICE: skipping the browser tests of `vlm report`: no Chromium found. Run `.ci/test`, which installs Debian's chromium and requires these tests."
        );
        return None;
    };
    let args: Vec<&OsStr> = [
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]
    .iter()
    .map(OsStr::new)
    .collect();
    let options = LaunchOptions::default_builder()
        .path(Some(path))
        .sandbox(false)
        .headless(true)
        .window_size(Some((1280, 900)))
        .idle_browser_timeout(Duration::from_secs(600))
        .args(args)
        .build()
        .unwrap();
    Some(Browser::new(options).expect("start headless Chromium"))
}

/// A tab that records the URL of every request the page makes.
fn open(browser: &Browser, page: &Path) -> (Arc<Tab>, Arc<Mutex<Vec<String>>>) {
    let tab = browser.new_tab().unwrap();
    tab.set_default_timeout(Duration::from_secs(60));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    tab.add_event_listener(Arc::new(move |event: &Event| {
        if let Event::NetworkRequestWillBeSent(e) = event {
            seen.lock().unwrap().push(e.params.request.url.clone());
        }
    }))
    .unwrap();
    tab.call_method(Network::Enable {
        max_total_buffer_size: None,
        max_resource_buffer_size: None,
        max_post_data_size: None,
        report_direct_socket_traffic: None,
        enable_durable_messages: None,
    })
    .unwrap();
    let url = format!("file://{}", page.display());
    tab.navigate_to(&url).unwrap();
    tab.wait_until_navigated().unwrap();
    tab.wait_for_element("main#grid").unwrap();
    (tab, requests)
}

/// Evaluates `expr` in the page and returns its value (through JSON).
fn js(tab: &Tab, expr: &str) -> Value {
    let wrapped = format!("JSON.stringify((() => ({expr}))())");
    let result = tab.evaluate(&wrapped, false).unwrap();
    match result.value {
        Some(Value::String(text)) => serde_json::from_str(&text).unwrap(),
        other => panic!("{expr} gave no JSON: {other:?} {:?}", result.description),
    }
}

/// Waits until `expr` is true in the page.
fn wait_for(tab: &Tab, expr: &str) {
    let start = Instant::now();
    while js(tab, expr) != Value::Bool(true) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {expr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn screenshot(tab: &Tab, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/report-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = tab
        .capture_screenshot(Page::CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap();
    path
}

/// Every request the page made was for a local file or inline data.
fn assert_offline(requests: &Mutex<Vec<String>>, tab: &Tab) {
    let requests = requests.lock().unwrap();
    assert!(
        !requests.is_empty(),
        "the request log is empty: is it recording?"
    );
    for url in requests.iter() {
        assert!(
            url.starts_with("file://") || url.starts_with("data:") || url.starts_with("blob:"),
            "the page requested {url}"
        );
    }
    let entries = js(
        tab,
        "performance.getEntriesByType('resource').map(e => e.name)",
    );
    for name in entries.as_array().unwrap() {
        let name = name.as_str().unwrap();
        assert!(
            name.starts_with("file:") || name.starts_with("data:") || name.starts_with("blob:"),
            "resource {name}"
        );
    }
}

// ---------------------------------------------------------------- the data

/// A generated results file: images with hostile and non-ASCII names, probabilities that
/// vary, some uncertain, some failed. Returns the folder, the results path and the records.
fn generated(n: usize) -> (tempfile::TempDir, PathBuf, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("pics").join(HOSTILE_DIR)).unwrap();
    let mut rng = common::Rng::new(7);
    let mut records = Vec::new();
    for i in 0..n {
        let name = match i {
            3 => HOSTILE_IMG.to_string(),
            4 => format!("{HOSTILE_DIR}/{HOSTILE_FILE}"),
            5 => RTL.to_string(),
            6 => ACCENTS.to_string(),
            i => format!("img {i:05}.png"),
        };
        let path = format!("pics/{name}");
        let colour = [rng.below(256) as u8, rng.below(256) as u8, 120];
        image::RgbImage::from_pixel(40 + (i % 7) as u32, 30, image::Rgb(colour))
            .save_with_format(root.join(&path), image::ImageFormat::Png)
            .unwrap();
        if i % 17 == 9 {
            records.push(json!({"path": path, "error": format!("cannot decode {path}: broken")}));
            continue;
        }
        let top = (i * 7 + i / 3) % 3;
        let p = 0.34 + f64::from(rng.below(6000)) / 10000.0;
        let rest = (1.0 - p) / 2.0;
        let mut results: Vec<Value> = LABELS
            .iter()
            .enumerate()
            .map(|(k, label)| {
                let prob = if k == top { p } else { rest };
                json!({"label": label, "prompt": format!("a photo of a {label}."), "probability": prob, "similarity": 0.2 + prob / 10.0})
            })
            .collect();
        results.sort_by(|a, b| {
            b["probability"]
                .as_f64()
                .unwrap()
                .total_cmp(&a["probability"].as_f64().unwrap())
        });
        records.push(json!({"path": path, "uncertain": p < 0.5, "results": results}));
    }
    let mut text = String::new();
    for r in &records {
        text.push_str(&serde_json::to_string(r).unwrap());
        text.push('\n');
    }
    let results = root.join("labels.jsonl");
    std::fs::write(&results, text).unwrap();
    (dir, results, records)
}

fn top_label(record: &Value) -> Option<&str> {
    record["results"][0]["label"].as_str()
}

fn write_page(dir: &Path, results: &Path, extra: &[&str]) -> PathBuf {
    let page = dir.join("review.html");
    run_ok(
        vlm()
            .current_dir(dir)
            .arg("report")
            .arg(results)
            .arg("--output")
            .arg(&page)
            .args(extra),
    );
    page
}

fn indices(value: &Value) -> Vec<usize> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}

// ---------------------------------------------------------------- the tests

#[test]
fn review_page_works_in_chromium() {
    let Some(browser) = browser() else { return };
    let n = 240;
    let (dir, results, records) = generated(n);
    let page = write_page(dir.path(), &results, &[]);
    let (tab, requests) = open(&browser, &page);

    // Cards: the model holds every record; the grid is virtual, so scroll through it and
    // collect every card that was ever on screen.
    assert_eq!(js(&tab, "vlmReport.view().length"), json!(n));
    let height = js(&tab, "document.documentElement.scrollHeight")
        .as_f64()
        .unwrap();
    let mut seen = BTreeSet::new();
    let mut most_in_dom = 0;
    let mut y = 0.0;
    while y <= height {
        js(&tab, &format!("(window.scrollTo(0, {y}), 0)"));
        wait_for(&tab, "(vlmReport.timings.renders.length, true)");
        std::thread::sleep(Duration::from_millis(60));
        let rendered = indices(&js(&tab, "vlmReport.rendered()"));
        most_in_dom = most_in_dom.max(rendered.len());
        seen.extend(rendered);
        y += 500.0;
    }
    assert_eq!(seen.len(), n, "every record became a card while scrolling");
    assert_eq!(js(&tab, LABEL_CONTROLS_SHOWN), json!([true, true, true]));
    assert!(
        most_in_dom < n,
        "the grid is virtual: at most {most_in_dom} of {n} cards in the DOM at once"
    );
    js(&tab, "(window.scrollTo(0, 0), 0)");

    // Thumbnails load from file://.
    wait_for(
        &tab,
        "[...document.querySelectorAll('#grid img')].every(i => i.complete) && document.querySelectorAll('#grid img').length > 5",
    );
    let widths = js(
        &tab,
        "[...document.querySelectorAll('#grid img')].map(i => i.naturalWidth)",
    );
    for w in widths.as_array().unwrap() {
        assert!(
            w.as_u64().unwrap() > 0,
            "a thumbnail did not load: {widths}"
        );
    }
    screenshot(&tab, "grid.png");

    // Filter by a label, through its chip: exactly that label's images.
    let dogs: BTreeSet<usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| top_label(r) == Some("dog"))
        .map(|(i, _)| i)
        .collect();
    let chip = tab
        .find_elements("#filters button")
        .unwrap()
        .into_iter()
        .find(|b| b.get_inner_text().unwrap().starts_with("dog "))
        .expect("a dog chip");
    chip.click().unwrap();
    let shown: BTreeSet<usize> = indices(&js(&tab, "vlmReport.view()")).into_iter().collect();
    assert_eq!(shown, dogs);
    let labels_in_dom = js(
        &tab,
        "[...document.querySelectorAll('#grid .card .label')].map(e => e.textContent)",
    );
    assert!(labels_in_dom.as_array().unwrap().iter().all(|l| l == "dog"));
    assert!(!labels_in_dom.as_array().unwrap().is_empty());

    // Failed and uncertain filters.
    js(&tab, "(vlmReport.setFilter({type: 'failed'}), 0)");
    let failed: Vec<usize> = (0..n)
        .filter(|&i| records[i].get("error").is_some())
        .collect();
    let mut shown = indices(&js(&tab, "vlmReport.view()"));
    shown.sort_unstable();
    assert_eq!(shown, failed);
    js(&tab, "(vlmReport.setFilter({type: 'uncertain'}), 0)");
    let uncertain = (0..n)
        .filter(|&i| records[i]["uncertain"] == json!(true))
        .count();
    assert_eq!(js(&tab, "vlmReport.view().length"), json!(uncertain));

    // Sort by confidence through the select: least sure first, failed last.
    js(&tab, "(vlmReport.setFilter({type: 'all'}), 0)");
    tab.find_element("#group").unwrap().click().unwrap();
    js(
        &tab,
        "(() => { const s = document.getElementById('sort'); s.value = 'confidence'; s.dispatchEvent(new Event('change')); return 0; })()",
    );
    let order = indices(&js(&tab, "vlmReport.view()"));
    let conf = |i: usize| records[i]["results"][0]["probability"].as_f64();
    let ranked: Vec<f64> = order.iter().filter_map(|&i| conf(i)).collect();
    assert!(ranked.windows(2).all(|w| w[0] <= w[1]), "not ascending");
    let least = (0..n).filter_map(conf).fold(f64::INFINITY, f64::min);
    assert_eq!(conf(order[0]), Some(least));
    assert!(order[order.len() - failed.len()..]
        .iter()
        .all(|i| failed.contains(i)));
    let first_card = js(
        &tab,
        "document.querySelector('#grid .card[data-pos=\"0\"]').dataset.index",
    );
    assert_eq!(first_card, json!(order[0].to_string()));

    // Hostile names are text, and nothing in them runs.
    for (i, name) in [
        (3, HOSTILE_IMG.to_string()),
        (4, format!("{HOSTILE_DIR}/{HOSTILE_FILE}")),
    ] {
        js(&tab, "(vlmReport.setSort('input'), 0)");
        js(&tab, &format!("(vlmReport.openDetail({i}), 0)"));
        assert_eq!(
            js(&tab, "document.getElementById('detail-path').textContent"),
            json!(format!("pics/{name}"))
        );
        js(&tab, "(vlmReport.closeDetail(), 0)");
    }
    js(&tab, "(vlmReport.setSearch('صورة'), 0)");
    assert_eq!(js(&tab, "vlmReport.view()"), json!([5]));
    assert_eq!(
        js(
            &tab,
            "document.querySelector('#grid .card .name').textContent"
        ),
        json!(RTL)
    );
    js(&tab, "(vlmReport.setSearch('café'), 0)");
    assert_eq!(js(&tab, "vlmReport.view()"), json!([6]));
    js(&tab, "(vlmReport.setSearch(''), 0)");
    assert_eq!(js(&tab, "typeof window.__pwned"), json!("undefined"));
    assert_eq!(
        js(
            &tab,
            "document.querySelectorAll('img[src=\"x\"], #grid script, #detail script').length"
        ),
        json!(0)
    );

    // A correction by keyboard: open the first card with Enter, press 2 (the second
    // label), move on with the arrow key, type a new label.
    js(
        &tab,
        "(document.activeElement.blur(), vlmReport.setSort('input'), vlmReport.select(0, true), 0)",
    );
    let second = js(&tab, "vlmReport.data.labels[1]");
    tab.press_key("Enter").unwrap();
    wait_for(&tab, "!document.getElementById('detail').hidden");
    screenshot(&tab, "detail.png");
    tab.press_key("2").unwrap();
    tab.press_key("ArrowRight").unwrap();
    tab.press_key("n").unwrap();
    tab.type_str("otter").unwrap();
    tab.press_key("Enter").unwrap();
    tab.press_key("Escape").unwrap();
    let exported = js(&tab, "vlmReport.exportJsonl()");
    let lines: Vec<Value> = exported
        .as_str()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let abs = |i: usize| {
        root.join(records[i]["path"].as_str().unwrap())
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(
        lines,
        [
            json!({"path": abs(0), "label": second}),
            json!({"path": abs(1), "label": "otter"})
        ]
    );
    let script = js(&tab, "vlmReport.exportScript()");
    assert!(
        script.as_str().unwrap().contains("link 'otter' "),
        "{script}"
    );

    // The corrections are a labelled list that `vlm fit`, `--examples` and `eval` read.
    let list = dir.path().join("corrections.jsonl");
    std::fs::write(&list, exported.as_str().unwrap()).unwrap();
    let data = vlm::dataset::Dataset::open(&list, &Default::default(), None).unwrap();
    assert_eq!(data.labels, ["dog", "otter"]);
    assert_eq!(data.images.len(), 2);

    assert_offline(&requests, &tab);
}

#[test]
fn self_contained_page_needs_no_files_folder() {
    let Some(browser) = browser() else { return };
    let (dir, results, _) = generated(20);
    let page = write_page(dir.path(), &results, &["--self-contained"]);
    assert!(!dir.path().join("review_files").exists());
    // Move the page away from the images: it must not need them.
    let alone = tempfile::tempdir().unwrap();
    let moved = alone.path().join("one.html");
    std::fs::copy(&page, &moved).unwrap();
    let (tab, requests) = open(&browser, &moved);
    wait_for(
        &tab,
        "[...document.querySelectorAll('#grid img')].length > 5 && [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)",
    );
    assert_eq!(js(&tab, "vlmReport.view().length"), json!(20));
    assert_offline(&requests, &tab);
}

#[test]
fn eval_report_heat_map_cells_list_their_images() {
    let Some(browser) = browser() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The page goes beside the data, not into it: its thumbnail folder would be a class.
    common::draw_domain(&dir.path().join("data"), 4, 6, 11);
    let model = common::tiny_model();
    run_ok(
        vlm()
            .current_dir(dir.path())
            .args([
                "eval",
                "data",
                "--template",
                "itap of a {}.",
                "--report",
                "eval.html",
            ])
            .arg("--model")
            .arg(&model),
    );
    let inside = vlm()
        .current_dir(dir.path())
        .args(["eval", "data", "--report", "data/eval.html"])
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    assert_eq!(inside.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&inside.stderr).contains("outside"));
    // What eval predicts is what classify ranks first (tests/eval.rs checks that), so
    // classify's records say which images belong in each cell.
    let classify = run_ok(
        vlm()
            .current_dir(dir.path())
            .args(["classify", "data", "--labels", "blue,green,red,yellow"])
            .args(["--template", "itap of a {}.", "--format", "jsonl"])
            .arg("--model")
            .arg(&model),
    );
    let mut cells: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8(classify.stdout).unwrap().lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let path = record["path"].as_str().unwrap().to_string();
        let truth = path.split('/').nth(1).unwrap().to_string();
        let predicted = top_label(&record).unwrap().to_string();
        cells.entry((truth, predicted)).or_default().insert(path);
    }

    let (tab, requests) = open(&browser, &dir.path().join("eval.html"));
    wait_for(
        &tab,
        "document.querySelectorAll('#eval .cell').length === 16",
    );
    let labels = js(&tab, "vlmReport.data.labels");
    assert_eq!(labels, json!(["blue", "green", "red", "yellow"]));
    // Click the busiest off-diagonal cell, or the busiest one if all are right.
    let ((truth, predicted), expected) = cells
        .iter()
        .max_by_key(|((t, p), paths)| (t != p, paths.len()))
        .unwrap();
    let t = labels
        .as_array()
        .unwrap()
        .iter()
        .position(|l| l == truth.as_str())
        .unwrap();
    let p = labels
        .as_array()
        .unwrap()
        .iter()
        .position(|l| l == predicted.as_str())
        .unwrap();
    let cell = tab
        .find_element(&format!(
            "#eval .cell[data-truth=\"{t}\"][data-pred=\"{p}\"]"
        ))
        .unwrap();
    assert_eq!(cell.get_inner_text().unwrap(), expected.len().to_string());
    cell.click().unwrap();
    let listed: BTreeSet<String> = js(
        &tab,
        "vlmReport.view().map(i => vlmReport.data.records[i].path)",
    )
    .as_array()
    .unwrap()
    .iter()
    .map(|v| v.as_str().unwrap().to_string())
    .collect();
    assert_eq!(&listed, expected, "cell ({truth}, {predicted})");
    wait_for(
        &tab,
        "document.querySelectorAll('#grid img').length > 0 && [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)",
    );
    js(&tab, "(window.scrollTo(0, 0), 0)");
    screenshot(&tab, "eval.png");
    assert_offline(&requests, &tab);
}

/// 20,000 records: the page's work is measured in the page and printed (not asserted:
/// the machines these tests run on are shared); what is asserted is that the grid stays
/// virtual, so the DOM holds a screenful of cards, not 20,000.
#[test]
fn twenty_thousand_images_keep_the_dom_small() {
    let Some(browser) = browser() else { return };
    let n = 20_000;
    let started = Instant::now();
    let (dir, results, _) = generated(n);
    let generated_in = started.elapsed();
    let started = Instant::now();
    let page = write_page(dir.path(), &results, &[]);
    let made = started.elapsed();
    let started = Instant::now();
    let (tab, _) = open(&browser, &page);
    let opened = started.elapsed();
    assert_eq!(js(&tab, "vlmReport.view().length"), json!(n));
    let height = js(&tab, "document.documentElement.scrollHeight")
        .as_f64()
        .unwrap();
    let mut most = 0;
    let mut y = 0.0;
    let scrolling = Instant::now();
    let step = height / 12.0;
    while y < height {
        js(&tab, &format!("(window.scrollTo(0, {y}), 0)"));
        std::thread::sleep(Duration::from_millis(30));
        most = most.max(
            js(&tab, "document.querySelectorAll('#grid .card').length")
                .as_u64()
                .unwrap(),
        );
        y += step;
    }
    assert!(most > 0 && most < 400, "{most} cards in the DOM");
    eprintln!(
        "12 scroll steps took {:.1} s",
        scrolling.elapsed().as_secs_f64()
    );
    let t = js(
        &tab,
        "(() => { const m = (f) => { const t = performance.now(); f(); return performance.now() - t; };
            const r = {
              startup: vlmReport.timings.startup,
              filter_label: m(() => vlmReport.setFilter({type: 'label', label: 'dog'})),
              filter_all: m(() => vlmReport.setFilter({type: 'all'})),
              sort_name: m(() => vlmReport.setSort('name')),
              sort_confidence: m(() => vlmReport.setSort('confidence')),
              search: m(() => vlmReport.setSearch('img 1')),
            };
            vlmReport.setSearch('');
            const renders = vlmReport.timings.renders.slice().sort((a, b) => a - b);
            r.render_median = renders[renders.length >> 1];
            r.render_max = renders[renders.length - 1];
            return r; })()",
    );
    eprintln!(
        "20,000 records: generated in {:.1} s, page written in {:.1} s ({} bytes), opened in {:.1} s; in the page (ms): {t}; at most {most} cards in the DOM",
        generated_in.as_secs_f64(),
        made.as_secs_f64(),
        std::fs::metadata(&page).unwrap().len(),
        opened.as_secs_f64(),
    );
}

// ---------------------------------------------------------------- without a browser

#[test]
fn report_of_a_folder_classifies_it_first() {
    let dir = tempfile::tempdir().unwrap();
    common::draw_domain(&dir.path().join("data"), 2, 3, 5);
    // `vlm report data --labels red,green --output PAGE --quiet`, plus `extra`.
    let report_data = |page: &str, extra: &[&str]| {
        run_ok(
            vlm()
                .current_dir(dir.path())
                .args(["report", "data", "--labels", "red,green", "--output", page])
                .args(extra)
                .arg("--model")
                .arg(common::tiny_model())
                .arg("--quiet"),
        )
    };
    let output = report_data("out/page.html", &[]);
    assert!(output.stdout.is_empty());
    let results = std::fs::read_to_string(dir.path().join("out/page.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 6);
    let html = std::fs::read_to_string(dir.path().join("out/page.html")).unwrap();
    assert!(html.contains("Content-Security-Policy"));
    assert_eq!(
        std::fs::read_dir(dir.path().join("out/page_files/t"))
            .unwrap()
            .count(),
        6
    );

    // A folder without labels, and a missing results file, are errors that say what to do.
    let folder = vlm()
        .current_dir(dir.path())
        .args(["report", "data", "--output", "x.html"])
        .output()
        .unwrap();
    assert_eq!(folder.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&folder.stderr).contains("--labels"));
    let missing = vlm()
        .current_dir(dir.path())
        .args(["report", "nothing.jsonl", "--output", "x.html"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nothing.jsonl"));
    assert!(!dir.path().join("x.html").exists());

    // Flags that act on images while classifying: taken when the report classifies first,
    // refused with results files rather than ignored.
    report_data("y.html", &["--write-xmp"]);
    let sidecars = walkdir::WalkDir::new(dir.path().join("data"))
        .into_iter()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "xmp")
        })
        .count();
    assert_eq!(sidecars, 6);
    for extra in [&["--write-xmp"][..], &["--organize", "link", "--dest", "d"]] {
        let refused = vlm()
            .current_dir(dir.path())
            .args(["report", "out/page.jsonl", "--output", "x.html"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(refused.status.code(), Some(2), "{extra:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("vlm classify"),
            "{extra:?}: {}",
            String::from_utf8_lossy(&refused.stderr)
        );
    }
    assert!(!dir.path().join("x.html").exists());
}

#[test]
fn exported_corrections_feed_eval_fit_and_examples() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::draw_domain(&data, 2, 4, 9);
    let model = common::tiny_model();
    let eval_json = |extra: &[&str]| -> Value {
        let out = run_ok(
            vlm()
                .current_dir(dir.path())
                .args(["eval", "data", "--format", "json", "--quiet"])
                .arg("--model")
                .arg(&model)
                .args(extra),
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let before = eval_json(&[]);
    assert_eq!(before["classes"], json!(["green", "red"]));
    assert_eq!(before["per_class"][1]["support"], json!(4));

    // What the page exports: absolute paths, one label each; one red image was a mistake.
    let red0 = std::fs::canonicalize(data.join("red/00.png")).unwrap();
    let green0 = std::fs::canonicalize(data.join("green/00.png")).unwrap();
    let list = dir.path().join("vlm-corrections.jsonl");
    std::fs::write(
        &list,
        format!(
            "{}\n{}\n{}\n",
            json!({"path": red0, "label": "green"}),
            json!({"path": green0, "label": "green"}),
            // Relative paths are taken from the current folder.
            json!({"path": "data/red/01.png", "label": "red"})
        ),
    )
    .unwrap();
    let after = eval_json(&["--labels-file", list.to_str().unwrap()]);
    assert_eq!(after["per_class"][0]["support"], json!(5));
    assert_eq!(after["per_class"][1]["support"], json!(3));

    // The list alone is a labelled set for eval and fit, and examples for classify.
    let alone = eval_json_list(&dir, &model, &list);
    assert_eq!(alone["images"], json!(3));
    assert_eq!(alone["classes"], json!(["green", "red"]));
    run_ok(
        vlm()
            .current_dir(dir.path())
            .arg("fit")
            .arg(&list)
            .args([
                "--out",
                "probe.safetensors",
                "--holdout",
                "0",
                "--epochs",
                "5",
                "--quiet",
            ])
            .arg("--model")
            .arg(&model),
    );
    assert!(dir.path().join("probe.safetensors").is_file());
    let classified = run_ok(
        vlm()
            .current_dir(dir.path())
            .args([
                "classify",
                "data",
                "--labels",
                "green,red",
                "--format",
                "jsonl",
                "--quiet",
            ])
            .arg("--examples")
            .arg(&list)
            .arg("--model")
            .arg(&model),
    );
    assert_eq!(
        String::from_utf8(classified.stdout)
            .unwrap()
            .lines()
            .count(),
        8
    );
}

fn eval_json_list(dir: &tempfile::TempDir, model: &Path, list: &Path) -> Value {
    let out = run_ok(
        vlm()
            .current_dir(dir.path())
            .arg("eval")
            .arg(list)
            .args(["--format", "json", "--quiet"])
            .arg("--model")
            .arg(model),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn caption_page_shows_captions_as_text_and_searches_them() {
    let Some(browser) = browser() else { return };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pics");
    squares(&root, &[[200, 40, 40], [40, 200, 40], [40, 40, 200]]);
    let captions = dir.path().join("captions.jsonl");
    run_ok(
        vlm()
            .current_dir(dir.path())
            .args(["caption", "pics", "--output"])
            .arg(&captions)
            .arg("--model")
            .arg(common::fixtures().join("models/blip-caption")),
    );
    // The model's own captions, with two rewritten: one to search for, one hostile.
    let hostile = "<img src=x onerror=\"window.__pwned=3\"> & <b>bold</b>";
    let mut records: Vec<Value> = std::fs::read_to_string(&captions)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    records.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    assert_eq!(records.len(), 3);
    let model_caption = records[2]["caption"].as_str().unwrap().to_string();
    records[0]["caption"] = json!("a red bicycle near the bench");
    records[1]["caption"] = json!(hostile);
    // Sureness per token: 0.png -1.0 (six tokens), 1.png -2.0 (two), 2.png -0.5 (three).
    // Summed, 0.png (-6) would be the least sure and 1.png (-4) next.
    for (record, (log_prob, generated)) in records.iter_mut().zip([(-6.0, 6), (-4.0, 2), (-1.5, 3)])
    {
        let start = record["tokens"][0].clone();
        let mut tokens = vec![start];
        tokens.extend((0..generated).map(|k| json!(1000 + k)));
        record["tokens"] = json!(tokens);
        record["log_prob"] = json!(log_prob);
    }
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&captions, text).unwrap();
    let page = write_page(dir.path(), &captions, &[]);

    let (tab, requests) = open(&browser, &page);
    wait_for(
        &tab,
        "document.querySelectorAll('#grid .card').length === 3",
    );
    let shown = js(
        &tab,
        "[...document.querySelectorAll('#grid .card')].map(c => [c.querySelector('.name').textContent, c.querySelector('.caption').textContent]).sort()",
    );
    assert_eq!(
        shown,
        json!([
            ["0.png", "a red bicycle near the bench"],
            ["1.png", hostile],
            ["2.png", model_caption]
        ])
    );
    assert_eq!(js(&tab, "typeof window.__pwned"), json!("undefined"));
    assert_eq!(
        js(
            &tab,
            "document.querySelectorAll('img[src=\"x\"], #grid b').length"
        ),
        json!(0)
    );
    // Nothing to group by or be unsure of without labels, and no label to set by key.
    assert_eq!(js(&tab, LABEL_CONTROLS_SHOWN), json!([false, false, false]));
    let hints = js(&tab, KEY_HINTS);
    let hints = hints.as_str().unwrap();
    assert!(hints.contains("arrows move"), "{hints}");
    for label_key in ["1-9", "set label", "0 clears", "new label"] {
        assert!(!hints.contains(label_key), "{label_key} in {hints}");
    }
    // Least sure first (the default): by log-probability per token, lowest first.
    assert_eq!(
        js(
            &tab,
            "document.getElementById('sort').selectedOptions[0].textContent"
        ),
        json!("least sure first")
    );
    assert_eq!(js(&tab, CARDS_IN_ORDER), json!(["1.png", "0.png", "2.png"]));
    js(&tab, "(vlmReport.setSort('confidence-desc'), 0)");
    wait_for(
        &tab,
        "document.querySelectorAll('#grid .card').length === 3",
    );
    assert_eq!(js(&tab, CARDS_IN_ORDER), json!(["2.png", "0.png", "1.png"]));
    js(&tab, "(vlmReport.setSort('confidence'), 0)");
    // No image counts as failed for lack of label scores.
    assert_eq!(
        js(
            &tab,
            "document.querySelectorAll('#grid .card.failed').length"
        ),
        json!(0)
    );
    let index_of = |path: &str| {
        let records = js(&tab, "vlmReport.data.records.map(r => r.path)");
        records
            .as_array()
            .unwrap()
            .iter()
            .position(|p| p == path)
            .unwrap()
    };
    js(&tab, "(vlmReport.setSearch('RED bicycle'), 0)");
    assert_eq!(
        js(&tab, "vlmReport.view()"),
        json!([index_of("pics/0.png")])
    );
    js(&tab, "(vlmReport.setSearch('<b>bold'), 0)");
    assert_eq!(
        js(&tab, "vlmReport.view()"),
        json!([index_of("pics/1.png")])
    );
    js(&tab, "(vlmReport.setSearch('2.png'), 0)");
    assert_eq!(
        js(&tab, "vlmReport.view()"),
        json!([index_of("pics/2.png")])
    );
    js(&tab, "(vlmReport.setSearch('bicycle'), 0)");
    js(&tab, "(vlmReport.openDetail(0), 0)");
    assert_eq!(
        js(
            &tab,
            "document.getElementById('detail-caption').textContent"
        ),
        json!("a red bicycle near the bench")
    );
    // exp(-1) = 36.8% a token.
    let status = js(&tab, "document.getElementById('detail-status').textContent");
    assert!(
        status
            .as_str()
            .unwrap()
            .contains("caption sureness 36.8% a token (mean log-probability -1.000)"),
        "{status}"
    );
    screenshot(&tab, "captions-detail.png");
    js(
        &tab,
        "(vlmReport.closeDetail(), vlmReport.setSearch(''), 0)",
    );
    wait_for(
        &tab,
        "document.querySelectorAll('#grid .card').length === 3",
    );
    screenshot(&tab, "captions.png");
    assert_offline(&requests, &tab);
}

/// Plain pictures `root/0.png`, `root/1.png`, ... of the given colours.
fn squares(root: &Path, colours: &[[u8; 3]]) {
    std::fs::create_dir_all(root).unwrap();
    for (i, colour) in colours.iter().enumerate() {
        image::RgbImage::from_pixel(48, 36, image::Rgb(*colour))
            .save(root.join(format!("{i}.png")))
            .unwrap();
    }
}

/// Records of a JSON Lines file.
fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn labels_and_captions_of_one_folder_join_on_one_page() {
    let Some(browser) = browser() else { return };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pics");
    squares(
        &root,
        &[
            [200, 40, 40],
            [40, 200, 40],
            [40, 40, 200],
            [200, 200, 40],
            [40, 200, 200],
        ],
    );
    // Labels for 0-3, captions for 1-4, named `./pics/..` by the caption run.
    let labels = dir.path().join("labels.jsonl");
    run_ok(
        vlm()
            .current_dir(dir.path())
            .args([
                "classify",
                "pics/0.png",
                "pics/1.png",
                "pics/2.png",
                "pics/3.png",
            ])
            .args(["--labels", "red,green,blue", "--output"])
            .arg(&labels)
            .arg("--model")
            .arg(common::tiny_model()),
    );
    let captions = dir.path().join("captions.jsonl");
    run_ok(
        vlm()
            .current_dir(dir.path())
            .args([
                "caption",
                "./pics/1.png",
                "./pics/2.png",
                "./pics/3.png",
                "./pics/4.png",
            ])
            .arg("--output")
            .arg(&captions)
            .arg("--model")
            .arg(common::fixtures().join("models/blip-caption")),
    );
    let mut captioned = read_jsonl(&captions);
    assert_eq!(captioned[1]["path"], "./pics/2.png");
    captioned[1]["caption"] = json!("a red bicycle near the bench");
    let text: String = captioned.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&captions, text).unwrap();
    let page = write_page(dir.path(), &labels, &[captions.to_str().unwrap()]);

    let (tab, requests) = open(&browser, &page);
    wait_for(
        &tab,
        "document.querySelectorAll('#grid .card').length === 5",
    );
    assert!(js(&tab, "document.title")
        .as_str()
        .unwrap()
        .ends_with("labels.jsonl + captions.jsonl"));
    // Each card: its name, its top label (if labelled) and its caption (if captioned).
    let cards = js(
        &tab,
        "[...document.querySelectorAll('#grid .card')].map(c => [c.querySelector('.name').textContent, (c.querySelector('.label') || {}).textContent || null, (c.querySelector('.caption') || {}).textContent || null]).sort()",
    );
    let top: BTreeMap<String, String> = read_jsonl(&labels)
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                top_label(r).unwrap().to_string(),
            )
        })
        .collect();
    let caption_of = |i: usize| captioned[i - 1]["caption"].as_str().unwrap().to_string();
    assert_eq!(
        cards,
        json!([
            ["0.png", top["pics/0.png"], null],
            ["1.png", top["pics/1.png"], caption_of(1)],
            ["2.png", top["pics/2.png"], caption_of(2)],
            ["3.png", top["pics/3.png"], caption_of(3)],
            ["4.png", null, caption_of(4)],
        ])
    );
    // With labels, the label controls and keys stay.
    assert_eq!(js(&tab, LABEL_CONTROLS_SHOWN), json!([true, true, true]));
    let hints = js(&tab, KEY_HINTS);
    assert!(hints.as_str().unwrap().contains("1-9 set label"), "{hints}");
    // Every thumbnail box is as tall as every other, captioned (1-4) or not (0), labelled
    // (0-3) or not (4); ungrouped, all five cards share one row.
    js(&tab, "(vlmReport.setGroup(false), 0)");
    wait_for(
        &tab,
        "document.querySelectorAll('#grid .card').length === 5",
    );
    let boxes = js(
        &tab,
        "[...document.querySelectorAll('#grid .card')].map(c => { const t = c.querySelector('.thumb').getBoundingClientRect(); return [c.querySelector('.name').textContent, Math.round(t.top), Math.round(t.height)]; }).sort()",
    );
    let boxes = boxes.as_array().unwrap();
    assert_eq!(boxes.len(), 5);
    for (name, top, height) in boxes.iter().map(|b| (&b[0], &b[1], &b[2])) {
        assert_eq!(
            (top, height),
            (&boxes[0][1], &boxes[0][2]),
            "{name}: {boxes:?}"
        );
    }
    screenshot(&tab, "joined-row.png");
    js(&tab, "(vlmReport.setGroup(true), 0)");
    wait_for(
        &tab,
        "document.querySelectorAll('#grid .card').length === 5",
    );
    screenshot(&tab, "joined.png");

    // A caption's words find the image; its card still shows its label.
    js(&tab, "(vlmReport.setSearch('RED bicycle'), 0)");
    let found = js(
        &tab,
        "vlmReport.view().map(i => vlmReport.data.records[i].path)",
    );
    assert_eq!(found, json!(["pics/2.png"]));
    wait_for(
        &tab,
        "document.querySelectorAll('#grid .card').length === 1",
    );
    assert_eq!(
        js(
            &tab,
            "document.querySelector('#grid .card .label').textContent"
        ),
        json!(top["pics/2.png"])
    );
    js(&tab, "(vlmReport.openDetail(0), 0)");
    assert_eq!(
        js(&tab, "[document.getElementById('detail-caption').textContent, document.querySelectorAll('#bars .bar').length]"),
        json!(["a red bicycle near the bench", 3])
    );
    screenshot(&tab, "joined-detail.png");
    assert_offline(&requests, &tab);
}

#[test]
fn duplicates_page_shows_each_group_with_its_thumbnails() {
    let Some(browser) = browser() else { return };
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    let samples = common::near_duplicates::write_set(&set, 12, 5);
    // A byte-for-byte copy, last in its group, is as similar to the first image as the
    // first is to itself: the page must still show which one is first.
    let original = &samples[0].path;
    let extension = original.extension().unwrap().to_str().unwrap();
    std::fs::copy(original, set.join(format!("img-9999999-copy.{extension}"))).unwrap();
    let page = dir.path().join("dups.html");
    let output = run_ok(
        vlm()
            .arg("dedup")
            .arg(&set)
            .arg("--model")
            .arg(common::fixtures().join("models/thumbnail"))
            .arg("--report")
            .arg(&page)
            .args(["-f", "jsonl", "-q"]),
    );
    let groups: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(groups.len() >= 3, "{} groups", groups.len());
    let (tab, requests) = open(&browser, &page);
    wait_for(
        &tab,
        "[...document.querySelectorAll('#grid img')].length > 3 && [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)",
    );
    screenshot(&tab, "duplicates.png");
    // One section per group, in order, each opening with its first image.
    let sections = js(
        &tab,
        "vlmReport.state.sections.map(s => ({ name: s.name, items: s.items.map(i => vlmReport.data.records[i].path) }))",
    );
    let sections = sections.as_array().unwrap();
    assert_eq!(sections.len(), groups.len());
    for (section, group) in sections.iter().zip(&groups) {
        assert_eq!(section["name"], format!("group {}", group["group"]));
        let paths: Vec<&Value> = group["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| &m["path"])
            .collect();
        assert_eq!(
            section["items"]
                .as_array()
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            paths
        );
    }
    let first_card = js(
        &tab,
        "document.querySelector('#grid .card .prob').textContent",
    );
    assert_eq!(first_card, json!("first"));
    // Each card says "first" exactly when it is its group's first image, the exact copy
    // (similarity 1) included; scroll to the copy's group so that its cards are drawn.
    let copy_group = sections
        .iter()
        .position(|s| s["items"].to_string().contains("img-9999999-copy"))
        .expect("the copy is in a group");
    js(
        &tab,
        &format!(
            "(() => {{ const r = vlmReport.state.rows.find(r => r.head === {copy_group}); \
               const g = document.getElementById('grid'); \
               window.scrollTo(0, g.getBoundingClientRect().top + window.scrollY + r.y); return 0; }})()"
        ),
    );
    wait_for(
        &tab,
        "[...document.querySelectorAll('#grid .card .name')].some(n => n.textContent.startsWith('img-9999999-copy'))",
    );
    let firsts_right = format!(
        "(() => {{ const s = vlmReport.state.sections; \
           const firsts = new Set(s.map(x => vlmReport.data.records[x.items[0]].path.split('/').pop())); \
           const names = new Set(s[{copy_group}].items.map(i => vlmReport.data.records[i].path.split('/').pop())); \
           const cards = [...document.querySelectorAll('#grid .card')]; \
           const seen = cards.filter(c => names.has(c.querySelector('.name').textContent)).length; \
           return [seen, cards.every(c => (c.querySelector('.prob').textContent === 'first') === firsts.has(c.querySelector('.name').textContent))]; }})()"
    );
    assert_eq!(
        js(&tab, &firsts_right),
        json!([
            sections[copy_group]["items"].as_array().unwrap().len(),
            true
        ])
    );
    // Nothing to relabel: the correction controls are hidden and keys set no label.
    assert_eq!(
        js(
            &tab,
            "document.getElementById('choices').offsetParent === null"
        ),
        json!(true)
    );
    assert_eq!(
        js(
            &tab,
            "document.getElementById('export-jsonl').offsetParent === null"
        ),
        json!(true)
    );
    js(&tab, "(vlmReport.openDetail(1), document.dispatchEvent(new KeyboardEvent('keydown', { key: '1' })), 0)");
    assert_eq!(js(&tab, "vlmReport.corrections().length"), json!(0));
    let bar = js(
        &tab,
        "document.querySelector('#bars .bar .val').textContent",
    );
    assert!(
        bar.as_str().unwrap().starts_with("0.") || bar == json!("1.000"),
        "{bar}"
    );
    screenshot(&tab, "duplicates-detail.png");
    assert_offline(&requests, &tab);
}
