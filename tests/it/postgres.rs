//! `--to`/`--in postgresql://...` against a real PostgreSQL with pgvector that each test
//! starts in a temp dir (Unix socket only, no TCP port) and stops on drop.
//!
//! Needs PostgreSQL 15 and pgvector (`.ci/install-postgres`). Without them these tests
//! print a notice and pass, unless VLM_REQUIRE_POSTGRES=1, where they fail.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::{self, assert_hidden, percent_encode, stderr, URL_PASSWORDS};

const PASSWORD: &str = "Sw0rdf1sh-not-in-logs";

/// A throwaway server; `None` (after a notice) when PostgreSQL or pgvector is missing.
struct Server {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// initdb, pg_ctl... run as `postgres` when the tests run as root (initdb refuses root).
fn pg_tool(bin: &Path, tool: &str) -> Command {
    let exe = bin.join(tool);
    if as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(exe);
        command
    } else {
        Command::new(exe)
    }
}

fn missing(what: &str) -> Option<Server> {
    let message =
        format!("{what}; run .ci/install-postgres (as root) to install PostgreSQL 15 and pgvector");
    if std::env::var("VLM_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!("VLM_REQUIRE_POSTGRES=1 but {message}");
    }
    eprintln!("SKIPPED PostgreSQL test: {message}");
    None
}

impl Server {
    fn start() -> Option<Self> {
        let bin = PathBuf::from(
            std::env::var("VLM_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
        if !bin.join("initdb").is_file() || !bin.join("pg_ctl").is_file() {
            return missing(&format!("no initdb/pg_ctl in {}", bin.display()));
        }
        let sharedir = Command::new(bin.join("pg_config"))
            .arg("--sharedir")
            .output();
        let has_vector = sharedir.is_ok_and(|out| {
            Path::new(String::from_utf8_lossy(&out.stdout).trim())
                .join("extension/vector.control")
                .is_file()
        });
        if !has_vector {
            return missing("the pgvector extension is not installed");
        }
        let dir = tempfile::Builder::new()
            .prefix("vlm-pg")
            .tempdir()
            .expect("temp dir");
        if as_root() {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the server's dir to postgres");
        }
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("write password file");
        let out = pg_tool(&bin, "initdb")
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                "vlm",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
            ])
            .args(["--no-sync", "--pwfile"])
            .arg(&pwfile)
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb: {}", stderr(&out));
        let server = Self { dir, bin };
        server.pg_ctl_start();
        Some(server)
    }

    fn pg_ctl_start(&self) {
        let dir = self.dir.path();
        // No TCP listener: the socket in our own dir cannot clash with another test's.
        let out = pg_tool(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(dir.join("data"))
            .arg("-l")
            .arg(dir.join("log"))
            .arg("-w")
            .arg("-o")
            .arg(format!(
                "-k {} -c listen_addresses='' -c fsync=off",
                dir.display()
            ))
            .arg("start")
            .output()
            .expect("run pg_ctl");
        assert!(out.status.success(), "pg_ctl start: {}", stderr(&out));
    }

    /// Stops the server at once, as a crash would.
    fn kill(&self) {
        let _ = pg_tool(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }

    /// The address with the password in it, and `?table=`.
    fn url(&self, table: &str) -> String {
        format!(
            "postgresql://vlm:{PASSWORD}@/postgres?host={}&table={table}",
            self.dir.path().display()
        )
    }

    fn client(&self) -> Client {
        Client::connect(
            &format!(
                "host={} user=vlm password={PASSWORD} dbname=postgres",
                self.dir.path().display()
            ),
            NoTls,
        )
        .expect("connect to the test server")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs vlm and checks that the password shows nowhere in what it printed.
fn run(command: &mut Command) -> Output {
    let out = command.output().expect("run vlm");
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(
            !text.contains(PASSWORD),
            "the password was printed:\n{text}"
        );
    }
    out
}

fn vlm(args: &[&str]) -> Command {
    let mut command = common::vlm();
    command.args(args).arg("--model").arg(common::tiny_model());
    command
}

fn images(dir: &Path, per_class: usize) -> PathBuf {
    let root = dir.join("pics");
    common::draw_domain(&root, 2, per_class, 15);
    root
}

/// `vlm embed --output x.jsonl`: path -> embedding.
fn file_embeddings(dir: &Path, inputs: &Path) -> HashMap<String, Vec<f32>> {
    let file = dir.join("e.jsonl");
    let out = run(vlm(&["embed"]).arg(inputs).arg("-o").arg(&file));
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::read_to_string(&file)
        .expect("read jsonl")
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("json line");
            let row = v["embedding"]
                .as_array()
                .expect("embedding")
                .iter()
                .map(|x| x.as_f64().expect("number") as f32)
                .collect();
            (v["path"].as_str().expect("path").to_string(), row)
        })
        .collect()
}

struct Row {
    hash: String,
    model: String,
    dim: i32,
    embedding: Vec<f32>,
}

fn rows(client: &mut Client, table: &str) -> HashMap<String, Row> {
    client
        .query(
            &format!("SELECT path, content_hash, model, dim, embedding FROM {table}"),
            &[],
        )
        .expect("read rows")
        .iter()
        .map(|r| {
            let v: pgvector::Vector = r.get(4);
            (
                r.get(0),
                Row {
                    hash: r.get(1),
                    model: r.get(2),
                    dim: r.get(3),
                    embedding: v.to_vec(),
                },
            )
        })
        .collect()
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read image");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn assert_rows_match(got: &HashMap<String, Row>, want: &HashMap<String, Vec<f32>>) {
    assert_eq!(got.len(), want.len(), "one row per image");
    for (path, embedding) in want {
        let row = got.get(path).unwrap_or_else(|| panic!("no row for {path}"));
        assert_eq!(row.embedding.len(), embedding.len());
        assert_eq!(row.dim as usize, embedding.len());
        for (a, b) in row.embedding.iter().zip(embedding) {
            assert!((a - b).abs() <= 1e-6, "{path}: {a} vs {b}");
        }
        assert_eq!(row.hash, sha256(Path::new(path)), "{path}'s content hash");
    }
}

#[test]
fn embed_to_postgres_matches_the_file_output_and_upserts_only_changes() {
    let Some(server) = Server::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let pics = images(tmp.path(), 4);
    let url = server.url("emb");

    let first = run(vlm(&["embed", "--to", &url]).arg(&pics));
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("stored 8 embeddings (0 unchanged)"),
        "{}",
        stderr(&first)
    );
    assert!(
        stderr(&first).contains("vlm:***@"),
        "the address is shown redacted: {}",
        stderr(&first)
    );
    let want = file_embeddings(tmp.path(), &pics);
    let mut client = server.client();
    let got = rows(&mut client, "emb");
    assert_rows_match(&got, &want);
    assert!(got
        .values()
        .all(|r| r.model == got.values().next().unwrap().model));
    let index: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'emb' AND indexdef LIKE '%hnsw%vector_cosine_ops%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(index, 1, "an HNSW cosine index");
    let stamp = |client: &mut Client| -> Vec<(String, std::time::SystemTime)> {
        let mut v: Vec<_> = client
            .query("SELECT path, updated_at FROM emb", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        v.sort();
        v
    };
    let before = stamp(&mut client);

    // Unchanged files: nothing embedded, nothing written.
    let second = run(vlm(&["embed", "--to", &url, "--verbose"]).arg(&pics));
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("stored 0 embeddings (8 unchanged)"),
        "{}",
        stderr(&second)
    );
    assert!(
        stderr(&second).contains("image encoder ran on 0 images"),
        "{}",
        stderr(&second)
    );
    assert_eq!(stamp(&mut client), before, "a second run rewrote rows");

    // One changed file: that row alone is replaced.
    let red = pics.join("red");
    std::fs::copy(red.join("01.png"), red.join("00.png")).expect("change a file");
    let third = run(vlm(&["embed", "--to", &url]).arg(&pics));
    assert!(
        stderr(&third).contains("stored 1 embeddings (7 unchanged)"),
        "{}",
        stderr(&third)
    );
    let after = rows(&mut client, "emb");
    let changed = red.join("00.png").display().to_string();
    let twin = red.join("01.png").display().to_string();
    assert_eq!(after[&changed].hash, after[&twin].hash);
    // Same bytes, so the same embedding, up to the batch's rounding (embedded alone here).
    for (a, b) in after[&changed]
        .embedding
        .iter()
        .zip(&after[&twin].embedding)
    {
        assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
    }
    assert_rows_match(&after, &file_embeddings(tmp.path(), &pics));
}

fn search_hits(out: &Output) -> Vec<(String, f64)> {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("json line");
            (
                v["path"].as_str().unwrap().to_string(),
                v["similarity"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn assert_same_ranking(got: &[(String, f64)], want: &[(String, f64)]) {
    let names = |v: &[(String, f64)]| v.iter().map(|h| h.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(got), names(want));
    for (g, w) in got.iter().zip(want) {
        assert!((g.1 - w.1).abs() < 1e-5, "{g:?} vs {w:?}");
    }
}

#[test]
fn search_in_postgres_ranks_like_the_brute_force_search() {
    let Some(server) = Server::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let pics = images(tmp.path(), 6);
    let url = server.url("vlm_embeddings");
    let out = run(vlm(&["embed", "--to", &url]).arg(&pics));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let query = "a red square";
    let want = search_hits(&run(
        vlm(&["search", query, "-n", "12", "-f", "jsonl"]).arg(&pics)
    ));
    let got = search_hits(&run(&mut vlm(&[
        "search", query, "--in", &url, "-n", "12", "-f", "jsonl",
    ])));
    assert_eq!(want.len(), 12);
    assert_same_ranking(&got, &want);
    // --table gives the same table as ?table=.
    let plain = url.replace("&table=vlm_embeddings", "");
    let top3 = search_hits(&run(&mut vlm(&[
        "search",
        query,
        "--in",
        &plain,
        "--table",
        "vlm_embeddings",
        "-n",
        "3",
        "-f",
        "jsonl",
    ])));
    assert_same_ranking(&top3, &want[..3]);

    let image = pics.join("green/02.png");
    let image = image.to_str().unwrap();
    let want = search_hits(&run(vlm(&[
        "search", "--image", image, "-n", "5", "-f", "jsonl",
    ])
    .arg(&pics)));
    let got = search_hits(&run(&mut vlm(&[
        "search", "--image", image, "--in", &url, "-n", "5", "-f", "jsonl",
    ])));
    assert!(
        got.iter().all(|h| h.0 != image),
        "the query image is left out"
    );
    assert_same_ranking(&got, &want);
}

#[test]
fn classify_to_postgres_stores_labels_beside_the_embeddings() {
    let Some(server) = Server::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let pics = images(tmp.path(), 3);
    let url = server.url("cls");
    let out = run(vlm(&[
        "classify",
        "--labels",
        "red,green",
        "-f",
        "jsonl",
        "--to",
        &url,
    ])
    .arg(&pics));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut client = server.client();
    let labels: HashMap<String, (String, f32, Value)> = client
        .query(
            "SELECT path, top_label, top_probability, labels::text FROM cls_labels",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| {
            let json: String = r.get(3);
            (
                r.get(0),
                (r.get(1), r.get(2), serde_json::from_str(&json).unwrap()),
            )
        })
        .collect();
    let reports: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 6);
    assert_eq!(labels.len(), 6);
    for report in &reports {
        let path = report["path"].as_str().unwrap();
        let (top, p, all) = &labels[path];
        let best = &report["results"][0];
        assert_eq!(top, best["label"].as_str().unwrap(), "{report}");
        assert!((f64::from(*p) - best["probability"].as_f64().unwrap()).abs() < 1e-6);
        assert_eq!(all, &report["results"], "the ranked labels as jsonb");
    }
    assert_rows_match(
        &rows(&mut client, "cls"),
        &file_embeddings(tmp.path(), &pics),
    );
}

#[test]
fn a_table_of_another_dimension_or_model_is_refused_before_any_write() {
    let Some(server) = Server::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let pics = images(tmp.path(), 1);
    let mut client = server.client();
    client
        .batch_execute(
            "CREATE EXTENSION vector;
             CREATE TABLE narrow (path text PRIMARY KEY, content_hash text NOT NULL, model text NOT NULL,
                 revision text, dim integer NOT NULL, embedding vector(3) NOT NULL,
                 updated_at timestamptz NOT NULL DEFAULT now());",
        )
        .unwrap();
    let out = run(vlm(&["embed", "--to", &server.url("narrow")]).arg(&pics));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("3-dimensional"), "{}", stderr(&out));
    let n: i64 = client
        .query_one("SELECT count(*) FROM narrow", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    let url = server.url("other");
    let out = run(vlm(&["embed", "--to", &url]).arg(&pics));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    client
        .execute("UPDATE other SET model = 'someone/else'", &[])
        .unwrap();
    let out = run(vlm(&["embed", "--to", &url])
        .arg(pics.join("red/00.png"))
        .arg(pics.join("green/00.png")));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("someone/else"), "{}", stderr(&out));
    let models: Vec<String> = client
        .query("SELECT DISTINCT model FROM other", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(models, ["someone/else"]);

    let out = run(&mut vlm(&[
        "search",
        "a cat",
        "--in",
        &server.url("nothing_here"),
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[test]
fn credentials_come_from_the_address_pgpassword_or_pgpass_and_are_never_shown() {
    let Some(server) = Server::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let pics = images(tmp.path(), 1);
    let socket = server.dir.path().display().to_string();
    let no_password = format!("postgresql://vlm@/postgres?host={socket}");

    let wrong = format!("postgresql://vlm:WrongHorse42@/postgres?host={socket}");
    let out = run(vlm(&["embed", "--to", &wrong]).arg(&pics));
    assert_eq!(out.status.code(), Some(2));
    assert!(!stderr(&out).contains("WrongHorse42"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot connect to postgresql://vlm:***@"),
        "{}",
        stderr(&out)
    );

    let out = run(vlm(&["embed", "--to", &no_password]).arg(&pics));
    assert_eq!(
        out.status.code(),
        Some(2),
        "no password, no entry: {}",
        stderr(&out)
    );

    let out = run(vlm(&["embed", "--to", &no_password])
        .arg(&pics)
        .env("PGPASSWORD", PASSWORD));
    assert_eq!(out.status.code(), Some(0), "PGPASSWORD: {}", stderr(&out));

    let pgpass = tmp.path().join("pgpass");
    std::fs::write(&pgpass, format!("localhost:5432:postgres:vlm:{PASSWORD}\n")).unwrap();
    let out = run(
        vlm(&["search", "a cat", "--in", &no_password, "-f", "jsonl"]).env("PGPASSFILE", &pgpass),
    );
    assert_eq!(out.status.code(), Some(0), ".pgpass: {}", stderr(&out));
    assert_eq!(search_hits(&out).len(), 2);
}

#[test]
fn a_server_killed_mid_run_is_exit_2_and_a_rerun_stores_every_image_once() {
    let Some(server) = Server::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    // Enough one-image batches that the run is still going when the server dies.
    let pics = images(tmp.path(), 150);
    let url = server.url("emb");
    let child = vlm(&["embed", "--to", &url, "--batch-size", "1", "--workers", "1"])
        .arg(&pics)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vlm");
    let mut client = server.client();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n: i64 = client
            .query_one("SELECT count(*) FROM emb", &[])
            .map(|r| r.get(0))
            .unwrap_or(0);
        if n >= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "vlm stored nothing in 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(client);
    server.kill();
    let out = child.wait_with_output().expect("wait for vlm");
    for stream in [&out.stdout, &out.stderr] {
        assert!(!String::from_utf8_lossy(stream).contains(PASSWORD));
    }
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("run the same command again"),
        "{}",
        stderr(&out)
    );

    server.pg_ctl_start();
    let out = run(vlm(&["embed", "--to", &url]).arg(&pics));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut client = server.client();
    let (n, distinct): (i64, i64) = client
        .query_one("SELECT count(*), count(DISTINCT path) FROM emb", &[])
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((n, distinct), (300, 300));
    assert_rows_match(
        &rows(&mut client, "emb"),
        &file_embeddings(tmp.path(), &pics),
    );
}

#[test]
fn passwords_made_of_url_characters_are_used_and_never_shown() {
    let Some(server) = Server::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let pics = images(tmp.path(), 1);
    let socket = server.dir.path().display().to_string();
    let mut client = server.client();
    for (i, password) in URL_PASSWORDS.iter().enumerate() {
        let role = format!("r{i}");
        client
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'"
            ))
            .expect("create role");
        let encoded = percent_encode(password);
        let secrets = [*password, encoded.as_str()];
        let table = format!("t{i}");
        let good = format!("postgresql://{role}:{encoded}@/postgres?host={socket}&table={table}");
        let out = vlm(&["embed", "--to", &good]).arg(&pics).output().unwrap();
        assert_hidden(&out, &secrets, &good);
        assert_eq!(out.status.code(), Some(0), "{password}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("{role}:***@")),
            "{}",
            stderr(&out)
        );
        // The password as a parameter, its name percent-encoded.
        let param = format!(
            "postgresql://{role}@/postgres?host={socket}&pass%77ord={encoded}&table={table}"
        );
        let out = vlm(&["search", "a red square", "--in", &param, "-f", "jsonl"])
            .output()
            .unwrap();
        assert_hidden(&out, &secrets, &param);
        assert_eq!(search_hits(&out).len(), 2, "{password}");

        // Failing runs: nothing listens on port 1, the password is wrong, or written as is.
        for bad in [
            format!("postgresql://{role}:{encoded}@127.0.0.1:1/postgres?table={table}"),
            format!("postgresql://{role}:{password}@127.0.0.1:1/postgres"),
            format!("postgresql://{role}:{encoded}x@/postgres?host={socket}&table={table}"),
            format!("postgresql://{role}@/postgres?host={socket}&password={encoded}x"),
            format!("postgresql://127.0.0.1:1/postgres?password={password}"),
        ] {
            let out = vlm(&["embed", "--to", &bad]).arg(&pics).output().unwrap();
            assert_hidden(&out, &secrets, &bad);
            assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
            let out = vlm(&["search", "a cat", "--in", &bad]).output().unwrap();
            assert_hidden(&out, &secrets, &bad);
            assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        }
    }
}

fn count(client: &mut Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0)
}

/// The tiny model copied elsewhere: another model (its id is its directory) of the same
/// dimension.
fn model_copy(dir: &Path) -> PathBuf {
    let copy = dir.join("other-model");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(common::tiny_model()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    copy
}

#[test]
fn mixed_case_and_schema_tables_keep_their_model_checks() {
    let Some(server) = Server::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let pics = images(tmp.path(), 2);
    let other = model_copy(tmp.path());
    let mut client = server.client();
    client.batch_execute("CREATE SCHEMA my_schema").unwrap();
    for (table, sql) in [
        ("MyTable", "\"MyTable\""),
        ("my_schema.MyTable", "my_schema.\"MyTable\""),
    ] {
        let url = server.url(table);
        let out = run(vlm(&["embed", "--to", &url]).arg(&pics));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(count(&mut client, sql), 4);
        // The same run again finds the table and its rows: nothing to store.
        let out = run(vlm(&["embed", "--to", &url]).arg(&pics));
        assert!(
            stderr(&out).contains("stored 0 embeddings (4 unchanged)"),
            "{}",
            stderr(&out)
        );
        // Another model of the same dimension is refused before it writes a row.
        let out = run(common::vlm()
            .args(["embed", "--to", &url, "--model"])
            .arg(&other)
            .arg(pics.join("red/00.png")));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("holds embeddings of"),
            "{}",
            stderr(&out)
        );
        let out = run(common::vlm()
            .args(["classify", "--labels", "red,green", "--to", &url, "--model"])
            .arg(&other)
            .arg(pics.join("red/00.png")));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let models: i64 = client
            .query_one(&format!("SELECT count(DISTINCT model) FROM {sql}"), &[])
            .unwrap()
            .get(0);
        assert_eq!((count(&mut client, sql), models), (4, 1), "{table}");
        let hits = search_hits(&run(&mut vlm(&[
            "search",
            "a red square",
            "--in",
            &url,
            "-f",
            "jsonl",
        ])));
        assert_eq!(hits.len(), 4, "{table}");
    }
}

#[test]
fn table_names_whose_derived_names_would_be_cut_are_refused() {
    let Some(server) = Server::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let pics = images(tmp.path(), 1);
    let mut client = server.client();
    let fits = "t".repeat(49);
    let out = run(vlm(&[
        "classify",
        "--labels",
        "red,green",
        "--to",
        &server.url(&fits),
    ])
    .arg(&pics));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(count(&mut client, &fits), 2);
    assert_eq!(count(&mut client, &format!("{fits}_labels")), 2);
    for n in [50, 63] {
        let url = server.url(&"t".repeat(n));
        for args in [
            ["classify", "--labels", "red,green", "--to", &url].as_slice(),
            ["embed", "--to", &url].as_slice(),
        ] {
            let out = run(vlm(args).arg(&pics));
            assert_eq!(out.status.code(), Some(2), "{n}: {}", stderr(&out));
            assert!(stderr(&out).contains("63-byte"), "{}", stderr(&out));
        }
        let made: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_class WHERE relname LIKE 'tttttttttttttttttttttttttttttttttttttttttttttttttt%'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(made, 0, "nothing made for a {n}-character name");
    }
}

#[cfg(unix)]
#[test]
fn names_that_differ_in_one_invalid_byte_are_two_rows() {
    use std::os::unix::ffi::OsStrExt;
    let Some(server) = Server::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let pics = images(tmp.path(), 1);
    let dir = tmp.path().join("latin1");
    std::fs::create_dir(&dir).unwrap();
    let red = pics.join("red/00.png");
    let green = pics.join("green/00.png");
    std::fs::copy(&red, dir.join(std::ffi::OsStr::from_bytes(b"caf\xe9.png"))).unwrap();
    std::fs::copy(
        &green,
        dir.join(std::ffi::OsStr::from_bytes(b"caf\xe8.png")),
    )
    .unwrap();
    let mut client = server.client();
    let url = server.url("latin");
    let out = run(vlm(&["embed", "--to", &url]).arg(&dir));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stored 2 embeddings"),
        "{}",
        stderr(&out)
    );
    let out = run(vlm(&[
        "classify",
        "--labels",
        "red,green",
        "--to",
        &server.url("latin_cls"),
    ])
    .arg(&dir));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let base = dir.display().to_string();
    for table in ["latin", "latin_cls", "latin_cls_labels"] {
        let mut paths: Vec<String> = client
            .query(&format!("SELECT path FROM {table}"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                format!("{base}/caf\\xe8.png"),
                format!("{base}/caf\\xe9.png")
            ],
            "{table}"
        );
    }
    // The second run knows both rows by their keys.
    let out = run(vlm(&["embed", "--to", &url]).arg(&dir));
    assert!(
        stderr(&out).contains("stored 0 embeddings (2 unchanged)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn caption_to_postgres_stores_captions_beside_the_embeddings() {
    let Some(server) = Server::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let pics = images(tmp.path(), 2);
    let url = server.url("capt");
    let blip = common::fixtures().join("models/blip-caption");
    let caption = || {
        let mut command = common::vlm();
        command
            .args(["caption", "-f", "jsonl", "--to", &url, "--model"])
            .arg(&blip)
            .arg(&pics);
        run(&mut command)
    };
    // No embeddings in the table yet: refused before any caption is made.
    let out = caption();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("vlm embed"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());

    let out = run(vlm(&["embed", "--to", &url]).arg(&pics));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = caption();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 4);
    let mut client = server.client();
    let stored: HashMap<String, (String, String, String, f64, Value)> = client
        .query(
            "SELECT path, content_hash, model, caption, log_prob, tokens::text FROM capt_captions",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| {
            let tokens: String = r.get(5);
            (
                r.get(0),
                (
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    serde_json::from_str(&tokens).unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(stored.len(), 4);
    for record in &records {
        let path = record["path"].as_str().unwrap();
        let (hash, model, text, log_prob, tokens) = &stored[path];
        assert_eq!(hash, &sha256(Path::new(path)), "{path}");
        assert_eq!(model, &blip.display().to_string());
        assert_eq!(text, record["caption"].as_str().unwrap());
        assert_eq!(*log_prob, record["log_prob"].as_f64().unwrap());
        assert_eq!(tokens, &record["tokens"]);
    }
    // Beside the embeddings: the same paths and content hashes.
    let embedded = rows(&mut client, "capt");
    assert_eq!(
        embedded.keys().collect::<std::collections::BTreeSet<_>>(),
        stored.keys().collect()
    );
    for (path, row) in &embedded {
        assert_eq!(row.hash, stored[path].0);
    }
}

/// `vlm dedup ... -f jsonl`: each group's members as (path, similarity).
fn dedup_groups(out: &Output) -> Vec<Vec<(String, f64)>> {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let group: Value = serde_json::from_str(line).expect("json line");
            group["members"]
                .as_array()
                .expect("members")
                .iter()
                .map(|m| {
                    let path = m["path"].as_str().expect("path").to_string();
                    (path, m["similarity"].as_f64().expect("similarity"))
                })
                .collect()
        })
        .collect()
}

#[test]
fn dedup_in_postgres_finds_the_groups_of_the_exact_search() {
    let Some(server) = Server::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let set = tmp.path().join("set");
    let samples = crate::common::near_duplicates::write_set(&set, 30, 5);
    // The checkpoint whose embeddings tell copies apart (tests/it/dedup.rs).
    let model = common::fixtures().join("models/thumbnail");
    let vlm = |args: &[&str]| {
        let mut command = common::vlm();
        command.args(args).arg("--model").arg(&model);
        command
    };
    let url = server.url("vlm_dups");
    let out = run(vlm(&["embed", "--to", &url]).arg(&set));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let exact = dedup_groups(&run(vlm(&["dedup", "-f", "jsonl", "-v"]).arg(&set)));
    let out = run(&mut vlm(&["dedup", "--in", &url, "-f", "jsonl", "-v"]));
    let stored = dedup_groups(&out);
    assert!(
        stderr(&out).contains("by the HNSW index of postgresql://"),
        "the search used is said: {}",
        stderr(&out)
    );
    let said = stderr(&out);
    assert!(
        said.contains("image encoder ran on 0 images"),
        "no image was read: {said}"
    );
    assert!(
        exact.len() >= 15,
        "{} groups among {}",
        exact.len(),
        samples.len()
    );
    // The same groups, members and first images (rows are ordered by path, the inputs
    // of one folder too), with the same similarities to the first.
    assert_eq!(stored.len(), exact.len());
    for (got, want) in stored.iter().zip(&exact) {
        let paths = |g: &[(String, f64)]| g.iter().map(|m| m.0.clone()).collect::<Vec<_>>();
        assert_eq!(paths(got), paths(want));
        for (g, w) in got.iter().zip(want) {
            assert!((g.1 - w.1).abs() < 1e-5, "{g:?} vs {w:?}");
        }
    }
    // A table that is not there is an error that says what to do.
    let plain = url.replace("&table=vlm_dups", "");
    let out = run(&mut vlm(&[
        "dedup",
        "--in",
        &plain,
        "--table",
        "nothing_here",
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("vlm embed"), "{}", stderr(&out));
}
