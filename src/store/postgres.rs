//! Image embeddings (and labels) in PostgreSQL with pgvector.
//!
//! One table per model holds one row per path:
//!
//! ```sql
//! CREATE TABLE vlm_embeddings (
//!     path         text PRIMARY KEY,      -- the input as vlm shows it
//!     content_hash text NOT NULL,         -- SHA-256 of the file (the cache's ContentKey)
//!     model        text NOT NULL,
//!     revision     text,
//!     dim          integer NOT NULL,
//!     embedding    vector(D) NOT NULL,
//!     updated_at   timestamptz NOT NULL DEFAULT now());
//! CREATE INDEX ... USING hnsw (embedding vector_cosine_ops);
//! ```
//!
//! `vlm classify --to` also fills `<table>_labels` (path, content_hash, model, top_label,
//! top_probability, labels jsonb = the ranked `[{label, prompt, probability, similarity}]`,
//! labelled_at), keyed by path like the embeddings.
//!
//! Rows are upserted by path in one transaction per batch, so a run cut short keeps every
//! batch it finished and a re-run, which skips paths whose stored hash matches the file,
//! neither loses nor doubles a row.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use pgvector::Vector;
use postgres::config::Host;
use postgres::{Client, Config, NoTls};
use thiserror::Error;

use super::{
    Address, AtomicBool, CaptionRow, EmbeddingRow, EmbeddingStore, LabelRow, ModelStamp, NearPairs,
    Ordering, StoreError, StoredHit, TableName, INDEX_SUFFIX, LABELS_SUFFIX,
};
use crate::progress::Progress;

/// How long a connection attempt may take when the address does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows per INSERT statement (7 parameters each, well under PostgreSQL's 65535).
const ROWS_PER_STATEMENT: usize = 500;
/// Paths per lookup of stored hashes.
const PATHS_PER_LOOKUP: usize = 5000;
/// Rows whose nearest neighbours one statement of `near_pairs` asks for: a step of its
/// progress, and how long Ctrl-C may wait.
const ROWS_PER_NEIGHBOUR_QUERY: usize = 500;

/// What can go wrong talking to the database. Every message names the address with the
/// password removed, never the password.
#[derive(Debug, Error)]
pub enum PgError {
    #[error("cannot connect to {shown}: {cause}; check that the server is running and the address, user and password (PGPASSWORD or ~/.pgpass) are right")]
    Connect { shown: String, cause: String },
    #[error("{shown}: the pgvector extension is not available ({cause}); install it on the server (postgresql-NN-pgvector, or .ci/install-postgres) or ask an administrator to run CREATE EXTENSION vector")]
    NoExtension { shown: String, cause: String },
    #[error("{shown}: {what} failed: {cause}; rows stored before this are kept, run the same command again to finish")]
    Lost {
        shown: String,
        what: &'static str,
        cause: String,
    },
    #[error("{shown}: {what} failed: {cause}")]
    Query {
        shown: String,
        what: &'static str,
        cause: String,
    },
    #[error("{shown} holds {table_dim}-dimensional embeddings but this model makes {dim}-dimensional ones; use another table (--table or ?table=) or the model that filled it")]
    Dimension {
        shown: String,
        table_dim: usize,
        dim: usize,
    },
    #[error("{shown} holds embeddings of {table_model} but this model is {model}; use another table (--table or ?table=) or --model {table_model}")]
    Model {
        shown: String,
        table_model: String,
        model: String,
    },
    #[error("{shown} exists but was not made by vlm (it lacks the column {column}); choose another table with --table or ?table=")]
    Foreign { shown: String, column: &'static str },
    #[error("{shown} does not exist; fill it first with vlm embed INPUTS --to ADDRESS")]
    Missing { shown: String },
    #[error("{shown}: invalid connection address: {cause}")]
    Address { shown: String, cause: String },
}

/// The search hit this module returns (the store-wide type).
pub type PgHit = StoredHit;

/// An open connection to one embeddings table.
pub struct PgStore {
    client: Client,
    table: TableName,
    shown: String,
    stamp: ModelStamp,
    labels_ready: bool,
}

/// Connection settings from the address, filled in from the environment as libpq does:
/// `PGHOST`, `PGPORT`, `PGUSER` (else the login name), `PGDATABASE` (else the user),
/// `PGPASSWORD`, then the password file (`PGPASSFILE`, else `~/.pgpass`).
pub fn config(address: &Address) -> Result<Config, PgError> {
    let mut config: Config =
        address
            .connection
            .expose()
            .parse()
            .map_err(|e: postgres::Error| PgError::Address {
                shown: address.shown.clone(),
                cause: e.to_string(),
            })?;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        match env("PGHOST") {
            Some(host) => {
                for host in host.split(',') {
                    config.host(host);
                }
            }
            None if std::path::Path::new("/var/run/postgresql").is_dir() => {
                config.host_path("/var/run/postgresql");
            }
            None => {
                config.host("localhost");
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(port) = env("PGPORT").and_then(|p| p.parse().ok()) {
            config.port(port);
        }
    }
    if config.get_user().is_none() {
        if let Some(user) = env("PGUSER")
            .or_else(|| env("USER"))
            .or_else(|| env("LOGNAME"))
        {
            config.user(&user);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(db) = env("PGDATABASE").or_else(|| config.get_user().map(str::to_string)) {
            config.dbname(&db);
        }
    }
    if config.get_password().is_none() {
        let from_file = || {
            let file = env("PGPASSFILE")
                .map(PathBuf::from)
                .or_else(|| dirs::home_dir().map(|home| home.join(".pgpass")))?;
            let text = std::fs::read_to_string(file).ok()?;
            pgpass_lookup(&text, &config)
        };
        if let Some(password) = env("PGPASSWORD").or_else(from_file) {
            config.password(password);
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(config)
}

/// The password for `config`'s first host in a `.pgpass` file
/// (`hostname:port:database:username:password`, `*` matches anything, `\` escapes `:`).
/// A Unix-socket host matches `localhost`, as in libpq.
fn pgpass_lookup(text: &str, config: &Config) -> Option<String> {
    let host = match config.get_hosts().first()? {
        Host::Tcp(name) => name.clone(),
        #[cfg(unix)]
        Host::Unix(_) => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let db = config.get_dbname().unwrap_or_default();
    let user = config.get_user().unwrap_or_default();
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        let [h, p, d, u, password] = fields.as_slice() else {
            continue;
        };
        let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
        if matches(h, &host) && matches(p, &port) && matches(d, db) && matches(u, user) {
            return Some(password.clone());
        }
    }
    None
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(field)) = (chars.next(), fields.last_mut()) {
                    field.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(field) = fields.last_mut() {
                    field.push(c);
                }
            }
        }
    }
    fields
}

/// Connects to the address's server.
fn connect(address: &Address) -> Result<Client, PgError> {
    config(address)?
        .connect(NoTls)
        .map_err(|e| PgError::Connect {
            shown: address.shown.clone(),
            cause: cause(&e),
        })
}

/// The error's text with its causes; the postgres crate never puts the password in it.
fn cause(err: &postgres::Error) -> String {
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

impl PgStore {
    /// Connects for writing: makes the extension, table and index if missing, and refuses
    /// (before any write) a table of another dimension or model.
    pub fn open_for_writing(address: &Address, stamp: ModelStamp) -> Result<Self, PgError> {
        let client = connect(address)?;
        let mut store = Self {
            client,
            table: address.table.clone(),
            shown: address.shown.clone(),
            stamp,
            labels_ready: false,
        };
        store.ensure_extension()?;
        match store.existing()? {
            Some(found) => store.check(&found)?,
            None => store.create()?,
        }
        Ok(store)
    }

    /// Connects for searching an existing table filled by this model.
    pub fn open_for_search(address: &Address, stamp: ModelStamp) -> Result<Self, PgError> {
        let client = connect(address)?;
        let mut store = Self {
            client,
            table: address.table.clone(),
            shown: address.shown.clone(),
            stamp,
            labels_ready: false,
        };
        match store.existing()? {
            Some(found) => store.check(&found)?,
            None => {
                return Err(PgError::Missing {
                    shown: store.shown.clone(),
                })
            }
        }
        Ok(store)
    }

    /// The address as shown in messages (no password).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn query_error(&self, what: &'static str, err: &postgres::Error) -> PgError {
        query_error(&self.shown, what, err)
    }

    fn ensure_extension(&mut self) -> Result<(), PgError> {
        let installed = self
            .client
            .query_opt("SELECT 1 FROM pg_extension WHERE extname = 'vector'", &[])
            .map_err(|e| self.query_error("checking for pgvector", &e))?
            .is_some();
        if !installed {
            self.client
                .batch_execute("CREATE EXTENSION IF NOT EXISTS vector")
                .map_err(|e| PgError::NoExtension {
                    shown: self.shown.clone(),
                    cause: cause(&e),
                })?;
        }
        Ok(())
    }

    /// The existing table's embedding dimension and the model of one of its rows; `None`
    /// when there is no such table.
    fn existing(&mut self) -> Result<Option<Existing>, PgError> {
        // Quoted as the table was created: `to_regclass` folds an unquoted `MyTable` to
        // `mytable`, which is not the table vlm made.
        let name = self.table.quoted("");
        let exists: bool = self
            .client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
            .map_err(|e| self.query_error("looking up the table", &e))?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let columns: Vec<(String, i32)> = self
            .client
            .query(
                "SELECT attname::text, atttypmod FROM pg_attribute \
                 WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
                &[&name],
            )
            .map_err(|e| self.query_error("reading the table's columns", &e))?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        for column in ["path", "content_hash", "model", "revision", "embedding"] {
            if !columns.iter().any(|(name, _)| name == column) {
                return Err(PgError::Foreign {
                    shown: self.shown.clone(),
                    column,
                });
            }
        }
        // pgvector keeps a vector column's dimension in its type modifier.
        let dim = columns
            .iter()
            .find(|(name, _)| name == "embedding")
            .and_then(|(_, typmod)| usize::try_from(*typmod).ok());
        let sql = format!(
            "SELECT model, revision FROM {} LIMIT 1",
            self.table.quoted("")
        );
        let model = self
            .client
            .query_opt(&sql, &[])
            .map_err(|e| self.query_error("reading the table's model", &e))?
            .map(|row| (row.get::<_, String>(0), row.get::<_, Option<String>>(1)));
        Ok(Some(Existing { dim, model }))
    }

    fn check(&self, found: &Existing) -> Result<(), PgError> {
        if let Some(dim) = found.dim.filter(|&d| d != self.stamp.dim) {
            return Err(PgError::Dimension {
                shown: self.shown.clone(),
                table_dim: dim,
                dim: self.stamp.dim,
            });
        }
        if let Some((model, revision)) = &found.model {
            if model != &self.stamp.model || revision != &self.stamp.revision {
                let table_model = ModelStamp {
                    model: model.clone(),
                    revision: revision.clone(),
                    dim: 0,
                }
                .name();
                return Err(PgError::Model {
                    shown: self.shown.clone(),
                    table_model,
                    model: self.stamp.name(),
                });
            }
        }
        Ok(())
    }

    fn create(&mut self) -> Result<(), PgError> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                path text PRIMARY KEY,
                content_hash text NOT NULL,
                model text NOT NULL,
                revision text,
                dim integer NOT NULL,
                embedding vector({dim}) NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now());
             CREATE INDEX IF NOT EXISTS {index} ON {table}
                USING hnsw (embedding vector_cosine_ops);",
            table = self.table.quoted(""),
            index = self.table.bare(INDEX_SUFFIX),
            dim = self.stamp.dim,
        );
        self.client
            .batch_execute(&sql)
            .map_err(|e| self.query_error("creating the table", &e))
    }

    /// The stored content hash of each of `paths` that has a row.
    pub fn stored_hashes(&mut self, paths: &[String]) -> Result<HashMap<String, String>, PgError> {
        self.column_by_path("content_hash", paths, "looking up stored rows")
    }

    /// The value of `column` of each of `paths` that has a row.
    fn column_by_path<T: for<'a> postgres::types::FromSql<'a>>(
        &mut self,
        column: &'static str,
        paths: &[String],
        what: &'static str,
    ) -> Result<HashMap<String, T>, PgError> {
        let sql = format!(
            "SELECT path, {column} FROM {} WHERE path = ANY($1)",
            self.table.quoted("")
        );
        let mut stored = HashMap::new();
        for chunk in paths.chunks(PATHS_PER_LOOKUP) {
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let rows = self
                .client
                .query(&sql, &[&chunk])
                .map_err(|e| self.query_error(what, &e))?;
            stored.extend(rows.iter().map(|r| (r.get(0), r.get(1))));
        }
        Ok(stored)
    }

    /// Inserts or replaces `rows` (by path) in one transaction. Returns how many were written.
    pub fn upsert(&mut self, rows: &[EmbeddingRow<'_>]) -> Result<u64, PgError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let table = self.table.quoted("");
        let dim = i32::try_from(self.stamp.dim).unwrap_or(i32::MAX);
        let vectors: Vec<Vector> = rows
            .iter()
            .map(|r| Vector::from(r.embedding.to_vec()))
            .collect();
        let (model, revision) = (&self.stamp.model, &self.stamp.revision);
        let result = (|| {
            let mut tx = self.client.transaction()?;
            let mut written = 0;
            for (chunk, vectors) in rows
                .chunks(ROWS_PER_STATEMENT)
                .zip(vectors.chunks(ROWS_PER_STATEMENT))
            {
                let mut sql = format!(
                    "INSERT INTO {table} (path, content_hash, model, revision, dim, embedding) VALUES "
                );
                let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    Vec::with_capacity(chunk.len() * 6);
                for (i, (row, vector)) in chunk.iter().zip(vectors).enumerate() {
                    let n = i * 6;
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!(
                        "(${}, ${}, ${}, ${}, ${}, ${})",
                        n + 1,
                        n + 2,
                        n + 3,
                        n + 4,
                        n + 5,
                        n + 6
                    ));
                    params.push(&row.path);
                    params.push(&row.content_hash);
                    params.push(model);
                    params.push(revision);
                    params.push(&dim);
                    params.push(vector);
                }
                sql.push_str(
                    " ON CONFLICT (path) DO UPDATE SET content_hash = EXCLUDED.content_hash, \
                     model = EXCLUDED.model, revision = EXCLUDED.revision, dim = EXCLUDED.dim, \
                     embedding = EXCLUDED.embedding, updated_at = now()",
                );
                written += tx.execute(&sql, &params)?;
            }
            tx.commit()?;
            Ok::<u64, postgres::Error>(written)
        })();
        result.map_err(|e| query_error(&self.shown, "storing embeddings", &e))
    }

    fn ensure_labels_table(&mut self) -> Result<(), PgError> {
        if self.labels_ready {
            return Ok(());
        }
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {labels} (
                path text PRIMARY KEY,
                content_hash text NOT NULL,
                model text NOT NULL,
                top_label text NOT NULL,
                top_probability real NOT NULL,
                labels jsonb NOT NULL,
                labelled_at timestamptz NOT NULL DEFAULT now())",
            labels = self.table.quoted(LABELS_SUFFIX),
        );
        self.client
            .batch_execute(&sql)
            .map_err(|e| self.query_error("creating the labels table", &e))?;
        self.labels_ready = true;
        Ok(())
    }

    /// Inserts or replaces label rows (by path) in `<table>_labels`, in one transaction.
    pub fn upsert_labels(&mut self, rows: &[LabelRow<'_>]) -> Result<u64, PgError> {
        if rows.is_empty() {
            return Ok(0);
        }
        self.ensure_labels_table()?;
        let sql = format!(
            "INSERT INTO {} (path, content_hash, model, top_label, top_probability, labels) \
             VALUES ($1, $2, $3, $4, $5, $6::text::jsonb) \
             ON CONFLICT (path) DO UPDATE SET content_hash = EXCLUDED.content_hash, \
             model = EXCLUDED.model, top_label = EXCLUDED.top_label, \
             top_probability = EXCLUDED.top_probability, labels = EXCLUDED.labels, \
             labelled_at = now()",
            self.table.quoted(LABELS_SUFFIX)
        );
        let model = self.stamp.model.clone();
        execute_each(&mut self.client, &sql, rows, |row| {
            vec![
                &row.path,
                &row.content_hash,
                &model,
                &row.top_label,
                &row.top_probability,
                &row.labels_json,
            ]
        })
        .map_err(|e| self.query_error("storing labels", &e))
    }

    /// The `n` rows nearest to `query` by cosine distance, through the HNSW index, with
    /// their cosine similarity.
    pub fn search(&mut self, query: &[f32], n: usize) -> Result<Vec<PgHit>, PgError> {
        // An HNSW scan returns at most ef_search rows (pgvector's default 40), so a larger
        // LIMIT needs a larger candidate list. pgvector caps ef_search at 1000.
        let ef = n.clamp(40, 1000);
        self.client
            .batch_execute(&format!("SET hnsw.ef_search = {ef}"))
            .map_err(|e| self.query_error("setting up the search", &e))?;
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT path, (1 - (embedding <=> $1))::real FROM {} ORDER BY embedding <=> $1 LIMIT $2",
            self.table.quoted("")
        );
        let query = Vector::from(query.to_vec());
        let rows = self
            .client
            .query(&sql, &[&query, &limit])
            .map_err(|e| self.query_error("searching", &e))?;
        Ok(rows
            .iter()
            .map(|row| PgHit {
                path: row.get(0),
                similarity: row.get(1),
            })
            .collect())
    }
    /// Every row's `neighbours` nearest rows at or above `threshold`, each row's found
    /// through the HNSW index (so approximately, as `search` is), a chunk of rows per
    /// statement; `None` when `cancel` stopped it between chunks.
    pub fn near_pairs(
        &mut self,
        threshold: f32,
        neighbours: usize,
        cancel: Option<&AtomicBool>,
        progress: &dyn Progress,
    ) -> Result<Option<NearPairs>, PgError> {
        let table = self.table.quoted("");
        let paths: Vec<String> = self
            .client
            .query(&format!("SELECT path FROM {table} ORDER BY path"), &[])
            .map_err(|e| self.query_error("listing the rows", &e))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let index: HashMap<&str, usize> = paths
            .iter()
            .enumerate()
            .map(|(i, path)| (path.as_str(), i))
            .collect();
        // The row itself comes first among its neighbours; ef_search bounds what one
        // index scan returns.
        let limit = neighbours.saturating_add(1);
        let ef = (2 * limit).clamp(40, 1000);
        // The planner prices one index scan per row above a sequential scan and sort of the
        // whole table (it chose that at 10,000 rows), measured 40 times slower: 280 ms
        // against 7 ms a row. This connection is ours, so it is told.
        self.client
            .batch_execute(&format!(
                "SET hnsw.ef_search = {ef}; SET enable_seqscan = off"
            ))
            .map_err(|e| self.query_error("setting up the search", &e))?;
        // Each row of the chunk is a query of the index (the LATERAL subquery is ordered by
        // distance to it with a LIMIT, which is what pgvector's HNSW scan answers).
        let sql = format!(
            "SELECT a.path, b.path, b.similarity FROM \
               (SELECT path, embedding FROM {table} WHERE path = ANY($1)) a \
             CROSS JOIN LATERAL \
               (SELECT c.path, (1 - (c.embedding <=> a.embedding))::real AS similarity \
                FROM {table} c ORDER BY c.embedding <=> a.embedding LIMIT $2) b \
             WHERE b.path <> a.path AND b.similarity >= $3"
        );
        let statement = self
            .client
            .prepare(&sql)
            .map_err(|e| self.query_error("preparing the neighbour search", &e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut pairs = Vec::new();
        progress.start(Some(paths.len()));
        for chunk in paths.chunks(ROWS_PER_NEIGHBOUR_QUERY) {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                progress.finish();
                return Ok(None);
            }
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let rows = self
                .client
                .query(&statement, &[&chunk, &limit, &threshold])
                .map_err(|e| self.query_error("searching near pairs", &e))?;
            for row in rows {
                let (a, b): (&str, &str) = (row.get(0), row.get(1));
                // A row added while this runs is not among the paths: left out.
                if let (Some(&a), Some(&b)) = (index.get(a), index.get(b)) {
                    pairs.push((a.min(b), a.max(b), row.get::<_, f32>(2)));
                }
            }
            progress.advance(chunk.len());
        }
        progress.finish();
        pairs.sort_by_key(|&(a, b, _)| (a, b));
        pairs.dedup_by_key(|&mut (a, b, _)| (a, b));
        Ok(Some(NearPairs { paths, pairs }))
    }

    /// The stored embeddings of those of `paths` that have a row.
    pub fn embeddings_of(
        &mut self,
        paths: &[String],
    ) -> Result<HashMap<String, Vec<f32>>, PgError> {
        let stored: HashMap<String, Vector> =
            self.column_by_path("embedding", paths, "reading stored embeddings")?;
        Ok(stored
            .into_iter()
            .map(|(path, v)| (path, v.to_vec()))
            .collect())
    }
}

impl EmbeddingStore for PgStore {
    fn shown(&self) -> &str {
        &self.shown
    }

    fn stored_hashes(&mut self, paths: &[String]) -> Result<HashMap<String, String>, StoreError> {
        Ok(PgStore::stored_hashes(self, paths)?)
    }

    fn upsert(&mut self, rows: &[EmbeddingRow<'_>]) -> Result<u64, StoreError> {
        Ok(PgStore::upsert(self, rows)?)
    }

    /// The embeddings, then the labels in `<table>_labels`: two transactions, each of which
    /// a re-run repeats if it was lost.
    fn upsert_labelled(
        &mut self,
        rows: &[EmbeddingRow<'_>],
        labels: &[LabelRow<'_>],
    ) -> Result<u64, StoreError> {
        let written = PgStore::upsert(self, rows)?;
        self.upsert_labels(labels)?;
        Ok(written)
    }

    fn search(&mut self, query: &[f32], n: usize) -> Result<Vec<StoredHit>, StoreError> {
        Ok(PgStore::search(self, query, n)?)
    }

    fn near_pairs(
        &mut self,
        threshold: f32,
        neighbours: usize,
        cancel: Option<&AtomicBool>,
        progress: &dyn Progress,
    ) -> Result<Option<NearPairs>, StoreError> {
        Ok(PgStore::near_pairs(
            self, threshold, neighbours, cancel, progress,
        )?)
    }

    fn embeddings_of(&mut self, paths: &[String]) -> Result<HashMap<String, Vec<f32>>, StoreError> {
        Ok(PgStore::embeddings_of(self, paths)?)
    }
}

/// `vlm caption --to`: captions in `<table>_captions`, beside the embeddings an existing
/// table holds (its rows and the captions share path and content hash).
pub struct PgCaptions {
    client: Client,
    table: TableName,
    shown: String,
}

impl PgCaptions {
    /// Connects, refuses an address whose embeddings table does not exist, and makes the
    /// captions table if missing.
    pub fn open(address: &Address) -> Result<Self, PgError> {
        let mut client = connect(address)?;
        let shown = address.shown.clone();
        let name = address.table.as_str().to_string();
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
            .map_err(|e| query_error(&shown, "looking up the table", &e))?
            .get(0);
        if !exists {
            return Err(PgError::Missing { shown });
        }
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {captions} (
                path text PRIMARY KEY,
                content_hash text NOT NULL,
                model text NOT NULL,
                caption text NOT NULL,
                log_prob double precision NOT NULL,
                tokens jsonb NOT NULL,
                captioned_at timestamptz NOT NULL DEFAULT now())",
            captions = address.table.quoted("_captions"),
        );
        client
            .batch_execute(&sql)
            .map_err(|e| query_error(&shown, "creating the captions table", &e))?;
        Ok(Self {
            client,
            table: address.table.clone(),
            shown,
        })
    }

    /// The address as shown in messages (no password).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Inserts or replaces caption rows (by path), in one transaction.
    pub fn upsert(&mut self, rows: &[CaptionRow<'_>]) -> Result<u64, PgError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "INSERT INTO {} (path, content_hash, model, caption, log_prob, tokens) \
             VALUES ($1, $2, $3, $4, $5, $6::text::jsonb) \
             ON CONFLICT (path) DO UPDATE SET content_hash = EXCLUDED.content_hash, \
             model = EXCLUDED.model, caption = EXCLUDED.caption, log_prob = EXCLUDED.log_prob, \
             tokens = EXCLUDED.tokens, captioned_at = now()",
            self.table.quoted("_captions")
        );
        execute_each(&mut self.client, &sql, rows, |row| {
            vec![
                &row.path,
                &row.content_hash,
                &row.model,
                &row.caption,
                &row.log_prob,
                &row.tokens_json,
            ]
        })
        .map_err(|e| query_error(&self.shown, "storing captions", &e))
    }
}

/// Runs the statement `sql` once per row, with the parameters `params` gives, in one
/// transaction; returns the rows written.
fn execute_each<R>(
    client: &mut Client,
    sql: &str,
    rows: &[R],
    params: impl for<'r> Fn(&'r R) -> Vec<&'r (dyn postgres::types::ToSql + Sync)>,
) -> Result<u64, postgres::Error> {
    let mut tx = client.transaction()?;
    let statement = tx.prepare(sql)?;
    let mut written = 0;
    for row in rows {
        written += tx.execute(&statement, &params(row))?;
    }
    tx.commit()?;
    Ok(written)
}

/// A failed statement as the error to report: "lost" (run again) when the connection went.
fn query_error(shown: &str, what: &'static str, err: &postgres::Error) -> PgError {
    // A closed connection (server gone, network cut) has no SQL state, a server shutting
    // down says so with class 57 (operator intervention) or 08 (connection exception);
    // any other SQL state is a refused statement.
    let lost = match err.code() {
        None => true,
        Some(state) => state.code().starts_with("57") || state.code().starts_with("08"),
    };
    let (shown, cause) = (shown.to_string(), cause(err));
    if err.is_closed() || lost {
        PgError::Lost { shown, what, cause }
    } else {
        PgError::Query { shown, what, cause }
    }
}

struct Existing {
    dim: Option<usize>,
    model: Option<(String, Option<String>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_for(url: &str) -> Config {
        url.parse().unwrap()
    }

    #[test]
    fn pgpass_matches_like_libpq() {
        let file = "# comment\n\
                    other:5432:*:ann:nope\n\
                    db.example:5433:pics:ann:pa\\:ss\n\
                    *:*:*:ann:fallback\n";
        let config = config_for("postgresql://ann@db.example:5433/pics");
        assert_eq!(pgpass_lookup(file, &config).as_deref(), Some("pa:ss"));
        let config = config_for("postgresql://ann@elsewhere/x");
        assert_eq!(pgpass_lookup(file, &config).as_deref(), Some("fallback"));
        let config = config_for("postgresql://bob@elsewhere/x");
        assert_eq!(pgpass_lookup(file, &config), None);
        let config = config_for("postgresql://ann@/pics?host=/tmp/sock&port=5433");
        assert_eq!(
            pgpass_lookup("localhost:5433:pics:ann:socket\n", &config).as_deref(),
            Some("socket")
        );
    }
}
