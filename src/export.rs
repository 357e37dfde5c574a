//! Embedding files for other tools: NumPy `.npy`, safetensors and JSON Lines, written and
//! read back.
//!
//! Every format holds N rows of D `f32` values and, for each row, the image path or prompt
//! it embeds, in the same order:
//!
//! - `.npy`: a little-endian float32 array of shape (N, D), C order, as `numpy.load` reads
//!   it; the names go to a sidecar text file, one per line ([`sidecar_path`]: `emb.npy` →
//!   `emb.paths.txt`). The format has no room for anything else.
//! - `.safetensors`: one F32 tensor [`TENSOR_NAME`] of shape (N, D); `__metadata__` holds
//!   `paths` (or `texts`), a JSON list of the names, and `kind`, `model`, `revision`, `dim`
//!   and `normalized`.
//! - `.jsonl`: one `{"path"|"text": ..., "embedding": [...], "model": ..., "normalized":
//!   ...}` object per line.
//!
//! Files are written to a temporary file beside the target and renamed into place, so a
//! failed or killed write never leaves half a file under the target's name.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, Checkpoint};
use crate::error::Error;
use crate::inputs::Input;
use crate::job::{Embedded, Job, JobError, Progress, Sink, Tally};
use crate::search::normalize;
use crate::source::ModelFiles;

/// Name of the tensor in a `.safetensors` export.
pub const TENSOR_NAME: &str = "embeddings";

/// The `format` entry of a `.safetensors` export's metadata.
pub const FORMAT_TAG: &str = "vlm-embeddings";

/// safetensors readers refuse headers larger than this (the reference implementation's
/// limit), so a longer list of names is refused when writing rather than when reading.
const MAX_SAFETENSORS_HEADER: usize = 100_000_000;

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// Why embeddings could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "cannot tell the embeddings format of {} from its extension; name it .npy, \
         .safetensors or .jsonl, or pass --format",
        path.display()
    )]
    UnknownFormat { path: PathBuf },
    #[error(
        "cannot write {}: {cause}; check that the folder exists and is writable, free some \
         space, or choose another --output",
        path.display()
    )]
    Write { path: PathBuf, cause: io::Error },
    #[error("cannot read {}: {cause}", path.display())]
    Read { path: PathBuf, cause: io::Error },
    #[error("{} is not an embeddings file vlm can read: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{name:?} contains a line break, which the one-per-line {} cannot hold; write \
         .safetensors or .jsonl instead",
        sidecar.display()
    )]
    LineBreak { name: String, sidecar: PathBuf },
    #[error(
        "the list of {rows} names is too long for a safetensors header (over 100 MB) in {}; \
         write .npy or .jsonl instead",
        path.display()
    )]
    HeaderTooLarge { path: PathBuf, rows: usize },
    #[error("the embedding of {name} has {got} values but the others have {expected}")]
    Dimension {
        name: String,
        got: usize,
        expected: usize,
    },
    #[error("no prompts to embed in {0}; give at least one non-blank prompt")]
    NoPrompts(String),
}

/// The file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// NumPy array plus a sidecar list of names.
    Npy,
    /// safetensors with the names and model in the metadata.
    Safetensors,
    /// One JSON object per row.
    Jsonl,
}

impl ExportFormat {
    /// The format a file's extension names: `.npy`, `.safetensors`, `.jsonl` or `.ndjson`.
    pub fn from_path(path: &Path) -> Result<Self, ExportError> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("npy") => Ok(Self::Npy),
            Some("safetensors") => Ok(Self::Safetensors),
            Some("jsonl" | "ndjson") => Ok(Self::Jsonl),
            _ => Err(ExportError::UnknownFormat {
                path: path.to_path_buf(),
            }),
        }
    }
}

/// What the rows embed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// Images, named by path (or URL).
    Image,
    /// Prompts, named by their text.
    Text,
}

impl RowKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Text => "text",
        }
    }

    /// The safetensors metadata key of the list of names.
    fn list_key(self) -> &'static str {
        match self {
            Self::Image => "paths",
            Self::Text => "texts",
        }
    }
}

/// What is known about how the embeddings were made; `None` where a file does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub kind: Option<RowKind>,
    /// The checkpoint: a repo id, alias's repo or directory.
    pub model: Option<String>,
    /// The hub revision, when the model came from the hub.
    pub revision: Option<String>,
    /// Whether each row was scaled to unit L2 norm.
    pub normalized: Option<bool>,
}

impl Metadata {
    /// Rows of `kind` made by the checkpoint of `files`.
    pub fn of(files: &ModelFiles, kind: RowKind, normalized: bool) -> Self {
        Self {
            kind: Some(kind),
            model: Some(files.id.clone()),
            revision: files.revision.clone(),
            normalized: Some(normalized),
        }
    }
}

/// N named rows of D floats.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    dim: usize,
    names: Vec<String>,
    data: Vec<f32>,
    pub meta: Metadata,
}

impl Embeddings {
    /// No rows yet; every row pushed must have `dim` values.
    pub fn new(dim: usize, meta: Metadata) -> Self {
        Self {
            dim,
            names: Vec::new(),
            data: Vec::new(),
            meta,
        }
    }

    /// Appends one named row.
    pub fn push(&mut self, name: String, row: &[f32]) -> Result<(), ExportError> {
        if row.len() != self.dim {
            return Err(ExportError::Dimension {
                name,
                got: row.len(),
                expected: self.dim,
            });
        }
        self.names.push(name);
        self.data.extend_from_slice(row);
        Ok(())
    }

    /// Values per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The path or prompt of each row, in row order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// All values, row after row.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Row `i`; panics when `i >= self.len()`, as slice indexing does.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The rows in order.
    pub fn rows(&self) -> impl Iterator<Item = &[f32]> + '_ {
        (0..self.len()).map(|i| self.row(i))
    }
}

/// The file listing the names of a `.npy` export's rows: the same name with the extension
/// `.paths.txt` (`emb.npy` → `emb.paths.txt`).
pub fn sidecar_path(path: &Path) -> PathBuf {
    path.with_extension("paths.txt")
}

/// Each image's embedding (scaled to unit length when `normalized`) as a row named by its
/// path, as a sink of a job; failed images are left out.
pub struct EmbeddingRows {
    pub embeddings: Embeddings,
    normalized: bool,
}

impl Sink<Embedded> for EmbeddingRows {
    fn write(&mut self, batch: &[Embedded], _: &dyn Progress) -> Result<(), JobError> {
        for done in batch {
            if let Ok(row) = &done.embedding {
                let mut row = row.clone();
                if self.normalized {
                    normalize(&mut row);
                }
                self.embeddings
                    .push(done.input.display.clone(), &row)
                    .map_err(JobError::sink)?;
            }
        }
        Ok(())
    }
}

/// Embeds `inputs` with `job` into rows named by their paths, for `files`'s checkpoint.
pub fn embed_images(
    job: &Job,
    files: &ModelFiles,
    inputs: Vec<Input>,
    normalized: bool,
    progress: &dyn Progress,
) -> Result<(Embeddings, Tally), JobError> {
    let mut sink = EmbeddingRows {
        embeddings: Embeddings::new(
            job.encoding_len(),
            Metadata::of(files, RowKind::Image, normalized),
        ),
        normalized,
    };
    let tally = job.run(inputs, &mut sink, progress)?;
    Ok((sink.embeddings, tally))
}

/// Embeds `texts` as prompts, used as given (no template), into rows named by the texts;
/// warns about any cut to the model's context.
pub fn embed_texts(
    checkpoint: &Checkpoint,
    files: &ModelFiles,
    texts: Vec<String>,
    normalized: bool,
    progress: &dyn Progress,
) -> Result<Embeddings, EmbedTextError> {
    let prompts = checkpoint.embed_prompts(&texts)?;
    checkpoint::warn_truncated(
        &texts,
        &prompts.truncated,
        checkpoint.model().text_context(),
        progress,
    );
    let rows = prompts
        .embeddings
        .to_vec2::<f32>()
        .map_err(EmbedTextError::ReadBack)?;
    let mut embeddings = Embeddings::new(
        checkpoint.config().projection_dim,
        Metadata::of(files, RowKind::Text, normalized),
    );
    for (text, mut row) in texts.into_iter().zip(rows) {
        if normalized {
            normalize(&mut row);
        }
        embeddings.push(text, &row)?;
    }
    Ok(embeddings)
}

/// Why prompts could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum EmbedTextError {
    #[error(transparent)]
    Embed(#[from] Error),
    #[error("cannot read the text embeddings back from the device")]
    ReadBack(#[source] candle_core::Error),
    #[error(transparent)]
    Rows(#[from] ExportError),
}

/// Refuses names that `format` cannot store at `path` (see [`check_name`]).
pub fn check_names<'a>(
    format: ExportFormat,
    path: &Path,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), ExportError> {
    names
        .into_iter()
        .try_for_each(|name| check_name(format, path, name))
}

/// Refuses a name that `format` cannot store at `path`: before a long run, not after.
pub fn check_name(format: ExportFormat, path: &Path, name: &str) -> Result<(), ExportError> {
    if format == ExportFormat::Npy && name.contains(['\n', '\r']) {
        return Err(ExportError::LineBreak {
            name: name.to_string(),
            sidecar: sidecar_path(path),
        });
    }
    Ok(())
}

/// Checks that `path` can be written (its folder exists and takes new files) without
/// touching `path` itself, so a long run does not end in an unwritable output.
pub fn check_writable(path: &Path) -> Result<(), ExportError> {
    let temp = temp_path(path)?;
    File::create(&temp).map_err(|source| ExportError::Write {
        path: path.to_path_buf(),
        cause: source,
    })?;
    // Best effort: a leftover empty temporary file is harmless and replaced next time.
    let _ = fs::remove_file(&temp);
    Ok(())
}

/// Writes `embeddings` to `path` in `format`; returns every file written (for `.npy`, the
/// array and then its sidecar).
pub fn write(
    path: &Path,
    format: ExportFormat,
    embeddings: &Embeddings,
) -> Result<Vec<PathBuf>, ExportError> {
    match format {
        ExportFormat::Npy => {
            for name in &embeddings.names {
                check_name(format, path, name)?;
            }
            let sidecar = sidecar_path(path);
            write_atomically(path, |w| write_npy(w, embeddings))?;
            write_atomically(&sidecar, |w| write_names(w, embeddings))?;
            Ok(vec![path.to_path_buf(), sidecar])
        }
        ExportFormat::Safetensors => {
            let header = safetensors_header(embeddings);
            if header.len() > MAX_SAFETENSORS_HEADER {
                return Err(ExportError::HeaderTooLarge {
                    path: path.to_path_buf(),
                    rows: embeddings.len(),
                });
            }
            write_atomically(path, |w| {
                w.write_all(&(header.len() as u64).to_le_bytes())?;
                w.write_all(&header)?;
                write_floats(w, &embeddings.data)
            })?;
            Ok(vec![path.to_path_buf()])
        }
        ExportFormat::Jsonl => {
            write_atomically(path, |w| write_jsonl(w, embeddings))?;
            Ok(vec![path.to_path_buf()])
        }
    }
}

/// Reads an export back.
pub fn read(path: &Path, format: ExportFormat) -> Result<Embeddings, ExportError> {
    match format {
        ExportFormat::Npy => read_npy(path),
        ExportFormat::Safetensors => read_safetensors(path),
        ExportFormat::Jsonl => read_jsonl(path),
    }
}

/// Prompts from a comma-separated list, trimmed, blanks dropped.
pub fn prompts_from_list(list: &str) -> Result<Vec<String>, ExportError> {
    non_blank(list.split(','), "the --text list")
}

/// Prompts from a file, one per line (commas are part of a prompt), trimmed, blank lines
/// dropped.
pub fn read_prompts(path: &Path) -> Result<Vec<String>, ExportError> {
    let text = fs::read_to_string(path).map_err(|source| ExportError::Read {
        path: path.to_path_buf(),
        cause: source,
    })?;
    non_blank(text.lines(), &path.display().to_string())
}

fn non_blank<'a>(
    items: impl Iterator<Item = &'a str>,
    origin: &str,
) -> Result<Vec<String>, ExportError> {
    let prompts: Vec<String> = items
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    if prompts.is_empty() {
        return Err(ExportError::NoPrompts(origin.to_string()));
    }
    Ok(prompts)
}

/// The hidden temporary file `path` is written to before it is renamed into place.
fn temp_path(path: &Path) -> Result<PathBuf, ExportError> {
    let name = path.file_name().ok_or_else(|| ExportError::Write {
        path: path.to_path_buf(),
        cause: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(format!(".tmp{}", std::process::id()));
    Ok(path.with_file_name(temp))
}

fn write_atomically(
    path: &Path,
    body: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<(), ExportError> {
    let temp = temp_path(path)?;
    let result = File::create(&temp).and_then(|file| {
        let mut writer = BufWriter::new(file);
        body(&mut writer)?;
        writer
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
        fs::rename(&temp, path)
    });
    result.map_err(|source| {
        let _ = fs::remove_file(&temp);
        ExportError::Write {
            path: path.to_path_buf(),
            cause: source,
        }
    })
}

fn write_floats(w: &mut impl Write, data: &[f32]) -> io::Result<()> {
    for chunk in data.chunks(4096) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.write_all(&bytes)?;
    }
    Ok(())
}

/// NPY format version 1.0: magic, version, header length, a Python dict literal padded with
/// spaces and a newline so the data starts 64-byte aligned, then the raw values.
fn write_npy(w: &mut impl Write, e: &Embeddings) -> io::Result<()> {
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        e.len(),
        e.dim
    );
    let unpadded = NPY_MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let len = u16::try_from(header.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "npy header too long"))?;
    w.write_all(NPY_MAGIC)?;
    w.write_all(&[1, 0])?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    write_floats(w, &e.data)
}

fn write_names(w: &mut impl Write, e: &Embeddings) -> io::Result<()> {
    for name in &e.names {
        writeln!(w, "{name}")?;
    }
    Ok(())
}

fn safetensors_header(e: &Embeddings) -> Vec<u8> {
    let kind = e.meta.kind.unwrap_or(RowKind::Image);
    let mut metadata = BTreeMap::new();
    metadata.insert("format", FORMAT_TAG.to_string());
    metadata.insert("kind", kind.as_str().to_string());
    metadata.insert("dim", e.dim.to_string());
    metadata.insert(
        kind.list_key(),
        serde_json::Value::from(e.names.clone()).to_string(),
    );
    if let Some(model) = &e.meta.model {
        metadata.insert("model", model.clone());
    }
    if let Some(revision) = &e.meta.revision {
        metadata.insert("revision", revision.clone());
    }
    if let Some(normalized) = e.meta.normalized {
        metadata.insert("normalized", normalized.to_string());
    }
    let header = serde_json::json!({
        "__metadata__": metadata,
        TENSOR_NAME: {
            "dtype": "F32",
            "shape": [e.len(), e.dim],
            "data_offsets": [0, e.data.len() * 4],
        },
    });
    let mut bytes = header.to_string().into_bytes();
    // The data that follows must start 8-byte aligned.
    bytes.resize(bytes.len().div_ceil(8) * 8, b' ');
    bytes
}

#[derive(Serialize, Deserialize)]
struct JsonRow<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    embedding: std::borrow::Cow<'a, [f32]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    normalized: Option<bool>,
}

fn write_jsonl(w: &mut impl Write, e: &Embeddings) -> io::Result<()> {
    let kind = e.meta.kind.unwrap_or(RowKind::Image);
    for (name, row) in e.names.iter().zip(e.rows()) {
        let line = JsonRow {
            path: (kind == RowKind::Image).then(|| name.clone()),
            text: (kind == RowKind::Text).then(|| name.clone()),
            embedding: std::borrow::Cow::Borrowed(row),
            model: e.meta.model.clone(),
            revision: e.meta.revision.clone(),
            normalized: e.meta.normalized,
        };
        serde_json::to_writer(&mut *w, &line)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

fn invalid(path: &Path, reason: impl ToString) -> ExportError {
    ExportError::Invalid {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// An (N, D) f32 tensor's values, row after row.
fn matrix(path: &Path, tensor: &Tensor) -> Result<(usize, Vec<f32>), ExportError> {
    if tensor.dtype() != DType::F32 {
        return Err(invalid(
            path,
            format!("values are {:?}, not f32", tensor.dtype()),
        ));
    }
    let &[_, dim] = tensor.dims() else {
        return Err(invalid(
            path,
            format!("shape {:?} is not (rows, dim)", tensor.dims()),
        ));
    };
    let data = tensor
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| invalid(path, e))?;
    Ok((dim, data))
}

fn from_parts(
    path: &Path,
    dim: usize,
    data: Vec<f32>,
    names: Vec<String>,
    meta: Metadata,
) -> Result<Embeddings, ExportError> {
    // A (N, 0) array holds no values to count its rows by.
    let rows = data.len().checked_div(dim).unwrap_or(names.len());
    if rows != names.len() {
        return Err(invalid(
            path,
            format!("{rows} rows but {} names", names.len()),
        ));
    }
    Ok(Embeddings {
        dim,
        names,
        data,
        meta,
    })
}

fn read_npy(path: &Path) -> Result<Embeddings, ExportError> {
    fs::metadata(path).map_err(|source| ExportError::Read {
        path: path.to_path_buf(),
        cause: source,
    })?;
    let tensor = Tensor::read_npy(path).map_err(|e| invalid(path, e))?;
    let (dim, data) = matrix(path, &tensor)?;
    let sidecar = sidecar_path(path);
    let names = fs::read_to_string(&sidecar)
        .map_err(|source| ExportError::Read {
            path: sidecar.clone(),
            cause: source,
        })?
        .lines()
        .map(String::from)
        .collect();
    from_parts(path, dim, data, names, Metadata::default())
}

fn read_safetensors(path: &Path) -> Result<Embeddings, ExportError> {
    let bytes = fs::read(path).map_err(|source| ExportError::Read {
        path: path.to_path_buf(),
        cause: source,
    })?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| invalid(path, e))?;
    let tensor = tensors
        .get(TENSOR_NAME)
        .ok_or_else(|| invalid(path, format!("it has no tensor named {TENSOR_NAME:?}")))?;
    let (dim, data) = matrix(path, tensor)?;

    // The loader above has validated the header's length and JSON.
    let header_len = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| invalid(path, "truncated header"))?;
    let header: serde_json::Value = bytes
        .get(8..8 + header_len)
        .and_then(|h| serde_json::from_slice(h).ok())
        .ok_or_else(|| invalid(path, "unreadable header"))?;
    let metadata: BTreeMap<String, String> = header
        .get("__metadata__")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default();
    let kind = match metadata.get("kind").map(String::as_str) {
        Some("text") => RowKind::Text,
        _ => RowKind::Image,
    };
    let names: Vec<String> = metadata
        .get(kind.list_key())
        .and_then(|list| serde_json::from_str(list).ok())
        .ok_or_else(|| {
            invalid(
                path,
                format!("its metadata has no {:?} list of names", kind.list_key()),
            )
        })?;
    let meta = Metadata {
        kind: Some(kind),
        model: metadata.get("model").cloned(),
        revision: metadata.get("revision").cloned(),
        normalized: metadata.get("normalized").map(|n| n == "true"),
    };
    from_parts(path, dim, data, names, meta)
}

fn read_jsonl(path: &Path) -> Result<Embeddings, ExportError> {
    let read_error = |source| ExportError::Read {
        path: path.to_path_buf(),
        cause: source,
    };
    let file = File::open(path).map_err(read_error)?;
    let mut out: Option<Embeddings> = None;
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(read_error)?;
        if line.trim().is_empty() {
            continue;
        }
        let at = |reason: String| invalid(path, format!("line {}: {reason}", number + 1));
        let row: JsonRow = serde_json::from_str(&line).map_err(|e| at(e.to_string()))?;
        let (kind, name) = match (row.path, row.text) {
            (Some(path), None) => (RowKind::Image, path),
            (None, Some(text)) => (RowKind::Text, text),
            _ => return Err(at("needs either \"path\" or \"text\"".into())),
        };
        let e = out.get_or_insert_with(|| {
            Embeddings::new(
                row.embedding.len(),
                Metadata {
                    kind: Some(kind),
                    model: row.model,
                    revision: row.revision,
                    normalized: row.normalized,
                },
            )
        });
        if e.meta.kind != Some(kind) {
            return Err(at("mixes image paths and texts".into()));
        }
        e.push(name, &row.embedding)
            .map_err(|e| at(e.to_string()))?;
    }
    Ok(out.unwrap_or_else(|| Embeddings::new(0, Metadata::default())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: RowKind) -> Embeddings {
        let mut e = Embeddings::new(
            3,
            Metadata {
                kind: Some(kind),
                model: Some("openai/clip-vit-base-patch32".into()),
                revision: Some("abc123".into()),
                normalized: Some(true),
            },
        );
        e.push("photos/a, b.jpg".into(), &[0.1, -2.5, 1e-8])
            .unwrap();
        e.push("https://x.test/é.png".into(), &[f32::MAX, 0.0, -0.0])
            .unwrap();
        e
    }

    #[test]
    fn every_format_round_trips_values_and_names() {
        let dir = tempfile::tempdir().unwrap();
        for kind in [RowKind::Image, RowKind::Text] {
            let e = sample(kind);
            for (name, format) in [
                ("e.npy", ExportFormat::Npy),
                ("e.safetensors", ExportFormat::Safetensors),
                ("e.jsonl", ExportFormat::Jsonl),
            ] {
                let path = dir.path().join(name);
                let written = write(&path, format, &e).unwrap();
                assert_eq!(written[0], path);
                let back = read(&path, format).unwrap();
                assert_eq!(back.data(), e.data(), "{name}");
                assert_eq!(back.names(), e.names(), "{name}");
                assert_eq!(back.dim(), 3);
                if format == ExportFormat::Npy {
                    assert_eq!(back.meta, Metadata::default());
                    assert_eq!(written[1], dir.path().join("e.paths.txt"));
                } else {
                    assert_eq!(back.meta, e.meta, "{name}");
                }
            }
        }
        let no_temp = fs::read_dir(dir.path())
            .unwrap()
            .all(|f| !f.unwrap().file_name().to_string_lossy().starts_with('.'));
        assert!(no_temp, "a temporary file was left behind");
    }

    #[test]
    fn npy_bytes_follow_the_numpy_layout() {
        let mut bytes = Vec::new();
        write_npy(&mut bytes, &sample(RowKind::Image)).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + len) % 64, 0, "data must start aligned");
        let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
        assert!(header.ends_with('\n'));
        assert_eq!(bytes.len(), 10 + len + 6 * 4);
        assert_eq!(&bytes[10 + len..14 + len], &0.1f32.to_le_bytes());
    }

    #[test]
    fn empty_exports_stay_readable() {
        let dir = tempfile::tempdir().unwrap();
        let e = Embeddings::new(4, Metadata::default());
        for (name, format) in [
            ("e.npy", ExportFormat::Npy),
            ("e.safetensors", ExportFormat::Safetensors),
        ] {
            let path = dir.path().join(name);
            write(&path, format, &e).unwrap();
            let back = read(&path, format).unwrap();
            assert!(back.is_empty());
            assert_eq!(back.dim(), 4, "{name}");
        }
    }

    #[test]
    fn formats_come_from_extensions() {
        let format = |p: &str| ExportFormat::from_path(Path::new(p)).ok();
        assert_eq!(format("a/b.NPY"), Some(ExportFormat::Npy));
        assert_eq!(format("b.safetensors"), Some(ExportFormat::Safetensors));
        assert_eq!(format("b.ndjson"), Some(ExportFormat::Jsonl));
        assert_eq!(format("b.csv"), None);
        assert_eq!(format("b"), None);
        assert_eq!(
            sidecar_path(Path::new("d/emb.npy")),
            Path::new("d/emb.paths.txt")
        );
    }

    #[test]
    fn bad_names_rows_and_files_are_refused_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.npy");
        let err = check_name(ExportFormat::Npy, &path, "a\nb.jpg").unwrap_err();
        assert!(err.to_string().contains("e.paths.txt"), "{err}");
        assert!(check_name(ExportFormat::Jsonl, &path, "a\nb.jpg").is_ok());

        let mut e = Embeddings::new(2, Metadata::default());
        assert!(matches!(
            e.push("x".into(), &[1.0]),
            Err(ExportError::Dimension {
                got: 1,
                expected: 2,
                ..
            })
        ));
        e.push("a\nb".into(), &[1.0, 2.0]).unwrap();
        assert!(matches!(
            write(&path, ExportFormat::Npy, &e),
            Err(ExportError::LineBreak { .. })
        ));
        assert!(!path.exists());

        let jsonl = dir.path().join("bad.jsonl");
        fs::write(
            &jsonl,
            "{\"path\":\"a\",\"embedding\":[1,2]}\n{\"path\":\"b\",\"embedding\":[1]}\n",
        )
        .unwrap();
        let err = read(&jsonl, ExportFormat::Jsonl).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");

        write(&path, ExportFormat::Npy, &sample(RowKind::Image)).unwrap();
        fs::write(sidecar_path(&path), "only one\n").unwrap();
        let err = read(&path, ExportFormat::Npy).unwrap_err();
        assert!(err.to_string().contains("2 rows but 1 names"), "{err}");

        let missing = dir.path().join("missing").join("e.jsonl");
        assert!(matches!(
            check_writable(&missing),
            Err(ExportError::Write { .. })
        ));
        assert!(check_writable(&dir.path().join("ok.jsonl")).is_ok());
    }

    #[test]
    fn prompts_are_trimmed_and_blanks_dropped() {
        assert_eq!(
            prompts_from_list(" a red square , ,a disc").unwrap(),
            ["a red square", "a disc"]
        );
        assert!(matches!(
            prompts_from_list(" , "),
            Err(ExportError::NoPrompts(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.txt");
        fs::write(&file, "a photo of a cat, sleeping\r\n\n  a dog \n").unwrap();
        assert_eq!(
            read_prompts(&file).unwrap(),
            ["a photo of a cat, sleeping", "a dog"]
        );
    }
}
