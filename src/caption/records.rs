//! Captions and answers as records, in the formats classify results come in: a table for
//! people, JSON, JSON Lines, CSV and TSV. One record per image (captions) or per image and
//! question (answers), each written whole and flushed, so a killed run leaves whole lines
//! for `--resume`.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::Generated;
use crate::job::WriteError;
use crate::output::{self, Format, OpenError};

/// What one record says about one input.
pub enum Said<'a> {
    /// The caption or answer.
    Text(&'a Generated),
    /// Why there is none.
    Failed(&'a str),
}

/// One caption, or one answer to `question`.
pub struct Record<'a> {
    pub path: &'a str,
    /// The question (answers); `None` for captions.
    pub question: Option<&'a str>,
    pub said: Said<'a>,
}

/// A record as JSON, its fields in this order.
#[derive(Default, Serialize)]
struct JsonRecord<'a> {
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    question: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    caption: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    answer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_prob: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens: Option<&'a [u32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// Where captions or answers go: `--output` (appended to with `--resume`) or standard
/// output.
pub struct RecordWriter {
    out: Box<dyn Write>,
    /// "standard output" or the file's path, for messages.
    name: String,
    format: Format,
    /// The checkpoint, as every record names it.
    model: String,
    /// Answers (a question column) rather than captions.
    answers: bool,
    written: usize,
    record: Vec<u8>,
}

impl RecordWriter {
    /// Opens `path` (appending when `append`), or standard output when `None`; `model`
    /// names the checkpoint in every record; `answers` picks the answer columns.
    pub fn open(
        path: Option<&Path>,
        append: bool,
        format: Format,
        model: &str,
        answers: bool,
    ) -> Result<Self, OpenError> {
        let (out, name): (Box<dyn Write>, String) = match path {
            Some(path) => (
                Box::new(
                    output::open_output(path, append).map_err(|cause| OpenError {
                        path: path.to_path_buf(),
                        cause,
                    })?,
                ),
                path.display().to_string(),
            ),
            None => (Box::new(io::stdout().lock()), "standard output".to_string()),
        };
        Ok(Self::new(out, name, format, model, answers))
    }

    /// A writer to `out`, called `name` in messages.
    pub fn new(
        out: Box<dyn Write>,
        name: String,
        format: Format,
        model: &str,
        answers: bool,
    ) -> Self {
        Self {
            out,
            name,
            format,
            model: model.to_string(),
            answers,
            written: 0,
            record: Vec::new(),
        }
    }

    /// Where the records go: "standard output" or the file's path.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes one record, in one write, and flushes it.
    pub fn write(&mut self, record: &Record<'_>) -> Result<(), WriteError> {
        self.format_record(record)
            .and_then(|()| {
                self.out.write_all(&self.record)?;
                self.out.flush()
            })
            .map_err(|cause| WriteError {
                to: self.name.clone(),
                cause,
            })
    }

    /// Closes the document (the JSON array) and flushes.
    pub fn finish(mut self) -> Result<(), WriteError> {
        let closing: &[u8] = match (self.format, self.written) {
            (Format::Json, 0) => b"[]\n",
            (Format::Json, _) => b"\n]\n",
            _ => b"",
        };
        self.out
            .write_all(closing)
            .and_then(|()| self.out.flush())
            .map_err(|cause| WriteError {
                to: self.name.clone(),
                cause,
            })
    }

    fn format_record(&mut self, record: &Record<'_>) -> io::Result<()> {
        let first = self.written == 0;
        self.written += 1;
        self.record.clear();
        match self.format {
            Format::Table => self.table(record)?,
            Format::Json => {
                let value = serde_json::to_vec(&self.json(record))?;
                self.record
                    .extend_from_slice(if first { b"[\n  " } else { b",\n  " });
                self.record.extend_from_slice(&value);
            }
            Format::Jsonl => {
                let value = serde_json::to_vec(&self.json(record))?;
                self.record.extend_from_slice(&value);
                self.record.push(b'\n');
            }
            Format::Csv | Format::Tsv => {
                if first {
                    let header = self.header();
                    self.row(&header)?;
                }
                let fields = self.fields(record);
                self.row(&fields)?;
            }
        }
        Ok(())
    }

    fn json<'r>(&'r self, record: &'r Record<'r>) -> impl Serialize + 'r {
        json(record, &self.model, self.answers)
    }

    fn table(&mut self, record: &Record<'_>) -> io::Result<()> {
        // Failures go to stderr as they happen; the table holds results only.
        let Said::Text(generated) = &record.said else {
            return Ok(());
        };
        match record.question {
            Some(question) => writeln!(
                self.record,
                "{}  {question} -> {}  (log p {:.3})",
                record.path, generated.text, generated.log_prob
            ),
            None => writeln!(
                self.record,
                "{}  {}  (log p {:.3})",
                record.path, generated.text, generated.log_prob
            ),
        }
    }

    fn header(&self) -> Vec<String> {
        let text: &[&str] = if self.answers {
            &["question", "answer"]
        } else {
            &["caption"]
        };
        std::iter::once("path")
            .chain(text.iter().copied())
            .chain(["log_prob", "tokens", "model", "error"])
            .map(String::from)
            .collect()
    }

    fn fields(&self, record: &Record<'_>) -> Vec<String> {
        let mut fields = vec![record.path.to_string()];
        if self.answers {
            fields.push(record.question.unwrap_or_default().to_string());
        }
        match &record.said {
            Said::Text(generated) => {
                let tokens: Vec<String> = generated.tokens.iter().map(u32::to_string).collect();
                fields.extend([
                    generated.text.clone(),
                    generated.log_prob.to_string(),
                    tokens.join(" "),
                    self.model.clone(),
                    String::new(),
                ]);
            }
            Said::Failed(error) => {
                fields.extend([String::new(), String::new(), String::new(), String::new()]);
                fields.push((*error).to_string());
            }
        }
        fields
    }

    fn row(&mut self, fields: &[String]) -> io::Result<()> {
        writeln!(self.record, "{}", output::delimited(self.format, fields))
    }
}

/// One record as the JSON formats write it (`--format json` writes an array of these,
/// `jsonl` one a line), for `model`; `answers` picks the answer fields. `path`, `caption`
/// (or `question` and `answer`), `log_prob`, `tokens`, `model`; a failure has `path` (and
/// `question`) and `error`. `vlm serve` answers with the same objects.
pub fn json<'r>(record: &'r Record<'r>, model: &'r str, answers: bool) -> impl Serialize + 'r {
    let mut json = JsonRecord {
        path: record.path,
        question: record.question,
        ..JsonRecord::default()
    };
    match &record.said {
        Said::Text(generated) => {
            let text = Some(generated.text.as_str());
            if answers {
                json.answer = text;
            } else {
                json.caption = text;
            }
            json.log_prob = Some(generated.log_prob);
            json.tokens = Some(&generated.tokens);
            json.model = Some(model);
        }
        Said::Failed(error) => json.error = Some(error),
    }
    json
}

/// With `--resume`: the records already in the JSON Lines file at `path` (a torn last line
/// cut off), as [`record_key`]s.
pub fn resume(path: &Path) -> io::Result<std::collections::HashSet<String>> {
    output::resume_jsonl_by(path, |record| {
        let path = record.get("path")?.as_str()?;
        let question = record.get("question").and_then(Value::as_str);
        Some(record_key(path, question))
    })
}

/// What identifies a record for `--resume`: the input, and the question when answering.
pub fn record_key(path: &str, question: Option<&str>) -> String {
    match question {
        Some(question) => format!("{path}\u{0}{question}"),
        None => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn generated(text: &str) -> Generated {
        Generated {
            text: text.into(),
            tokens: vec![5, 7, 2],
            generated: 2,
            log_prob: -1.5,
            ended: true,
        }
    }

    fn written(format: Format, answers: bool, records: &[Record<'_>]) -> String {
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut writer = RecordWriter::new(
            Box::new(Shared(buffer.clone())),
            "test".into(),
            format,
            "m",
            answers,
        );
        for record in records {
            writer.write(record).unwrap();
        }
        writer.finish().unwrap();
        let bytes = buffer.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn every_format_carries_the_fields_and_escapes_them() {
        let a = generated("a dog, \"running\"");
        let records = [
            Record {
                path: "x.png",
                question: None,
                said: Said::Text(&a),
            },
            Record {
                path: "bad.png",
                question: None,
                said: Said::Failed("cannot decode"),
            },
        ];
        let jsonl = written(Format::Jsonl, false, &records);
        let lines: Vec<Value> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            json!({"path": "x.png", "caption": "a dog, \"running\"", "log_prob": -1.5,
                   "tokens": [5, 7, 2], "model": "m"})
        );
        assert_eq!(
            lines[1],
            json!({"path": "bad.png", "error": "cannot decode"})
        );
        let json: Value = serde_json::from_str(&written(Format::Json, false, &records)).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 2);
        let csv = written(Format::Csv, false, &records);
        assert_eq!(
            csv,
            "path,caption,log_prob,tokens,model,error\n\
             x.png,\"a dog, \"\"running\"\"\",-1.5,5 7 2,m,\n\
             bad.png,,,,,cannot decode\n"
        );
        let table = written(Format::Table, false, &records);
        assert_eq!(table, "x.png  a dog, \"running\"  (log p -1.500)\n");
        let answer = generated("two");
        let asked = [Record {
            path: "x.png",
            question: Some("how\tmany?"),
            said: Said::Text(&answer),
        }];
        assert_eq!(
            written(Format::Tsv, true, &asked),
            "path\tquestion\tanswer\tlog_prob\ttokens\tmodel\terror\n\
             x.png\thow many?\ttwo\t-1.5\t5 7 2\tm\t\n"
        );
        assert_eq!(written(Format::Json, true, &[]), "[]\n");
    }

    #[test]
    fn resume_keys_tell_questions_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(
            &path,
            "{\"path\":\"a\",\"question\":\"q1\",\"answer\":\"x\"}\n{\"path\":\"a\",\"quest",
        )
        .unwrap();
        let done = resume(&path).unwrap();
        assert!(done.contains(&record_key("a", Some("q1"))));
        assert!(!done.contains(&record_key("a", Some("q2"))));
        assert!(!done.contains("a"));
        // The torn line is gone.
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
    }
}
