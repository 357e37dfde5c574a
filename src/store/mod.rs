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
    #[error("the database address has a port that is not a number from 1 to 65535; write HOST:PORT (the address is not repeated here, as it may hold a password)")]
    Port,
    #[error("the database address has a parameter without `=`; write parameters as ?KEY=VALUE&KEY=VALUE (the address is not repeated here, as it may hold a password)")]
    Parameter,
    #[error("the database address has an `@` that does not end its user part, or a `/`, `?` or `#` in its user name; percent-encode them in the user name and password (`@` as %40, `/` as %2F, `?` as %3F, `#` as %23; the address is not repeated here, as it may hold a password)")]
    Ambiguous,
    #[error("the database address has a parameter vlm cannot pass on (it knows {known}); a password holding `&` or `=` must be percent-encoded (%26, %3D; the address is not repeated here, as it may hold a password)")]
    UnknownParameter { known: String },
    #[error("table name {name:?} is not a plain SQL name; use letters, digits and _ (optionally SCHEMA.TABLE), the schema at most 63 characters and the table at most {MAX_TABLE_LEN}, so that its index name (TABLE{INDEX_SUFFIX}) fits PostgreSQL's 63-byte limit on names")]
    TableName { name: String },
    #[error(
        "the table is named twice ({url:?} in the address, {flag:?} by --table); give it once"
    )]
    TableTwice { url: String, flag: String },
    #[error("{shown}: captions are stored in PostgreSQL only; give a postgresql:// address, or write them to a file with --output")]
    CaptionsInMilvus { shown: String },
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

/// One image's caption to store beside its embedding.
pub struct CaptionRow<'a> {
    pub path: &'a str,
    pub content_hash: &'a str,
    /// The captioning checkpoint.
    pub model: &'a str,
    pub caption: &'a str,
    pub log_prob: f64,
    /// The generated ids as a JSON array.
    pub tokens_json: String,
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

/// Text that holds a password: handed to the client, never printed (`Debug` shows `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The text itself, for the client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A database address split as the PostgreSQL client (`tokio-postgres`'s URL parser, which
/// follows libpq) splits it: the user part runs to the first `@` anywhere, the user name to
/// its first `:` and the password to the `@`; then the hosts to the first `/` or `?`, the
/// path to `?`, and `KEY=VALUE` parameters separated by `&`. Every piece is as written
/// (still percent-encoded). Milvus addresses are split by the same rules, so what vlm shows
/// and what it connects with always come from the same pieces.
struct UrlParts<'a> {
    scheme: String,
    user: Option<&'a str>,
    password: Option<&'a str>,
    hosts: &'a str,
    path: Option<&'a str>,
    params: Vec<(&'a str, &'a str)>,
}

impl<'a> UrlParts<'a> {
    fn split(url: &'a str) -> Result<Self, AddressError> {
        let Some((scheme, mut rest)) = url.split_once("://") else {
            return Err(AddressError::Scheme {
                shown: "the address".to_string(),
            });
        };
        let (mut user, mut password) = (None, None);
        if let Some((creds, after)) = rest.split_once('@') {
            match creds.split_once(':') {
                Some((u, p)) => (user, password) = (Some(u), Some(p)),
                None => user = Some(creds),
            }
            rest = after;
        }
        let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (hosts, mut rest) = rest.split_at(host_end);
        let mut path = None;
        if let Some(after) = rest.strip_prefix('/') {
            let end = after.find('?').unwrap_or(after.len());
            path = Some(&after[..end]);
            rest = &after[end..];
        }
        let mut params = Vec::new();
        if let Some(mut query) = rest.strip_prefix('?') {
            while !query.is_empty() {
                let Some((key, after)) = query.split_once('=') else {
                    return Err(AddressError::Parameter);
                };
                let (value, after) = after.split_once('&').unwrap_or((after, ""));
                params.push((key, value));
                query = after;
            }
        }
        // An '@' the client does not take as the end of the user part (the first one ends
        // it) would put the rest of a password in what vlm shows as the host, path or a
        // parameter; only a parameter shown as `***` may hold one.
        let stray_at = hosts.contains('@')
            || path.is_some_and(|p| p.contains('@'))
            || params.iter().any(|(key, value)| {
                key.contains('@') || (is_shown_key(key) && value.contains('@'))
            });
        if stray_at || user.is_some_and(|u| u.contains(['/', '?', '#'])) {
            return Err(AddressError::Ambiguous);
        }
        for chunk in hosts.split(',').filter(|c| !c.is_empty()) {
            let port = match chunk.strip_prefix('[') {
                Some(v6) => match v6.split_once(']') {
                    Some((_, "")) => None,
                    Some((_, tail)) => Some(tail.strip_prefix(':').unwrap_or(tail)),
                    None => Some(""),
                },
                None => chunk.split_once(':').map(|(_, port)| port),
            };
            if let Some(port) = port {
                if !port.bytes().all(|b| b.is_ascii_digit())
                    || port.parse::<u16>().map_or(true, |p| p == 0)
                {
                    return Err(AddressError::Port);
                }
            }
        }
        Ok(Self {
            scheme: scheme.to_ascii_lowercase(),
            user,
            password,
            hosts,
            path,
            params,
        })
    }

    /// The address with the parameters for which `keep` is true: with the password
    /// (`hide` false, for the client) or with `***` for every password (`hide` true).
    fn join(&self, hide: bool, keep: impl Fn(&str) -> bool) -> String {
        let mut out = format!("{}://", self.scheme);
        if let Some(user) = self.user {
            out.push_str(user);
            if let Some(password) = self.password {
                out.push(':');
                out.push_str(if hide { "***" } else { password });
            }
            out.push('@');
        }
        out.push_str(self.hosts);
        if let Some(path) = self.path {
            out.push('/');
            out.push_str(path);
        }
        let params: Vec<String> = self
            .params
            .iter()
            .filter(|(key, _)| keep(&percent_decode(key)))
            .map(|(key, value)| {
                if hide && !is_shown_key(key) {
                    format!("{key}=***")
                } else {
                    format!("{key}={value}")
                }
            })
            .collect();
        if !params.is_empty() {
            out.push('?');
            out.push_str(&params.join("&"));
        }
        out
    }

    /// The value of the parameter named `name` (decoded), if given.
    fn param(&self, name: &str) -> Option<String> {
        self.params
            .iter()
            .find(|(key, _)| percent_decode(key) == name)
            .map(|(_, value)| percent_decode(value))
    }
}

/// Parameters whose values are shown in messages; any other value (a password, an option
/// vlm does not know, which may be the rest of a password holding `&`) shows as `***`.
const SHOWN_PARAMS: &[&str] = &[
    "table",
    "db",
    "dbname",
    "user",
    "host",
    "hostaddr",
    "port",
    "sslmode",
    "sslnegotiation",
    "application_name",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// The parameters a `postgresql://` address may have: those the client (tokio-postgres
/// 0.7's `Config::param`) knows, and vlm's `table`. The client refuses any other, so vlm
/// refuses it first, without echoing it.
const POSTGRES_PARAMS: &[&str] = &[
    "table",
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "sslnegotiation",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// The parameters a `milvus://` address may have.
const MILVUS_PARAMS: &[&str] = &["db", "table"];

/// Whether the value of the parameter `key` (as written) may be shown.
fn is_shown_key(key: &str) -> bool {
    SHOWN_PARAMS.contains(&percent_decode(key).as_str())
}

/// `url` with every password (in the user part and in any `password` parameter) replaced
/// by `***`, safe to print in messages and logs; a fixed placeholder when `url` cannot be
/// split safely (an `@` the client would not read as the end of the user part).
pub fn redact(url: &str) -> String {
    match UrlParts::split(url) {
        Ok(parts) => parts.join(true, |_| true),
        Err(_) => "the database address".to_string(),
    }
}

/// A checked SQL table name, optionally schema-qualified; safe to splice into SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName(String);

/// PostgreSQL's longest identifier, in bytes; a longer one is cut silently.
const MAX_IDENTIFIER: usize = 63;
/// The suffix of a table's index name, the longest name vlm derives from a table's.
pub(crate) const INDEX_SUFFIX: &str = "_embedding_idx";
/// The labels table beside a table.
pub(crate) const LABELS_SUFFIX: &str = "_labels";
/// The longest table part whose derived names (`_labels`, `_embedding_idx`) all fit
/// [`MAX_IDENTIFIER`]: cut, `T_labels` of a 63-byte `T` would become `T` itself.
pub const MAX_TABLE_LEN: usize = MAX_IDENTIFIER - INDEX_SUFFIX.len();

impl TableName {
    /// Accepts `name` or `schema.name` made of ASCII letters, digits and `_` (not starting
    /// with a digit), the schema at most 63 bytes (PostgreSQL's identifier limit) and the
    /// table at most [`MAX_TABLE_LEN`], so that the names vlm derives from it fit too.
    pub fn new(name: &str) -> Result<Self, AddressError> {
        let plain = |part: &str, max: usize| {
            !part.is_empty()
                && part.len() <= max
                && !part.starts_with(|c: char| c.is_ascii_digit())
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let ok = match name.split('.').collect::<Vec<_>>()[..] {
            [table] => plain(table, MAX_TABLE_LEN),
            [schema, table] => plain(schema, MAX_IDENTIFIER) && plain(table, MAX_TABLE_LEN),
            _ => false,
        };
        if !ok {
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
/// collection), and how to show it. `Debug` never shows a password.
#[derive(Debug, Clone)]
pub struct Address {
    pub backend: Backend,
    /// PostgreSQL: what the client is given, the URL minus `table=`. Milvus: the URL minus
    /// the collection. Holds the password.
    pub connection: Secret,
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
    /// (Milvus) or `table_flag`, else [`DEFAULT_TABLE`]. The URL is split once, as the
    /// PostgreSQL client splits it ([`UrlParts`]); the connection string and the shown form
    /// are both put together from those pieces.
    pub fn parse(url: &str, table_flag: Option<&str>) -> Result<Self, AddressError> {
        let Some(backend) = backend_of(url) else {
            return Err(AddressError::Scheme { shown: redact(url) });
        };
        let parts = UrlParts::split(url)?;
        let known = match backend {
            Backend::Postgres => POSTGRES_PARAMS,
            Backend::Milvus => MILVUS_PARAMS,
        };
        if parts
            .params
            .iter()
            .any(|(key, _)| !known.contains(&percent_decode(key).as_str()))
        {
            return Err(AddressError::UnknownParameter {
                known: known.join(", "),
            });
        }
        let not_table = |key: &str| key != "table";
        let (connection, shown, milvus, from_url) = match backend {
            Backend::Postgres => (
                parts.join(false, not_table),
                parts.join(true, not_table),
                None,
                parts.param("table"),
            ),
            Backend::Milvus => {
                let endpoint = MilvusEndpoint::from_parts(&parts, &parts.join(true, |_| true))?;
                let collection = parts
                    .path
                    .map(|p| percent_decode(p.trim_matches('/')))
                    .filter(|c| !c.is_empty());
                let param = parts.param("table");
                if let (Some(path), Some(param)) = (&collection, &param) {
                    if path != param {
                        return Err(AddressError::TableTwice {
                            url: path.clone(),
                            flag: param.clone(),
                        });
                    }
                }
                // The collection is vlm's, not the server's: the client is given the rest.
                let base = UrlParts {
                    path: None,
                    ..parts
                };
                let (base, shown) = (base.join(false, not_table), base.join(true, not_table));
                (base, shown, Some(endpoint), collection.or(param))
            }
        };
        let table = match (from_url, table_flag) {
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
        Ok(Self {
            backend,
            connection: Secret(connection),
            shown: format!("{shown} ({} {})", backend.table_word(), table.as_str()),
            table,
            milvus,
        })
    }
}

/// Where a Milvus server listens and who to log in as, from
/// `milvus://[USER[:PASSWORD]@]HOST[:PORT][/COLLECTION][?db=NAME]`. `Debug` never shows
/// the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilvusEndpoint {
    pub host: String,
    /// 19530 unless the address says otherwise.
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// The `?db=` parameter; the server's `default` database when absent.
    pub database: Option<String>,
}

/// Milvus's own default port.
pub const MILVUS_PORT: u16 = 19530;

impl MilvusEndpoint {
    /// The endpoint of a split `milvus://` address (one host; its port checked by
    /// [`UrlParts::split`]).
    fn from_parts(parts: &UrlParts<'_>, shown: &str) -> Result<Self, AddressError> {
        let hostport = parts.hosts;
        // [v6]:port, host:port, host
        let (host, port) = match hostport.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((addr, tail)) => (format!("[{addr}]"), tail.strip_prefix(':')),
                None => (hostport.to_string(), None),
            },
            None => match hostport.split_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (hostport.to_string(), None),
            },
        };
        if host.is_empty() || host.contains(',') {
            return Err(AddressError::NoHost {
                shown: shown.to_string(),
            });
        }
        let port = match port {
            None | Some("") => MILVUS_PORT,
            Some(port) => port.parse::<u16>().map_err(|_| AddressError::Port)?,
        };
        Ok(Self {
            host,
            port,
            user: parts.user.map(percent_decode).filter(|u| !u.is_empty()),
            password: parts
                .password
                .map(percent_decode)
                .filter(|p| !p.is_empty())
                .map(Secret),
            database: parts.param("db").filter(|d| !d.is_empty()),
        })
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
        .filter(|input| seen.insert(input.key()))
        .collect();
    // Rows are keyed by `Input::key`, which a skip rule is handed as `Item::id`.
    let paths: Vec<String> = inputs.iter().map(Input::key).collect();
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
                keys.push((done.input.key(), key.to_hex()));
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
            keep.push((labelled.embedded.input.key(), key.to_hex(), top, ranked));
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

/// `vlm caption --to ADDRESS`: captions stored beside the embeddings of an existing
/// PostgreSQL table, in `<table>_captions` (path, content_hash, model, caption, log_prob,
/// tokens).
pub struct CaptionStore {
    #[cfg(feature = "postgres")]
    db: postgres::PgCaptions,
}

impl CaptionStore {
    /// Opens the captions table of `address` (PostgreSQL only), refusing an address whose
    /// embeddings table does not exist.
    #[allow(unused_variables)] // without the feature only the error path remains
    pub fn open(address: &Address) -> Result<Self, StoreError> {
        match address.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres => Ok(Self {
                db: postgres::PgCaptions::open(address)?,
            }),
            #[cfg(not(feature = "postgres"))]
            Backend::Postgres => Err(Backend::Postgres.not_built().into()),
            Backend::Milvus => Err(AddressError::CaptionsInMilvus {
                shown: address.shown.clone(),
            }
            .into()),
        }
    }

    /// Inserts or replaces `rows` by path; returns how many were written.
    #[allow(unused_variables)]
    pub fn store(&mut self, rows: &[CaptionRow<'_>]) -> Result<u64, StoreError> {
        #[cfg(feature = "postgres")]
        return Ok(self.db.upsert(rows)?);
        #[cfg(not(feature = "postgres"))]
        Ok(0)
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
        assert_eq!(
            a.connection.expose(),
            "postgresql://u:pw@h/db?sslmode=disable"
        );
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
    fn table_names_leave_room_for_the_names_derived_from_them() {
        // 49 + "_embedding_idx" is 63 bytes, PostgreSQL's limit; 50 would be cut.
        let fits = "t".repeat(49);
        let table = TableName::new(&fits).unwrap();
        assert_eq!(
            table.bare(INDEX_SUFFIX).len(),
            MAX_IDENTIFIER + 2,
            "quotes aside"
        );
        assert!(TableName::new(&format!("{}.{fits}", "s".repeat(63))).is_ok());
        for long in [
            "t".repeat(50),
            "t".repeat(63),
            format!("s.{}", "t".repeat(50)),
            format!("{}.t", "s".repeat(64)),
        ] {
            let err = Address::parse(&format!("postgresql://u:pw@h/db?table={long}"), None)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("at most 49") && err.contains("63-byte"),
                "{err}"
            );
        }
    }

    /// `text` with every byte but ASCII letters and digits percent-encoded.
    fn encode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => char::from(b).to_string(),
                b => format!("%{b:02X}"),
            })
            .collect()
    }

    /// The tail every test password ends with: a leak of any part of a password after one
    /// of its special characters shows it.
    const TAIL: &str = "Zq8w0rd";

    /// Passwords made of every character that means something in a URL.
    fn hostile_passwords() -> Vec<String> {
        let mut passwords: Vec<String> = ["/", "?", "#", "@", ":", "%", "&", "=", " ", "ä", "€"]
            .iter()
            .map(|c| format!("Pa{c}ss{c}Zq8w0rd"))
            .collect();
        passwords.push("P/?#@:%&= äZq8w0rd€".to_string());
        passwords.push("%41%zz@@//PZq8w0rd".to_string());
        // The first '@' ends the user part; the rest must not pass for a host or path.
        passwords.push("Pa@ss/Zq8w0rd".to_string());
        passwords.push("Pa@ss?a=Zq8w0rd".to_string());
        passwords
    }

    /// Every way an address can carry `password`, as written and percent-encoded.
    fn addresses_with(password: &str) -> Vec<String> {
        let mut urls = Vec::new();
        for written in [password.to_string(), encode(password)] {
            urls.extend([
                format!("postgresql://u:{written}@127.0.0.1:1/db"),
                format!("postgresql://u:{written}@/db?host=/tmp&table=t"),
                format!("postgres://u@127.0.0.1/db?password={written}"),
                format!("postgresql://u@h/db?sslmode=disable&pass%77ord={written}"),
                format!("postgresql://h/db?password={written}"),
                format!("PostgreSQL://u:{written}@h:5432"),
                format!("milvus://u:{written}@127.0.0.1:1/coll"),
                format!("milvus://u:{written}@h/coll?db=team"),
                format!("milvus://u:{written}@h:x9/coll"),
            ]);
        }
        urls
    }

    #[test]
    fn no_password_is_shown_however_it_is_written() {
        for password in hostile_passwords() {
            let secrets = [password.clone(), encode(&password)];
            for url in addresses_with(&password) {
                let leaks = |text: &str| {
                    text.contains(TAIL) || secrets.iter().any(|s| text.contains(s.as_str()))
                };
                assert!(!leaks(&redact(&url)), "{url} -> {}", redact(&url));
                match Address::parse(&url, None) {
                    Ok(address) => {
                        assert!(!leaks(&address.shown), "{url} -> {}", address.shown);
                        let debug = format!("{address:?}");
                        assert!(!leaks(&debug), "{url} -> {debug}");
                    }
                    Err(err) => {
                        assert!(!leaks(&err.to_string()), "{url} -> {err}");
                        assert!(!leaks(&format!("{err:?}")), "{url} -> {err:?}");
                    }
                }
            }
        }
    }

    /// The client is given the password as written (decoded), so a run succeeds with
    /// it: the pieces vlm shows are the pieces the client reads.
    #[cfg(feature = "postgres")]
    #[test]
    fn the_client_reads_the_password_vlm_hides() {
        for password in hostile_passwords() {
            for url in [
                format!("postgresql://u:{}@h:5/db?table=t", encode(&password)),
                format!("postgresql://u@h/db?table=t&password={}", encode(&password)),
                format!("postgresql://u@h/db?pass%77ord={}", encode(&password)),
            ] {
                let address = Address::parse(&url, None).unwrap();
                let config: ::postgres::Config = address.connection.expose().parse().unwrap();
                assert_eq!(config.get_password(), Some(password.as_bytes()), "{url}");
                assert_eq!(config.get_user(), Some("u"));
            }
            // Written as is, a password with `/`, `?`, `#`, `:`, `%`, `&`, `=` or a space
            // still reaches the client whole (an `@` cannot: it ends the user part).
            if !password.contains('@') && !password.contains('%') {
                let url = format!("postgresql://u:{password}@h/db");
                let address = Address::parse(&url, None).unwrap();
                let config: ::postgres::Config = address.connection.expose().parse().unwrap();
                assert_eq!(config.get_password(), Some(password.as_bytes()), "{url}");
                assert_eq!(
                    address.shown,
                    "postgresql://u:***@h/db (table vlm_embeddings)"
                );
            }
        }
    }

    #[test]
    fn parses_milvus_addresses() {
        let a = Address::parse("milvus://ann:pa%3Ass@db.example:19531/pics?db=team", None).unwrap();
        assert_eq!(a.backend, Backend::Milvus);
        assert_eq!(a.table.as_str(), "pics");
        let m = a.milvus.as_ref().unwrap();
        assert_eq!((m.host.as_str(), m.port), ("db.example", 19531));
        assert_eq!(m.user.as_deref(), Some("ann"));
        assert_eq!(m.password.as_ref().map(Secret::expose), Some("pa:ss"));
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
