//! The records a page shows: read from `vlm classify --format jsonl` lines, or built by
//! `vlm eval`, and written into the page as compact JSON.
//!
//! Labels are numbered in order of first appearance so that a record carries small
//! indices instead of repeating label names 20,000 times; the names are written once, after
//! the records, which lets the page stream without a first pass over the results.

use std::collections::HashMap;

use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::output::{ImageResult, Outcome};

/// One label's result as `vlm classify` writes it. Fields the page does not use (`prompt`)
/// and fields added later are ignored, so newer result files still open.
#[derive(Debug, Clone, Deserialize)]
pub struct ResultLine {
    pub label: String,
    /// Softmax probability, or an independent score for sigmoid-scored models: the page
    /// never assumes they sum to one.
    pub probability: f64,
    #[serde(default)]
    pub similarity: Option<f64>,
    #[serde(default)]
    pub selected: Option<bool>,
}

/// One line of a results file.
#[derive(Debug, Clone, Deserialize)]
pub struct ResultRecord {
    pub path: String,
    #[serde(default)]
    pub results: Option<Vec<ResultLine>>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub uncertain: Option<bool>,
    /// With `--multi-label`: the selected labels.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// A line of `vlm caption`.
    #[serde(default)]
    pub caption: Option<String>,
    /// A line of `vlm ask`: the question and its answer.
    #[serde(default)]
    pub question: Option<String>,
    #[serde(default)]
    pub answer: Option<String>,
    /// A caption's or answer's log-probability: with greedy decoding (the default) the sum
    /// over its generated tokens.
    #[serde(default)]
    pub log_prob: Option<f64>,
    /// The caption's whole token sequence: the start token, then (with `--prompt`) the
    /// prompt's, then the generated ones.
    #[serde(default)]
    pub tokens: Option<Vec<u32>>,
}

/// A caption's log-probability per token: `log_prob` over the tokens after the start token.
/// Captions differ in length and a sum is lower the longer the caption, so the mean is what
/// compares how sure the model was of two captions. The file does not say how long a
/// `--prompt` was, so its tokens count too (the same few for every caption of a run), and
/// with `--beams` `log_prob` is already length-normalised, so this divides it once more:
/// both keep the order roughly, neither exactly. `None` without a generated token or
/// a finite log-probability.
fn per_token(log_prob: f64, tokens: &[u32]) -> Option<f64> {
    let generated = tokens.len().checked_sub(1).filter(|&n| n > 0)?;
    let mean = log_prob / generated as f64;
    mean.is_finite().then(|| round(mean))
}

/// Label names numbered in order of first appearance.
#[derive(Debug, Default)]
pub struct LabelIndex {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl LabelIndex {
    /// A table that already holds `names`, in order (the run's labels, when known).
    pub fn with_names(names: &[String]) -> Self {
        let mut table = Self::default();
        for name in names {
            table.id(name);
        }
        table
    }

    /// The number of `name`, added when new.
    pub fn id(&mut self, name: &str) -> usize {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let id = self.names.len();
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), id);
        id
    }

    /// Every name, by number.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// One label's score on the page: `[label number, probability, similarity, selected]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PageScore {
    pub label: usize,
    pub probability: f64,
    pub similarity: Option<f64>,
    pub selected: Option<bool>,
}

impl Serialize for PageScore {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(4))?;
        seq.serialize_element(&self.label)?;
        seq.serialize_element(&round(self.probability))?;
        seq.serialize_element(&self.similarity.map(round))?;
        seq.serialize_element(&self.selected)?;
        seq.end()
    }
}

/// A score as a results file holds it: written as the shortest decimal that reads back as
/// the same `f32`, read as an `f64`.
fn as_written(x: f32) -> f64 {
    serde_json::to_string(&x)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(f64::from(x))
}

/// Six decimals are more than a bar or a percentage shows, and keep 20,000 records small.
fn round(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1e6).round() / 1e6
    } else {
        0.0
    }
}

/// One image as the page receives it.
#[derive(Debug, Clone, Serialize)]
pub struct PageRecord {
    /// The path as the results name it (shown, searched, exported).
    pub path: String,
    /// Thumbnail URL: relative to the page, or a `data:` URI; absent when none was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumb: Option<String>,
    /// Why there is no thumbnail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumb_error: Option<String>,
    /// The image's absolute path, where it was found (exports name it, so they work from
    /// any folder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// `file:` URL of the original image for the detail view (not in self-contained pages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// Scores, best first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<PageScore>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncertain: Option<bool>,
    /// Multi-label: the selected labels' numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected: Option<Vec<usize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Eval pages: the true label's number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truth: Option<usize>,
    /// What `vlm caption` wrote about the image (or `vlm ask`'s question and answer),
    /// shown and searched as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// How sure the model was of the caption: its log-probability per token
    /// (mean over the generated tokens); "least sure first" sorts captions by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_log_prob: Option<f64>,
    /// Joined records: what failed in one results file while another had a result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl PageRecord {
    /// A record with a path and nothing else.
    pub fn new(path: String) -> Self {
        Self {
            path,
            thumb: None,
            thumb_error: None,
            file: None,
            src: None,
            scores: Vec::new(),
            uncertain: None,
            selected: None,
            error: None,
            truth: None,
            caption: None,
            token_log_prob: None,
            note: None,
        }
    }

    /// A page record for a result of this run, the same as for its line in a results file
    /// (the scores as that file writes them); its labels are numbered in `labels`.
    pub fn from_image_result(result: &ImageResult, labels: &mut LabelIndex) -> Self {
        let (results, error) = match &result.outcome {
            Outcome::Ranked(ranked) => (
                Some(
                    ranked
                        .iter()
                        .map(|r| ResultLine {
                            label: r.label.clone(),
                            probability: as_written(r.probability),
                            similarity: Some(as_written(r.similarity)),
                            selected: r.selected,
                        })
                        .collect(),
                ),
                None,
            ),
            Outcome::Failed(message) => (None, Some(message.clone())),
        };
        Self::from_result(
            ResultRecord {
                path: result.path.clone(),
                results,
                error,
                uncertain: result.uncertain,
                labels: result.labels.clone(),
                caption: None,
                question: None,
                answer: None,
                log_prob: None,
                tokens: None,
            },
            labels,
        )
    }

    /// A page record for a results line; its labels are numbered in `labels`.
    pub fn from_result(record: ResultRecord, labels: &mut LabelIndex) -> Self {
        let mut scores: Vec<PageScore> = record
            .results
            .unwrap_or_default()
            .into_iter()
            .map(|r| PageScore {
                label: labels.id(&r.label),
                probability: r.probability,
                similarity: r.similarity,
                selected: r.selected,
            })
            .collect();
        // vlm writes them best first; a file from elsewhere may not.
        scores.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        let selected = record
            .labels
            .map(|names| names.iter().map(|n| labels.id(n)).collect());
        let caption = match (record.caption, record.question, record.answer) {
            (Some(caption), _, _) => Some(caption),
            (None, Some(question), Some(answer)) => Some(format!("{question} \u{2192} {answer}")),
            _ => None,
        };
        let token_log_prob = caption
            .as_ref()
            .and_then(|_| per_token(record.log_prob?, record.tokens.as_deref()?));
        Self {
            scores,
            uncertain: record.uncertain,
            selected,
            error: record.error,
            caption,
            token_log_prob,
            ..Self::new(record.path)
        }
    }
}

/// Records of several results files joined by path (`./a.jpg` and `a.jpg` are one image):
/// one record per image, in the order images first appear, with the first file's labels
/// and every file's captions and answers.
#[derive(Debug, Default)]
pub struct Joined {
    records: Vec<PageRecord>,
    /// Why a part failed, per record: (results file, message).
    failures: Vec<Vec<(String, String)>>,
    by_path: HashMap<String, usize>,
}

impl Joined {
    /// Adds a record read from the results file `source`.
    pub fn add(&mut self, mut record: PageRecord, source: &str) {
        let failure = record.error.take().map(|e| (source.to_string(), e));
        let key = join_key(&record.path).to_string();
        let Some(&at) = self.by_path.get(&key) else {
            self.by_path.insert(key, self.records.len());
            self.records.push(record);
            self.failures.push(failure.into_iter().collect());
            return;
        };
        let joined = &mut self.records[at];
        if joined.scores.is_empty() && !record.scores.is_empty() {
            joined.scores = record.scores;
            joined.uncertain = record.uncertain;
            joined.selected = record.selected;
        }
        // The least sure of the captions stands for them all.
        joined.token_log_prob = match (joined.token_log_prob, record.token_log_prob) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(text) = record.caption {
            joined.caption = Some(match joined.caption.take() {
                Some(before) if before != text => format!("{before}\n{text}"),
                _ => text,
            });
        }
        self.failures[at].extend(failure);
    }

    /// The joined records. An image that failed everywhere is failed (with its first
    /// message); one that failed in some file only keeps the failure as a note.
    pub fn into_records(self) -> Vec<PageRecord> {
        let mut records = self.records;
        for (record, failures) in records.iter_mut().zip(self.failures) {
            let Some((_, first)) = failures.first() else {
                continue;
            };
            if record.scores.is_empty() && record.caption.is_none() {
                record.error = Some(first.clone());
            } else {
                let notes: Vec<String> = failures
                    .iter()
                    .map(|(source, message)| format!("failed in {source}: {message}"))
                    .collect();
                record.note = Some(notes.join("; "));
            }
        }
        records
    }
}

/// The path two results files must agree on: without leading `./`.
fn join_key(path: &str) -> &str {
    let mut key = path;
    while let Some(rest) = key.strip_prefix("./") {
        key = rest.trim_start_matches('/');
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> ResultRecord {
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn every_kind_of_classify_line_becomes_a_record() {
        let mut labels = LabelIndex::default();
        let single = PageRecord::from_result(
            parse(
                r#"{"path":"a.jpg","uncertain":true,"results":[{"label":"cat","prompt":"p","probability":0.4,"similarity":0.2},{"label":"dog","prompt":"p","probability":0.6,"similarity":0.3}]}"#,
            ),
            &mut labels,
        );
        assert_eq!(single.scores[0].label, 1, "sorted best first");
        assert_eq!(single.uncertain, Some(true));
        let multi = PageRecord::from_result(
            parse(
                r#"{"path":"b.jpg","labels":["dog"],"results":[{"label":"dog","prompt":"p","probability":0.9,"similarity":0.3,"selected":true},{"label":"car","prompt":"p","probability":0.8,"similarity":0.1,"selected":false}]}"#,
            ),
            &mut labels,
        );
        assert_eq!(multi.selected, Some(vec![1]));
        assert_eq!(labels.names(), ["cat", "dog", "car"]);
        let failed = PageRecord::from_result(
            parse(r#"{"path":"c.jpg","error":"cannot decode c.jpg"}"#),
            &mut labels,
        );
        assert!(failed.scores.is_empty());
        let json = serde_json::to_string(&failed).unwrap();
        assert_eq!(json, r#"{"path":"c.jpg","error":"cannot decode c.jpg"}"#);
        let json = serde_json::to_string(&single.scores[0]).unwrap();
        assert_eq!(json, "[1,0.6,0.3,null]");
    }

    #[test]
    fn caption_and_answer_lines_carry_their_text() {
        let mut labels = LabelIndex::default();
        let caption = PageRecord::from_result(
            parse(
                r#"{"path":"a.jpg","caption":"a red bicycle","log_prob":-3.3,"tokens":[30522,1037,2417,102],"model":"m"}"#,
            ),
            &mut labels,
        );
        assert_eq!(caption.caption.as_deref(), Some("a red bicycle"));
        assert!(caption.scores.is_empty() && caption.error.is_none());
        // Three generated tokens after the start token.
        assert_eq!(caption.token_log_prob, Some(-1.1));
        let json = serde_json::to_string(&caption).unwrap();
        assert!(json.contains(r#""token_log_prob":-1.1"#), "{json}");
        let answer = PageRecord::from_result(
            parse(
                r#"{"path":"a.jpg","question":"what colour?","answer":"red","log_prob":-0.5,"tokens":[30522,2417]}"#,
            ),
            &mut labels,
        );
        assert_eq!(answer.caption.as_deref(), Some("what colour? \u{2192} red"));
        assert_eq!(answer.token_log_prob, Some(-0.5));
        assert!(labels.names().is_empty());
        // Nothing generated, or no sequence: no sureness rather than a division by zero.
        for line in [
            r#"{"path":"a.jpg","caption":"","log_prob":0.0,"tokens":[30522]}"#,
            r#"{"path":"a.jpg","caption":"x","log_prob":-1.0}"#,
            r#"{"path":"a.jpg","log_prob":-1.0,"tokens":[1,2,3]}"#,
        ] {
            let record = PageRecord::from_result(parse(line), &mut labels);
            assert_eq!(record.token_log_prob, None, "{line}");
        }
    }

    #[test]
    fn joined_files_give_one_record_per_image_with_labels_and_captions() {
        let mut labels = LabelIndex::default();
        let mut joined = Joined::default();
        let mut add = |line: &str, source: &str| {
            joined.add(PageRecord::from_result(parse(line), &mut labels), source);
        };
        add(
            r#"{"path":"a.jpg","results":[{"label":"cat","probability":0.9}]}"#,
            "labels.jsonl",
        );
        add(
            r#"{"path":"b.jpg","error":"cannot decode b.jpg"}"#,
            "labels.jsonl",
        );
        add(r#"{"path":"c.jpg","error":"gone"}"#, "labels.jsonl");
        add(r#"{"path":"./b.jpg","caption":"a dog"}"#, "captions.jsonl");
        add(
            r#"{"path":"./a.jpg","caption":"a cat","log_prob":-2.0,"tokens":[0,1,2]}"#,
            "captions.jsonl",
        );
        add(
            r#"{"path":"a.jpg","caption":"a kitten","log_prob":-4.0,"tokens":[0,1,2]}"#,
            "more.jsonl",
        );
        add(
            r#"{"path":"d.jpg","caption":"only captioned"}"#,
            "captions.jsonl",
        );
        add(r#"{"path":"c.jpg","error":"still gone"}"#, "captions.jsonl");
        let records = joined.into_records();
        let paths: Vec<&str> = records.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]);
        assert_eq!(records[0].scores[0].label, 0);
        assert_eq!(records[0].caption.as_deref(), Some("a cat\na kitten"));
        // The less sure caption of the two.
        assert_eq!(records[0].token_log_prob, Some(-2.0));
        assert!(records[0].error.is_none() && records[0].note.is_none());
        // Captioned though its labels failed: not a failed image, the failure a note.
        assert_eq!(records[1].caption.as_deref(), Some("a dog"));
        assert!(records[1].error.is_none());
        assert_eq!(
            records[1].note.as_deref(),
            Some("failed in labels.jsonl: cannot decode b.jpg")
        );
        assert_eq!(records[2].error.as_deref(), Some("gone"));
        assert_eq!(records[3].caption.as_deref(), Some("only captioned"));
        assert!(records[3].scores.is_empty());
    }

    #[test]
    fn unknown_fields_and_sigmoid_scores_are_accepted() {
        let mut labels = LabelIndex::default();
        let record = PageRecord::from_result(
            parse(
                r#"{"path":"a.jpg","model":"x","results":[{"label":"a","probability":0.9},{"label":"b","probability":0.8}]}"#,
            ),
            &mut labels,
        );
        let total: f64 = record.scores.iter().map(|s| s.probability).sum();
        assert!((total - 1.7).abs() < 1e-9);
    }
}
