//! Pack files: a checkpoint's weights, packed once for the CPU kernels, written to the
//! cache and memory-mapped by later runs, which read the packed panels in place.
//!
//! A load on the packed kernels spends most of its time reading 600 MB of safetensors
//! into fresh (zeroed) pages and re-laying them out into panels. A pack file holds the
//! result: every packed weight in the kernels' layout, plus every other tensor the towers
//! read (layer norms, biases, embeddings), so a later run maps one file and touches only
//! the pages it computes with; the token-embedding table is gathered from the mapping row
//! by row.
//!
//! Layout (little-endian):
//!
//! | bytes    | field                                                           |
//! |----------|-----------------------------------------------------------------|
//! | 0..8     | magic `VLMPACK\0`                                               |
//! | 8..12    | format version, `u32`                                           |
//! | 16..24   | the file's length, `u64` (a cut file is refused)                |
//! | 24..32   | the table's length in bytes, `u64`                              |
//! | 32..64   | the key: SHA-256 of everything the packed values depend on      |
//! | 64..96   | SHA-256 of bytes 0..64 and the table                            |
//! | 128..    | the table (JSON): per entry its name, kind, dimensions, offset, |
//! |          | length and a SHA-256 of its first and last 4 KiB                |
//! | ...      | the entries' values, each at an offset aligned to 64 bytes      |
//!
//! What is verified on open, and why not more: magic, version, length, key, the header and
//! table checksum, every entry inside the file and not overlapping the next, and each
//! entry's first and last 4 KiB against the table. A full checksum of 600 MB would cost
//! about as much as the load it replaces; files are written to a new temporary file
//! (`create_new`, locked while written), synced, renamed into place and the directory
//! synced, so a reader never sees a partial file from a writer and a power loss leaves the
//! whole file or none; what a full disk can leave (a short file) fails the length check.
//! A flipped bit in the middle of a weight is not detected, as it is not in the
//! safetensors file either. A temporary file that a killed run left is removed when the
//! directory is next used ([`sweep`]).
//!
//! The key and checksums are no secret: anyone who can write the directory can make a
//! file that verifies. So nothing in the table is trusted for a size the kernels index
//! by: every packed weight must have exactly the dimensions config.json implies, its
//! length is computed with checked arithmetic, and panels are only used for the
//! instruction set detected on this CPU.
//!
//! The key covers the weights file's identity (the hub's content hash when the file is a
//! hub blob, else its size, modification time and a hash of its first MiB and last 64 KiB),
//! config.json as parsed, the kernels and their layout, the byte order, and this build of
//! vlm (the executable's size and modification time): a rebuilt vlm packs again once rather
//! than trusting a layout it may have changed. Anything that fails is discarded and
//! rebuilt from the weights, never used.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::Init;
use sha2::{Digest, Sha256};

mod finish;

pub use finish::finish_pack_files_detached;

use crate::kernels::{
    AmxMatrix, Bf16Kernel, Int8Kernel, Int8Matrix, Isa, PackedMatrix, Plain, Store,
};

/// How a tower computes: which implementation its layers are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compute {
    /// candle's tensor ops, on the model's device and dtype.
    Candle,
    /// The packed CPU kernels for `isa`, in f32.
    Packed(Isa),
    /// The packed CPU kernels in bf16: bf16 products with f32 accumulation; layer norm,
    /// softmax and everything between the products in f32.
    Bf16(Bf16Kernel),
    /// The packed CPU kernels in int8: the transformer's products on int8 weights and
    /// activations with int32 sums; the layers outside the stack (patch embedding,
    /// projections) on the f32 kernels of `isa`; everything between the products in f32.
    Int8(Int8Kernel, Isa),
}

/// A tensor's values as host f32s, whatever its dtype and device.
pub(crate) fn host(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// Environment variable naming the directory of pack files.
pub const PACK_DIR_ENV: &str = "VLM_PACK_CACHE_DIR";

const MAGIC: &[u8; 8] = b"VLMPACK\0";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 128;
const ALIGN: usize = 64;
const EDGE: usize = 4096;
const EXT: &str = "vlmpack";

/// The default directory of pack files: `$VLM_PACK_CACHE_DIR` if set and non-empty, else
/// `<user cache dir>/vlm/packed`; None when the platform has no user cache directory.
pub fn default_dir() -> Option<PathBuf> {
    match std::env::var_os(PACK_DIR_ENV) {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => dirs::cache_dir().map(|d| d.join("vlm").join("packed")),
    }
}

/// What happened to the pack file of a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackStatus {
    /// Not used: candle's path, or no pack directory was given.
    Off,
    /// The weights were mapped from this pack file.
    Loaded(PathBuf),
    /// None was there; the weights were packed and are being written to this file (on a
    /// thread of its own; dropping the model waits until the file is complete, or hands
    /// the rest to a detached process: [`finish_pack_files_detached`]).
    Written(PathBuf),
    /// One was there but unusable (the reason); it was rebuilt and rewritten.
    Rebuilt { path: PathBuf, reason: String },
    /// The weights were packed, but the file could not be written (the reason); the next
    /// run packs again.
    NotWritten { path: PathBuf, reason: String },
}

/// The pack file for one checkpoint, compute and build: where it lives and its key.
pub(crate) struct PackKey {
    path: PathBuf,
    key: [u8; 32],
}

impl PackKey {
    /// `config` is the parsed config.json (its `Debug` form is hashed).
    pub fn new(
        dir: &Path,
        weights: &Path,
        config: &impl std::fmt::Debug,
        compute: Compute,
    ) -> std::io::Result<Self> {
        sweep(dir);
        let identity = weights_identity(weights)?;
        let layout = layout_name(compute);
        // The file name: one slot per weights file and layout, so a new build or config
        // replaces the old file instead of adding one.
        let mut slot = Sha256::new();
        field(&mut slot, &identity);
        field(&mut slot, &layout);
        let slot = hex(&slot.finalize()[..16]);
        let mut key = Sha256::new();
        field(&mut key, "vlm pack key v1");
        field(&mut key, &identity);
        field(&mut key, &layout);
        field(&mut key, &format!("{config:?}"));
        field(
            &mut key,
            if cfg!(target_endian = "little") {
                "le"
            } else {
                "be"
            },
        );
        field(&mut key, &build_identity());
        Ok(Self {
            path: dir.join(format!("{slot}.{EXT}")),
            key: key.finalize().into(),
        })
    }

    /// The pack file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn field(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

/// How the packed values are laid out for `compute`.
fn layout_name(compute: Compute) -> String {
    match compute {
        Compute::Packed(isa) => format!("f32 {} nr {} mr {}", isa.label(), isa.nr(), isa.mr()),
        // Both bf16 kernels read the same 32 x 32 pair-interleaved tile layout.
        Compute::Bf16(_) => "bf16 tiles 32x32 pairs".to_string(),
        Compute::Int8(kernel, isa) => format!(
            "{}; f32 {}",
            kernel.pack_layout(),
            layout_name(Compute::Packed(isa))
        ),
        Compute::Candle => "candle".to_string(),
    }
}

/// The weights file's identity, cheap to compute: the hub's content hash when the file is
/// a hub blob (its name is the SHA-256 of its content), else size, modification time and a
/// hash of the first MiB (the safetensors header and first tensors) and the last 64 KiB.
fn weights_identity(weights: &Path) -> std::io::Result<String> {
    let real = weights.canonicalize()?;
    let meta = fs::metadata(&real)?;
    let name = real.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let in_blobs = real
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|p| p == "blobs");
    if in_blobs && name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(format!("hub blob sha256 {name}, {} bytes", meta.len()));
    }
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let mut file = File::open(&real)?;
    let mut h = Sha256::new();
    let mut head = Vec::new();
    (&mut file).take(1 << 20).read_to_end(&mut head)?;
    h.update(&head);
    let tail = meta.len().saturating_sub(64 << 10).max(head.len() as u64);
    file.seek(SeekFrom::Start(tail))?;
    let mut rest = Vec::new();
    file.read_to_end(&mut rest)?;
    h.update(&rest);
    Ok(format!(
        "{} bytes, modified {modified}, edges {}",
        meta.len(),
        hex(&h.finalize())
    ))
}

/// This build of vlm: a rebuilt binary may lay weights out differently.
fn build_identity() -> String {
    let stamp = std::env::current_exe()
        .map(|exe| crate::cache::file_stamp(&exe))
        .unwrap_or_default();
    format!("vlm {} ({stamp})", env!("CARGO_PKG_VERSION"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    /// A tensor as the towers read it, f32.
    Raw,
    /// A weight `(n, k)` packed for the f32 kernels named in the key.
    PackedF32,
    /// A weight `(n, k)` packed in the bf16 tile layout.
    PackedBf16,
    /// A weight `(n, k)` quantised to int8 and packed for the int8 kernels named in the
    /// key; its scales and column sums are the raw entry of the same name plus
    /// [`INT8_AUX`].
    PackedI8,
}

/// Suffix of the raw entry holding an int8 weight's per-column scales and column sums.
const INT8_AUX: &str = ".scales";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Entry {
    name: String,
    kind: Kind,
    dims: Vec<usize>,
    /// Byte offset in the file.
    offset: usize,
    /// Number of values.
    len: usize,
    /// SHA-256 of the first and last 4 KiB of the values, hex.
    edges: String,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Table {
    entries: Vec<Entry>,
    /// Names the towers asked the weights file about and found (optional tensors).
    present: Vec<String>,
}

fn edges(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(&bytes[..bytes.len().min(EDGE)]);
    h.update(&bytes[bytes.len().saturating_sub(EDGE)..]);
    hex(&h.finalize()[..16])
}

/// A verified, mapped pack file.
pub(crate) struct PackFile {
    map: Arc<memmap2::Mmap>,
    entries: HashMap<String, Entry>,
    present: HashSet<String>,
}

impl PackFile {
    /// Maps and verifies the file of `key`: `Ok(None)` when there is none, `Err(reason)`
    /// when there is one that must not be used.
    pub fn open(key: &PackKey) -> Result<Option<Self>, String> {
        let opened = match File::open(&key.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // An earlier run's detached process may be finishing it: cheaper to wait
                // for its sync than to pack again.
                match finish::wait_for_finisher(&key.path) {
                    true => File::open(&key.path),
                    false => return Ok(None),
                }
            }
            opened => opened,
        };
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot open it: {e}")),
        };
        // SAFETY: read-only mapping of a file vlm only ever replaces by rename; see
        // `Store::as_slice`.
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("cannot map it: {e}"))?;
        Self::verify(Arc::new(map), &key.key).map(Some)
    }

    fn verify(map: Arc<memmap2::Mmap>, key: &[u8; 32]) -> Result<Self, String> {
        let bytes: &[u8] = &map;
        let header = bytes.get(..HEADER_LEN).ok_or("shorter than its header")?;
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[at..at + 8]);
            u64::from_le_bytes(b)
        };
        if &header[..8] != MAGIC {
            return Err("not a vlm pack file (bad magic)".into());
        }
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if version != VERSION {
            return Err(format!(
                "format version {version}, this vlm writes {VERSION}"
            ));
        }
        if u64_at(16) != bytes.len() as u64 {
            return Err(format!(
                "{} bytes long, its header says {} (cut short or extended)",
                bytes.len(),
                u64_at(16)
            ));
        }
        let table_len = usize::try_from(u64_at(24)).map_err(|_| "table length too large")?;
        let table = bytes
            .get(HEADER_LEN..HEADER_LEN.saturating_add(table_len))
            .ok_or("table past the end of the file")?;
        let mut h = Sha256::new();
        h.update(&header[..64]);
        h.update(table);
        if h.finalize()[..] != header[64..96] {
            return Err("header or table checksum mismatch (damaged)".into());
        }
        if &header[32..64] != key {
            return Err("made for other weights, config, kernels or vlm build (stale)".into());
        }
        let table: Table =
            serde_json::from_slice(table).map_err(|e| format!("unreadable table: {e}"))?;
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(table.entries.len());
        for e in &table.entries {
            let size = value_size(e.kind);
            let end = e
                .len
                .checked_mul(size)
                .and_then(|b| e.offset.checked_add(b))
                .filter(|&end| end <= bytes.len() && e.offset >= HEADER_LEN + table_len)
                .ok_or_else(|| format!("entry {} lies outside the file", e.name))?;
            if !e.offset.is_multiple_of(ALIGN) {
                return Err(format!("entry {} is not aligned", e.name));
            }
            // A tensor holds exactly the values of its dimensions (packed weights are
            // checked against their layout when built, `from_store`).
            let values = e.dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            if e.kind == Kind::Raw && values != Some(e.len) {
                return Err(format!(
                    "entry {} has {} values for dimensions {:?}",
                    e.name, e.len, e.dims
                ));
            }
            if edges(&bytes[e.offset..end]) != e.edges {
                return Err(format!(
                    "entry {} does not match its checksum (damaged)",
                    e.name
                ));
            }
            spans.push((e.offset, end));
        }
        spans.sort_unstable();
        if spans.windows(2).any(|w| w[0].1 > w[1].0) {
            return Err("entries overlap".into());
        }
        Ok(Self {
            entries: table
                .entries
                .into_iter()
                .map(|e| (e.name.clone(), e))
                .collect(),
            present: table.present.into_iter().collect(),
            map,
        })
    }

    fn entry(&self, name: &str, kind: Kind) -> candle_core::Result<&Entry> {
        match self.entries.get(name) {
            Some(e) if e.kind == kind => Ok(e),
            _ => candle_core::bail!("the pack file has no {kind:?} entry `{name}`"),
        }
    }

    fn store<T: Plain>(&self, e: &Entry) -> candle_core::Result<Store<T>> {
        Store::mapped(self.map.clone(), e.offset, e.len)
            .ok_or_else(|| candle_core::Error::Msg(format!("entry {} out of bounds", e.name)))
    }

    /// A raw f32 tensor's values, in place.
    pub fn raw(&self, name: &str) -> candle_core::Result<(Vec<usize>, Store<f32>)> {
        let e = self.entry(name, Kind::Raw)?;
        Ok((e.dims.clone(), self.store(e)?))
    }

    /// The entry `name` of `kind` if its dimensions are exactly `dims`, what config.json
    /// implies: the file's own say is never trusted for a size the kernels index by.
    fn entry_of(&self, name: &str, kind: Kind, dims: &[usize]) -> candle_core::Result<&Entry> {
        let e = self.entry(name, kind)?;
        if e.dims != dims {
            candle_core::bail!(
                "pack entry `{name}` has dimensions {:?}, config.json implies {dims:?}",
                e.dims
            );
        }
        Ok(e)
    }

    fn packed_f32(
        &self,
        name: &str,
        compute: Compute,
        (n, k): (usize, usize),
    ) -> candle_core::Result<PackedMatrix> {
        let Compute::Packed(isa) = compute else {
            candle_core::bail!("internal: f32 panels for {compute:?}")
        };
        // The layout is the detected instruction set's (the key says so); running panels
        // of another on this CPU would be undefined.
        if isa != Isa::detect() {
            candle_core::bail!(
                "panels for {isa:?}, but this CPU's kernels are {:?}",
                Isa::detect()
            );
        }
        let e = self.entry_of(name, Kind::PackedF32, &[n, k])?;
        PackedMatrix::from_store(n, k, isa, self.store(e)?)
            .ok_or_else(|| candle_core::Error::Msg(format!("entry {name} has the wrong size")))
    }

    /// An int8 weight of `(n, k)`, as config.json implies, and its scales and column sums
    /// (`2n` values): the same checks as the float entries, and the kernel must run here.
    fn packed_i8(
        &self,
        name: &str,
        kernel: Int8Kernel,
        (n, k): (usize, usize),
    ) -> candle_core::Result<Int8Matrix> {
        // The layout is the kernel's (the key says so); a kernel this CPU lacks would
        // execute instructions it does not have.
        if !kernel.supported() {
            candle_core::bail!("int8 panels for {kernel:?}, which this CPU does not run");
        }
        let e = self.entry_of(name, Kind::PackedI8, &[n, k])?;
        let aux_len = n
            .checked_mul(2)
            .ok_or_else(|| candle_core::Error::Msg(format!("entry {name} is too large")))?;
        let aux = self.entry_of(&format!("{name}{INT8_AUX}"), Kind::Raw, &[aux_len])?;
        let aux: Store<f32> = self.store(aux)?;
        Int8Matrix::from_store(n, k, kernel, self.store(e)?, aux.as_slice())
            .ok_or_else(|| candle_core::Error::Msg(format!("entry {name} has the wrong size")))
    }

    fn packed_bf16(&self, name: &str, (n, k): (usize, usize)) -> candle_core::Result<AmxMatrix> {
        let e = self.entry_of(name, Kind::PackedBf16, &[n, k])?;
        AmxMatrix::from_store(n, k, self.store(e)?)
            .ok_or_else(|| candle_core::Error::Msg(format!("entry {name} has the wrong size")))
    }
}

/// A weight packed for the CPU kernels.
#[derive(Clone)]
pub(crate) enum PackedWeight {
    F32(Arc<PackedMatrix>),
    Bf16(Arc<AmxMatrix>),
    I8(Arc<Int8Matrix>),
}

/// What a fresh load keeps to write the pack file afterwards.
enum Record {
    Weight(PackedWeight),
    Raw(Tensor),
    Host(Vec<usize>, Arc<Vec<f32>>),
}

/// Where a load on the packed kernels takes its weights from.
#[derive(Clone)]
pub(crate) enum Packing {
    /// From the weights file, packing each weight now; with a recorder, noting what the
    /// pack file will hold.
    Fresh(Option<Arc<Recorder>>),
    /// From a verified pack file.
    File(Arc<PackFile>),
}

/// Collects, during a fresh load, every packed weight and every tensor read outside a
/// packing (those the towers keep as tensors).
#[derive(Default)]
pub(crate) struct Recorder {
    records: Mutex<Vec<(String, Record)>>,
    present: Mutex<HashSet<String>>,
    /// Nonzero while a weight is being packed: its source tensors are not recorded.
    packing: std::sync::atomic::AtomicUsize,
}

impl Recorder {
    fn push(&self, name: String, record: Record) {
        if let Ok(mut r) = self.records.lock() {
            r.push((name, record));
        }
    }

    fn quiet(&self) -> bool {
        self.packing.load(std::sync::atomic::Ordering::SeqCst) > 0
    }
}

impl Packing {
    /// A packed weight named `name` of `dims` `(n, k)`, as config.json implies: from the
    /// pack file, or built by `build` (weight `(n, k)` and optional bias) and packed for
    /// `compute`.
    pub fn linear(
        &self,
        name: &str,
        compute: Compute,
        dims: (usize, usize),
        build: impl FnOnce() -> candle_core::Result<(Tensor, Option<Tensor>)>,
    ) -> candle_core::Result<(PackedWeight, Option<Vec<f32>>)> {
        let (wname, bname) = (format!("{name}#weight"), format!("{name}#bias"));
        match self {
            Packing::File(file) => {
                let weight = match compute {
                    Compute::Bf16(_) => {
                        PackedWeight::Bf16(Arc::new(file.packed_bf16(&wname, dims)?))
                    }
                    Compute::Int8(kernel, _) => {
                        PackedWeight::I8(Arc::new(file.packed_i8(&wname, kernel, dims)?))
                    }
                    _ => PackedWeight::F32(Arc::new(file.packed_f32(&wname, compute, dims)?)),
                };
                let bias = match file.entries.contains_key(&bname) {
                    true => {
                        let e = file.entry_of(&bname, Kind::Raw, &[dims.0])?;
                        Some(file.store::<f32>(e)?.as_slice().to_vec())
                    }
                    false => None,
                };
                Ok((weight, bias))
            }
            Packing::Fresh(recorder) => {
                use std::sync::atomic::Ordering;
                if let Some(r) = recorder {
                    r.packing.fetch_add(1, Ordering::SeqCst);
                }
                let built = build();
                if let Some(r) = recorder {
                    r.packing.fetch_sub(1, Ordering::SeqCst);
                }
                let (weight, bias) = built?;
                let (n, k) = weight.dims2()?;
                if (n, k) != dims {
                    candle_core::bail!("`{name}` is {n} x {k}, config.json implies {dims:?}");
                }
                let values = host(&weight)?;
                let packed = match compute {
                    Compute::Packed(isa) => {
                        PackedWeight::F32(Arc::new(PackedMatrix::pack(&values, n, k, isa)))
                    }
                    Compute::Bf16(_) => {
                        PackedWeight::Bf16(Arc::new(AmxMatrix::pack(&values, n, k)))
                    }
                    Compute::Int8(kernel, _) => {
                        PackedWeight::I8(Arc::new(Int8Matrix::pack(&values, n, k, kernel)))
                    }
                    Compute::Candle => candle_core::bail!("internal: packing a weight for candle"),
                };
                let bias = bias.as_ref().map(host).transpose()?;
                if let Some(r) = recorder {
                    r.push(wname, Record::Weight(packed.clone()));
                    if let Some(b) = &bias {
                        r.push(bname, Record::Host(vec![b.len()], Arc::new(b.clone())));
                    }
                }
                Ok((packed, bias))
            }
        }
    }

    /// A large table read by rows (the token embeddings): mapped in place from the pack
    /// file, else None (the caller keeps candle's tensor, which is recorded as usual).
    pub fn table(&self, name: &str) -> candle_core::Result<Option<(Vec<usize>, Store<f32>)>> {
        match self {
            Packing::File(file) => file.raw(name).map(Some),
            Packing::Fresh(_) => Ok(None),
        }
    }
}

/// The weights backend of a fresh load that records what the towers read, under the
/// names they read it by.
pub(crate) struct Recording {
    pub inner: Box<dyn SimpleBackend>,
    pub recorder: Arc<Recorder>,
}

impl SimpleBackend for Recording {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.inner.get(shape, name, init, dtype, device)?;
        if !self.recorder.quiet() {
            self.recorder.push(name.to_string(), Record::Raw(t.clone()));
        }
        Ok(t)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.inner.get_unchecked(name, dtype, device)?;
        if !self.recorder.quiet() {
            self.recorder.push(name.to_string(), Record::Raw(t.clone()));
        }
        Ok(t)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        let found = self.inner.contains_tensor(name);
        if found && !self.recorder.quiet() {
            if let Ok(mut p) = self.recorder.present.lock() {
                p.insert(name.to_string());
            }
        }
        found
    }
}

/// The weights backend of a load from a pack file: the tensors the towers keep, copied
/// out of the mapping (all small but the token table, which is read in place).
pub(crate) struct FromPack(pub Arc<PackFile>);

impl SimpleBackend for FromPack {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        super::weights::get_checked(self, shape, name, dtype, device, "the pack file")
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let (dims, values) = self.0.raw(name)?;
        Tensor::from_slice(values.as_slice(), dims, device)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.present.contains(name) || self.0.entries.contains_key(name)
    }
}

/// A pack file being written: a low-priority thread writes its entries in the gaps the
/// first run leaves (a core waiting on a JPEG decode, on the tokenizer, between batches),
/// so the writing never takes a core from the encoders and the answer comes as soon as
/// with `--no-pack-cache`; dropping it (after the answer) writes what is left on every
/// core, waits, and renames the file into place (a process exits after its model is
/// dropped, so the file is complete or absent, never cut), or hands that to a detached
/// process ([`finish`]).
pub(crate) struct PackWriter {
    job: Option<Arc<WriteJob>>,
    background: Option<std::thread::JoinHandle<()>>,
    /// The drop hands the whole file to a detached process (nothing was written before).
    detach: bool,
}

/// The entries of one pack file, laid out, and which of them have been claimed.
struct WriteJob {
    file: File,
    parts: Vec<(usize, Bytes)>,
    /// The next entry to claim; an entry is written by whoever claims it.
    next: std::sync::atomic::AtomicUsize,
    error: Mutex<Option<std::io::Error>>,
    /// Entries written so far; whoever writes the last one finishes the file.
    written: std::sync::atomic::AtomicUsize,
    finished: std::sync::atomic::AtomicBool,
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
}

impl WriteJob {
    /// Claims and writes entries until none is left (or one failed).
    fn drain(&self) {
        use std::sync::atomic::Ordering;
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some((offset, bytes)) = self.parts.get(i) else {
                return;
            };
            let written = bytes
                .with_bytes(|b| write_all_at(&self.file, b, *offset as u64))
                .and_then(|r| r);
            if let Err(e) = written {
                if let Ok(mut error) = self.error.lock() {
                    error.get_or_insert(e);
                }
                // Nothing else is worth writing: the file will be removed.
                self.next.store(self.parts.len(), Ordering::Relaxed);
                return;
            }
            if self.written.fetch_add(1, Ordering::AcqRel) + 1 == self.parts.len() {
                // The last entry: the background thread, when it gets this far before the
                // drop, also syncs and renames in the background.
                self.finish();
            }
        }
    }

    /// Once every entry is written (or one failed): syncs the file, renames it into place
    /// and syncs the directory, or removes it after a failure (the next run packs again).
    /// The first call does it; later ones do nothing.
    fn finish(&self) {
        if self
            .finished
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let complete = self.written.load(std::sync::atomic::Ordering::Acquire) == self.parts.len()
            && self.error.lock().is_ok_and(|e| e.is_none());
        // Synced before the rename, and the rename before the writer says done: after a
        // power loss the pack file is whole or absent (without the sync the renamed file
        // could have the right length and zeroed pages inside an entry, where the edge
        // checksums do not look).
        let done = complete
            && self
                .file
                .sync_all()
                .and_then(|()| fs::rename(&self.tmp, &self.path))
                .and_then(|()| sync_dir(&self.dir))
                .is_ok();
        if !done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        let Some(job) = self.job.take() else {
            return;
        };
        // Where no process can be started, the drop writes it all as below.
        if self.detach && finish::detach(&job).is_ok() {
            return;
        }
        // The answer is out: what the background thread has not reached is written now,
        // by every core of the pool, at normal priority.
        let helpers = rayon::current_num_threads().max(1);
        rayon::scope(|scope| {
            for _ in 0..helpers {
                scope.spawn(|_| job.drain());
            }
        });
        if let Some(handle) = self.background.take() {
            // A panic on the writer only loses the pack file; the next run writes it.
            if handle.join().is_err() {
                if let Ok(mut error) = job.error.lock() {
                    error.get_or_insert(std::io::Error::other("the pack writer panicked"));
                }
            }
        }
        job.finish();
    }
}

/// Writes all of `bytes` at byte `offset` of `file`, whichever thread calls it.
fn write_all_at(file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
    }
    #[cfg(windows)]
    {
        let (mut bytes, mut offset) = (bytes, offset);
        while !bytes.is_empty() {
            match std::os::windows::fs::FileExt::seek_write(file, bytes, offset)? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n => {
                    bytes = &bytes[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }
}

/// Puts the calling thread at the lowest priority, so it runs only on a core nothing else
/// wants (Linux, where a nice value is per thread; elsewhere it would lower the whole
/// process, so nothing is done).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on the calling thread (`who` 0) only changes its scheduling.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

/// Starts writing the pack file of `key` from what `recorder` collected: the directory, a
/// temporary file, its header and table are made now (so an unwritable directory is
/// reported at once), the entries are written by a low-priority thread and, when the
/// [`PackWriter`] is dropped, by every core, and the file is renamed into place when
/// complete. A failure after this point removes the temporary file; the next run packs again.
pub(crate) fn write(key: &PackKey, recorder: &Recorder) -> std::io::Result<PackWriter> {
    // A detached process will write it all after the answer: a copy beside the encoders
    // would only take memory bandwidth from them.
    let detach = finish::detached();
    let mut writer = write_with(key, recorder, !detach)?;
    writer.detach = detach;
    Ok(writer)
}

/// [`write`]; without `background`, nothing is written before the drop (for tests).
fn write_with(key: &PackKey, recorder: &Recorder, background: bool) -> std::io::Result<PackWriter> {
    let records = recorder
        .records
        .lock()
        .map_err(|_| std::io::Error::other("recorder poisoned"))?;
    let present: Vec<String> = recorder
        .present
        .lock()
        .map(|p| p.iter().cloned().collect())
        .unwrap_or_default();
    // Each entry's values, shared with the model (nothing is copied).
    let mut seen = HashSet::new();
    let mut parts: Vec<(String, Kind, Vec<usize>, Bytes)> = Vec::new();
    for (name, record) in records.iter() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let (kind, dims, bytes) = match record {
            Record::Weight(PackedWeight::F32(w)) => {
                (Kind::PackedF32, vec![w.n(), w.k()], Bytes::F32(w.clone()))
            }
            Record::Weight(PackedWeight::Bf16(w)) => {
                (Kind::PackedBf16, vec![w.n(), w.k()], Bytes::Bf16(w.clone()))
            }
            Record::Weight(PackedWeight::I8(w)) => {
                let aux = w.aux();
                parts.push((
                    format!("{name}{INT8_AUX}"),
                    Kind::Raw,
                    vec![aux.len()],
                    Bytes::Host(Arc::new(aux)),
                ));
                (Kind::PackedI8, vec![w.n(), w.k()], Bytes::I8(w.clone()))
            }
            Record::Raw(t) => {
                let t = t
                    .to_dtype(DType::F32)
                    .and_then(|t| t.contiguous())
                    .map_err(std::io::Error::other)?;
                (Kind::Raw, t.dims().to_vec(), Bytes::Tensor(t))
            }
            Record::Host(dims, values) => (Kind::Raw, dims.clone(), Bytes::Host(values.clone())),
        };
        parts.push((name.clone(), kind, dims, bytes));
    }
    drop(records);
    let dir = key.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    fs::create_dir_all(&dir)?;
    let (tmp, file) = create_temporary(&key.path)?;
    let laid_out = lay_out(&file, &key.key, parts, present);
    let parts = match laid_out {
        Ok(parts) => parts,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let job = Arc::new(WriteJob {
        file,
        parts,
        next: std::sync::atomic::AtomicUsize::new(0),
        error: Mutex::new(None),
        written: std::sync::atomic::AtomicUsize::new(0),
        finished: std::sync::atomic::AtomicBool::new(false),
        tmp,
        path: key.path.clone(),
        dir,
    });
    let background = match background {
        true => {
            let job = job.clone();
            std::thread::Builder::new()
                .name("vlm-pack-writer".into())
                .spawn(move || {
                    lower_priority();
                    job.drain();
                })
                .ok()
        }
        false => None,
    };
    Ok(PackWriter {
        job: Some(job),
        background,
        detach: false,
    })
}

/// Where temporary pack files are written: `<slot>.vlmpack.tmp.<pid>.<nonce>`.
fn is_temporary(name: &str) -> bool {
    name.contains(&format!(".{EXT}.tmp."))
}

/// A new temporary file beside `path`, made with `create_new` (never through a symlink,
/// never another writer's file) and locked while this process writes it, so that
/// [`sweep`] can tell it from a dead writer's leftover. The name holds the process id and
/// a nonce: processes of other machines or containers sharing the cache may have the same
/// id, and a name that exists already is skipped.
fn create_temporary(path: &Path) -> std::io::Result<(PathBuf, File)> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    loop {
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("{EXT}.tmp.{}.{clock:x}{n}", std::process::id()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(file) => {
                lock(&file);
                return Ok((tmp, file));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// How old a temporary file must be before [`sweep`] removes it: a writer locks its file
/// right after making it, so only that moment needs the margin.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes temporary pack files in `dir` that no live process is writing: a run killed
/// while writing (a second Ctrl-C, SIGKILL, a power cut) leaves one of about the pack
/// file's size, which nothing else would ever remove. Best effort: what cannot be read or
/// removed stays.
pub(crate) fn sweep(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(is_temporary) {
            continue;
        }
        let path = entry.path();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= STALE_AFTER);
        if !old {
            continue;
        }
        if let Ok(file) = File::open(&path) {
            if unlocked(&file) {
                let _ = fs::remove_file(&path);
            }
        }
    }
}

/// Takes an exclusive lock on `file` for as long as it is open (Linux `flock`; released
/// by the kernel when the process dies). Best effort: without it a live writer's
/// temporary could be swept after [`STALE_AFTER`].
#[cfg(target_os = "linux")]
fn lock(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this File owns; it changes no memory.
    unsafe {
        libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB);
    }
}

/// Whether no process holds [`lock`] on `file` (then this one does, until it is closed).
#[cfg(target_os = "linux")]
fn unlocked(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: as in `lock`.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn lock(_file: &File) {}

/// Elsewhere, only age tells: a temporary untouched for a day has no writer.
#[cfg(not(target_os = "linux"))]
fn unlocked(file: &File) -> bool {
    file.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age >= std::time::Duration::from_secs(24 * 3600))
}

/// Makes a rename in `dir` durable (Unix: fsync of the directory).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Lays the file out: writes its header and table, sets its length (the gaps between
/// entries read as zeros), and returns each entry's values with their offset.
fn lay_out(
    file: &File,
    key: &[u8; 32],
    parts: Vec<(String, Kind, Vec<usize>, Bytes)>,
    present: Vec<String>,
) -> std::io::Result<Vec<(usize, Bytes)>> {
    // The table's size depends on the offsets, so fix a generous table area first.
    let mut entries = Vec::with_capacity(parts.len());
    for (name, kind, dims, bytes) in &parts {
        let (len, edges) = bytes.with_bytes(|b| (b.len() / value_size(*kind), edges(b)))?;
        entries.push(Entry {
            name: name.clone(),
            kind: *kind,
            dims: dims.clone(),
            offset: 0,
            len,
            edges,
        });
    }
    let draft = serde_json::to_vec(&Table {
        entries: entries.clone(),
        present: present.clone(),
    })
    .map_err(std::io::Error::other)?;
    // Offsets take at most 20 digits each where the draft has one.
    let table_room = draft.len() + 20 * entries.len() + 64;
    let mut offset = (HEADER_LEN + table_room).next_multiple_of(ALIGN);
    for e in entries.iter_mut() {
        e.offset = offset;
        offset = (offset + e.len * value_size(e.kind)).next_multiple_of(ALIGN);
    }
    let total = offset;
    let offsets: Vec<usize> = entries.iter().map(|e| e.offset).collect();
    let mut table =
        serde_json::to_vec(&Table { entries, present }).map_err(std::io::Error::other)?;
    table.resize(table_room, b' ');
    let mut header = vec![0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&(total as u64).to_le_bytes());
    header[24..32].copy_from_slice(&(table.len() as u64).to_le_bytes());
    header[32..64].copy_from_slice(key);
    let mut h = Sha256::new();
    h.update(&header[..64]);
    h.update(&table);
    header[64..96].copy_from_slice(&h.finalize());
    header.extend_from_slice(&table);
    write_all_at(file, &header, 0)?;
    file.set_len(total as u64)?;
    Ok(offsets
        .into_iter()
        .zip(parts)
        .map(|(offset, (_, _, _, bytes))| (offset, bytes))
        .collect())
}

fn value_size(kind: Kind) -> usize {
    match kind {
        Kind::Raw | Kind::PackedF32 => 4,
        Kind::PackedBf16 => 2,
        Kind::PackedI8 => 1,
    }
}

/// An entry's values, shared with the model that uses them.
enum Bytes {
    F32(Arc<PackedMatrix>),
    Bf16(Arc<AmxMatrix>),
    I8(Arc<Int8Matrix>),
    Host(Arc<Vec<f32>>),
    /// A contiguous f32 tensor on the CPU.
    Tensor(Tensor),
}

impl Bytes {
    /// Calls `f` with the values as little-endian bytes (see `Store::as_bytes`).
    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> std::io::Result<R> {
        Ok(match self {
            Bytes::F32(w) => f(w.store().as_bytes()),
            Bytes::Bf16(w) => f(w.store().as_bytes()),
            Bytes::I8(w) => f(w.store().as_bytes()),
            Bytes::Host(v) => f(f32_bytes(v)),
            Bytes::Tensor(t) => {
                let (storage, layout) = t.storage_and_layout();
                let candle_core::Storage::Cpu(cpu) = &*storage else {
                    return Err(std::io::Error::other("a weight is not on the CPU"));
                };
                let values = cpu.as_slice::<f32>().map_err(std::io::Error::other)?;
                let (start, end) = layout
                    .contiguous_offsets()
                    .ok_or_else(|| std::io::Error::other("a weight is not contiguous"))?;
                f(f32_bytes(&values[start..end]))
            }
        })
    }
}

fn f32_bytes(values: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding; see `Store::as_bytes` on byte order.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), values.len() * 4) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entries are written whoever reaches them: the low-priority thread during the
    /// run, or every core at the drop (all of them when the thread never ran). Either way
    /// nothing is in place before the drop, and after it the file opens, verified, with
    /// every value recorded and no temporary left.
    #[test]
    fn a_pack_written_in_the_background_or_at_the_drop_holds_every_entry() {
        let isa = Isa::detect();
        let w: Vec<f32> = (0..40 * 24).map(|i| (i as f32 * 0.37).sin()).collect();
        let packed = Arc::new(PackedMatrix::pack(&w, 40, 24, isa));
        // Larger than a few pages, so a missing write shows in the edges.
        let host: Arc<Vec<f32>> = Arc::new((0..30_000).map(|i| i as f32 - 7.5).collect());
        let raw: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        for background in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let key = PackKey {
                path: dir.path().join(format!("t.{EXT}")),
                key: [7; 32],
            };
            let recorder = Recorder::default();
            recorder.push(
                "a#weight".into(),
                Record::Weight(PackedWeight::F32(packed.clone())),
            );
            recorder.push("b".into(), Record::Host(vec![300, 100], host.clone()));
            let tensor = Tensor::from_vec(raw.clone(), (2, 3), &Device::Cpu).unwrap();
            recorder.push("c".into(), Record::Raw(tensor));
            let writer = write_with(&key, &recorder, background).unwrap();
            assert!(!key.path.exists(), "in place before it was complete");
            drop(writer);
            let file = PackFile::open(&key)
                .unwrap_or_else(|e| panic!("background {background}: {e}"))
                .expect("the pack file was not written");
            let a = file
                .packed_f32("a#weight", Compute::Packed(isa), (40, 24))
                .unwrap();
            assert_eq!(a.store().as_slice(), packed.store().as_slice());
            assert_eq!(file.raw("b").unwrap().1.as_slice(), &host[..]);
            let (dims, c) = file.raw("c").unwrap();
            assert_eq!((dims, c.as_slice()), (vec![2, 3], &raw[..]));
            let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
            assert_eq!(names.len(), 1, "a temporary file was left");
        }
    }
}
