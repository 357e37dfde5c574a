//! Image embeddings (and labels) in a Milvus collection, through Milvus's gRPC API
//! ([`milvus-sdk-rust`](https://github.com/milvus-io/milvus-sdk-rust) 3.0.3, the v2 client).
//!
//! One collection per model holds one row per path, the Milvus counterpart of the
//! PostgreSQL table in [`super::postgres`]:
//!
//! | field | type | |
//! |---|---|---|
//! | `path` | VarChar, primary key | the input as vlm shows it |
//! | `content_hash` | VarChar(64) | SHA-256 of the file (the cache's ContentKey) |
//! | `model`, `revision` | VarChar | the checkpoint; `revision` is `""` when unknown |
//! | `dim` | Int32 | |
//! | `embedding` | FloatVector(D) | HNSW index, COSINE metric |
//! | `updated_at` | Int64 | Unix milliseconds |
//! | `top_label`, `top_probability`, `labels` | VarChar, Float, JSON | `vlm classify --to`; `""`, 0 and `[]` from `vlm embed` |
//!
//! Milvus has no second table beside a collection (every collection needs a vector
//! field), so the labels live in the same row. An upsert replaces a whole row: `vlm embed`
//! rewrites only new or changed files, whose old labels described other bytes anyway.
//!
//! Rows are upserted by path a batch per request, so a run cut short keeps every batch the
//! server acknowledged, and a re-run, which skips paths whose stored hash matches the file,
//! neither loses nor doubles a row.
//!
//! The client is async (tokio); vlm is not, so each store owns a single-threaded runtime
//! and blocks on it.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use milvus::v2::error::Error as SdkError;
use milvus::v2::request::collection::{
    CreateCollectionRequest, DescribeCollectionRequest, HasCollectionRequest, LoadCollectionRequest,
};
use milvus::v2::request::dml::{InsertRequest, UpsertRequest};
use milvus::v2::request::dql::{QueryRequest, SearchRequest};
use milvus::v2::{
    ClientV2, CollectionSchema, ConnectConfig, ConsistencyLevel, DataType, FieldData, FieldSchema,
    Ids, IndexParam, IndexType, MetricType, RetryConfig, SearchVectors, TelemetryConfig,
};
use thiserror::Error;
use tokio::runtime::Runtime;

use super::{
    Address, EmbeddingRow, EmbeddingStore, LabelRow, MilvusEndpoint, ModelStamp, StoreError,
    StoredHit,
};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take (an upsert of a batch, a search).
const RPC_TIMEOUT: Duration = Duration::from_secs(60);
/// Retries of a failed request: a few, so that a server that is gone is reported in
/// seconds rather than after the client's default of 75 attempts.
const ATTEMPTS: u32 = 3;
/// Rows per upsert request: 500 rows of 1024 floats are 2 MB, well under gRPC's 64 MB.
const ROWS_PER_REQUEST: usize = 500;
/// Paths per lookup of stored hashes.
const PATHS_PER_LOOKUP: usize = 1000;
/// Milvus's longest VarChar; the primary key holds paths and URLs.
const MAX_PATH: u32 = 65_535;
/// The most rows one Milvus search returns.
const MAX_LIMIT: usize = 16_384;

/// The fields a collection made by vlm has, in order.
const FIELDS: [&str; 10] = [
    "path",
    "content_hash",
    "model",
    "revision",
    "dim",
    "embedding",
    "updated_at",
    "top_label",
    "top_probability",
    "labels",
];

/// What can go wrong talking to Milvus. Every message names the address with the password
/// removed, never the password.
#[derive(Debug, Error)]
pub enum MilvusError {
    #[error("cannot connect to {shown}: {cause}; check that the Milvus server is running and the address, user and password are right")]
    Connect { shown: String, cause: String },
    #[error("{shown}: {what} failed: {cause}; rows stored before this are kept, run the same command again to finish")]
    Lost {
        shown: String,
        what: &'static str,
        cause: String,
    },
    #[error("{shown}: {what} failed: {cause}")]
    Request {
        shown: String,
        what: &'static str,
        cause: String,
    },
    #[error("{shown} holds {collection_dim}-dimensional embeddings but this model makes {dim}-dimensional ones; use another collection (--table or milvus://HOST:PORT/OTHER) or the model that filled it")]
    Dimension {
        shown: String,
        collection_dim: usize,
        dim: usize,
    },
    #[error("{shown} holds embeddings of {collection_model} but this model is {model}; use another collection (--table or milvus://HOST:PORT/OTHER) or --model {collection_model}")]
    Model {
        shown: String,
        collection_model: String,
        model: String,
    },
    #[error("{shown} exists but was not made by vlm (it lacks the field {field}); choose another collection with --table or milvus://HOST:PORT/OTHER")]
    Foreign { shown: String, field: &'static str },
    #[error("{shown} does not exist; fill it first with vlm embed INPUTS --to ADDRESS")]
    Missing { shown: String },
    #[error("internal error: cannot start the Milvus client's runtime: {0}; please report it")]
    Runtime(String),
}

/// An open connection to one collection.
pub struct MilvusStore {
    runtime: Runtime,
    client: ClientV2,
    collection: String,
    shown: String,
    stamp: ModelStamp,
}

/// The client's settings for `endpoint`: plain gRPC over HTTP/2 (no TLS), the user and
/// password as Milvus's `user:password` token, short retries, no telemetry.
fn connect_config(endpoint: &MilvusEndpoint) -> ConnectConfig {
    let mut config = ConnectConfig::new()
        .uri(format!("http://{}:{}", endpoint.host, endpoint.port))
        .connect_timeout(CONNECT_TIMEOUT)
        .rpc_timeout(RPC_TIMEOUT)
        .retry(
            RetryConfig::new()
                .max_attempts(ATTEMPTS)
                .max_retry_timeout(Duration::from_secs(15)),
        )
        .telemetry(TelemetryConfig::new().enabled(false));
    if let Some(user) = &endpoint.user {
        config = config.username(user).password(
            endpoint
                .password
                .as_ref()
                .map_or_else(String::new, |p| p.expose().to_string()),
        );
    }
    if let Some(database) = &endpoint.database {
        config = config.database(database);
    }
    config
}

/// The error's text with its causes. The client never puts the token in it (it travels
/// only as gRPC metadata), and the address it names is `http://HOST:PORT`.
fn cause(err: &SdkError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

/// True when `err` means the server went away (or never answered), rather than that it
/// refused the request.
fn is_lost(err: &SdkError) -> bool {
    match err {
        // gRPC status codes: CANCELLED 1, UNKNOWN 2, DEADLINE_EXCEEDED 4, ABORTED 10,
        // UNAVAILABLE 14 (tonic's `Code` discriminants are the wire values).
        SdkError::Grpc(status) => matches!(status.code() as i32, 1 | 2 | 4 | 10 | 14),
        SdkError::RetryExhausted { source, .. } => is_lost(source),
        SdkError::Timeout(_) | SdkError::Cancelled(_) => true,
        _ => false,
    }
}

fn request_error(shown: &str, what: &'static str, err: &SdkError) -> MilvusError {
    let (shown, cause) = (shown.to_string(), cause(err));
    if is_lost(err) {
        MilvusError::Lost { shown, what, cause }
    } else {
        MilvusError::Request { shown, what, cause }
    }
}

/// `text` as a double-quoted string in a Milvus filter expression. Escapes what Milvus
/// and milvus-lite both read back: `\\`, `\"`, `\n`, `\r`, `\t`. A path with another
/// control character then matches no row, so it is embedded and upserted again each run:
/// wasted work, but never a second row.
fn string_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl MilvusStore {
    /// Connects for writing: makes the collection (schema, COSINE HNSW index, loaded) if
    /// missing, and refuses (before any write) a collection of another dimension or model.
    pub fn open_for_writing(address: &Address, stamp: ModelStamp) -> Result<Self, MilvusError> {
        let store = Self::connect(address, stamp)?;
        match store.existing()? {
            Some(found) => store.check(&found)?,
            None => {
                store.create()?;
                store.load()?;
            }
        }
        Ok(store)
    }

    /// Connects for searching an existing collection filled by this model.
    pub fn open_for_search(address: &Address, stamp: ModelStamp) -> Result<Self, MilvusError> {
        let store = Self::connect(address, stamp)?;
        match store.existing()? {
            Some(found) => store.check(&found)?,
            None => {
                return Err(MilvusError::Missing {
                    shown: store.shown.clone(),
                })
            }
        }
        Ok(store)
    }

    fn connect(address: &Address, stamp: ModelStamp) -> Result<Self, MilvusError> {
        let shown = address.shown.clone();
        let Some(endpoint) = &address.milvus else {
            return Err(MilvusError::Connect {
                shown,
                cause: "not a milvus:// address".into(),
            });
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| MilvusError::Runtime(e.to_string()))?;
        let config = connect_config(endpoint);
        let client =
            runtime
                .block_on(ClientV2::new(&config))
                .map_err(|e| MilvusError::Connect {
                    shown: shown.clone(),
                    cause: cause(&e),
                })?;
        Ok(Self {
            runtime,
            client,
            collection: address.table.as_str().to_string(),
            shown,
            stamp,
        })
    }

    /// Runs one request of the client to its end.
    fn run<T>(
        &self,
        what: &'static str,
        request: impl Future<Output = Result<T, SdkError>>,
    ) -> Result<T, MilvusError> {
        self.runtime
            .block_on(request)
            .map_err(|e| request_error(&self.shown, what, &e))
    }

    fn invalid(&self, what: &'static str, err: &SdkError) -> MilvusError {
        request_error(&self.shown, what, err)
    }

    /// The existing collection's embedding dimension and the model of one of its rows;
    /// `None` when there is no such collection. Loads the collection to read the row.
    fn existing(&self) -> Result<Option<Existing>, MilvusError> {
        let has = HasCollectionRequest::builder()
            .collection_name(&self.collection)
            .build()
            .map_err(|e| self.invalid("looking up the collection", &e))?;
        let exists = self
            .run("looking up the collection", self.client.has_collection(has))?
            .exists();
        if !exists {
            return Ok(None);
        }
        let describe = DescribeCollectionRequest::builder()
            .collection_name(&self.collection)
            .build()
            .map_err(|e| self.invalid("reading the collection's schema", &e))?;
        let described = self.run(
            "reading the collection's schema",
            self.client.describe_collection(describe),
        )?;
        let fields = described.description().get_schema().get_fields();
        for field in FIELDS {
            if !fields.iter().any(|f| f.get_name() == field) {
                return Err(MilvusError::Foreign {
                    shown: self.shown.clone(),
                    field,
                });
            }
        }
        let dim = fields
            .iter()
            .find(|f| f.get_name() == "embedding")
            .map(|f| f.get_dimension() as usize);
        self.load()?;
        let query = QueryRequest::builder()
            .collection_name(&self.collection)
            .filter("path != \"\"")
            .output_fields(["model", "revision"])
            .limit(1)
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(|e| self.invalid("reading the collection's model", &e))?;
        let found = self.run("reading the collection's model", self.client.query(query))?;
        let rows = found
            .results()
            .rows()
            .map_err(|e| self.invalid("reading the collection's model", &e))?;
        let mut model = None;
        for row in rows {
            let name = row
                .get_str("model")
                .map_err(|e| self.invalid("reading the collection's model", &e))?;
            let revision = row
                .get_str("revision")
                .map_err(|e| self.invalid("reading the collection's model", &e))?;
            model = Some((
                name.to_string(),
                Some(revision.to_string()).filter(|r| !r.is_empty()),
            ));
        }
        Ok(Some(Existing { dim, model }))
    }

    fn check(&self, found: &Existing) -> Result<(), MilvusError> {
        if let Some(dim) = found.dim.filter(|&d| d != self.stamp.dim) {
            return Err(MilvusError::Dimension {
                shown: self.shown.clone(),
                collection_dim: dim,
                dim: self.stamp.dim,
            });
        }
        if let Some((model, revision)) = &found.model {
            if model != &self.stamp.model || revision != &self.stamp.revision {
                let collection_model = ModelStamp {
                    model: model.clone(),
                    revision: revision.clone(),
                    dim: 0,
                }
                .name();
                return Err(MilvusError::Model {
                    shown: self.shown.clone(),
                    collection_model,
                    model: self.stamp.name(),
                });
            }
        }
        Ok(())
    }

    fn create(&self) -> Result<(), MilvusError> {
        let varchar = |name: &str, max: u32| {
            FieldSchema::new()
                .name(name)
                .data_type(DataType::VarChar)
                .max_length(max)
        };
        let dim = u32::try_from(self.stamp.dim).unwrap_or(u32::MAX);
        let schema = CollectionSchema::new()
            .description("image embeddings written by vlm")
            .add_field(varchar("path", MAX_PATH).primary_key(true).auto_id(false))
            .add_field(varchar("content_hash", 64))
            .add_field(varchar("model", 1024))
            .add_field(varchar("revision", 256))
            .add_field(FieldSchema::new().name("dim").data_type(DataType::Int32))
            .add_field(
                FieldSchema::new()
                    .name("embedding")
                    .data_type(DataType::FloatVector)
                    .dimension(dim),
            )
            .add_field(
                FieldSchema::new()
                    .name("updated_at")
                    .data_type(DataType::Int64),
            )
            .add_field(varchar("top_label", MAX_PATH))
            .add_field(
                FieldSchema::new()
                    .name("top_probability")
                    .data_type(DataType::Float),
            )
            .add_field(FieldSchema::new().name("labels").data_type(DataType::Json));
        let index = IndexParam::new()
            .field_name("embedding")
            .index_type(IndexType::Hnsw)
            .metric_type(MetricType::Cosine)
            .extra_params(HashMap::from([
                ("M".to_string(), "16".to_string()),
                ("efConstruction".to_string(), "64".to_string()),
            ]));
        let request = CreateCollectionRequest::builder()
            .collection_name(&self.collection)
            .schema(schema)
            .index_param(index)
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(|e| self.invalid("creating the collection", &e))?;
        self.run(
            "creating the collection",
            self.client.create_collection(request),
        )
    }

    /// Loads the collection into memory (Milvus searches and queries only loaded ones) and
    /// waits until it is.
    fn load(&self) -> Result<(), MilvusError> {
        let request = LoadCollectionRequest::builder()
            .collection_name(&self.collection)
            .sync(true)
            .timeout_ms(60_000)
            .build()
            .map_err(|e| self.invalid("loading the collection", &e))?;
        self.run(
            "loading the collection",
            self.client.load_collection(request),
        )
    }

    /// The stored content hash of each of `paths` that has a row.
    pub fn stored_hashes(&self, paths: &[String]) -> Result<HashMap<String, String>, MilvusError> {
        let what = "looking up stored rows";
        let mut stored = HashMap::new();
        for chunk in paths.chunks(PATHS_PER_LOOKUP) {
            // A filter, not the client's `get`: `get` sends the paths as an expression
            // template, which milvus-lite does not parse.
            let filter = format!(
                "path in [{}]",
                chunk
                    .iter()
                    .map(|p| string_literal(p))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let request = QueryRequest::builder()
                .collection_name(&self.collection)
                .filter(filter)
                .output_fields(["path", "content_hash"])
                .consistency_level(ConsistencyLevel::Strong)
                .build()
                .map_err(|e| self.invalid(what, &e))?;
            let found = self.run(what, self.client.query(request))?;
            for row in found.results().rows().map_err(|e| self.invalid(what, &e))? {
                let path = row.get_str("path").map_err(|e| self.invalid(what, &e))?;
                let hash = row
                    .get_str("content_hash")
                    .map_err(|e| self.invalid(what, &e))?;
                stored.insert(path.to_string(), hash.to_string());
            }
        }
        Ok(stored)
    }

    /// Inserts or replaces `rows` (by path), with `labels` for the same paths when given,
    /// one request per [`ROWS_PER_REQUEST`]. Returns how many were written.
    pub fn upsert(
        &self,
        rows: &[EmbeddingRow<'_>],
        labels: Option<&[LabelRow<'_>]>,
    ) -> Result<u64, MilvusError> {
        let what = if labels.is_some() {
            "storing embeddings and labels"
        } else {
            "storing embeddings"
        };
        let mut written = 0;
        for (n, chunk) in rows.chunks(ROWS_PER_REQUEST).enumerate() {
            let labels = labels.map(|all| {
                let start = n * ROWS_PER_REQUEST;
                &all[start.min(all.len())..(start + chunk.len()).min(all.len())]
            });
            let columns = self.columns(chunk, labels);
            let insert = InsertRequest::builder()
                .collection_name(&self.collection)
                .columns(columns)
                .build()
                .map_err(|e| self.invalid(what, &e))?;
            let request = UpsertRequest::builder()
                .insert(insert)
                .build()
                .map_err(|e| self.invalid(what, &e))?;
            let done = self.run(what, self.client.upsert(request))?;
            written += u64::try_from(done.upsert_count()).unwrap_or(0);
        }
        Ok(written)
    }

    /// The rows as Milvus columns. Rows without a label row get `""`, 0 and `[]`.
    fn columns(
        &self,
        rows: &[EmbeddingRow<'_>],
        labels: Option<&[LabelRow<'_>]>,
    ) -> Vec<FieldData> {
        let n = rows.len();
        let label_of = |path: &str| labels.and_then(|all| all.iter().find(|l| l.path == path));
        let now = now_millis();
        let dim = i32::try_from(self.stamp.dim).unwrap_or(i32::MAX);
        let revision = self.stamp.revision.clone().unwrap_or_default();
        let strings = |f: &dyn Fn(&EmbeddingRow<'_>) -> String| rows.iter().map(f).collect();
        vec![
            FieldData::varchar("path", strings(&|r| r.path.to_string())),
            FieldData::varchar("content_hash", strings(&|r| r.content_hash.to_string())),
            FieldData::varchar("model", vec![self.stamp.model.clone(); n]),
            FieldData::varchar("revision", vec![revision; n]),
            FieldData::int32("dim", vec![dim; n]),
            FieldData::float_vector(
                "embedding",
                rows.iter().map(|r| r.embedding.to_vec()).collect(),
            ),
            FieldData::int64("updated_at", vec![now; n]),
            FieldData::varchar(
                "top_label",
                strings(&|r| label_of(r.path).map_or(String::new(), |l| l.top_label.to_string())),
            ),
            FieldData::float(
                "top_probability",
                rows.iter()
                    .map(|r| label_of(r.path).map_or(0.0, |l| l.top_probability))
                    .collect(),
            ),
            FieldData::json(
                "labels",
                rows.iter()
                    .map(|r| {
                        label_of(r.path)
                            .and_then(|l| serde_json::from_str(&l.labels_json).ok())
                            .unwrap_or_else(|| serde_json::Value::Array(Vec::new()))
                    })
                    .collect(),
            ),
        ]
    }

    /// The `n` rows nearest to `query` by cosine similarity, through the HNSW index.
    pub fn search(&self, query: &[f32], n: usize) -> Result<Vec<StoredHit>, MilvusError> {
        let what = "searching";
        let limit = n.clamp(1, MAX_LIMIT);
        // HNSW returns at most ef candidates, so ef must reach the limit.
        let ef = limit.max(64);
        let request = SearchRequest::builder()
            .collection_name(&self.collection)
            .vector_field("embedding")
            .vectors(SearchVectors::Float(vec![query.to_vec()]))
            .metric_type(MetricType::Cosine)
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .extra_params(HashMap::from([("ef".to_string(), ef.to_string())]))
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(|e| self.invalid(what, &e))?;
        let found = self.run(what, self.client.search(request))?;
        let mut hits = Vec::new();
        for result in found.results() {
            let Ids::VarChar(paths) = result.get_ids() else {
                return Err(MilvusError::Foreign {
                    shown: self.shown.clone(),
                    field: "path",
                });
            };
            hits.extend(
                paths
                    .iter()
                    .zip(result.get_scores())
                    .map(|(path, &similarity)| StoredHit {
                        path: path.clone(),
                        similarity,
                    }),
            );
        }
        Ok(hits)
    }
}

impl EmbeddingStore for MilvusStore {
    fn shown(&self) -> &str {
        &self.shown
    }

    fn stored_hashes(&mut self, paths: &[String]) -> Result<HashMap<String, String>, StoreError> {
        Ok(MilvusStore::stored_hashes(self, paths)?)
    }

    fn upsert(&mut self, rows: &[EmbeddingRow<'_>]) -> Result<u64, StoreError> {
        Ok(MilvusStore::upsert(self, rows, None)?)
    }

    /// One request per batch carries both: the labels are fields of the embedding's row.
    fn upsert_labelled(
        &mut self,
        rows: &[EmbeddingRow<'_>],
        labels: &[LabelRow<'_>],
    ) -> Result<u64, StoreError> {
        Ok(MilvusStore::upsert(self, rows, Some(labels))?)
    }

    fn search(&mut self, query: &[f32], n: usize) -> Result<Vec<StoredHit>, StoreError> {
        Ok(MilvusStore::search(self, query, n)?)
    }
}

struct Existing {
    dim: Option<usize>,
    model: Option<(String, Option<String>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_literals_escape_quotes_backslashes_and_line_breaks() {
        assert_eq!(string_literal("a.png"), "\"a.png\"");
        assert_eq!(
            string_literal("x\"y\\z\nw\tv'u"),
            "\"x\\\"y\\\\z\\nw\\tv'u\""
        );
    }
}
