//! Writing results: a table for people, JSON, JSON Lines, CSV and TSV for scripts.
//! Every writer emits each image as soon as it is given, so output streams.

use std::io::{self, Write};

use serde::Serialize;

/// One label's result for one image, as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelResult {
    pub label: String,
    pub prompt: String,
    pub probability: f32,
    pub similarity: f32,
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
pub struct ImageReport {
    pub path: String,
    pub outcome: Outcome,
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

#[derive(Serialize)]
struct JsonRanked<'a> {
    path: &'a str,
    results: &'a [LabelResult],
}

#[derive(Serialize)]
struct JsonFailed<'a> {
    path: &'a str,
    error: &'a str,
}

const COLUMNS: [&str; 7] = [
    "path",
    "rank",
    "label",
    "prompt",
    "probability",
    "similarity",
    "error",
];

/// Streams reports in one format.
pub struct ReportWriter<W: Write> {
    out: W,
    format: Format,
    written: usize,
}

impl<W: Write> ReportWriter<W> {
    /// A writer that has written nothing yet.
    pub fn new(out: W, format: Format) -> Self {
        Self {
            out,
            format,
            written: 0,
        }
    }

    /// Writes one image's report and flushes it.
    pub fn write(&mut self, report: &ImageReport) -> io::Result<()> {
        let first = self.written == 0;
        self.written += 1;
        match self.format {
            Format::Table => self.table(report)?,
            Format::Json => {
                self.out
                    .write_all(if first { b"[\n  " } else { b",\n  " })?;
                self.json(report)?;
            }
            Format::Jsonl => {
                self.json(report)?;
                self.out.write_all(b"\n")?;
            }
            Format::Csv | Format::Tsv => {
                if first {
                    self.row(&COLUMNS.map(String::from))?;
                }
                self.rows(report)?;
            }
        }
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

    fn json(&mut self, report: &ImageReport) -> io::Result<()> {
        match &report.outcome {
            Outcome::Ranked(results) => serde_json::to_writer(
                &mut self.out,
                &JsonRanked {
                    path: &report.path,
                    results,
                },
            ),
            Outcome::Failed(error) => serde_json::to_writer(
                &mut self.out,
                &JsonFailed {
                    path: &report.path,
                    error,
                },
            ),
        }
        .map_err(io::Error::from)
    }

    fn table(&mut self, report: &ImageReport) -> io::Result<()> {
        // Failures go to stderr from the caller; the table holds results only.
        let Outcome::Ranked(results) = &report.outcome else {
            return Ok(());
        };
        if self.written > 1 {
            writeln!(self.out)?;
        }
        writeln!(self.out, "{}", report.path)?;
        let width = results
            .iter()
            .map(|r| r.label.chars().count())
            .max()
            .unwrap_or(0);
        for r in results {
            writeln!(
                self.out,
                "  {:>7.2}%  {:<width$}  cos {:.4}",
                r.probability * 100.0,
                r.label,
                r.similarity
            )?;
        }
        Ok(())
    }

    fn rows(&mut self, report: &ImageReport) -> io::Result<()> {
        match &report.outcome {
            Outcome::Ranked(results) => {
                for (rank, r) in results.iter().enumerate() {
                    self.row(&[
                        report.path.clone(),
                        (rank + 1).to_string(),
                        r.label.clone(),
                        r.prompt.clone(),
                        r.probability.to_string(),
                        r.similarity.to_string(),
                        String::new(),
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
                error.clone(),
            ]),
        }
    }

    fn row(&mut self, fields: &[String; 7]) -> io::Result<()> {
        let (separator, escape): (&str, fn(&str) -> String) = match self.format {
            Format::Tsv => ("\t", tsv_field),
            _ => (",", csv_field),
        };
        let line = fields
            .iter()
            .map(|f| escape(f))
            .collect::<Vec<_>>()
            .join(separator);
        writeln!(self.out, "{line}")
    }
}

/// RFC 4180 quoting: only fields with a comma, quote or line break are quoted.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

fn tsv_field(field: &str) -> String {
    field.replace(['\t', '\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reports() -> Vec<ImageReport> {
        vec![
            ImageReport {
                path: "a, \"b\".jpg".into(),
                outcome: Outcome::Ranked(vec![
                    LabelResult {
                        label: "cat".into(),
                        prompt: "a photo of a cat.".into(),
                        probability: 0.75,
                        similarity: 0.3125,
                    },
                    LabelResult {
                        label: "dog".into(),
                        prompt: "a photo of a dog.".into(),
                        probability: 0.25,
                        similarity: 0.125,
                    },
                ]),
            },
            ImageReport {
                path: "broken.png".into(),
                outcome: Outcome::Failed("cannot decode".into()),
            },
        ]
    }

    fn render(format: Format) -> String {
        let mut writer = ReportWriter::new(Vec::new(), format);
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

        let empty = ReportWriter::new(Vec::new(), Format::Json)
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
            "path,rank,label,prompt,probability,similarity,error"
        );
        assert_eq!(
            lines[1],
            "\"a, \"\"b\"\".jpg\",1,cat,a photo of a cat.,0.75,0.3125,"
        );
        assert_eq!(lines[3], "broken.png,,,,,,cannot decode");

        let tsv = render(Format::Tsv);
        assert_eq!(
            tsv.lines().nth(2).unwrap(),
            "a, \"b\".jpg\t2\tdog\ta photo of a dog.\t0.25\t0.125\t"
        );
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
