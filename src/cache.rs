//! On-disk cache of image embeddings, so re-labelling a folder never runs the image encoder
//! again.
//!
//! An embedding depends on the image bytes, the model, and how pixels are prepared, so an
//! entry is keyed by the SHA-256 of the file content inside a directory per
//! [`CacheNamespace`] (model id, revision and a fingerprint of everything else):
//!
//! ```text
//! DIR/<namespace hash, 32 hex>/namespace.json        model id, revision, fingerprint (for humans)
//! DIR/<namespace hash>/<first 2 hex of key>/<key, 64 hex>.emb
//! ```
//!
//! An `.emb` file is a 20-byte header followed by the payload, all little-endian:
//!
//! | bytes  | field                                        |
//! |--------|----------------------------------------------|
//! | 0..4   | magic `VLME`                                 |
//! | 4..8   | format version, `u32` (currently 1)          |
//! | 8..12  | dimension `n`, `u32`                         |
//! | 12..20 | first 8 bytes of the SHA-256 of the payload  |
//! | 20..   | `n` × `f32`, the embedding bit for bit       |
//!
//! A missing file, or one whose magic, version, length or checksum is wrong, is a miss; the
//! caller then computes the embedding and [`EmbeddingCache::put`] overwrites the bad entry.
//! Writes go to a temporary file in the same directory and are renamed into place, so a
//! reader sees either the old entry, the new one, or none, never a torn one, even across
//! concurrent runs or a killed process. Stale `*.tmp` files a killed process leaves behind are
//! never read as entries.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// Environment variable that overrides [`EmbeddingCache::default_dir`].
pub const CACHE_DIR_ENV: &str = "VLM_CACHE_DIR";

const MAGIC: &[u8; 4] = b"VLME";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 20;
const ENTRY_EXT: &str = "emb";
const NAMESPACE_FILE: &str = "namespace.json";

/// Why the embedding cache could not be used; every message names the path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A cache directory could not be created.
    #[error(
        "cannot create embedding cache directory {}: {cause}; pass a writable directory to \
         --cache, set {CACHE_DIR_ENV}, or run without --cache",
        path.display()
    )]
    CreateDir {
        /// The directory that could not be created.
        path: PathBuf,
        /// The underlying error.
        cause: io::Error,
    },

    /// A cache file could not be written.
    #[error(
        "cannot write embedding cache file {}: {cause}; check free space and permissions of \
         the cache directory, point --cache or {CACHE_DIR_ENV} elsewhere, or run without --cache",
        path.display()
    )]
    Write {
        /// The file that could not be written.
        path: PathBuf,
        /// The underlying error.
        cause: io::Error,
    },

    /// The embedding has more values than the entry format can record.
    #[error(
        "cannot cache an embedding of {len} values at {}: the format holds at most {} values; \
         run without --cache for this model",
        path.display(),
        u32::MAX
    )]
    TooLarge {
        /// The entry that would have been written.
        path: PathBuf,
        /// Number of values in the embedding.
        len: usize,
    },
}

/// A file's size and modification time as text ("N bytes, modified T" with T in
/// nanoseconds since 1970; empty when the file cannot be read): what a cache key uses to
/// notice that a file it cannot afford to hash (weights, the executable) was replaced.
pub fn file_stamp(path: &Path) -> String {
    fs::metadata(path)
        .map(|m| {
            let modified = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{} bytes, modified {modified}", m.len())
        })
        .unwrap_or_default()
}

/// What makes embeddings of the same bytes differ: the model and how pixels are prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheNamespace {
    model_id: String,
    revision: Option<String>,
    fingerprint: String,
    hash: String,
}

impl CacheNamespace {
    /// `model_id` e.g. repo id or canonical directory; `revision` the hub revision/commit or
    /// None; `fingerprint` any extra text that changes the embedding (preprocessing config,
    /// dtype, a hash of the weights file's size and mtime for local dirs). All three are
    /// folded into one stable hash.
    pub fn new(model_id: &str, revision: Option<&str>, fingerprint: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"vlm embedding namespace v1\0");
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        let field = |h: &mut Sha256, s: &str| {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        field(&mut h, model_id);
        match revision {
            None => h.update([0u8]),
            Some(r) => {
                h.update([1u8]);
                field(&mut h, r);
            }
        }
        field(&mut h, fingerprint);
        let digest = h.finalize();
        Self {
            model_id: model_id.to_string(),
            revision: revision.map(str::to_string),
            fingerprint: fingerprint.to_string(),
            hash: hex(&digest[..16]),
        }
    }

    /// The directory name under the cache root: 32 hex digits.
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

/// SHA-256 of an image file's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentKey([u8; 32]);

impl ContentKey {
    /// The digest as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Display for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentKey({})", self.to_hex())
    }
}

/// Counts since the cache was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// `get` calls that returned an embedding.
    pub hits: u64,
    /// `get` calls that found no valid entry.
    pub misses: u64,
    /// Entries written by `put`.
    pub writes: u64,
}

/// Embeddings of one namespace under a cache root; safe to share between threads.
#[derive(Debug)]
pub struct EmbeddingCache {
    dir: PathBuf,
    namespace: CacheNamespace,
    hits: AtomicU64,
    misses: AtomicU64,
    writes: AtomicU64,
}

#[derive(serde::Serialize, serde::Deserialize, PartialEq)]
struct NamespaceInfo {
    format_version: u32,
    model_id: String,
    revision: Option<String>,
    fingerprint: String,
}

impl EmbeddingCache {
    /// `$VLM_CACHE_DIR` if set and non-empty, else `<user cache dir>/vlm/embeddings`; None when
    /// the platform has no user cache dir.
    pub fn default_dir() -> Option<PathBuf> {
        match std::env::var_os(CACHE_DIR_ENV) {
            Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
            _ => dirs::cache_dir().map(|d| d.join("vlm").join("embeddings")),
        }
    }

    /// Opens (creating as needed) the namespace's directory under `dir` and records
    /// `namespace.json` there.
    pub fn open(dir: &Path, namespace: CacheNamespace) -> Result<Self, CacheError> {
        let ns_dir = dir.join(namespace.hash());
        fs::create_dir_all(&ns_dir).map_err(|source| CacheError::CreateDir {
            path: ns_dir.clone(),
            cause: source,
        })?;
        let info = NamespaceInfo {
            format_version: VERSION,
            model_id: namespace.model_id.clone(),
            revision: namespace.revision.clone(),
            fingerprint: namespace.fingerprint.clone(),
        };
        let info_path = ns_dir.join(NAMESPACE_FILE);
        let current = fs::read(&info_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<NamespaceInfo>(&b).ok());
        // Rewriting an identical file on every run would only race with other runs.
        if current.as_ref() != Some(&info) {
            // Serialising plain strings cannot fail; an empty file would be rewritten next run.
            let mut json = serde_json::to_vec_pretty(&info).unwrap_or_default();
            json.push(b'\n');
            write_atomic(&ns_dir, &info_path, &json)?;
        }
        Ok(Self {
            dir: ns_dir,
            namespace,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        })
    }

    /// The SHA-256 of a file's content.
    pub fn key(bytes: &[u8]) -> ContentKey {
        ContentKey(Sha256::digest(bytes).into())
    }

    /// The namespace's directory, `DIR/<namespace hash>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The namespace this cache was opened with.
    pub fn namespace(&self) -> &CacheNamespace {
        &self.namespace
    }

    /// The stored embedding, or None when the entry is absent or fails any check.
    pub fn get(&self, key: &ContentKey) -> Option<Vec<f32>> {
        let found = fs::read(self.entry_path(key))
            .ok()
            .and_then(|bytes| decode(&bytes));
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores `embedding` under `key`, replacing any existing entry atomically.
    pub fn put(&self, key: &ContentKey, embedding: &[f32]) -> Result<(), CacheError> {
        let path = self.entry_path(key);
        let bytes = encode(embedding).ok_or_else(|| CacheError::TooLarge {
            path: path.clone(),
            len: embedding.len(),
        })?;
        // entry_path always has a shard parent; the fallback only keeps this panic-free.
        let shard = path.parent().unwrap_or(&self.dir);
        fs::create_dir_all(shard).map_err(|source| CacheError::CreateDir {
            path: shard.to_path_buf(),
            cause: source,
        })?;
        write_atomic(shard, &path, &bytes)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Hits, misses and writes so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }

    fn entry_path(&self, key: &ContentKey) -> PathBuf {
        let hex = key.to_hex();
        self.dir.join(&hex[..2]).join(format!("{hex}.{ENTRY_EXT}"))
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

fn checksum(payload: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(payload);
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// None when the dimension does not fit the header's `u32`.
fn encode(embedding: &[f32]) -> Option<Vec<u8>> {
    let dim = u32::try_from(embedding.len()).ok()?;
    let mut payload = Vec::with_capacity(embedding.len() * 4);
    for v in embedding {
        payload.extend_from_slice(&v.to_le_bytes());
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&dim.to_le_bytes());
    out.extend_from_slice(&checksum(&payload));
    out.extend_from_slice(&payload);
    Some(out)
}

/// None on any mismatch: the bytes come from disk and may be truncated or foreign.
fn decode(bytes: &[u8]) -> Option<Vec<f32>> {
    let header = bytes.get(..HEADER_LEN)?;
    let payload = &bytes[HEADER_LEN..];
    let u32_at = |i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(header.get(i..i + 4)?.try_into().ok()?))
    };
    if &header[..4] != MAGIC || u32_at(4)? != VERSION {
        return None;
    }
    let dim = usize::try_from(u32_at(8)?).ok()?;
    if payload.len() != dim.checked_mul(4)? || header[12..20] != checksum(payload) {
        return None;
    }
    Some(
        payload
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// Writes `bytes` to a fresh temporary file in `dir` (same filesystem, so the rename is
/// atomic) and renames it over `dest`.
fn write_atomic(dir: &Path, dest: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let stem = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tmp, mut file) = loop {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{stem}.{}.{seq}.tmp", std::process::id()));
        // create_new: a killed process with a recycled pid may have left this very name.
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => {
                return Err(CacheError::Write {
                    path: tmp,
                    cause: source,
                })
            }
        }
    };
    let written = file.write_all(bytes).and_then(|()| file.flush());
    drop(file);
    let result = written.and_then(|()| fs::rename(&tmp, dest));
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        // Windows refuses to replace a file another run has open; if that run stored the
        // same bytes, the entry is already what we wanted.
        if fs::read(dest).is_ok_and(|existing| existing == bytes) {
            return Ok(());
        }
        return Err(CacheError::Write {
            path: dest.to_path_buf(),
            cause: source,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ns(fingerprint: &str) -> CacheNamespace {
        CacheNamespace::new("openai/clip-vit-base-patch32", Some("main"), fingerprint)
    }

    /// Deterministic non-NaN f32s covering the whole bit range (xorshift over raw bits).
    fn random_embedding(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed | 1;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = f32::from_bits((state >> 32) as u32);
            if !v.is_nan() {
                out.push(v);
            }
        }
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn entry_file(cache: &EmbeddingCache, key: &ContentKey) -> PathBuf {
        cache.entry_path(key)
    }

    #[test]
    fn round_trip_is_bit_exact() {
        let root = tempfile::tempdir().unwrap();
        let cache = EmbeddingCache::open(root.path(), ns("a")).unwrap();
        let mut emb = random_embedding(512, 42);
        emb.extend([
            -0.0,
            0.0,
            f32::MIN_POSITIVE / 2.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]);
        let key = EmbeddingCache::key(b"image bytes");
        assert_eq!(cache.get(&key), None);
        cache.put(&key, &emb).unwrap();
        let back = cache.get(&key).unwrap();
        assert_eq!(bits(&back), bits(&emb));
        assert!(back[512].is_sign_negative() && back[512] == 0.0);

        // A fresh handle (a later run) reads the same entry.
        let reopened = EmbeddingCache::open(root.path(), ns("a")).unwrap();
        assert_eq!(bits(&reopened.get(&key).unwrap()), bits(&emb));
    }

    #[test]
    fn empty_embedding_round_trips() {
        let root = tempfile::tempdir().unwrap();
        let cache = EmbeddingCache::open(root.path(), ns("a")).unwrap();
        let key = EmbeddingCache::key(b"");
        cache.put(&key, &[]).unwrap();
        assert_eq!(cache.get(&key), Some(vec![]));
    }

    #[test]
    fn layout_matches_module_doc() {
        let root = tempfile::tempdir().unwrap();
        let namespace = ns("a");
        let hash = namespace.hash().to_string();
        let cache = EmbeddingCache::open(root.path(), namespace).unwrap();
        let key = EmbeddingCache::key(b"abc");
        // Known SHA-256 of "abc".
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(key.to_hex(), hex);
        cache.put(&key, &[1.0, -2.5]).unwrap();

        let ns_dir = root.path().join(&hash);
        assert_eq!(cache.dir(), ns_dir);
        assert_eq!(hash.len(), 32);
        let entry = fs::read(ns_dir.join("ba").join(format!("{hex}.emb"))).unwrap();
        assert_eq!(&entry[..4], b"VLME");
        assert_eq!(entry[4..8], 1u32.to_le_bytes());
        assert_eq!(entry[8..12], 2u32.to_le_bytes());
        assert_eq!(entry[20..24], 1.0f32.to_le_bytes());
        assert_eq!(entry[24..28], (-2.5f32).to_le_bytes());
        assert_eq!(entry.len(), 28);

        let info: serde_json::Value =
            serde_json::from_slice(&fs::read(ns_dir.join("namespace.json")).unwrap()).unwrap();
        assert_eq!(info["model_id"], "openai/clip-vit-base-patch32");
        assert_eq!(info["revision"], "main");
        assert_eq!(info["fingerprint"], "a");
    }

    #[test]
    fn namespace_hash_separates_every_field() {
        let base = CacheNamespace::new("m", Some("r"), "f");
        assert_eq!(base.hash(), CacheNamespace::new("m", Some("r"), "f").hash());
        let others = [
            CacheNamespace::new("m2", Some("r"), "f"),
            CacheNamespace::new("m", Some("r2"), "f"),
            CacheNamespace::new("m", None, "f"),
            CacheNamespace::new("m", Some(""), "f"),
            CacheNamespace::new("m", Some("r"), "f2"),
            CacheNamespace::new("mr", None, "f"),
            CacheNamespace::new("m", Some("rf"), ""),
        ];
        for other in &others {
            assert_ne!(base.hash(), other.hash(), "{other:?}");
        }
    }

    #[test]
    fn namespaces_do_not_share_entries() {
        let root = tempfile::tempdir().unwrap();
        let a = EmbeddingCache::open(root.path(), ns("size=224")).unwrap();
        let b = EmbeddingCache::open(root.path(), ns("size=336")).unwrap();
        let c = EmbeddingCache::open(
            root.path(),
            CacheNamespace::new("openai/clip-vit-base-patch32", Some("abc123"), "size=224"),
        )
        .unwrap();
        let key = EmbeddingCache::key(b"same picture");
        a.put(&key, &[1.0, 2.0]).unwrap();
        assert_eq!(b.get(&key), None);
        assert_eq!(c.get(&key), None);
        b.put(&key, &[3.0]).unwrap();
        assert_eq!(a.get(&key), Some(vec![1.0, 2.0]));
        assert_eq!(b.get(&key), Some(vec![3.0]));
    }

    #[test]
    fn corrupt_entries_are_misses_and_put_repairs_them() {
        let root = tempfile::tempdir().unwrap();
        let cache = EmbeddingCache::open(root.path(), ns("a")).unwrap();
        let key = EmbeddingCache::key(b"photo");
        let emb = random_embedding(64, 7);
        cache.put(&key, &emb).unwrap();
        let path = entry_file(&cache, &key);
        let good = fs::read(&path).unwrap();

        let mut flipped_payload = good.clone();
        flipped_payload[HEADER_LEN + 10] ^= 0x01;
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        let mut bad_version = good.clone();
        bad_version[4..8].copy_from_slice(&2u32.to_le_bytes());
        let mut bad_dim = good.clone();
        bad_dim[8..12].copy_from_slice(&63u32.to_le_bytes());
        let mut huge_dim = good.clone();
        huge_dim[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut bad_checksum = good.clone();
        bad_checksum[15] ^= 0x80;
        let mut extra = good.clone();
        extra.push(0);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("short header", good[..HEADER_LEN - 1].to_vec()),
            ("header only", good[..HEADER_LEN].to_vec()),
            ("truncated payload", good[..good.len() - 3].to_vec()),
            ("trailing byte", extra),
            ("flipped payload bit", flipped_payload),
            ("bad magic", bad_magic),
            ("bad version", bad_version),
            ("wrong dim", bad_dim),
            ("huge dim", huge_dim),
            ("bad checksum", bad_checksum),
        ];
        for (what, bytes) in cases {
            fs::write(&path, &bytes).unwrap();
            assert_eq!(cache.get(&key), None, "{what} should be a miss");
            cache.put(&key, &emb).unwrap();
            assert_eq!(
                cache.get(&key).map(|v| bits(&v)),
                Some(bits(&emb)),
                "put should repair {what}"
            );
        }

        // A directory squatting on the entry's name is a miss too, not a crash.
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        assert_eq!(cache.get(&key), None);
    }

    #[test]
    fn concurrent_puts_leave_a_valid_entry() {
        let root = tempfile::tempdir().unwrap();
        let cache = Arc::new(EmbeddingCache::open(root.path(), ns("a")).unwrap());
        let key = EmbeddingCache::key(b"shared");
        let emb = Arc::new(random_embedding(768, 99));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, emb) = (Arc::clone(&cache), Arc::clone(&emb));
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        cache.put(&key, &emb).unwrap();
                        // A reader racing the writers sees a whole entry or none.
                        if let Some(got) = cache.get(&key) {
                            assert_eq!(bits(&got), bits(&emb));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(bits(&cache.get(&key).unwrap()), bits(&emb));
        assert_eq!(cache.stats().writes, 200);

        let shard = entry_file(&cache, &key).parent().unwrap().to_path_buf();
        let names: Vec<_> = fs::read_dir(shard)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "temporary files left behind: {names:?}");
    }

    #[test]
    fn stats_count_hits_misses_and_writes() {
        let root = tempfile::tempdir().unwrap();
        let cache = EmbeddingCache::open(root.path(), ns("a")).unwrap();
        let (k1, k2) = (EmbeddingCache::key(b"1"), EmbeddingCache::key(b"2"));
        assert_eq!(cache.stats(), CacheStats::default());
        assert_eq!(cache.get(&k1), None);
        cache.put(&k1, &[1.0]).unwrap();
        assert!(cache.get(&k1).is_some());
        assert!(cache.get(&k1).is_some());
        assert_eq!(cache.get(&k2), None);
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 2,
                misses: 2,
                writes: 1
            }
        );
    }

    #[test]
    fn unusable_dir_error_names_it() {
        let root = tempfile::tempdir().unwrap();
        // A path under a regular file fails even for root, unlike permission bits.
        let file = root.path().join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        let dir = file.join("cache");
        let err = EmbeddingCache::open(&dir, ns("a")).unwrap_err();
        assert!(matches!(err, CacheError::CreateDir { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
        assert!(msg.contains("--cache"), "{msg}");
    }

    #[test]
    fn put_error_names_the_entry() {
        let root = tempfile::tempdir().unwrap();
        let cache = EmbeddingCache::open(root.path(), ns("a")).unwrap();
        let key = EmbeddingCache::key(b"x");
        // A regular file where the shard directory should be makes the write fail.
        let shard = entry_file(&cache, &key).parent().unwrap().to_path_buf();
        fs::write(&shard, b"in the way").unwrap();
        let err = cache.put(&key, &[1.0]).unwrap_err();
        assert!(
            err.to_string().contains(&shard.display().to_string()),
            "{err}"
        );
        assert_eq!(cache.stats().writes, 0);
    }

    #[test]
    fn open_keeps_and_repairs_namespace_json() {
        let root = tempfile::tempdir().unwrap();
        let cache = EmbeddingCache::open(root.path(), ns("a")).unwrap();
        let info = cache.dir().join("namespace.json");
        fs::write(&info, b"{ truncated").unwrap();
        let cache = EmbeddingCache::open(root.path(), ns("a")).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&fs::read(&info).unwrap()).unwrap();
        assert_eq!(value["fingerprint"], "a");
        assert_eq!(cache.namespace(), &ns("a"));
    }

    #[test]
    fn default_dir_ends_in_vlm_embeddings_or_follows_env() {
        // Read-only check: mutating the environment would race other tests.
        let dir = EmbeddingCache::default_dir();
        match std::env::var_os(CACHE_DIR_ENV) {
            Some(v) if !v.is_empty() => assert_eq!(dir, Some(PathBuf::from(v))),
            _ => {
                if let Some(dir) = dir {
                    assert!(
                        dir.ends_with(Path::new("vlm").join("embeddings")),
                        "{dir:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn cache_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<EmbeddingCache>();
    }
}
