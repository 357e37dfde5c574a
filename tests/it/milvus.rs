//! `--to`/`--in milvus://...` against a real Milvus gRPC server: milvus-lite, which each
//! test starts in a temp dir on 127.0.0.1 and a free port, and kills on drop.
//!
//! Needs a vlm built with `--features milvus` and the `milvus-lite` command from PyPI
//! (`.ci/test` makes the git-ignored venv `.venv-scale` with it; `VLM_MILVUS_LITE` names
//! another). Without them these tests print a notice and pass, unless
//! VLM_REQUIRE_MILVUS=1, where they fail.

#[cfg(feature = "milvus")]
mod with_client {
    use std::collections::HashMap;
    use std::net::{TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output, Stdio};
    use std::time::{Duration, Instant};

    use milvus::v2::request::collection::{
        CreateCollectionRequest, DescribeCollectionRequest, LoadCollectionRequest,
    };
    use milvus::v2::request::dml::{InsertRequest, UpsertRequest};
    use milvus::v2::request::dql::QueryRequest;
    use milvus::v2::request::index::DescribeIndexRequest;
    use milvus::v2::{
        ClientV2, CollectionSchema, ConnectConfig, ConsistencyLevel, DataType, FieldData,
        FieldSchema, IndexParam, IndexType, MetricType, TelemetryConfig,
    };
    use serde_json::Value;
    use sha2::{Digest, Sha256};

    use crate::common::{self, stderr};

    const PASSWORD: &str = "Sw0rdf1sh-not-in-milvus-logs";

    /// A milvus-lite server; `None` (after a notice) when milvus-lite is missing.
    pub(super) struct Server {
        data: tempfile::TempDir,
        exe: PathBuf,
        child: Option<Child>,
        port: u16,
    }

    fn milvus_lite() -> Option<PathBuf> {
        let exe = std::env::var_os("VLM_MILVUS_LITE").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-scale/bin/milvus-lite"),
            PathBuf::from,
        );
        exe.is_file().then_some(exe)
    }

    fn free_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        listener.local_addr().expect("local address").port()
    }

    impl Server {
        pub(super) fn start() -> Option<Self> {
            let Some(exe) = milvus_lite() else {
                super::missing("no milvus-lite in .venv-scale/bin (or VLM_MILVUS_LITE)");
                return None;
            };
            let data = tempfile::Builder::new()
                .prefix("vlm-milvus")
                .tempdir()
                .expect("temp dir");
            let mut server = Self {
                data,
                exe,
                child: None,
                port: 0,
            };
            server.restart();
            Some(server)
        }

        /// Starts the server on its data dir, on a new free port, and waits for the port.
        fn restart(&mut self) {
            self.port = free_port();
            let child = Command::new(&self.exe)
                .arg("server")
                .arg("--data-dir")
                .arg(self.data.path().join("data"))
                .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(
                    std::fs::File::create(self.data.path().join("log"))
                        .map_or_else(|_| Stdio::null(), Stdio::from),
                )
                .spawn()
                .expect("start milvus-lite");
            self.child = Some(child);
            let deadline = Instant::now() + Duration::from_secs(60);
            while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    let log =
                        std::fs::read_to_string(self.data.path().join("log")).unwrap_or_default();
                    panic!("milvus-lite exited with {status}:\n{log}");
                }
                assert!(
                    Instant::now() < deadline,
                    "milvus-lite did not open its port in 60 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        /// Kills the server at once, as a crash would.
        fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        /// The address with a user and password in it.
        fn url(&self, collection: &str) -> String {
            format!(
                "milvus://vlm:{PASSWORD}@127.0.0.1:{}/{collection}",
                self.port
            )
        }

        fn client(&self) -> Client {
            Client::new(self.port)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.kill();
        }
    }

    /// The test's own view of the server, through the same SDK.
    struct Client {
        runtime: tokio::runtime::Runtime,
        client: ClientV2,
    }

    struct Row {
        hash: String,
        model: String,
        dim: i32,
        embedding: Vec<f32>,
        updated_at: i64,
        top_label: String,
        top_probability: f32,
        labels: Value,
    }

    impl Client {
        fn new(port: u16) -> Self {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let config = ConnectConfig::new()
                .uri(format!("http://127.0.0.1:{port}"))
                .telemetry(TelemetryConfig::new().enabled(false));
            let client = runtime
                .block_on(ClientV2::new(&config))
                .expect("connect to the test server");
            Self { runtime, client }
        }

        fn rows(&self, collection: &str) -> HashMap<String, Row> {
            let load = LoadCollectionRequest::builder()
                .collection_name(collection)
                .sync(true)
                .build()
                .unwrap();
            self.runtime
                .block_on(self.client.load_collection(load))
                .expect("load");
            let request = QueryRequest::builder()
                .collection_name(collection)
                .filter("path != \"\"")
                .output_fields([
                    "path",
                    "content_hash",
                    "model",
                    "dim",
                    "embedding",
                    "updated_at",
                    "top_label",
                    "top_probability",
                    "labels",
                ])
                .limit(16_000)
                .consistency_level(ConsistencyLevel::Strong)
                .build()
                .unwrap();
            let found = self
                .runtime
                .block_on(self.client.query(request))
                .expect("query rows");
            found
                .results()
                .rows()
                .expect("rows")
                .map(|row| {
                    (
                        row.get_str("path").unwrap().to_string(),
                        Row {
                            hash: row.get_str("content_hash").unwrap().to_string(),
                            model: row.get_str("model").unwrap().to_string(),
                            dim: i32::try_from(row.get_i64("dim").unwrap()).unwrap(),
                            embedding: row.get_float_vector("embedding").unwrap().to_vec(),
                            updated_at: row.get_i64("updated_at").unwrap(),
                            top_label: row.get_str("top_label").unwrap().to_string(),
                            top_probability: row.get_f32("top_probability").unwrap(),
                            labels: row.get_json("labels").unwrap().clone(),
                        },
                    )
                })
                .collect()
        }

        /// How many rows the collection has, 0 when it cannot be read.
        fn count(&self, collection: &str) -> usize {
            let Ok(request) = QueryRequest::builder()
                .collection_name(collection)
                .output_fields(["count(*)"])
                .consistency_level(ConsistencyLevel::Strong)
                .build()
            else {
                return 0;
            };
            self.runtime
                .block_on(self.client.query(request))
                .ok()
                .and_then(|found| {
                    let row = found.results().rows().ok()?.next()?;
                    row.get_i64("count(*)").ok()
                })
                .map_or(0, |n| usize::try_from(n).unwrap_or(0))
        }

        fn index(&self, collection: &str) -> (String, String) {
            let request = DescribeIndexRequest::builder()
                .collection_name(collection)
                .field_name("embedding")
                .build()
                .unwrap();
            let described = self
                .runtime
                .block_on(self.client.describe_index(request))
                .expect("describe the index");
            let text = format!("{described:?}").to_ascii_uppercase();
            let index = if text.contains("HNSW") { "HNSW" } else { "?" };
            let metric = if text.contains("COSINE") {
                "COSINE"
            } else {
                "?"
            };
            (index.to_string(), metric.to_string())
        }

        fn dimension(&self, collection: &str) -> u32 {
            let request = DescribeCollectionRequest::builder()
                .collection_name(collection)
                .build()
                .unwrap();
            let described = self
                .runtime
                .block_on(self.client.describe_collection(request))
                .expect("describe");
            described
                .description()
                .get_schema()
                .get_fields()
                .iter()
                .find(|f| f.get_name() == "embedding")
                .map(|f| f.get_dimension())
                .expect("an embedding field")
        }

        /// Makes a collection shaped like vlm's, but with 3-dimensional embeddings.
        fn create_narrow(&self, collection: &str) {
            let varchar = |name: &str| {
                FieldSchema::new()
                    .name(name)
                    .data_type(DataType::VarChar)
                    .max_length(1000)
            };
            let schema = CollectionSchema::new()
                .add_field(varchar("path").primary_key(true))
                .add_field(varchar("content_hash"))
                .add_field(varchar("model"))
                .add_field(varchar("revision"))
                .add_field(FieldSchema::new().name("dim").data_type(DataType::Int32))
                .add_field(
                    FieldSchema::new()
                        .name("embedding")
                        .data_type(DataType::FloatVector)
                        .dimension(3),
                )
                .add_field(
                    FieldSchema::new()
                        .name("updated_at")
                        .data_type(DataType::Int64),
                )
                .add_field(varchar("top_label"))
                .add_field(
                    FieldSchema::new()
                        .name("top_probability")
                        .data_type(DataType::Float),
                )
                .add_field(FieldSchema::new().name("labels").data_type(DataType::Json));
            let request = CreateCollectionRequest::builder()
                .collection_name(collection)
                .schema(schema)
                .index_param(
                    IndexParam::new()
                        .field_name("embedding")
                        .index_type(IndexType::Flat)
                        .metric_type(MetricType::Cosine),
                )
                .build()
                .unwrap();
            self.runtime
                .block_on(self.client.create_collection(request))
                .expect("create the narrow collection");
        }

        /// Rewrites every row's model, as if another model had filled the collection.
        fn set_model(&self, collection: &str, model: &str) {
            let rows = self.rows(collection);
            let paths: Vec<String> = rows.keys().cloned().collect();
            let n = paths.len();
            let columns = vec![
                FieldData::varchar("path", paths.clone()),
                FieldData::varchar(
                    "content_hash",
                    paths.iter().map(|p| rows[p].hash.clone()).collect(),
                ),
                FieldData::varchar("model", vec![model.to_string(); n]),
                FieldData::varchar("revision", vec![String::new(); n]),
                FieldData::int32("dim", paths.iter().map(|p| rows[p].dim).collect()),
                FieldData::float_vector(
                    "embedding",
                    paths.iter().map(|p| rows[p].embedding.clone()).collect(),
                ),
                FieldData::int64("updated_at", vec![0; n]),
                FieldData::varchar("top_label", vec![String::new(); n]),
                FieldData::float("top_probability", vec![0.0; n]),
                FieldData::json("labels", vec![Value::Array(Vec::new()); n]),
            ];
            let insert = InsertRequest::builder()
                .collection_name(collection)
                .columns(columns)
                .build()
                .unwrap();
            let request = UpsertRequest::builder().insert(insert).build().unwrap();
            self.runtime
                .block_on(self.client.upsert(request))
                .expect("rewrite the model");
        }
    }

    /// Runs vlm and checks that the password shows nowhere in what it printed.
    fn run(command: &mut Command) -> Output {
        let out = command.output().expect("run vlm");
        assert_no_password(&out);
        out
    }

    fn assert_no_password(out: &Output) {
        for stream in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(stream);
            assert!(
                !text.contains(PASSWORD),
                "the password was printed:\n{text}"
            );
        }
    }

    fn vlm(args: &[&str]) -> Command {
        let mut command = common::vlm();
        command.args(args).arg("--model").arg(common::tiny_model());
        command
    }

    fn images(dir: &Path, per_class: usize) -> PathBuf {
        let root = dir.join("pics");
        common::draw_domain(&root, 2, per_class, 16);
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
    fn embed_to_milvus_matches_the_file_output_and_upserts_only_changes() {
        let Some(server) = Server::start() else {
            return;
        };
        let tmp = tempfile::tempdir().expect("temp dir");
        let pics = images(tmp.path(), 4);
        // A name that a Milvus filter must escape (the skip-unchanged lookup is one).
        let odd = pics.join("odd");
        std::fs::create_dir(&odd).expect("mkdir");
        std::fs::copy(pics.join("green/00.png"), odd.join("it's \"q\" \\ b.png")).expect("copy");
        let url = server.url("emb");

        let first = run(vlm(&["embed", "--to", &url]).arg(&pics));
        assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
        assert!(
            stderr(&first).contains("stored 9 embeddings (0 unchanged)"),
            "{}",
            stderr(&first)
        );
        assert!(
            stderr(&first).contains("milvus://vlm:***@127.0.0.1"),
            "the address is shown redacted: {}",
            stderr(&first)
        );
        let want = file_embeddings(tmp.path(), &pics);
        let client = server.client();
        let got = client.rows("emb");
        assert_rows_match(&got, &want);
        let model = &got.values().next().unwrap().model;
        assert!(got.values().all(|r| &r.model == model));
        assert!(got
            .values()
            .all(|r| r.top_label.is_empty() && r.labels == Value::Array(vec![])));
        assert_eq!(
            client.index("emb"),
            ("HNSW".to_string(), "COSINE".to_string())
        );
        let stamp = |rows: &HashMap<String, Row>| {
            let mut v: Vec<(String, i64)> = rows
                .iter()
                .map(|(p, r)| (p.clone(), r.updated_at))
                .collect();
            v.sort();
            v
        };
        let before = stamp(&got);

        // Unchanged files: nothing embedded, nothing written.
        let second = run(vlm(&["embed", "--to", &url, "--verbose"]).arg(&pics));
        assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
        assert!(
            stderr(&second).contains("stored 0 embeddings (9 unchanged)"),
            "{}",
            stderr(&second)
        );
        assert!(
            stderr(&second).contains("image encoder ran on 0 images"),
            "{}",
            stderr(&second)
        );
        assert_eq!(
            stamp(&client.rows("emb")),
            before,
            "a second run rewrote rows"
        );

        // One changed file: that row alone is replaced.
        let red = pics.join("red");
        std::fs::copy(red.join("01.png"), red.join("00.png")).expect("change a file");
        let third = run(vlm(&["embed", "--to", &url]).arg(&pics));
        assert!(
            stderr(&third).contains("stored 1 embeddings (8 unchanged)"),
            "{}",
            stderr(&third)
        );
        let after = client.rows("emb");
        let changed = red.join("00.png").display().to_string();
        let twin = red.join("01.png").display().to_string();
        assert_eq!(after[&changed].hash, after[&twin].hash);
        assert!(after[&changed].updated_at >= before.iter().map(|s| s.1).max().unwrap());
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
    fn search_in_milvus_ranks_like_the_brute_force_search() {
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
        // --table names the collection as the path does.
        let plain = url.trim_end_matches("/vlm_embeddings").to_string();
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
    fn classify_to_milvus_stores_labels_in_the_rows() {
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
        let rows = server.client().rows("cls");
        let reports: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(reports.len(), 6);
        for report in &reports {
            let row = &rows[report["path"].as_str().unwrap()];
            let best = &report["results"][0];
            assert_eq!(row.top_label, best["label"].as_str().unwrap(), "{report}");
            assert!(
                (f64::from(row.top_probability) - best["probability"].as_f64().unwrap()).abs()
                    < 1e-6
            );
            assert_eq!(row.labels, report["results"], "the ranked labels as JSON");
        }
        assert_rows_match(&rows, &file_embeddings(tmp.path(), &pics));
    }

    #[test]
    fn a_collection_of_another_dimension_or_model_is_refused_before_any_write() {
        let Some(server) = Server::start() else {
            return;
        };
        let tmp = tempfile::tempdir().expect("temp dir");
        let pics = images(tmp.path(), 1);
        let client = server.client();
        client.create_narrow("narrow");
        let out = run(vlm(&["embed", "--to", &server.url("narrow")]).arg(&pics));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("3-dimensional"), "{}", stderr(&out));
        assert_eq!(client.count("narrow"), 0);
        assert_eq!(
            client.dimension("narrow"),
            3,
            "the collection was left alone"
        );

        let url = server.url("other");
        let out = run(vlm(&["embed", "--to", &url]).arg(&pics));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        client.set_model("other", "someone/else");
        let out = run(vlm(&["embed", "--to", &url])
            .arg(pics.join("red/00.png"))
            .arg(pics.join("green/00.png")));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("someone/else"), "{}", stderr(&out));
        let rows = client.rows("other");
        assert_eq!(rows.len(), 2);
        assert!(rows.values().all(|r| r.model == "someone/else"));

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
    fn an_unreachable_server_is_exit_2_and_the_password_is_never_shown() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let pics = images(tmp.path(), 1);
        // Nothing listens on a port just freed.
        let url = format!("milvus://vlm:{PASSWORD}@127.0.0.1:{}/emb", free_port());
        let started = Instant::now();
        let out = run(vlm(&["embed", "--to", &url]).arg(&pics));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot connect to milvus://vlm:***@127.0.0.1"),
            "{}",
            stderr(&out)
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "giving up took {:?}",
            started.elapsed()
        );
        let out = run(&mut vlm(&["search", "a cat", "--in", &url]));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        // A password in the address is refused nowhere but never echoed either.
        let out = run(&mut vlm(&[
            "search",
            "a cat",
            "--in",
            &url.replace("127.0.0.1", "127.0.0.1:notaport"),
        ]));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    }

    #[test]
    fn passwords_made_of_url_characters_are_never_shown() {
        let Some(server) = Server::start() else {
            return;
        };
        let tmp = tempfile::tempdir().expect("temp dir");
        let pics = images(tmp.path(), 1);
        let closed = free_port();
        for password in common::URL_PASSWORDS {
            let encoded = common::percent_encode(password);
            let hidden = |out: &Output, url: &str| {
                common::assert_hidden(out, &[password, encoded.as_str()], url);
            };
            // milvus-lite has no users: it takes any password, so these runs succeed.
            let good = format!("milvus://vlm:{encoded}@127.0.0.1:{}/emb", server.port);
            let out = vlm(&["embed", "--to", &good]).arg(&pics).output().unwrap();
            hidden(&out, &good);
            assert_eq!(out.status.code(), Some(0), "{good}: {}", stderr(&out));
            assert!(stderr(&out).contains("vlm:***@"), "{}", stderr(&out));
            let out = vlm(&["search", "a cat", "--in", &good]).output().unwrap();
            hidden(&out, &good);
            assert_eq!(out.status.code(), Some(0), "{good}: {}", stderr(&out));
            // Failing: nothing listens on the port (each such run takes seconds of
            // retries, so one a password), or the port is not a number.
            for bad in [
                format!("milvus://vlm:{password}@127.0.0.1:{closed}/emb"),
                format!("milvus://vlm:{encoded}@127.0.0.1:x{closed}/emb"),
            ] {
                let out = vlm(&["search", "a cat", "--in", &bad]).output().unwrap();
                hidden(&out, &bad);
                assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
            }
        }
    }

    #[test]
    fn a_server_killed_mid_run_is_exit_2_and_a_rerun_stores_every_image_once() {
        let Some(mut server) = Server::start() else {
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
        let client = server.client();
        let deadline = Instant::now() + Duration::from_secs(120);
        while client.count("emb") < 5 {
            assert!(Instant::now() < deadline, "vlm stored nothing in 120 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(client);
        server.kill();
        let out = child.wait_with_output().expect("wait for vlm");
        assert_no_password(&out);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("run the same command again"),
            "{}",
            stderr(&out)
        );

        server.restart();
        let url = server.url("emb");
        let out = run(vlm(&["embed", "--to", &url]).arg(&pics));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let rows = server.client().rows("emb");
        assert_eq!(rows.len(), 300, "every image once");
        assert_eq!(server.client().count("emb"), 300, "no path twice");
        assert_rows_match(&rows, &file_embeddings(tmp.path(), &pics));
    }
}

/// Skips (with a notice) or, under VLM_REQUIRE_MILVUS=1, fails.
#[cfg_attr(not(feature = "milvus"), allow(dead_code))]
fn missing(what: &str) {
    let message = format!(
        "{what}; run .ci/test (it builds with --features milvus and installs milvus-lite into .venv-scale)"
    );
    if std::env::var("VLM_REQUIRE_MILVUS").as_deref() == Ok("1") {
        panic!("VLM_REQUIRE_MILVUS=1 but {message}");
    }
    eprintln!("SKIPPED Milvus test: {message}");
}

/// Without the feature, the tests above do not exist: say so, and check that the address
/// is refused with a message that names the feature.
#[cfg(not(feature = "milvus"))]
#[test]
fn without_the_milvus_feature_an_address_names_the_feature_to_build_with() {
    missing("this test binary was built without --features milvus");
    let out = crate::common::vlm()
        .args([
            "search",
            "a cat",
            "--in",
            "milvus://u:Secret99@127.0.0.1:1/c",
        ])
        .output()
        .expect("run vlm");
    let err = crate::common::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--features milvus"), "{err}");
    assert!(!err.contains("Secret99"), "{err}");
}
