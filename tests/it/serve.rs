//! `vlm serve` driven by real clients: curl, and the official `openai` Python client
//! (from the git-ignored venv `.venv-scale` that `.ci/install-venv` makes; `VLM_OPENAI_PYTHON`
//! names another Python). Without that Python the openai test prints a notice and passes,
//! unless VLM_REQUIRE_OPENAI=1, where it fails. Each test starts its own server on a free
//! loopback port (`--port 0`; the address is read from its log) and stops it with SIGTERM.
//! With the BLIP fixtures, `/v1/caption` and `/v1/ask` answer what `vlm caption` and `vlm
//! ask` write, alone or batched with other requests.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::common::{draw_domain, fixtures, stderr, tiny_model, vlm};

/// A running `vlm serve`, killed on drop if a test did not stop it.
struct Server {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts `vlm serve` on the tiny model with `args` and waits for its address.
    fn start(args: &[&str]) -> Self {
        Self::start_with(&tiny_model(), args)
    }

    /// Starts `vlm serve --model MODEL` with `args` and waits for its address.
    fn start_with(model: &Path, args: &[&str]) -> Self {
        let mut command = vlm();
        command
            .arg("serve")
            .arg("--model")
            .arg(model)
            .args(["--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start vlm serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let reader = {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some((_, rest)) = line.split_once(" on http://") {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send(addr);
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            })
        };
        let addr = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("vlm serve did not start:\n{}", log.lock().unwrap());
            }
        };
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        Self {
            child,
            addr,
            log,
            reader: Some(reader),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `curl` on `path` with `args`, the body (if any) on stdin.
    fn curl(&self, path: &str, args: &[&str], body: Option<&[u8]>) -> Reply {
        curl(&self.url(path), args, body)
    }

    /// POSTs `body` as JSON to `path`, with `args` for curl (headers).
    fn post(&self, path: &str, body: &Value, args: &[&str]) -> Reply {
        let body = serde_json::to_vec(body).unwrap();
        let mut all = vec!["-H", "Content-Type: application/json"];
        all.extend_from_slice(args);
        self.curl(path, &all, Some(&body))
    }

    fn get(&self, path: &str) -> Reply {
        self.curl(path, &[], None)
    }

    /// One sample of `/metrics`: the value of the line that starts with `series ` exactly.
    fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").body;
        metric(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    /// Waits (up to a minute) until `/metrics` says the queue holds `depth` images.
    fn wait_for_queue_depth(&self, depth: usize) {
        let started = Instant::now();
        while self.metric("vlm_queue_depth") != depth as f64 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the queue never held {depth} images"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the process to end; its exit status and whole log.
    fn terminate(mut self) -> (ExitStatus, String) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: a signal to our own child, which has not been waited for yet.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = wait_at_most(&mut self.child, Duration::from_secs(60));
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let log = self.log.lock().unwrap().clone();
        (status, log)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_at_most(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("vlm serve did not stop within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What curl got: the status, the headers (lower-case names) and the body.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The message of an error body.
    fn message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {}", self.body))
            .to_string()
    }
}

/// Runs curl on `url` (status line and headers included in its output).
fn curl(url: &str, args: &[&str], body: Option<&[u8]>) -> Reply {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "-i", "--max-time", "120"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if body.is_some() {
        command.args(["--data-binary", "@-"]);
    }
    command.arg(url);
    let mut child = command
        .spawn()
        .expect("run curl (is it installed? .ci/install)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(body) = body {
        // A server that answers before reading the whole body (413) may close early.
        let _ = stdin.write_all(body);
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "curl {url}: {}", stderr(&output));
    let text = String::from_utf8(output.stdout).expect("UTF-8 answer");
    // A large body is sent after "100 Continue", which curl prints as its own head.
    let mut text = text.as_str();
    while text.starts_with("HTTP/1.1 100") {
        text = text.split_once("\r\n\r\n").map_or("", |(_, rest)| rest);
    }
    let (head, body) = text.split_once("\r\n\r\n").expect("headers and body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn data_uri(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Draws the test pictures: `per_class` of each of the four colours.
fn pictures(dir: &Path, per_class: usize) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = draw_domain(dir, 4, per_class, 23)
        .iter()
        .flat_map(|folder| {
            std::fs::read_dir(folder)
                .unwrap()
                .map(|e| e.unwrap().path())
        })
        .collect();
    files.sort();
    files
}

/// `vlm embed` of `paths` (unit length, as the server answers): one row per path.
fn embed_with_cli(paths: &[PathBuf], dir: &Path) -> Vec<Vec<f32>> {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    vlm_embed(&names, "path", &names, dir)
}

/// `vlm embed --text` of `texts`.
fn embed_texts_with_cli(texts: &[&str], dir: &Path) -> Vec<Vec<f32>> {
    let names: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    vlm_embed(&["--text".into(), texts.join(",")], "text", &names, dir)
}

/// `vlm embed ARGS -o FILE.jsonl`: the rows named `names` (in field `key`), in that order.
fn vlm_embed(args: &[String], key: &str, names: &[String], dir: &Path) -> Vec<Vec<f32>> {
    let out = dir.join("cli-embeddings.jsonl");
    let output = vlm()
        .arg("embed")
        .args(args)
        .arg("--model")
        .arg(tiny_model())
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&out).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    names
        .iter()
        .map(|name| {
            let record = records
                .iter()
                .find(|r| r[key] == name.as_str())
                .unwrap_or_else(|| panic!("{name} not in {}", out.display()));
            floats(&record["embedding"])
        })
        .collect()
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-6,
        "{what}: differs by {worst}\n{got:?}\n{want:?}"
    );
}

/// The embedding rows of an embeddings response.
fn response_rows(reply: &Reply) -> Vec<Vec<f32>> {
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["object"], "list");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i);
            floats(&d["embedding"])
        })
        .collect()
}

fn image_request(paths: &[&Path]) -> Value {
    let inputs: Vec<String> = paths.iter().map(|p| data_uri(p)).collect();
    json!({"model": "anything", "input": inputs, "modality": "image"})
}

#[test]
fn health_models_and_metrics_answer() {
    let server = Server::start(&[]);
    let health = server.get("/health");
    assert_eq!(health.status, 200);
    let model = tiny_model().display().to_string();
    assert_eq!(
        health.json(),
        json!({"status": "ok", "model": model, "task": "classify"})
    );
    let models = server.get("/v1/models").json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], model.as_str());
    assert_eq!(models["data"][0]["task"], "classify");
    assert_eq!(server.get("/nowhere").status, 404);
    // Captions and answers need a BLIP checkpoint: refused with what fits this one.
    for endpoint in ["/v1/caption", "/v1/ask"] {
        let request = json!({"image": "data:image/png;base64,AAAA", "question": "what?"});
        let refused = server.post(endpoint, &request, &[]);
        assert_eq!(refused.status, 400, "{}", refused.body);
        let message = refused.message();
        assert!(
            message.contains("image-text matching checkpoint")
                && message.contains("POST /v1/classify")
                && message.contains("`vlm classify`"),
            "{message}"
        );
    }
    let metrics = server.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
    for series in [
        "vlm_requests_total{endpoint=\"/health\",status=\"200\"}",
        "vlm_requests_total{endpoint=\"other\",status=\"404\"}",
        "vlm_batch_size_count",
        "vlm_queue_depth",
        "vlm_queue_capacity",
    ] {
        assert!(metric(&metrics.body, series).is_some(), "{series}");
    }
    assert_eq!(metric(&metrics.body, "vlm_queue_capacity"), Some(256.0));
    let (status, log) = server.terminate();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("stopped after answering"), "{log}");
}

/// Where the openai client's Python is; `None` after a notice (or a failure under
/// VLM_REQUIRE_OPENAI=1) when it is missing.
fn openai_python() -> Option<PathBuf> {
    let python = std::env::var_os("VLM_OPENAI_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-scale/bin/python"),
        PathBuf::from,
    );
    let usable = Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if usable {
        return Some(python);
    }
    let message = format!(
        "no Python with the openai package at {} (VLM_OPENAI_PYTHON); run .ci/install-venv",
        python.display()
    );
    if std::env::var("VLM_REQUIRE_OPENAI").as_deref() == Ok("1") {
        panic!("VLM_REQUIRE_OPENAI=1 but {message}");
    }
    eprintln!("SKIPPED openai client test: {message}");
    None
}

/// The official client, as an application would call it: texts, and images with Infinity's
/// `modality` passed as an extra body field. It asks for base64 embeddings by default.
const OPENAI_CLIENT: &str = r#"
import json, sys
from openai import OpenAI

base_url, request_file = sys.argv[1:]
request = json.load(open(request_file))
client = OpenAI(base_url=base_url, api_key="not-checked", max_retries=0, timeout=120)
images = client.embeddings.create(
    model="any-name", input=request["images"], extra_body={"modality": "image"}
)
texts = client.embeddings.create(model="any-name", input=request["texts"])
floats = client.embeddings.create(
    model="any-name", input=request["texts"][0], encoding_format="float"
)
print(json.dumps({
    "model": images.model,
    "images": [d.embedding for d in images.data],
    "texts": [d.embedding for d in texts.data],
    "float": floats.data[0].embedding,
    "prompt_tokens": texts.usage.prompt_tokens,
}))
"#;

#[test]
fn openai_client_embeddings_equal_vlm_embed() {
    let Some(python) = openai_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = pictures(dir.path(), 2);
    let texts = ["a red square", "a photo of a green disc", "blue"];
    let want_images = embed_with_cli(&files, dir.path());
    let want_texts = embed_texts_with_cli(&texts, dir.path());
    let server = Server::start(&[]);
    let request = dir.path().join("request.json");
    let images: Vec<String> = files.iter().map(|p| data_uri(p)).collect();
    std::fs::write(
        &request,
        json!({"images": images, "texts": texts}).to_string(),
    )
    .unwrap();
    let output = Command::new(&python)
        .args(["-c", OPENAI_CLIENT, &server.url("/v1")])
        .arg(&request)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let got: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(got["model"], tiny_model().display().to_string().as_str());
    let got_images: Vec<Vec<f32>> = got["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    assert_eq!(got_images.len(), files.len());
    for ((got, want), file) in got_images.iter().zip(&want_images).zip(&files) {
        assert_close(got, want, &file.display().to_string());
    }
    let got_texts: Vec<Vec<f32>> = got["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    assert_eq!(got_texts.len(), texts.len());
    for ((got, want), text) in got_texts.iter().zip(&want_texts).zip(texts) {
        assert_close(got, want, text);
    }
    assert_close(&floats(&got["float"]), &want_texts[0], "float format");
    assert!(got["prompt_tokens"].as_u64().unwrap() >= texts.len() as u64);
    let (status, _) = server.terminate();
    assert!(status.success());
}

/// Two JSON values equal, numbers within 1e-6.
fn assert_json_close(got: &Value, want: &Value, at: &str) {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!((a - b).abs() <= 1e-6, "{at}: {a} != {b}");
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{at}: length");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_json_close(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(a), keys(b), "{at}: fields");
            for (k, x) in a {
                assert_json_close(x, &b[k], &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(got, want, "{at}"),
    }
}

#[test]
fn classify_answers_what_vlm_classify_writes() {
    let dir = tempfile::tempdir().unwrap();
    let files = pictures(dir.path(), 1);
    let server = Server::start(&[]);
    let templates = dir.path().join("templates.txt");
    std::fs::write(&templates, "# two\na photo of a {}.\na {} shape\n").unwrap();
    // (flags of `vlm classify`, the same request as JSON)
    let cases: [(Vec<String>, Value); 3] = [
        (
            vec!["--labels".into(), "red,green,blue|navy,yellow".into()],
            json!({"labels": "red,green,blue|navy,yellow"}),
        ),
        (
            vec![
                "--labels".into(),
                "red,green,blue".into(),
                "--templates".into(),
                templates.display().to_string(),
                "--multi-label".into(),
                "--threshold".into(),
                "0.05".into(),
                "--top-k".into(),
                "2".into(),
            ],
            json!({"labels": ["red", "green", "blue"],
                   "templates": "# two\na photo of a {}.\na {} shape\n",
                   "multi_label": true, "threshold": 0.05, "top_k": 2}),
        ),
        (
            vec![
                "--labels".into(),
                "red,green".into(),
                "--min-probability".into(),
                "0.9".into(),
                "--template".into(),
                "{}".into(),
            ],
            json!({"labels_file": "red\n# comment\ngreen\n", "min_probability": 0.9,
                   "template": "{}"}),
        ),
    ];
    for (flags, mut request) in cases {
        for file in &files {
            let output = vlm()
                .arg("classify")
                .arg(file)
                .args(&flags)
                .arg("--model")
                .arg(tiny_model())
                .args(["--format", "json"])
                .output()
                .unwrap();
            assert!(output.status.success(), "{}", stderr(&output));
            let cli: Value = serde_json::from_slice(&output.stdout).unwrap();
            request["image"] = data_uri(file).into();
            request["name"] = file.display().to_string().into();
            request["model"] = "whatever".into();
            let reply = server.post("/v1/classify", &request, &[]);
            assert_eq!(reply.status, 200, "{}", reply.body);
            assert_json_close(
                &reply.json(),
                &cli[0],
                &format!("{flags:?} {}", file.display()),
            );
        }
    }
    let refused = server.post("/v1/classify", &json!({"image": data_uri(&files[0])}), &[]);
    assert_eq!(refused.status, 400);
    assert!(
        refused.message().contains("no labels given"),
        "{}",
        refused.body
    );
}

#[test]
fn concurrent_requests_are_batched_and_all_answered_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let files = pictures(dir.path(), 2);
    let want = embed_with_cli(&files, dir.path());
    // A wait long enough that requests started together meet in the encoder even on a
    // loaded machine.
    let server = Server::start(&["--max-wait-ms", "200", "--max-batch", "64"]);
    let server = Arc::new(server);
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let server = Arc::clone(&server);
            let k = i % files.len();
            let body = image_request(&[&files[k]]);
            std::thread::spawn(move || (k, server.post("/v1/embeddings", &body, &[])))
        })
        .collect();
    for thread in threads {
        let (k, reply) = thread.join().unwrap();
        let rows = response_rows(&reply);
        assert_eq!(rows.len(), 1);
        assert_close(&rows[0], &want[k], &files[k].display().to_string());
    }
    assert_eq!(server.metric("vlm_batch_size_sum"), 64.0);
    let batches = server.metric("vlm_batch_size_count");
    let single = server.metric("vlm_batch_size_bucket{le=\"1\"}");
    assert!(
        single < batches && batches < 64.0,
        "{batches} encoder calls for 64 requests, {single} of one image"
    );
    assert_eq!(
        server.metric("vlm_requests_total{endpoint=\"/v1/embeddings\",status=\"200\"}"),
        64.0
    );
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let files = pictures(dir.path(), 1);
    // Two images fill the queue and wait 5 s for company.
    let server = Arc::new(Server::start(&[
        "--queue",
        "2",
        "--max-wait-ms",
        "5000",
        "--max-batch",
        "64",
    ]));
    let first = {
        let server = Arc::clone(&server);
        let body = image_request(&[&files[0], &files[1]]);
        std::thread::spawn(move || server.post("/v1/embeddings", &body, &[]))
    };
    server.wait_for_queue_depth(2);
    let refused = server.post("/v1/embeddings", &image_request(&[&files[2]]), &[]);
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        refused.message().contains("queue is full"),
        "{}",
        refused.body
    );
    let classify = json!({"image": data_uri(&files[2]), "labels": "red,blue"});
    assert_eq!(server.post("/v1/classify", &classify, &[]).status, 429);
    // More images than the queue ever holds: never accepted, so 413, not 429.
    let too_many = server.post(
        "/v1/embeddings",
        &image_request(&[&files[0], &files[1], &files[2]]),
        &[],
    );
    assert_eq!(too_many.status, 413, "{}", too_many.body);
    assert_eq!(response_rows(&first.join().unwrap()).len(), 2);
    // Room again.
    let accepted = server.post("/v1/embeddings", &image_request(&[&files[2]]), &[]);
    assert_eq!(response_rows(&accepted).len(), 1);
}

#[test]
fn a_bad_image_is_a_400_with_the_cli_message_while_others_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let files = pictures(dir.path(), 1);
    let want = embed_with_cli(&files, dir.path());
    let bad = dir.path().join("broken.png");
    let png = std::fs::read(&files[0]).unwrap();
    std::fs::write(&bad, &png[..png.len() / 3]).unwrap();
    // What the CLI says of the same file.
    let output = vlm()
        .arg("embed")
        .arg(&bad)
        .arg("--model")
        .arg(tiny_model())
        .arg("-o")
        .arg(dir.path().join("bad.jsonl"))
        .output()
        .unwrap();
    let cli = stderr(&output);
    let shown = bad.display().to_string();
    let cli_cause = cli
        .lines()
        .find_map(|l| l.strip_prefix(&format!("vlm: {shown}")))
        .unwrap_or_else(|| panic!("no message about {shown} in {cli}"))
        .to_string();
    let server = Arc::new(Server::start(&["--max-wait-ms", "100"]));
    // The bad image among good ones, all at once, so they share encoder batches.
    let threads: Vec<_> = (0..12)
        .map(|i| {
            let server = Arc::clone(&server);
            let body = if i == 5 {
                image_request(&[&bad])
            } else {
                image_request(&[&files[i % files.len()]])
            };
            std::thread::spawn(move || (i, server.post("/v1/embeddings", &body, &[])))
        })
        .collect();
    for thread in threads {
        let (i, reply) = thread.join().unwrap();
        if i == 5 {
            assert_eq!(reply.status, 400, "{}", reply.body);
            assert_eq!(reply.message(), format!("input 0{cli_cause}"));
        } else {
            let rows = response_rows(&reply);
            assert_close(
                &rows[0],
                &want[i % files.len()],
                "a good image beside a bad one",
            );
        }
    }
    // In a request with good images, the bad one fails the request and is named.
    let mixed = server.post("/v1/embeddings", &image_request(&[&files[0], &bad]), &[]);
    assert_eq!(mixed.status, 400);
    assert_eq!(mixed.message(), format!("input 1{cli_cause}"));
    let classify = json!({"image": data_uri(&bad), "name": "upload.png", "labels": "a,b"});
    let refused = server.post("/v1/classify", &classify, &[]);
    assert_eq!(refused.status, 400);
    assert_eq!(refused.message(), format!("upload.png{cli_cause}"));
    // Not a data: URI or URL, and not JSON: refused before any work.
    let path = json!({"input": ["/etc/passwd"], "modality": "image"});
    assert!(server
        .post("/v1/embeddings", &path, &[])
        .message()
        .contains("neither an http(s) URL nor a data: URI"));
    let garbage = server.curl("/v1/embeddings", &[], Some(b"{not json"));
    assert_eq!(garbage.status, 400);
    // And the server goes on.
    let after = server.post("/v1/embeddings", &image_request(&[&files[1]]), &[]);
    assert_close(&response_rows(&after)[0], &want[1], "after the bad ones");
}

#[test]
fn request_size_and_time_limits() {
    let dir = tempfile::tempdir().unwrap();
    let files = pictures(dir.path(), 1);
    let server = Server::start(&[
        "--max-request-mib",
        "1",
        "--timeout-s",
        "0.5",
        "--max-wait-ms",
        "5000",
    ]);
    let big = json!({"input": "x".repeat(1_100_000)});
    let reply = server.post("/v1/embeddings", &big, &[]);
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(
        reply.message().contains("--max-request-mib"),
        "{}",
        reply.body
    );
    // The image waits 5 s for company; the request gives up at 0.5 s.
    let started = Instant::now();
    let slow = server.post("/v1/embeddings", &image_request(&[&files[0]]), &[]);
    assert_eq!(slow.status, 503, "{}", slow.body);
    assert!(slow.message().contains("--timeout-s"), "{}", slow.body);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_api_key_is_enforced_and_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let files = pictures(dir.path(), 1);
    let token = "tok-5e6b1f0c-not-for-logs";
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{token}\n")).unwrap();
    let server = Server::start(&["--verbose", "--api-key-file", key_file.to_str().unwrap()]);
    let body = image_request(&[&files[0]]);
    let bearer = format!("Authorization: Bearer {token}");
    let missing = server.post("/v1/embeddings", &body, &[]);
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    let wrong = format!("Authorization: Bearer {token}x");
    assert_eq!(
        server.post("/v1/embeddings", &body, &["-H", &wrong]).status,
        401
    );
    let basic = format!("Authorization: Basic {token}");
    assert_eq!(
        server.post("/v1/embeddings", &body, &["-H", &basic]).status,
        401
    );
    assert_eq!(server.get("/metrics").status, 401);
    assert_eq!(server.get("/v1/models").status, 401);
    assert_eq!(
        server
            .post("/v1/embeddings", &body, &["-H", &bearer])
            .status,
        200
    );
    let classify = json!({"image": data_uri(&files[0]), "labels": "red,blue"});
    assert_eq!(
        server
            .post("/v1/classify", &classify, &["-H", &bearer])
            .status,
        200
    );
    assert_eq!(server.curl("/metrics", &["-H", &bearer], None).status, 200);
    // /health stays open, for load balancers.
    assert_eq!(server.get("/health").status, 200);
    let (status, log) = server.terminate();
    assert!(status.success());
    // The log has a line per request (so it was on), and never the key.
    assert!(log.contains("POST /v1/embeddings 401"), "{log}");
    assert!(log.contains("POST /v1/embeddings 200"), "{log}");
    assert!(!log.contains("5e6b1f0c"), "the key is in the log:\n{log}");
}

#[test]
fn sigterm_finishes_the_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let files = pictures(dir.path(), 1);
    let want = embed_with_cli(&files, dir.path());
    // The image waits 2 s in the queue: SIGTERM arrives while it is there.
    let server = Server::start(&["--max-wait-ms", "2000"]);
    let url = server.url("/v1/embeddings");
    let body = serde_json::to_vec(&image_request(&[&files[0]])).unwrap();
    let in_flight = std::thread::spawn(move || {
        curl(&url, &["-H", "Content-Type: application/json"], Some(&body))
    });
    server.wait_for_queue_depth(1);
    let addr = server.addr.clone();
    let started = Instant::now();
    let (status, log) = server.terminate();
    assert!(status.success(), "{status:?}\n{log}");
    let reply = in_flight.join().unwrap();
    assert_close(
        &response_rows(&reply)[0],
        &want[0],
        "answered while stopping",
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(log.contains("stopping: no new connections"), "{log}");
    // Gone: nothing listens any more.
    assert!(std::net::TcpStream::connect(&addr).is_err());
}

#[test]
fn a_port_in_use_is_said_before_the_model_loads() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = vlm()
        .args(["serve", "--model", "/nonexistent/model", "--port", &port])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("cannot listen on 127.0.0.1:"), "{err}");
    assert!(err.contains("choose another --port"), "{err}");
}

#[test]
fn image_urls_are_fetched_and_a_missing_one_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let files = pictures(dir.path(), 1);
    let want = embed_with_cli(&files[..1], dir.path());
    let png = std::fs::read(&files[0]).unwrap();
    let images = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let base = format!("http://{}", images.server_addr().to_ip().unwrap());
    {
        let images = Arc::clone(&images);
        std::thread::spawn(move || {
            for request in images.incoming_requests() {
                let response = if request.url() == "/a.png" {
                    tiny_http::Response::from_data(png.clone())
                } else {
                    tiny_http::Response::from_data(b"no".to_vec()).with_status_code(404)
                };
                let _ = request.respond(response);
            }
        });
    }
    let server = Server::start(&[]);
    let url = format!("{base}/a.png");
    let reply = server.post(
        "/v1/embeddings",
        &json!({"input": url, "modality": "image"}),
        &[],
    );
    assert_close(&response_rows(&reply)[0], &want[0], "fetched from a URL");
    let classify = server.post(
        "/v1/classify",
        &json!({"image": url, "labels": "red,blue"}),
        &[],
    );
    assert_eq!(classify.status, 200, "{}", classify.body);
    assert_eq!(classify.json()["path"], url.as_str());
    let missing = format!("{base}/gone.png");
    let reply = server.post(
        "/v1/embeddings",
        &json!({"input": [url, missing], "modality": "image"}),
        &[],
    );
    assert_eq!(reply.status, 400);
    assert!(
        reply.message().contains(&missing) && reply.message().contains("404"),
        "{}",
        reply.body
    );
}

fn blip(name: &str) -> PathBuf {
    fixtures().join("models").join(format!("blip-{name}"))
}

fn fixture_image(name: &str) -> PathBuf {
    fixtures().join("images").join(name)
}

/// `vlm COMMAND --format json` over `images` with `args`: its records.
fn describe_with_cli(command: &str, model: &Path, images: &[PathBuf], args: &[&str]) -> Vec<Value> {
    let output = vlm()
        .arg(command)
        .args(images)
        .args(args)
        .arg("--model")
        .arg(model)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice::<Value>(&output.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// A caption or answer record equals the CLI's: the same fields, text and token ids, the
/// log-probability within 1e-5.
fn assert_same_record(got: &Value, want: &Value, at: &str) {
    let (Some(got_fields), Some(want_fields)) = (got.as_object(), want.as_object()) else {
        panic!("{at}: not records: {got} / {want}");
    };
    let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(got_fields), keys(want_fields), "{at}: fields");
    for (key, value) in want_fields {
        if key == "log_prob" {
            let (a, b) = (got[key].as_f64().unwrap(), value.as_f64().unwrap());
            assert!((a - b).abs() <= 1e-5, "{at}: log_prob {a} != {b}");
        } else {
            assert_eq!(&got[key], value, "{at}: {key}");
        }
    }
}

/// The images of the caption tests: different enough that their log-probabilities differ.
fn caption_images() -> Vec<PathBuf> {
    ["chelsea.png", "astronaut.jpg", "coffee.png", "rocket.jpg"]
        .iter()
        .map(|n| fixture_image(n))
        .collect()
}

#[test]
fn caption_and_ask_answer_what_the_cli_writes() {
    let images = caption_images();
    let server = Server::start_with(&blip("caption"), &[]);
    assert_eq!(
        server.get("/v1/models").json()["data"][0]["task"],
        "caption"
    );
    assert_eq!(server.get("/health").json()["task"], "caption");
    // (flags of `vlm caption`, the same settings as JSON)
    let cases: [(&[&str], Value); 4] = [
        (&[], json!({})),
        (&["--beams", "3"], json!({"beams": 3})),
        (
            &["--prompt", "a photograph of"],
            json!({"prompt": "a photograph of"}),
        ),
        (
            &["--max-new-tokens", "4"],
            json!({"max_new_tokens": 4, "model": "any"}),
        ),
    ];
    for (flags, mut request) in cases {
        let cli = describe_with_cli("caption", &blip("caption"), &images, flags);
        for (image, want) in images.iter().zip(&cli) {
            let name = image.display().to_string();
            assert_eq!(want["path"], name.as_str());
            request["image"] = data_uri(image).into();
            request["name"] = name.clone().into();
            let reply = server.post("/v1/caption", &request, &[]);
            assert_eq!(reply.status, 200, "{}", reply.body);
            assert_same_record(&reply.json(), want, &format!("caption {flags:?} {name}"));
        }
    }
    // Without a name, the path says "image"; a blank prompt is refused as the CLI does.
    let unnamed = server.post("/v1/caption", &json!({"image": data_uri(&images[0])}), &[]);
    assert_eq!(unnamed.json()["path"], "image");
    let blank = server.post(
        "/v1/caption",
        &json!({"image": data_uri(&images[0]), "prompt": " "}),
        &[],
    );
    assert_eq!(blank.status, 400);
    assert!(
        blank.message().contains("\"prompt\" is empty"),
        "{}",
        blank.body
    );
    let beams = server.post(
        "/v1/caption",
        &json!({"image": data_uri(&images[0]), "beams": 0}),
        &[],
    );
    assert_eq!(beams.status, 400, "{}", beams.body);
    // A captioning model does not answer questions, score labels or embed: each refusal
    // names the endpoint and the command that fit it.
    let model = blip("caption").display().to_string();
    for (endpoint, request) in [
        (
            "/v1/ask",
            json!({"image": data_uri(&images[0]), "question": "what?"}),
        ),
        (
            "/v1/classify",
            json!({"image": data_uri(&images[0]), "labels": "a,b"}),
        ),
        ("/v1/embeddings", json!({"input": "a cat"})),
    ] {
        let refused = server.post(endpoint, &request, &[]);
        assert_eq!(refused.status, 400, "{endpoint}: {}", refused.body);
        let message = refused.message();
        assert!(
            message.starts_with(&format!("{model} is a BLIP captioning checkpoint"))
                && message.contains(&format!("cannot answer {endpoint}"))
                && message.contains("use POST /v1/caption")
                && message.contains("`vlm caption`"),
            "{endpoint}: {message}"
        );
    }
    let (status, log) = server.terminate();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("(caption) on http://"), "{log}");

    let questions = ["what is in the picture?", "how many?"];
    let server = Server::start_with(&blip("vqa"), &[]);
    assert_eq!(server.get("/v1/models").json()["data"][0]["task"], "answer");
    assert_eq!(server.get("/health").json()["task"], "answer");
    for (flags, settings) in [
        (&[][..], json!({})),
        (&["--beams", "3"][..], json!({"beams": 3})),
    ] {
        let mut args = flags.to_vec();
        for q in questions {
            args.extend(["--question", q]);
        }
        let cli = describe_with_cli("ask", &blip("vqa"), &images[..2], &args);
        assert_eq!(cli.len(), 2 * questions.len());
        for image in &images[..2] {
            let name = image.display().to_string();
            let want: Vec<&Value> = cli.iter().filter(|r| r["path"] == name.as_str()).collect();
            // All the questions: a list of records in their order.
            let mut request = settings.clone();
            request["image"] = data_uri(image).into();
            request["name"] = name.clone().into();
            request["questions"] = json!(questions);
            let reply = server.post("/v1/ask", &request, &[]);
            assert_eq!(reply.status, 200, "{}", reply.body);
            let got = reply.json();
            let got = got
                .as_array()
                .unwrap_or_else(|| panic!("not a list: {got}"));
            assert_eq!(got.len(), questions.len());
            for ((got, want), q) in got.iter().zip(&want).zip(questions) {
                assert_eq!(want["question"], q);
                assert_same_record(got, want, &format!("ask {flags:?} {name} {q}"));
            }
            // One question: one record.
            let mut request = settings.clone();
            request["image"] = data_uri(image).into();
            request["name"] = name.clone().into();
            request["question"] = questions[1].into();
            let reply = server.post("/v1/ask", &request, &[]);
            assert_eq!(reply.status, 200, "{}", reply.body);
            assert_same_record(&reply.json(), want[1], &format!("ask {flags:?} {name} one"));
        }
    }
    let none = server.post("/v1/ask", &json!({"image": data_uri(&images[0])}), &[]);
    assert_eq!(none.status, 400);
    assert!(none.message().contains("no question"), "{}", none.body);
    let refused = server.post("/v1/caption", &json!({"image": data_uri(&images[0])}), &[]);
    assert_eq!(refused.status, 400);
    let message = refused.message();
    assert!(
        message.contains("BLIP question-answering checkpoint")
            && message.contains("use POST /v1/ask")
            && message.contains("`vlm ask`"),
        "{message}"
    );
    let (status, _) = server.terminate();
    assert!(status.success());
}

#[test]
fn concurrent_captions_are_batched_and_equal_their_answers_alone() {
    let images = caption_images();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.png");
    let png = std::fs::read(&images[0]).unwrap();
    std::fs::write(&bad, &png[..png.len() / 3]).unwrap();
    // What `vlm caption` says of the broken file.
    let output = vlm()
        .arg("caption")
        .arg(&bad)
        .arg("--model")
        .arg(blip("caption"))
        .output()
        .unwrap();
    let shown = bad.display().to_string();
    let cli_message = stderr(&output)
        .lines()
        .find_map(|l| l.strip_prefix("vlm: "))
        .filter(|l| l.starts_with(&shown))
        .unwrap_or_else(|| panic!("no message about {shown} in {}", stderr(&output)))
        .to_string();
    // Settings that generate together (the same prompt and options) and apart.
    let settings = [
        json!({}),
        json!({"prompt": "a photograph of"}),
        json!({"beams": 3}),
        json!({}),
    ];
    let requests: Vec<Value> = (0..16)
        .map(|i| {
            let mut request = settings[i % settings.len()].clone();
            let image = &images[(i / settings.len() + i) % images.len()];
            request["image"] = data_uri(image).into();
            request["name"] = image.display().to_string().into();
            request
        })
        .collect();
    let server = Arc::new(Server::start_with(
        &blip("caption"),
        &["--max-wait-ms", "300", "--max-batch", "64"],
    ));
    // One at a time: each request alone in its batch.
    let alone: Vec<Value> = requests
        .iter()
        .map(|request| {
            let reply = server.post("/v1/caption", request, &[]);
            assert_eq!(reply.status, 200, "{}", reply.body);
            reply.json()
        })
        .collect();
    assert_eq!(
        server.metric("vlm_generation_batch_size_bucket{le=\"1\"}"),
        requests.len() as f64
    );
    // All at once, with a broken image among them.
    let mut bodies = requests.clone();
    bodies.push(json!({"image": data_uri(&bad), "name": shown}));
    let threads: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let server = Arc::clone(&server);
            std::thread::spawn(move || (i, server.post("/v1/caption", &body, &[])))
        })
        .collect();
    for thread in threads {
        let (i, reply) = thread.join().unwrap();
        if i == requests.len() {
            assert_eq!(reply.status, 400, "{}", reply.body);
            assert_eq!(reply.message(), cli_message);
            continue;
        }
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_same_record(&reply.json(), &alone[i], &format!("request {i} batched"));
    }
    // The images shared encoder calls, and the captions shared generations.
    let encoded = server.metric("vlm_batch_size_count");
    let single = server.metric("vlm_batch_size_bucket{le=\"1\"}");
    assert!(
        single < encoded,
        "{encoded} encoder calls, {single} of one image"
    );
    let generations = server.metric("vlm_generation_batch_size_count");
    let alone_generations = server.metric("vlm_generation_batch_size_bucket{le=\"1\"}");
    assert!(
        alone_generations < generations,
        "{generations} generations, {alone_generations} of one caption"
    );
    assert_eq!(
        server.metric("vlm_generation_batch_size_sum"),
        2.0 * requests.len() as f64
    );
    assert_eq!(
        server.metric("vlm_requests_total{endpoint=\"/v1/caption\",status=\"200\"}"),
        2.0 * requests.len() as f64
    );
    assert_eq!(
        server.metric("vlm_requests_total{endpoint=\"/v1/caption\",status=\"400\"}"),
        1.0
    );
}

#[test]
fn concurrent_questions_are_batched_and_equal_their_answers_alone() {
    let images = caption_images();
    let questions = ["what is in the picture?", "how many?", "is it red?"];
    let settings = [json!({}), json!({"beams": 3}), json!({})];
    let requests: Vec<Value> = (0..12)
        .map(|i| {
            let mut request = settings[i % settings.len()].clone();
            let image = &images[i % images.len()];
            request["image"] = data_uri(image).into();
            request["name"] = image.display().to_string().into();
            request["question"] = questions[(i / 2) % questions.len()].into();
            request
        })
        .collect();
    let server = Arc::new(Server::start_with(
        &blip("vqa"),
        &["--max-wait-ms", "300", "--max-batch", "64"],
    ));
    let alone: Vec<Value> = requests
        .iter()
        .map(|request| {
            let reply = server.post("/v1/ask", request, &[]);
            assert_eq!(reply.status, 200, "{}", reply.body);
            reply.json()
        })
        .collect();
    let threads: Vec<_> = requests
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, body)| {
            let server = Arc::clone(&server);
            std::thread::spawn(move || (i, server.post("/v1/ask", &body, &[])))
        })
        .collect();
    for thread in threads {
        let (i, reply) = thread.join().unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["question"], requests[i]["question"]);
        assert_same_record(&reply.json(), &alone[i], &format!("question {i} batched"));
    }
    // Questions with equal settings were answered in shared generations.
    let generations = server.metric("vlm_generation_batch_size_count");
    let alone_generations = server.metric("vlm_generation_batch_size_bucket{le=\"1\"}");
    assert!(
        alone_generations < generations,
        "{generations} generations, {alone_generations} of one answer"
    );
    assert_eq!(
        server.metric("vlm_generation_batch_size_sum"),
        2.0 * requests.len() as f64
    );
}
