//! Writing results: a table for people, JSON, JSON Lines, CSV and TSV for scripts.
//! Every writer emits each image as soon as it is given, so output streams, and each
//! image's record goes out in one write, so a killed run leaves no torn JSONL line.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;

use serde::Serialize;

use crate::inputs::Input;
use crate::job::{Embedded, JobError, Progress, Sink, WriteError};

/// One label's result for one image, as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelResult {
    pub label: String,
    pub prompt: String,
    pub probability: f32,
    pub similarity: f32,
    /// In multi-label mode: the similarity passed the threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected: Option<bool>,
}

/// What happened to one input.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Labels ranked by probability, highest first (already cut to top-k).
    Ranked(Vec<LabelResult>),
    /// The file could not be classified; the message says why.
    Failed(String),
}

/// One input's report.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageResult {
    pub path: String,
    pub outcome: Outcome,
    /// In single-label mode with a minimum probability: the top label fell short of it.
    pub uncertain: Option<bool>,
    /// In multi-label mode: every label that passed the threshold, best first.
    pub labels: Option<Vec<String>>,
}

impl ImageResult {
    /// The result of an input that could not be classified.
    pub fn failed(path: String, message: String) -> Self {
        Self {
            path,
            outcome: Outcome::Failed(message),
            uncertain: None,
            labels: None,
        }
    }
}

/// One image's outcome as the sinks of a classify run receive it: what the job made of it
/// (its embedding and content key) and the result decided from it
/// ([`crate::decide::Labeller`]).
pub struct Labelled<'a, T = Input> {
    pub embedded: &'a Embedded<T>,
    pub result: ImageResult,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned text for reading on a terminal.
    Table,
    /// One JSON array of image objects.
    Json,
    /// One JSON object per line, per image.
    Jsonl,
    /// One row per image and label, with a header.
    Csv,
    /// Like csv, tab-separated; tabs and newlines inside fields become spaces.
    Tsv,
}

/// The `--output` file's extension names no format.
#[derive(Debug, thiserror::Error)]
#[error("cannot tell the format of {} from its extension; name it .jsonl, .json, .csv or .tsv, or pass --format", path.display())]
pub struct UnknownFormat {
    pub path: std::path::PathBuf,
}

impl Format {
    /// The format of an output: as asked, else from the output file's extension, else a
    /// table (standard output).
    pub fn for_output(asked: Option<Format>, output: Option<&Path>) -> Result<Self, UnknownFormat> {
        if let Some(format) = asked {
            return Ok(format);
        }
        let Some(path) = output else {
            return Ok(Format::Table);
        };
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        Ok(match extension.as_deref() {
            Some("jsonl" | "ndjson") => Format::Jsonl,
            Some("json") => Format::Json,
            Some("csv") => Format::Csv,
            Some("tsv" | "tab") => Format::Tsv,
            Some("txt") => Format::Table,
            _ => {
                return Err(UnknownFormat {
                    path: path.to_path_buf(),
                })
            }
        })
    }
}

#[derive(Serialize)]
struct JsonRanked<'a> {
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scoring: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uncertain: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a [String]>,
    results: &'a [LabelResult],
}

#[derive(Serialize)]
struct JsonFailed<'a> {
    path: &'a str,
    error: &'a str,
}

const COLUMNS: [&str; 10] = [
    "path",
    "rank",
    "label",
    "prompt",
    "probability",
    "similarity",
    "selected",
    "uncertain",
    "error",
    "scoring",
];

/// Streams reports in one format.
pub struct ResultWriter<W: Write> {
    out: W,
    format: Format,
    written: usize,
    /// The record being formatted; written out whole.
    record: Vec<u8>,
    /// What the table calls the similarity.
    similarity_name: &'static str,
    /// How probabilities were computed (`softmax`, `sigmoid`, `probe-softmax`), written
    /// with every result.
    scoring: Option<&'static str>,
}

impl<W: Write> ResultWriter<W> {
    /// A writer that has written nothing yet.
    pub fn new(out: W, format: Format) -> Self {
        Self {
            out,
            format,
            written: 0,
            record: Vec::new(),
            similarity_name: "cos",
            scoring: None,
        }
    }

    /// Says how probabilities were computed, in every format: a `scoring` field (JSON), a
    /// `scoring` column (CSV/TSV), `[scoring]` after each path (table).
    pub fn with_scoring(mut self, scoring: &'static str) -> Self {
        self.scoring = Some(scoring);
        self
    }

    /// Names the similarity in tables ("cos" unless told; a linear probe's is a "logit").
    pub fn with_similarity_name(mut self, name: &'static str) -> Self {
        self.similarity_name = name;
        self
    }

    /// Writes one image's report, in one write, and flushes it.
    pub fn write(&mut self, report: &ImageResult) -> io::Result<()> {
        let first = self.written == 0;
        self.written += 1;
        self.record.clear();
        match self.format {
            Format::Table => self.table(report)?,
            Format::Json => {
                self.record
                    .extend_from_slice(if first { b"[\n  " } else { b",\n  " });
                self.json(report)?;
            }
            Format::Jsonl => {
                self.json(report)?;
                self.record.push(b'\n');
            }
            Format::Csv | Format::Tsv => {
                if first {
                    self.row(&COLUMNS.map(String::from))?;
                }
                self.rows(report)?;
            }
        }
        self.out.write_all(&self.record)?;
        self.out.flush()
    }

    /// Closes the document (the JSON array) and flushes.
    pub fn finish(mut self) -> io::Result<W> {
        if self.format == Format::Json {
            self.out
                .write_all(if self.written == 0 { b"[]\n" } else { b"\n]\n" })?;
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn json(&mut self, report: &ImageResult) -> io::Result<()> {
        match &report.outcome {
            Outcome::Ranked(results) => serde_json::to_writer(
                &mut self.record,
                &JsonRanked {
                    path: &report.path,
                    scoring: self.scoring,
                    uncertain: report.uncertain,
                    labels: report.labels.as_deref(),
                    results,
                },
            ),
            Outcome::Failed(error) => serde_json::to_writer(
                &mut self.record,
                &JsonFailed {
                    path: &report.path,
                    error,
                },
            ),
        }
        .map_err(io::Error::from)
    }

    fn table(&mut self, report: &ImageResult) -> io::Result<()> {
        // Failures go to stderr from the caller; the table holds results only.
        let Outcome::Ranked(results) = &report.outcome else {
            return Ok(());
        };
        if self.written > 1 {
            writeln!(self.record)?;
        }
        let note = if report.uncertain == Some(true) {
            "  (uncertain)"
        } else {
            ""
        };
        match self.scoring {
            Some(scoring) => writeln!(self.record, "{}  [{scoring}]{note}", report.path)?,
            None => writeln!(self.record, "{}{note}", report.path)?,
        }
        let width = results
            .iter()
            .map(|r| r.label.chars().count())
            .max()
            .unwrap_or(0);
        for r in results {
            let mark = if r.selected == Some(true) { "  *" } else { "" };
            writeln!(
                self.record,
                "  {:>7.2}%  {:<width$}  {} {:.4}{mark}",
                r.probability * 100.0,
                r.label,
                self.similarity_name,
                r.similarity
            )?;
        }
        Ok(())
    }

    fn rows(&mut self, report: &ImageResult) -> io::Result<()> {
        match &report.outcome {
            Outcome::Ranked(results) => {
                let flag = |b: Option<bool>| b.map(|b| b.to_string()).unwrap_or_default();
                for (rank, r) in results.iter().enumerate() {
                    self.row(&[
                        report.path.clone(),
                        (rank + 1).to_string(),
                        r.label.clone(),
                        r.prompt.clone(),
                        r.probability.to_string(),
                        r.similarity.to_string(),
                        flag(r.selected),
                        flag(report.uncertain),
                        String::new(),
                        self.scoring.unwrap_or_default().to_string(),
                    ])?;
                }
                Ok(())
            }
            Outcome::Failed(error) => self.row(&[
                report.path.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                error.clone(),
                String::new(),
            ]),
        }
    }

    fn row(&mut self, fields: &[String; 10]) -> io::Result<()> {
        writeln!(self.record, "{}", delimited(self.format, fields))
    }
}

/// An output file that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open {} for writing", path.display())]
pub struct OpenError {
    pub path: std::path::PathBuf,
    #[source]
    pub cause: io::Error,
}

/// A document that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Writes a whole document with `write` to `path` (replacing it) or to standard output.
pub fn write_document(
    path: Option<&Path>,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), OutputError> {
    let (mut out, name): (Box<dyn Write>, String) = match path {
        Some(path) => (
            Box::new(
                File::create(path)
                    .map(io::BufWriter::new)
                    .map_err(|cause| OpenError {
                        path: path.to_path_buf(),
                        cause,
                    })?,
            ),
            path.display().to_string(),
        ),
        None => (Box::new(io::stdout().lock()), "standard output".to_string()),
    };
    write(&mut out)
        .and_then(|()| out.flush())
        .map_err(|cause| WriteError { to: name, cause })?;
    Ok(())
}

/// Results written to `--output` (appended to with `--resume`) or standard output, as a
/// sink of a classify run: each result is written whole with any progress display out of
/// the way.
pub struct ResultSink {
    writer: ResultWriter<Box<dyn Write>>,
    /// "standard output" or the file's path, for messages.
    name: String,
}

impl ResultSink {
    /// Opens `path` (appending when `append`), or standard output when `None`.
    pub fn open(path: Option<&Path>, append: bool, format: Format) -> Result<Self, OpenError> {
        let (out, name): (Box<dyn Write>, String) = match path {
            Some(path) => (
                Box::new(open_output(path, append).map_err(|cause| OpenError {
                    path: path.to_path_buf(),
                    cause,
                })?),
                path.display().to_string(),
            ),
            None => (Box::new(io::stdout().lock()), "standard output".to_string()),
        };
        Ok(Self {
            writer: ResultWriter::new(out, format),
            name,
        })
    }

    /// Names the similarity and says how probabilities were computed
    /// ([`ResultWriter::with_similarity_name`], [`ResultWriter::with_scoring`]).
    pub fn describe(mut self, similarity: &'static str, scoring: &'static str) -> Self {
        self.writer = self
            .writer
            .with_similarity_name(similarity)
            .with_scoring(scoring);
        self
    }

    /// Where the results go: "standard output" or the file's path.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes one result.
    pub fn write(&mut self, result: &ImageResult) -> Result<(), WriteError> {
        self.writer.write(result).map_err(|cause| WriteError {
            to: self.name.clone(),
            cause,
        })
    }

    /// Closes the document (the JSON array) and flushes.
    pub fn finish(self) -> Result<(), WriteError> {
        let Self { writer, name } = self;
        writer
            .finish()
            .map(drop)
            .map_err(|cause| WriteError { to: name, cause })
    }
}

impl Sink<Labelled<'_>> for ResultSink {
    fn write(&mut self, batch: &[Labelled<'_>], progress: &dyn Progress) -> Result<(), JobError> {
        for labelled in batch {
            let mut written = Ok(());
            progress.suspend(&mut || written = self.write(&labelled.result));
            written?;
        }
        Ok(())
    }
}

/// Prepares a JSON Lines file for `--resume`: cuts off a torn last line (a run killed
/// mid-write), and returns the `path` of every record in it, so those inputs are skipped.
pub fn resume_jsonl(path: &Path) -> io::Result<HashSet<String>> {
    resume_jsonl_by(path, |record| {
        record.get("path")?.as_str().map(str::to_string)
    })
}

/// [`resume_jsonl`] with what identifies a record (`key`, `None` for a record that proves
/// nothing): the path, or the path and a question.
pub fn resume_jsonl_by(
    path: &Path,
    key: impl Fn(&serde_json::Value) -> Option<String>,
) -> io::Result<HashSet<String>> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(err) => return Err(err),
    };
    let mut done = HashSet::new();
    let mut complete = 0u64;
    let mut reader = BufReader::new(&mut file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 || line.last() != Some(&b'\n') {
            break;
        }
        // A line that does not parse was not written by vlm: keep it, but it proves nothing.
        if let Ok(record) = serde_json::from_slice::<serde_json::Value>(&line) {
            if let Some(key) = key(&record) {
                done.insert(key);
            }
        }
        complete += read as u64;
    }
    drop(reader);
    if file.metadata()?.len() != complete {
        file.set_len(complete)?;
        file.sync_all()?;
    }
    Ok(done)
}

/// Opens an output file: appended to when resuming, else replaced.
pub fn open_output(path: &Path, append: bool) -> io::Result<RecordFile<File>> {
    let mut options = OpenOptions::new();
    options.create(true);
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    let mut file = options.open(path)?;
    let len = file.seek(SeekFrom::End(0))?;
    Ok(RecordFile::new(file, len))
}

/// Cutting a sink back to an earlier length.
pub trait Truncate {
    /// Makes the sink `len` bytes long, with the next write going at its end.
    fn truncate_to(&mut self, len: u64) -> io::Result<()>;
}

impl Truncate for File {
    fn truncate_to(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)?;
        self.seek(SeekFrom::Start(len)).map(|_| ())
    }
}

/// A file that only ever holds whole records: every flush marks a record boundary, and a
/// write that fails part-way (a full disk) is cut back to the last boundary, so a reader,
/// or `--resume`, never sees a torn line.
pub struct RecordFile<F: Write + Truncate> {
    inner: F,
    committed: u64,
    written: u64,
}

impl<F: Write + Truncate> RecordFile<F> {
    /// Wraps `inner`, which already holds `len` bytes of whole records.
    pub fn new(inner: F, len: u64) -> Self {
        Self {
            inner,
            committed: len,
            written: len,
        }
    }

    fn roll_back(&mut self, err: io::Error) -> io::Error {
        // If even the truncation fails there is nothing better to do than report the
        // original error, which is what the user must act on.
        let _ = self.inner.truncate_to(self.committed);
        self.written = self.committed;
        err
    }
}

impl<F: Write + Truncate> Write for RecordFile<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.inner.write(buf) {
            Ok(0) if !buf.is_empty() => Err(self.roll_back(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                self.written += n as u64;
                Ok(n)
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => Err(err),
            Err(err) => Err(self.roll_back(err)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.inner.flush() {
            Ok(()) => {
                self.committed = self.written;
                Ok(())
            }
            Err(err) => Err(self.roll_back(err)),
        }
    }
}

/// RFC 4180 quoting: only fields with a comma, quote or line break are quoted.
/// One CSV row (TSV with [`Format::Tsv`]) of `fields`, each escaped, without the newline.
pub(crate) fn delimited(format: Format, fields: &[String]) -> String {
    let (separator, escape): (&str, fn(&str) -> String) = match format {
        Format::Tsv => ("\t", tsv_field),
        _ => (",", csv_field),
    };
    fields
        .iter()
        .map(|f| escape(f))
        .collect::<Vec<_>>()
        .join(separator)
}

pub(crate) fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

pub(crate) fn tsv_field(field: &str) -> String {
    field.replace(['\t', '\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reports() -> Vec<ImageResult> {
        vec![
            ImageResult {
                path: "a, \"b\".jpg".into(),
                outcome: Outcome::Ranked(vec![
                    LabelResult {
                        label: "cat".into(),
                        prompt: "a photo of a cat.".into(),
                        probability: 0.75,
                        similarity: 0.3125,
                        selected: None,
                    },
                    LabelResult {
                        label: "dog".into(),
                        prompt: "a photo of a dog.".into(),
                        probability: 0.25,
                        similarity: 0.125,
                        selected: None,
                    },
                ]),
                uncertain: None,
                labels: None,
            },
            ImageResult {
                path: "broken.png".into(),
                outcome: Outcome::Failed("cannot decode".into()),
                uncertain: None,
                labels: None,
            },
        ]
    }

    fn render(format: Format) -> String {
        let mut writer = ResultWriter::new(Vec::new(), format);
        for report in reports() {
            writer.write(&report).unwrap();
        }
        String::from_utf8(writer.finish().unwrap()).unwrap()
    }

    #[test]
    fn json_and_jsonl_hold_results_and_errors() {
        let json: serde_json::Value = serde_json::from_str(&render(Format::Json)).unwrap();
        assert_eq!(json[0]["results"][0]["label"], "cat");
        assert_eq!(json[0]["results"][1]["probability"], 0.25);
        assert_eq!(json[1]["error"], "cannot decode");

        let text = render(Format::Jsonl);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["path"], "a, \"b\".jpg");
        assert_eq!(lines[0]["results"][0]["prompt"], "a photo of a cat.");
        assert_eq!(lines[1]["path"], "broken.png");

        let empty = ResultWriter::new(Vec::new(), Format::Json)
            .finish()
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&empty).unwrap(),
            serde_json::json!([])
        );
    }

    #[test]
    fn csv_quotes_and_tsv_flattens() {
        let csv = render(Format::Csv);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "path,rank,label,prompt,probability,similarity,selected,uncertain,error,scoring"
        );
        assert_eq!(
            lines[1],
            "\"a, \"\"b\"\".jpg\",1,cat,a photo of a cat.,0.75,0.3125,,,,"
        );
        assert_eq!(lines[3], "broken.png,,,,,,,,cannot decode,");

        let tsv = render(Format::Tsv);
        assert_eq!(
            tsv.lines().nth(2).unwrap(),
            "a, \"b\".jpg\t2\tdog\ta photo of a dog.\t0.25\t0.125\t\t\t\t"
        );
    }

    #[test]
    fn scoring_shows_in_every_format() {
        let report = reports().remove(0);
        let written = |format| {
            let mut writer = ResultWriter::new(Vec::new(), format).with_scoring("sigmoid");
            writer.write(&report).unwrap();
            String::from_utf8(writer.finish().unwrap()).unwrap()
        };
        let line: serde_json::Value = serde_json::from_str(&written(Format::Jsonl)).unwrap();
        assert_eq!(line["scoring"], "sigmoid");
        let json: serde_json::Value = serde_json::from_str(&written(Format::Json)).unwrap();
        assert_eq!(json[0]["scoring"], "sigmoid");
        let csv = written(Format::Csv);
        assert!(csv.lines().nth(1).unwrap().ends_with(",sigmoid"), "{csv}");
        assert!(written(Format::Tsv)
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("\tsigmoid"));
        assert!(written(Format::Table).starts_with("a, \"b\".jpg  [sigmoid]\n"));
    }

    #[test]
    fn decisions_show_in_every_format() {
        let mut report = reports().remove(0);
        report.uncertain = Some(true);
        report.labels = Some(vec!["cat".into()]);
        if let Outcome::Ranked(results) = &mut report.outcome {
            results[0].selected = Some(true);
            results[1].selected = Some(false);
        }
        let mut writer = ResultWriter::new(Vec::new(), Format::Jsonl);
        writer.write(&report).unwrap();
        let line: serde_json::Value = serde_json::from_slice(&writer.finish().unwrap()).unwrap();
        assert_eq!(line["uncertain"], true);
        assert_eq!(line["labels"], serde_json::json!(["cat"]));
        assert_eq!(line["results"][1]["selected"], false);

        let mut writer = ResultWriter::new(Vec::new(), Format::Csv);
        writer.write(&report).unwrap();
        let csv = String::from_utf8(writer.finish().unwrap()).unwrap();
        let csv = csv.split_once('\n').unwrap().1;
        assert!(
            csv.starts_with(
                "\"a, \"\"b\"\".jpg\",1,cat,a photo of a cat.,0.75,0.3125,true,true,,\n"
            ),
            "{csv}"
        );

        let mut writer = ResultWriter::new(Vec::new(), Format::Table);
        writer.write(&report).unwrap();
        let table = String::from_utf8(writer.finish().unwrap()).unwrap();
        assert!(table.starts_with("a, \"b\".jpg  (uncertain)\n"), "{table}");
        assert!(table.contains("cat  cos 0.3125  *\n"), "{table}");
    }

    #[test]
    fn resume_cuts_a_torn_line_and_lists_done_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "{\"path\":\"a.jpg\",\"results\":[]}\n{\"path\":\"b.jpg\",\"error\":\"x\"}\n{\"path\":\"c.j").unwrap();
        let done = resume_jsonl(&path).unwrap();
        assert_eq!(
            done,
            HashSet::from(["a.jpg".to_string(), "b.jpg".to_string()])
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("\"x\"}\n"), "{text}");
        assert!(resume_jsonl(&dir.path().join("none.jsonl"))
            .unwrap()
            .is_empty());

        let mut file = open_output(&path, true).unwrap();
        file.write_all(b"{\"path\":\"c.jpg\"}\n").unwrap();
        assert_eq!(resume_jsonl(&path).unwrap().len(), 3);
    }

    /// A disk that fills up after `room` bytes.
    struct SmallDisk {
        data: Vec<u8>,
        room: usize,
    }

    impl Write for SmallDisk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let free = self.room.saturating_sub(self.data.len());
            if free == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "No space left on device",
                ));
            }
            let n = free.min(buf.len());
            self.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Truncate for SmallDisk {
        fn truncate_to(&mut self, len: u64) -> io::Result<()> {
            self.data.truncate(len as usize);
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_leaves_only_whole_lines() {
        let report = reports().remove(0);
        let mut line = ResultWriter::new(Vec::new(), Format::Jsonl);
        line.write(&report).unwrap();
        let line_len = line.finish().unwrap().len();

        let disk = SmallDisk {
            data: Vec::new(),
            room: line_len * 2 + line_len / 2,
        };
        let mut writer = ResultWriter::new(RecordFile::new(disk, 0), Format::Jsonl);
        writer.write(&report).unwrap();
        writer.write(&report).unwrap();
        let err = writer.write(&report).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        let data = &writer.out.inner.data;
        assert_eq!(
            data.len(),
            2 * line_len,
            "the torn third line was not rolled back"
        );
        assert!(data.ends_with(b"\n"));
    }

    #[test]
    fn table_lists_ranked_labels() {
        let table = render(Format::Table);
        assert_eq!(
            table,
            "a, \"b\".jpg\n    75.00%  cat  cos 0.3125\n    25.00%  dog  cos 0.1250\n"
        );
    }
}
