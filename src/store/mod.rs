//! Embedding stores outside the local cache: where `--to` writes and `--in` searches.
//!
//! Only PostgreSQL with pgvector so far ([`postgres`], cargo feature `postgres`, on by
//! default). The address parsing and redaction here do not need the client, so a build
//! without the feature can still tell the user what is missing without echoing a password.

#[cfg(feature = "postgres")]
pub mod postgres;

use rayon::prelude::*;
use thiserror::Error;

use crate::cache::EmbeddingCache;
use crate::embedder::MAX_INPUT_BYTES;
use crate::inputs::{self, Input};

/// The table used when neither `?table=` nor `--table` names one.
pub const DEFAULT_TABLE: &str = "vlm_embeddings";

/// A problem with a `--to`/`--in` address, before any connection is made.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("{shown} is not a database address vlm knows; give postgresql://USER@HOST:PORT/DB?table=NAME")]
    Scheme { shown: String },
    #[error("table name {name:?} is not a plain SQL name; use letters, digits and _ (optionally SCHEMA.TABLE), at most 63 characters each")]
    TableName { name: String },
    #[error(
        "the table is named twice ({url:?} in the address, {flag:?} by --table); give it once"
    )]
    TableTwice { url: String, flag: String },
    #[error("this vlm was built without PostgreSQL support; rebuild with the default features (cargo build --features postgres)")]
    NotBuilt,
}

/// True when `arg` names a database (`postgres://` or `postgresql://`) rather than a path.
pub fn is_database_url(arg: &str) -> bool {
    let lower = arg.get(..13).unwrap_or(arg).to_ascii_lowercase();
    lower.starts_with("postgresql://") || lower.starts_with("postgres://")
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

/// A parsed `postgresql://` address: the connection string without vlm's own `table`
/// parameter, the table, and how to show it.
#[derive(Debug, Clone)]
pub struct Address {
    /// What libpq would be given: the URL minus `table=`. Holds the password; never print it.
    pub connection: String,
    pub table: TableName,
    /// The address with the password replaced, for messages.
    pub shown: String,
}

impl Address {
    /// Parses `url`, taking the table from its `table=` parameter or `table_flag`, else
    /// [`DEFAULT_TABLE`].
    pub fn parse(url: &str, table_flag: Option<&str>) -> Result<Self, AddressError> {
        let shown = redact(url);
        if !is_database_url(url) {
            return Err(AddressError::Scheme { shown });
        }
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
        let table = TableName::new(&table)?;
        let connection = if kept.is_empty() {
            head.to_string()
        } else {
            format!("{head}?{}", kept.join("&"))
        };
        let shown_without_password = redact(&connection);
        Ok(Self {
            connection,
            shown: format!("{shown_without_password} (table {})", table.as_str()),
            table,
        })
    }
}

/// The content hash (SHA-256, as the cache keys it) of each input, read on rayon's threads;
/// `None` where the input cannot be read (the embedding run then reports why). Lets a store
/// skip unchanged files before any decoding. A URL is downloaded here and again when
/// embedded.
pub fn content_hashes(inputs: &[Input]) -> Vec<Option<String>> {
    inputs
        .par_iter()
        .map(|input| {
            inputs::read_bytes(&input.source, MAX_INPUT_BYTES)
                .ok()
                .map(|bytes| EmbeddingCache::key(&bytes).to_hex())
        })
        .collect()
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
    fn knows_database_addresses() {
        assert!(is_database_url("PostgreSQL://x"));
        assert!(is_database_url("postgres://x"));
        assert!(!is_database_url("photos/"));
        assert!(!is_database_url("http://x/a.jpg"));
    }
}
