//! Embedding stores outside the local cache: where `--to` writes and `--in` searches.
//!
//! Two back ends, each behind a cargo feature: PostgreSQL with pgvector ([`postgres`],
//! feature `postgres`, on by default) and Milvus through its gRPC API ([`milvus`], feature
//! `milvus`, off by default because its client doubles a clean build). Commands talk to
//! either through [`EmbeddingStore`], opened by [`open_for_writing`] or [`open_for_search`].
//! The address parsing and redaction here do not need a client, so a build without a
//! feature can still tell the user what is missing without echoing a password.

#[cfg(feature = "milvus")]
pub mod milvus;
#[cfg(feature = "postgres")]
pub mod postgres;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use thiserror::Error;

use crate::cache::ContentKey;
use crate::checkpoint::Checkpoint;
use crate::inputs::Input;
use crate::job::{Embedded, Job, JobError, Progress, Sink, Tally};
use crate::output::Labelled;
use crate::output::Outcome;
use crate::search::normalize;
use crate::source::ModelFiles;

/// The table (or collection) used when neither the address nor `--table` names one.
pub const DEFAULT_TABLE: &str = "vlm_embeddings";

/// Which kind of database an address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgresql://` or `postgres://`: PostgreSQL with pgvector.
    Postgres,
    /// `milvus://`: a Milvus server's gRPC API.
    Milvus,
}

impl Backend {
    /// Whether this build has the client for it.
    pub fn is_built(self) -> bool {
        match self {
            Self::Postgres => cfg!(feature = "postgres"),
            Self::Milvus => cfg!(feature = "milvus"),
        }
    }

    fn not_built(self) -> AddressError {
        match self {
            Self::Postgres => AddressError::NotBuilt {
                what: "PostgreSQL",
                feature: "postgres",
            },
            Self::Milvus => AddressError::NotBuilt {
                what: "Milvus",
                feature: "milvus",
            },
        }
    }

    /// What the address names a table by, for messages.
    pub fn table_word(self) -> &'static str {
        match self {
            Self::Postgres => "table",
            Self::Milvus => "collection",
        }
    }
}

/// A problem with a `--to`/`--in` address, before any connection is made.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("{shown} is not a database address vlm knows; give postgresql://USER@HOST:PORT/DB?table=NAME or milvus://HOST:PORT/COLLECTION")]
    Scheme { shown: String },
    #[error("collection name {name:?} is not a Milvus name; use letters, digits and _ (not starting with a digit), at most 255 characters")]
    CollectionName { name: String },
    #[error("{shown} names no host; give milvus://[USER[:PASSWORD]@]HOST[:PORT]/COLLECTION")]
    NoHost { shown: String },
    #[error("{shown}: the port {port:?} is not a number from 1 to 65535")]
    Port { shown: String, port: String },
    #[error("table name {name:?} is not a plain SQL name; use letters, digits and _ (optionally SCHEMA.TABLE), at most 63 characters each")]
    TableName { name: String },
    #[error(
        "the table is named twice ({url:?} in the address, {flag:?} by --table); give it once"
    )]
    TableTwice { url: String, flag: String },
    #[error("this vlm was built without {what} support; rebuild with cargo build --features {feature} (or cargo install --path . --features {feature})")]
    NotBuilt {
        what: &'static str,
        feature: &'static str,
    },
}

/// Which model the rows come from. Its identity is the model id and revision; the
/// dimension is the embedding column's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelStamp {
    pub model: String,
    pub revision: Option<String>,
    pub dim: usize,
}

impl ModelStamp {
    /// The loaded checkpoint's identity.
    pub fn of(files: &ModelFiles, checkpoint: &Checkpoint) -> Self {
        Self {
            model: files.id.clone(),
            revision: files.revision.clone(),
            dim: checkpoint.config().projection_dim,
        }
    }

    /// `model@revision`, or the model alone, for messages.
    pub fn name(&self) -> String {
        match &self.revision {
            Some(rev) => format!("{}@{rev}", self.model),
            None => self.model.clone(),
        }
    }
}

/// One embedding to store.
pub struct EmbeddingRow<'a> {
    pub path: &'a str,
    /// 64 hex digits: SHA-256 of the file's bytes.
    pub content_hash: &'a str,
    pub embedding: &'a [f32],
}

/// One image's labels to store beside its embedding.
pub struct LabelRow<'a> {
    pub path: &'a str,
    pub content_hash: &'a str,
    pub top_label: &'a str,
    pub top_probability: f32,
    /// The ranked labels as a JSON array.
    pub labels_json: String,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredHit {
    pub path: String,
    /// Cosine similarity to the query.
    pub similarity: f32,
}

/// A failure of a store; the message names the address without its password.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[cfg(feature = "postgres")]
    #[error(transparent)]
    Postgres(#[from] postgres::PgError),
    #[cfg(feature = "milvus")]
    #[error(transparent)]
    Milvus(#[from] milvus::MilvusError),
    #[error("{shown}: {what} works with PostgreSQL tables only so far; store the embeddings in PostgreSQL (vlm embed INPUTS --to postgresql://...) or give the image files instead")]
    Unsupported { shown: String, what: &'static str },
}

/// A table (or collection) of image embeddings, keyed by path, that one model filled.
pub trait EmbeddingStore {
    /// The address as shown in messages (no password).
    fn shown(&self) -> &str;

    /// The stored content hash of each of `paths` that has a row.
    fn stored_hashes(&mut self, paths: &[String]) -> Result<HashMap<String, String>, StoreError>;

    /// Inserts or replaces `rows` by path; a failure keeps the batches written before it.
    /// Returns how many rows were written.
    fn upsert(&mut self, rows: &[EmbeddingRow<'_>]) -> Result<u64, StoreError>;

    /// Inserts or replaces `rows` and, beside them, `labels` (the same paths).
    fn upsert_labelled(
        &mut self,
        rows: &[EmbeddingRow<'_>],
        labels: &[LabelRow<'_>],
    ) -> Result<u64, StoreError>;

    /// The `n` rows nearest to `query` by cosine similarity, best first.
    fn search(&mut self, query: &[f32], n: usize) -> Result<Vec<StoredHit>, StoreError>;

    /// Every row's `neighbours` nearest rows (through the index, approximately) at or above
    /// cosine `threshold`, for `vlm dedup --in`, with progress over the rows; `None` when
    /// `cancel` stopped it.
    fn near_pairs(
        &mut self,
        threshold: f32,
        neighbours: usize,
        cancel: Option<&AtomicBool>,
        progress: &dyn Progress,
    ) -> Result<Option<NearPairs>, StoreError> {
        let _ = (threshold, neighbours, cancel, progress);
        Err(StoreError::Unsupported {
            shown: self.shown().to_string(),
            what: "vlm dedup --in",
        })
    }

    /// The stored embeddings of those of `paths` that have a row.
    fn embeddings_of(&mut self, paths: &[String]) -> Result<HashMap<String, Vec<f32>>, StoreError> {
        let _ = paths;
        Err(StoreError::Unsupported {
            shown: self.shown().to_string(),
            what: "reading stored embeddings",
        })
    }
}

/// The near pairs among a table's rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NearPairs {
    /// Every row's path, sorted.
    pub paths: Vec<String>,
    /// `(a, b, cosine similarity)` with `a < b` indices into `paths`, each pair once.
    pub pairs: Vec<(usize, usize, f32)>,
}

/// Opens `address` for writing: makes the table and its cosine index if missing, and
/// refuses (before any write) one of another dimension or model.
pub fn open_for_writing(
    address: &Address,
    stamp: ModelStamp,
) -> Result<Box<dyn EmbeddingStore>, StoreError> {
    open(address, stamp, true)
}

/// Opens an existing table filled by this model, for searching.
pub fn open_for_search(
    address: &Address,
    stamp: ModelStamp,
) -> Result<Box<dyn EmbeddingStore>, StoreError> {
    open(address, stamp, false)
}

#[allow(unused_variables)] // without either feature only the error paths remain
fn open(
    address: &Address,
    stamp: ModelStamp,
    write: bool,
) -> Result<Box<dyn EmbeddingStore>, StoreError> {
    match address.backend {
        #[cfg(feature = "postgres")]
        Backend::Postgres => Ok(Box::new(if write {
            postgres::PgStore::open_for_writing(address, stamp)?
        } else {
            postgres::PgStore::open_for_search(address, stamp)?
        })),
        #[cfg(not(feature = "postgres"))]
        Backend::Postgres => Err(Backend::Postgres.not_built().into()),
        #[cfg(feature = "milvus")]
        Backend::Milvus => Ok(Box::new(if write {
            milvus::MilvusStore::open_for_writing(address, stamp)?
        } else {
            milvus::MilvusStore::open_for_search(address, stamp)?
        })),
        #[cfg(not(feature = "milvus"))]
        Backend::Milvus => Err(Backend::Milvus.not_built().into()),
    }
}

/// The database `arg` names (`postgres://`, `postgresql://` or `milvus://`), or `None` for
/// a path.
pub fn backend_of(arg: &str) -> Option<Backend> {
    let lower = arg.get(..13).unwrap_or(arg).to_ascii_lowercase();
    if lower.starts_with("postgresql://") || lower.starts_with("postgres://") {
        Some(Backend::Postgres)
    } else if lower.starts_with("milvus://") {
        Some(Backend::Milvus)
    } else {
        None
    }
}

/// True when `arg` names a database rather than a path.
pub fn is_database_url(arg: &str) -> bool {
    backend_of(arg).is_some()
}

/// `url` with every password (in the user part and as a `password=` parameter) replaced by
/// `***`, safe to print in messages and logs.
pub fn redact(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut shown = match head.split_once("://") {
        Some((scheme, rest)) => {
            // The user part ends at the last '@' before the path.
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, hosts)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{hosts}"),
                    None => format!("{userinfo}@{hosts}"),
                },
                None => authority.to_string(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => "***".to_string(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_string(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&params.join("&"));
    }
    shown
}

/// A checked SQL table name, optionally schema-qualified; safe to splice into SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName(String);

impl TableName {
    /// Accepts `name` or `schema.name` made of ASCII letters, digits and `_` (not starting
    /// with a digit), each part at most 63 bytes (PostgreSQL's identifier limit).
    pub fn new(name: &str) -> Result<Self, AddressError> {
        let plain = |part: &str| {
            !part.is_empty()
                && part.len() <= 63
                && !part.starts_with(|c: char| c.is_ascii_digit())
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|p| plain(p)) {
            return Err(AddressError::TableName {
                name: name.to_string(),
            });
        }
        Ok(Self(name.to_string()))
    }

    /// Accepts a Milvus collection name: ASCII letters, digits and `_`, not starting with a
    /// digit, at most 255 bytes (Milvus's limit).
    pub fn milvus(name: &str) -> Result<Self, AddressError> {
        let ok = !name.is_empty()
            && name.len() <= 255
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(Self(name.to_string()))
        } else {
            Err(AddressError::CollectionName {
                name: name.to_string(),
            })
        }
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Quoted for SQL, with `suffix` added to the table part (for the labels table and the
    /// index names): `"schema"."name_suffix"`.
    pub fn quoted(&self, suffix: &str) -> String {
        match self.0.split_once('.') {
            Some((schema, name)) => format!("\"{schema}\".\"{name}{suffix}\""),
            None => format!("\"{}{suffix}\"", self.0),
        }
    }

    /// The bare table part with `suffix` (index names live in the table's schema).
    pub fn bare(&self, suffix: &str) -> String {
        let name = self.0.rsplit('.').next().unwrap_or(&self.0);
        format!("\"{name}{suffix}\"")
    }
}

/// A parsed `--to`/`--in` address: which database, how to reach it, the table (or
/// collection), and how to show it.
#[derive(Debug, Clone)]
pub struct Address {
    pub backend: Backend,
    /// PostgreSQL: what libpq would be given, the URL minus `table=`. Milvus: the URL minus
    /// the collection. Holds the password; never print it.
    pub connection: String,
    /// The table (PostgreSQL) or collection (Milvus).
    pub table: TableName,
    /// Where a Milvus server is (`None` for PostgreSQL).
    pub milvus: Option<MilvusEndpoint>,
    /// The address with the password replaced, for messages.
    pub shown: String,
}

impl Address {
    /// Refuses an address whose client this build lacks; commands call it right after
    /// parsing, so that it is said before any model is loaded.
    pub fn ensure_built(&self) -> Result<(), AddressError> {
        if self.backend.is_built() {
            Ok(())
        } else {
            Err(self.backend.not_built())
        }
    }

    /// Parses `url`, taking the table from its `table=` parameter (PostgreSQL), its path
    /// (Milvus) or `table_flag`, else [`DEFAULT_TABLE`].
    pub fn parse(url: &str, table_flag: Option<&str>) -> Result<Self, AddressError> {
        let shown = redact(url);
        let Some(backend) = backend_of(url) else {
            return Err(AddressError::Scheme { shown });
        };
        let (head, query) = match url.split_once('?') {
            Some((head, query)) => (head, query),
            None => (url, ""),
        };
        let mut table_param = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("table", value)) => table_param = Some(percent_decode(value)),
                _ => kept.push(pair),
            }
        }
        let (head, milvus) = match backend {
            Backend::Postgres => (head.to_string(), None),
            Backend::Milvus => {
                let (endpoint, collection, head) = MilvusEndpoint::parse(head, &kept, &shown)?;
                if let (Some(path), Some(param)) = (&collection, &table_param) {
                    if path != param {
                        return Err(AddressError::TableTwice {
                            url: path.clone(),
                            flag: param.clone(),
                        });
                    }
                }
                table_param = table_param.or(collection);
                (head, Some(endpoint))
            }
        };
        let table = match (table_param, table_flag) {
            (Some(url_table), Some(flag)) if url_table != flag => {
                return Err(AddressError::TableTwice {
                    url: url_table,
                    flag: flag.to_string(),
                })
            }
            (Some(name), _) => name,
            (None, Some(flag)) => flag.to_string(),
            (None, None) => DEFAULT_TABLE.to_string(),
        };
        let table = match backend {
            Backend::Postgres => TableName::new(&table)?,
            Backend::Milvus => TableName::milvus(&table)?,
        };
        let connection = if kept.is_empty() {
            head
        } else {
            format!("{head}?{}", kept.join("&"))
        };
        let shown_without_password = redact(&connection);
        Ok(Self {
            backend,
            connection,
            shown: format!(
                "{shown_without_password} ({} {})",
                backend.table_word(),
                table.as_str()
            ),
            table,
            milvus,
        })
    }
}

/// Where a Milvus server listens and who to log in as, from
/// `milvus://[USER[:PASSWORD]@]HOST[:PORT][/COLLECTION][?db=NAME]`.
#[derive(Clone, PartialEq, Eq)]
pub struct MilvusEndpoint {
    pub host: String,
    /// 19530 unless the address says otherwise.
    pub port: u16,
    pub user: Option<String>,
    /// Never print it; `Debug` shows `***`.
    pub password: Option<String>,
    /// The `?db=` parameter; the server's `default` database when absent.
    pub database: Option<String>,
}

/// Milvus's own default port.
pub const MILVUS_PORT: u16 = 19530;

impl std::fmt::Debug for MilvusEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MilvusEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("database", &self.database)
            .finish()
    }
}

impl MilvusEndpoint {
    /// Splits the part of a `milvus://` address before `?` into the endpoint, the
    /// collection named by its path, and the address without that path.
    fn parse(
        head: &str,
        params: &[&str],
        shown: &str,
    ) -> Result<(Self, Option<String>, String), AddressError> {
        let rest = head.split_once("://").map_or(head, |(_, rest)| rest);
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (user, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
            Some((user, password)) => (
                Some(percent_decode(user)).filter(|u| !u.is_empty()),
                Some(percent_decode(password)).filter(|p| !p.is_empty()),
            ),
            None => (None, None),
        };
        // [v6]:port, host:port, host
        let (host, port) = match hostport.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((addr, tail)) => (format!("[{addr}]"), tail.strip_prefix(':')),
                None => (hostport.to_string(), None),
            },
            None => match hostport.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (hostport.to_string(), None),
            },
        };
        if host.is_empty() {
            return Err(AddressError::NoHost {
                shown: shown.to_string(),
            });
        }
        let port =
            match port {
                None | Some("") => MILVUS_PORT,
                Some(port) => port.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| {
                    AddressError::Port {
                        shown: shown.to_string(),
                        port: port.to_string(),
                    }
                })?,
            };
        let database = params
            .iter()
            .find_map(|pair| pair.strip_prefix("db="))
            .map(percent_decode)
            .filter(|d| !d.is_empty());
        let collection = Some(percent_decode(path.trim_matches('/'))).filter(|c| !c.is_empty());
        let without_path = head[..head.len() - path.len()].to_string();
        Ok((
            Self {
                host,
                port,
                user,
                password,
                database,
            },
            collection,
            without_path,
        ))
    }
}

/// What `vlm embed --to` did.
#[derive(Debug, Default)]
pub struct Stored {
    /// Rows written in this run.
    pub stored: u64,
    /// Inputs given (each path once).
    pub inputs: usize,
    /// The embedding run's counts; `unchanged` are the inputs whose row already holds
    /// these bytes.
    pub tally: Tally,
}

/// `vlm embed INPUTS --to ADDRESS`: embeds the inputs that are new or changed since the
/// table last saw them (each path once; an input whose bytes hash to the stored content
/// hash is read but not decoded), and upserts them a batch per transaction, each row under
/// the hash of the bytes that were embedded.
pub fn embed_to(
    job: Job,
    db: &mut dyn EmbeddingStore,
    inputs: Vec<Input>,
    normalized: bool,
    progress: &dyn Progress,
) -> Result<Stored, JobError> {
    let mut seen = HashSet::new();
    let inputs: Vec<Input> = inputs
        .into_iter()
        .filter(|input| seen.insert(input.display.clone()))
        .collect();
    let paths: Vec<String> = inputs.iter().map(|i| i.display.clone()).collect();
    let known = db.stored_hashes(&paths).map_err(JobError::sink)?;
    let unchanged =
        |path: &str, key: &ContentKey| known.get(path).is_some_and(|h| *h == key.to_hex());
    let mut sink = Upsert {
        db,
        normalized,
        stored: 0,
    };
    let count = inputs.len();
    let tally = job.skip_if(&unchanged).run(inputs, &mut sink, progress)?;
    Ok(Stored {
        stored: sink.stored,
        inputs: count,
        tally,
    })
}

/// `vlm embed --to`'s sink: each embedding (normalised unless raw) under its content key.
struct Upsert<'a> {
    db: &'a mut dyn EmbeddingStore,
    normalized: bool,
    stored: u64,
}

/// A store that failed after some batches were written.
#[derive(Debug, Error)]
#[error("stopped after storing {stored} embeddings in this run")]
pub struct Stopped {
    pub stored: u64,
    #[source]
    pub cause: StoreError,
}

impl Sink<Embedded> for Upsert<'_> {
    fn write(&mut self, batch: &[Embedded], _: &dyn Progress) -> Result<(), JobError> {
        let mut keys = Vec::with_capacity(batch.len());
        let mut vectors = Vec::with_capacity(batch.len());
        for done in batch {
            if let (Ok(row), Some(key)) = (&done.embedding, &done.key) {
                let mut row = row.clone();
                if self.normalized {
                    normalize(&mut row);
                }
                keys.push((done.input.display.as_str(), key.to_hex()));
                vectors.push(row);
            }
        }
        let rows: Vec<EmbeddingRow<'_>> = keys
            .iter()
            .zip(&vectors)
            .map(|((path, hash), embedding)| EmbeddingRow {
                path,
                content_hash: hash,
                embedding,
            })
            .collect();
        let stored = self.stored;
        self.stored += self
            .db
            .upsert(&rows)
            .map_err(|cause| JobError::sink(Stopped { stored, cause }))?;
        Ok(())
    }
}

/// `vlm classify --to ADDRESS`: the open table, a sink of labelled results that stores
/// each labelled image's (normalised) embedding and ranked labels under its content key
/// (the job must make keys: [`Job::with_keys`]).
pub struct LabelStore {
    db: Box<dyn EmbeddingStore>,
}

/// The labels could not be turned into JSON (cannot happen with vlm's own results).
#[derive(Debug, Error)]
#[error("internal error: labels could not be turned into JSON")]
pub struct LabelsJson(#[source] serde_json::Error);

impl LabelStore {
    /// Opens `address` for writing (refusing a table of another model before any work).
    pub fn open(address: &Address, stamp: ModelStamp) -> Result<Self, StoreError> {
        Ok(Self::new(open_for_writing(address, stamp)?))
    }

    /// Stores into `db`, already open for writing.
    pub fn new(db: Box<dyn EmbeddingStore>) -> Self {
        Self { db }
    }
}

impl Sink<Labelled<'_>> for LabelStore {
    fn write(&mut self, batch: &[Labelled<'_>], _: &dyn Progress) -> Result<(), JobError> {
        let mut vectors = Vec::new();
        let mut keep = Vec::new();
        for labelled in batch {
            let (Outcome::Ranked(ranked), Some(key), Ok(embedding)) = (
                &labelled.result.outcome,
                &labelled.embedded.key,
                &labelled.embedded.embedding,
            ) else {
                continue;
            };
            let Some(top) = ranked.first() else { continue };
            let mut row = embedding.clone();
            normalize(&mut row);
            vectors.push(row);
            keep.push((labelled.result.path.as_str(), key.to_hex(), top, ranked));
        }
        let rows: Vec<EmbeddingRow<'_>> = keep
            .iter()
            .zip(&vectors)
            .map(|((path, hash, _, _), embedding)| EmbeddingRow {
                path,
                content_hash: hash,
                embedding,
            })
            .collect();
        let labels = keep
            .iter()
            .map(|(path, hash, top, ranked)| {
                Ok(LabelRow {
                    path,
                    content_hash: hash,
                    top_label: &top.label,
                    top_probability: top.probability,
                    labels_json: serde_json::to_string(ranked)
                        .map_err(|e| JobError::sink(LabelsJson(e)))?,
                })
            })
            .collect::<Result<Vec<_>, JobError>>()?;
        self.db
            .upsert_labelled(&rows, &labels)
            .map_err(JobError::sink)?;
        Ok(())
    }
}

/// `vlm search --in ADDRESS`: the `n` nearest rows, leaving out `exclude` (the query
/// image's own row).
pub fn search_in(
    address: &Address,
    stamp: ModelStamp,
    query: &[f32],
    n: usize,
    exclude: Option<&str>,
) -> Result<Vec<StoredHit>, StoreError> {
    let mut db = open_for_search(address, stamp)?;
    let mut hits = db.search(query, n.saturating_add(usize::from(exclude.is_some())))?;
    hits.retain(|hit| Some(hit.path.as_str()) != exclude);
    hits.truncate(n);
    Ok(hits)
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod race;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password_in_the_user_part_and_parameters() {
        assert_eq!(
            redact("postgresql://ann:s3cr%40t@db.example:5433/pics?password=x2&sslmode=prefer"),
            "postgresql://ann:***@db.example:5433/pics?password=***&sslmode=prefer"
        );
        assert_eq!(redact("postgres://ann@host/db"), "postgres://ann@host/db");
        // A password containing '@' must not leak its tail.
        let shown = redact("postgresql://ann:p@ss@host/db");
        assert!(!shown.contains("p@ss") && !shown.contains("ss@"), "{shown}");
    }

    #[test]
    fn takes_the_table_from_the_address_or_the_flag() {
        let a = Address::parse("postgresql://u:pw@h/db?table=pics&sslmode=disable", None).unwrap();
        assert_eq!(a.table.as_str(), "pics");
        assert_eq!(a.connection, "postgresql://u:pw@h/db?sslmode=disable");
        assert_eq!(
            a.shown,
            "postgresql://u:***@h/db?sslmode=disable (table pics)"
        );
        let b = Address::parse("postgresql://h/db", Some("s.t")).unwrap();
        assert_eq!(b.table.quoted("_labels"), "\"s\".\"t_labels\"");
        assert_eq!(b.table.bare("_idx"), "\"t_idx\"");
        let c = Address::parse("postgresql://h/db", None).unwrap();
        assert_eq!(c.table.as_str(), DEFAULT_TABLE);
        assert!(matches!(
            Address::parse("postgresql://h/db?table=a", Some("b")),
            Err(AddressError::TableTwice { .. })
        ));
    }

    #[test]
    fn refuses_table_names_that_are_not_plain() {
        for bad in ["", "a;drop", "1abc", "a.b.c", "x\"y", &"n".repeat(64)] {
            assert!(TableName::new(bad).is_err(), "{bad:?}");
        }
        assert!(TableName::new("_t9.Emb").is_ok());
    }

    #[test]
    fn parses_milvus_addresses() {
        let a = Address::parse("milvus://ann:pa%3Ass@db.example:19531/pics?db=team", None).unwrap();
        assert_eq!(a.backend, Backend::Milvus);
        assert_eq!(a.table.as_str(), "pics");
        let m = a.milvus.as_ref().unwrap();
        assert_eq!((m.host.as_str(), m.port), ("db.example", 19531));
        assert_eq!(m.user.as_deref(), Some("ann"));
        assert_eq!(m.password.as_deref(), Some("pa:ss"));
        assert_eq!(m.database.as_deref(), Some("team"));
        assert_eq!(
            a.shown,
            "milvus://ann:***@db.example:19531?db=team (collection pics)"
        );
        assert!(
            !format!("{a:?}").contains("pa:ss"),
            "Debug hides the password"
        );

        let b = Address::parse("milvus://localhost", Some("emb")).unwrap();
        let m = b.milvus.as_ref().unwrap();
        assert_eq!(
            (m.host.as_str(), m.port, &m.user),
            ("localhost", MILVUS_PORT, &None)
        );
        assert_eq!(b.table.as_str(), "emb");
        let c = Address::parse("MILVUS://[::1]:1234/", None).unwrap();
        assert_eq!(c.milvus.as_ref().unwrap().host, "[::1]");
        assert_eq!(c.table.as_str(), DEFAULT_TABLE);

        for (bad, want) in [
            ("milvus://h:0/c", "port"),
            ("milvus://h:x9/c", "port"),
            ("milvus://u:secret@/c", "no host"),
            ("milvus://h/a.b", "not a Milvus name"),
            ("milvus://h/9lives", "not a Milvus name"),
        ] {
            let err = Address::parse(bad, None).unwrap_err().to_string();
            assert!(err.contains(want), "{bad}: {err}");
            assert!(!err.contains("secret"), "{bad}: {err}");
        }
        assert!(matches!(
            Address::parse("milvus://h/a", Some("b")),
            Err(AddressError::TableTwice { .. })
        ));
    }

    #[test]
    fn knows_database_addresses() {
        assert!(is_database_url("PostgreSQL://x"));
        assert!(is_database_url("postgres://x"));
        assert!(!is_database_url("photos/"));
        assert!(!is_database_url("http://x/a.jpg"));
        assert_eq!(backend_of("milvus://h:1/c"), Some(Backend::Milvus));
        assert_eq!(backend_of("postgres://h"), Some(Backend::Postgres));
    }
}
