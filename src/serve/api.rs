//! The requests and responses of `vlm serve`, as JSON, and what each request asks for in
//! the library's terms: texts or images to embed, an image reference to fetch, labels,
//! templates and decisions to classify with, a prompt or questions and the generation
//! settings to caption or answer with. Nothing here runs a model.

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::describe::Generate;
use crate::caption::{GenerationOptions, Request, MAX_BEAMS, MAX_NEW_TOKENS};
use crate::decide::{self, DecideError, Decisions};
use crate::labels::{self, LabelError, PromptSet, Template, Templates};

/// A request that cannot be served as sent: the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

impl BadRequest {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl From<LabelError> for BadRequest {
    fn from(error: LabelError) -> Self {
        match error {
            // The library's message names the command-line flags.
            LabelError::None => Self::new(
                "no labels given; send \"labels\": [\"dog\", \"cat\"] (or \"dog,cat\"), or \
                 \"labels_file\" with one label per line",
            ),
            other => Self(other.to_string()),
        }
    }
}

impl From<DecideError> for BadRequest {
    fn from(error: DecideError) -> Self {
        // The messages name the flags; the request's fields have the same names.
        Self(
            error
                .to_string()
                .replace("--min-probability", "min_probability")
                .replace("--threshold", "threshold"),
        )
    }
}

/// Parses a request body; the message quotes serde's reason (field and position).
pub fn parse<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, BadRequest> {
    serde_json::from_slice(body)
        .map_err(|e| BadRequest(format!("the body is not a valid {what} request: {e}")))
}

/// One string or a list of them (OpenAI's `input`, a request's labels or templates).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
    /// Token ids (OpenAI allows them for its own tokenizers); refused with a message.
    Tokens(serde_json::Value),
}

impl OneOrMany {
    /// The strings, in order.
    fn into_strings(self, field: &str) -> Result<Vec<String>, BadRequest> {
        match self {
            Self::One(one) => Ok(vec![one]),
            Self::Many(many) => Ok(many),
            Self::Tokens(_) => Err(BadRequest(format!(
                "\"{field}\" must be a string or a list of strings (token ids are not taken: \
                 send the text)"
            ))),
        }
    }
}

/// What the inputs of an embeddings request are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// Texts, embedded by the text tower as given (no template).
    #[default]
    Text,
    /// Images: http(s) URLs or `data:` URIs.
    Image,
}

/// How embeddings are written in the response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// A JSON array of numbers.
    #[default]
    Float,
    /// The little-endian float32 bytes, base64 (what OpenAI's Python client asks for).
    Base64,
}

/// `POST /v1/embeddings`, in OpenAI's shape, with Infinity's `modality` for images.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    pub input: OneOrMany,
    // `model`: any value is accepted (and ignored): the response names the loaded model.
    #[serde(default)]
    pub modality: Modality,
    #[serde(default)]
    pub encoding_format: EncodingFormat,
    /// Must be the model's own dimension when given (CLIP embeddings cannot be cut).
    #[serde(default)]
    pub dimensions: Option<usize>,
}

/// The most texts one embeddings request may hold (OpenAI's own limit).
pub const MAX_TEXTS: usize = 2048;

impl EmbeddingsRequest {
    /// The inputs, checked against the limits and the model's dimension `dim`.
    pub fn inputs(self, dim: usize) -> Result<(Modality, Vec<String>), BadRequest> {
        if let Some(asked) = self.dimensions.filter(|&d| d != dim) {
            return Err(BadRequest(format!(
                "\"dimensions\" is {asked}, but this model's embeddings have {dim}; leave it out"
            )));
        }
        let inputs = self.input.into_strings("input")?;
        if inputs.is_empty() {
            return Err(BadRequest::new(
                "\"input\" is an empty list; send at least one",
            ));
        }
        if self.modality == Modality::Text && inputs.len() > MAX_TEXTS {
            return Err(BadRequest(format!(
                "{} texts in one request; send at most {MAX_TEXTS}",
                inputs.len()
            )));
        }
        Ok((self.modality, inputs))
    }
}

/// One embedding of the response.
#[derive(Debug, Serialize)]
pub struct EmbeddingData {
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingValue,
}

/// An embedding as numbers or as base64 of its float32 bytes.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

impl EmbeddingValue {
    /// `row` in `format`.
    pub fn new(row: Vec<f32>, format: EncodingFormat) -> Self {
        match format {
            EncodingFormat::Float => Self::Float(row),
            EncodingFormat::Base64 => {
                let bytes: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
                Self::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }
}

/// Tokens read, as OpenAI reports them (images count none).
#[derive(Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

/// The response of `POST /v1/embeddings`.
#[derive(Debug, Serialize)]
pub struct EmbeddingsResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: Usage,
}

impl EmbeddingsResponse {
    /// The response for `rows` (in input order) of `model`, with `tokens` read.
    pub fn new(rows: Vec<Vec<f32>>, format: EncodingFormat, model: &str, tokens: usize) -> Self {
        Self {
            object: "list",
            data: rows
                .into_iter()
                .enumerate()
                .map(|(index, row)| EmbeddingData {
                    object: "embedding",
                    index,
                    embedding: EmbeddingValue::new(row, format),
                })
                .collect(),
            model: model.to_string(),
            usage: Usage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        }
    }
}

/// The response of `GET /v1/models`: the one model loaded.
#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: [ModelCard; 1],
}

/// One model of [`ModelList`].
#[derive(Debug, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// What it does: `classify`, `caption` or `answer` (as `vlm models` says).
    pub task: &'static str,
}

impl ModelList {
    /// The list holding `id`, which does `task`.
    pub fn of(id: &str, task: &'static str) -> Self {
        Self {
            object: "list",
            data: [ModelCard {
                id: id.to_string(),
                object: "model",
                created: 0,
                owned_by: "vlm",
                task,
            }],
        }
    }
}

/// Where a request's image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// The bytes of a `data:` URI.
    Bytes(Vec<u8>),
    /// An http(s) URL, fetched with the CLI's limits.
    Url(String),
}

/// Reads an image reference: a `data:[<type>];base64,<data>` URI or an http(s) URL.
/// `which` names it in messages ("image", "input 3").
pub fn image_ref(reference: &str, which: &str) -> Result<ImageRef, BadRequest> {
    if let Some(rest) = strip_prefix_ignore_case(reference, "data:") {
        let Some((meta, data)) = rest.split_once(',') else {
            return Err(BadRequest(format!(
                "{which}: a data: URI needs a comma before its data, as in \
                 data:image/jpeg;base64,/9j/..."
            )));
        };
        if !meta
            .rsplit(';')
            .next()
            .is_some_and(|p| p.eq_ignore_ascii_case("base64"))
        {
            return Err(BadRequest(format!(
                "{which}: only base64 data: URIs are taken; send data:image/jpeg;base64,..."
            )));
        }
        return decode_base64(data)
            .map(ImageRef::Bytes)
            .map_err(|e| BadRequest(format!("{which}: the data: URI's base64 is invalid: {e}")));
    }
    if crate::inputs::is_url(reference) {
        return Ok(ImageRef::Url(reference.to_string()));
    }
    let shown: String = reference.chars().take(40).collect();
    Err(BadRequest(format!(
        "{which} ({shown:?}...) is neither an http(s) URL nor a data: URI; send \
         data:image/jpeg;base64,<the file's bytes in base64> or an http(s) URL"
    )))
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Standard base64, padded or not, ignoring line breaks and spaces (MIME-style wrapping).
fn decode_base64(data: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        general_purpose::GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    if data.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: Vec<u8> = data.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        LENIENT.decode(compact)
    } else {
        LENIENT.decode(data)
    }
}

/// `POST /v1/classify`: one image and what `vlm classify` takes to label it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    /// Any value is accepted: the scoring is the loaded model's.
    #[serde(default, rename = "model")]
    pub _model: serde::de::IgnoredAny,
    /// A `data:` URI or an http(s) URL.
    pub image: String,
    /// What the result's `path` says [default: the URL, or "image"].
    #[serde(default)]
    pub name: Option<String>,
    /// As `--labels`: a list, or one comma-separated string; "cat|kitten" makes synonyms.
    #[serde(default)]
    pub labels: Option<OneOrMany>,
    /// As `--labels-file`, the file's text: one label per line, `#` comments.
    #[serde(default)]
    pub labels_file: Option<String>,
    /// As `--template`.
    #[serde(default)]
    pub template: Option<String>,
    /// As `--templates`: `imagenet80`, `imagenet7`, a templates file's text, or a list.
    #[serde(default)]
    pub templates: Option<OneOrMany>,
    #[serde(default)]
    pub multi_label: bool,
    #[serde(default)]
    pub threshold: Option<f32>,
    #[serde(default)]
    pub min_probability: Option<f32>,
    #[serde(default)]
    pub top_k: Option<usize>,
}

/// A classify request taken apart: the image, its name, the prompts and the decisions.
#[derive(Debug)]
pub struct ClassifyPlan {
    pub image: ImageRef,
    pub name: String,
    /// The labels as given (synonyms unsplit), with `prompts` the key of its scorer.
    pub labels: Vec<String>,
    pub prompts: PromptSet,
    pub decisions: Decisions,
    /// `threshold` as given (its default depends on the model's scoring).
    pub threshold: Option<f32>,
}

impl ClassifyRequest {
    /// Checks the request as `vlm classify` checks its flags.
    pub fn plan(self) -> Result<ClassifyPlan, BadRequest> {
        let labels = match (self.labels, self.labels_file) {
            (Some(_), Some(_)) => {
                return Err(BadRequest::new(
                    "give \"labels\" or \"labels_file\", not both",
                ))
            }
            (Some(OneOrMany::One(list)), None) => labels::parse_list(&list)?,
            (Some(list), None) => labels::check(list.into_strings("labels")?)?,
            (None, Some(text)) => labels::parse_lines(&text)?,
            (None, None) => return Err(LabelError::None.into()),
        };
        let templates = match (self.template, self.templates) {
            (Some(_), Some(_)) => {
                return Err(BadRequest::new(
                    "give \"template\" or \"templates\", not both",
                ))
            }
            (Some(template), None) => Templates::single(Template::new(&template)?),
            (None, Some(OneOrMany::One(set))) => match Templates::named(&set) {
                Some(named) => named,
                // Never a path: a request cannot make the server read its files.
                None => Templates::parse(&set, "templates".into())?,
            },
            (None, Some(list)) => Templates::parse(
                &list.into_strings("templates")?.join("\n"),
                "templates".into(),
            )?,
            (None, None) => Templates::single(Template::default()),
        };
        if self.threshold.is_some() && !self.multi_label {
            return Err(BadRequest::new(
                "\"threshold\" applies with \"multi_label\": true; add it or leave the threshold out",
            ));
        }
        if self.min_probability.is_some() && self.multi_label {
            return Err(BadRequest::new(
                "\"min_probability\" applies to single-label results; leave it out with \
                 \"multi_label\": true",
            ));
        }
        if self.top_k == Some(0) {
            return Err(BadRequest::new("\"top_k\" must be at least 1"));
        }
        let decisions = Decisions::new(
            self.top_k,
            self.multi_label
                .then_some(self.threshold.unwrap_or(decide::DEFAULT_COSINE_THRESHOLD)),
            self.min_probability,
        )?;
        let image = image_ref(&self.image, "image")?;
        let name = name_of(self.name, &image);
        let prompts = PromptSet::new(&labels, &templates)?;
        Ok(ClassifyPlan {
            image,
            name,
            labels,
            prompts,
            decisions,
            threshold: self.threshold,
        })
    }
}

/// What the result's `path` says: the name given, else the URL, else "image".
fn name_of(name: Option<String>, image: &ImageRef) -> String {
    name.unwrap_or_else(|| match image {
        ImageRef::Url(url) => url.clone(),
        ImageRef::Bytes(_) => "image".to_string(),
    })
}

/// The generation settings of a request's `beams` and `max_new_tokens`, checked as the
/// command's flags are.
fn generation(
    beams: Option<u64>,
    max_new_tokens: Option<u64>,
) -> Result<GenerationOptions, BadRequest> {
    let beams = beams.unwrap_or(1);
    if !(1..=MAX_BEAMS).contains(&beams) {
        return Err(BadRequest(format!(
            "\"beams\" is {beams}; give 1 (greedy) to {MAX_BEAMS}"
        )));
    }
    if let Some(n) = max_new_tokens.filter(|n| !(1..=MAX_NEW_TOKENS).contains(n)) {
        return Err(BadRequest(format!(
            "\"max_new_tokens\" is {n}; give 1 to {MAX_NEW_TOKENS}, or leave it out for 20"
        )));
    }
    Ok(GenerationOptions {
        num_beams: usize::try_from(beams).unwrap_or(1),
        max_new_tokens: max_new_tokens.and_then(|n| usize::try_from(n).ok()),
        ..GenerationOptions::default()
    })
}

/// `POST /v1/caption`: one image and what `vlm caption` takes to caption it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionRequest {
    /// Any value is accepted: the caption is the loaded model's.
    #[serde(default, rename = "model")]
    pub _model: serde::de::IgnoredAny,
    /// A `data:` URI or an http(s) URL.
    pub image: String,
    /// What the result's `path` says [default: the URL, or "image"].
    #[serde(default)]
    pub name: Option<String>,
    /// As `--prompt`: the words the caption starts with.
    #[serde(default)]
    pub prompt: Option<String>,
    /// As `--beams`.
    #[serde(default)]
    pub beams: Option<u64>,
    /// As `--max-new-tokens`.
    #[serde(default)]
    pub max_new_tokens: Option<u64>,
}

/// `POST /v1/ask`: one image and what `vlm ask` takes to answer about it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// Any value is accepted: the answers are the loaded model's.
    #[serde(default, rename = "model")]
    pub _model: serde::de::IgnoredAny,
    /// A `data:` URI or an http(s) URL.
    pub image: String,
    /// What the result's `path` says [default: the URL, or "image"].
    #[serde(default)]
    pub name: Option<String>,
    /// One question: the answer is one record.
    #[serde(default)]
    pub question: Option<String>,
    /// As `--question` repeated: the answers are a list of records, in this order.
    #[serde(default)]
    pub questions: Option<Vec<String>>,
    /// As `--beams`.
    #[serde(default)]
    pub beams: Option<u64>,
    /// As `--max-new-tokens`.
    #[serde(default)]
    pub max_new_tokens: Option<u64>,
}

/// A caption or question request taken apart: the image, its name, and what to generate.
#[derive(Debug)]
pub struct DescribePlan {
    pub image: ImageRef,
    pub name: String,
    pub generate: Generate,
    /// The answer is a list of records (`questions`), not one.
    pub list: bool,
}

impl CaptionRequest {
    /// Checks the request as `vlm caption` checks its flags.
    pub fn plan(self) -> Result<DescribePlan, BadRequest> {
        if self.prompt.as_deref().is_some_and(|p| p.trim().is_empty()) {
            return Err(BadRequest::new(
                "\"prompt\" is empty; give the words the caption should start with, or leave it out",
            ));
        }
        let options = generation(self.beams, self.max_new_tokens)?;
        let image = image_ref(&self.image, "image")?;
        Ok(DescribePlan {
            name: name_of(self.name, &image),
            image,
            generate: Generate {
                request: Request::Caption {
                    prompt: self.prompt,
                },
                options,
            },
            list: false,
        })
    }
}

/// The most questions one request may ask about its image.
pub const MAX_QUESTIONS: usize = 64;

impl AskRequest {
    /// Checks the request as `vlm ask` checks its arguments.
    pub fn plan(self) -> Result<DescribePlan, BadRequest> {
        let (questions, list) = match (self.question, self.questions) {
            (Some(_), Some(_)) => {
                return Err(BadRequest::new(
                    "give \"question\" or \"questions\", not both",
                ))
            }
            (Some(one), None) => (vec![one], false),
            (None, Some(many)) => (many, true),
            (None, None) => return Err(BadRequest::new(
                "no question; send \"question\": \"what is on the table?\" or \"questions\": [...]",
            )),
        };
        if questions.is_empty() {
            return Err(BadRequest::new(
                "\"questions\" is an empty list; send at least one",
            ));
        }
        if questions.len() > MAX_QUESTIONS {
            return Err(BadRequest(format!(
                "{} questions in one request; send at most {MAX_QUESTIONS}",
                questions.len()
            )));
        }
        if let Some(blank) = questions.iter().position(|q| q.trim().is_empty()) {
            return Err(BadRequest(format!(
                "question {} is empty; every question needs words",
                blank + 1
            )));
        }
        let options = generation(self.beams, self.max_new_tokens)?;
        let image = image_ref(&self.image, "image")?;
        Ok(DescribePlan {
            name: name_of(self.name, &image),
            image,
            generate: Generate {
                request: Request::Ask { questions },
                options,
            },
            list,
        })
    }
}

/// The body of every error response, in OpenAI's shape.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

/// What went wrong.
#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(body: &str) -> Result<ClassifyPlan, BadRequest> {
        parse::<ClassifyRequest>(body.as_bytes(), "classify")?.plan()
    }

    #[test]
    fn data_uris_and_urls() {
        assert_eq!(
            image_ref("data:image/png;base64,aGVsbG8=", "image"),
            Ok(ImageRef::Bytes(b"hello".to_vec()))
        );
        // No padding, line breaks, upper-case scheme, no media type.
        assert_eq!(
            image_ref("DATA:;base64,aGVs\nbG8", "image"),
            Ok(ImageRef::Bytes(b"hello".to_vec()))
        );
        assert_eq!(
            image_ref("https://example.com/a.jpg", "image"),
            Ok(ImageRef::Url("https://example.com/a.jpg".into()))
        );
        let refused = |r: &str| image_ref(r, "input 2").unwrap_err().0;
        assert!(refused("data:image/png,hello").contains("only base64"));
        assert!(refused("data:image/png;base64").contains("needs a comma"));
        assert!(refused("data:;base64,a$b").contains("input 2: the data: URI's base64"));
        assert!(refused("/etc/passwd").contains("neither an http(s) URL nor a data: URI"));
        assert!(refused("file:///etc/passwd").contains("neither"));
    }

    #[test]
    fn embeddings_requests() {
        let request: EmbeddingsRequest =
            parse(br#"{"input": "a cat", "model": "x"}"#, "embeddings").unwrap();
        assert_eq!(request.encoding_format, EncodingFormat::Float);
        assert_eq!(
            request.inputs(16).unwrap(),
            (Modality::Text, vec!["a cat".into()])
        );
        let request: EmbeddingsRequest = parse(
            br#"{"input": ["data:;base64,AA=="], "modality": "image", "encoding_format": "base64", "dimensions": 16}"#,
            "embeddings",
        )
        .unwrap();
        assert_eq!(request.encoding_format, EncodingFormat::Base64);
        assert_eq!(request.inputs(16).unwrap().0, Modality::Image);
        let bad = |body: &str| {
            parse::<EmbeddingsRequest>(body.as_bytes(), "embeddings")
                .and_then(|r| r.inputs(16))
                .unwrap_err()
                .0
        };
        assert!(bad(r#"{"input": [1, 2, 3]}"#).contains("token ids are not taken"));
        assert!(bad(r#"{"input": []}"#).contains("empty list"));
        assert!(bad(r#"{"input": "a", "dimensions": 8}"#).contains("have 16"));
        assert!(bad(r#"{"input": "a", "modality": "audio"}"#).contains("not a valid embeddings"));
        assert!(bad(r#"{"inputs": "a"}"#).contains("missing field `input`"));
    }

    #[test]
    fn base64_embeddings_are_little_endian_float32() {
        let EmbeddingValue::Base64(text) =
            EmbeddingValue::new(vec![1.0, -2.5], EncodingFormat::Base64)
        else {
            panic!("base64 asked")
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat()
        );
    }

    #[test]
    fn classify_requests_take_what_the_cli_takes() {
        let plan =
            classify(r#"{"image": "data:;base64,AA==", "labels": "cat|kitten, dog"}"#).unwrap();
        assert_eq!(plan.labels, ["cat|kitten", "dog"]);
        assert_eq!(plan.prompts.prompts.len(), 3);
        assert_eq!(plan.name, "image");
        let plan = classify(
            r##"{"image": "https://x/y.png", "labels_file": "# animals\ncat\n\ndog, wild\n",
                "templates": ["a {}", "the {}"], "multi_label": true, "threshold": 0.3, "top_k": 1}"##,
        )
        .unwrap();
        assert_eq!(plan.labels, ["cat", "dog, wild"]);
        assert_eq!(
            plan.prompts.prompts,
            ["a cat", "the cat", "a dog, wild", "the dog, wild"]
        );
        assert_eq!(plan.name, "https://x/y.png");
        assert_eq!(plan.decisions.multi_label, Some(0.3));
        assert_eq!(plan.threshold, Some(0.3));
        let plan = classify(
            r#"{"image": "data:;base64,AA==", "labels": ["a", "b"], "templates": "imagenet7"}"#,
        )
        .unwrap();
        assert_eq!(plan.prompts.prompts.len(), 14);
    }

    #[test]
    fn classify_requests_are_refused_with_a_reason() {
        let refused = |body: &str| classify(body).unwrap_err().0;
        assert!(refused(r#"{"image": "data:;base64,AA=="}"#).contains("no labels given; send"));
        assert!(refused(r#"{"image": "data:;base64,AA==", "labels": "a,a"}"#).contains("twice"));
        assert!(
            refused(r#"{"image": "data:;base64,AA==", "labels": "a", "labels_file": "b"}"#)
                .contains("not both")
        );
        assert!(
            refused(r#"{"image": "data:;base64,AA==", "labels": "a", "template": "no slot"}"#)
                .contains("placeholder")
        );
        // A templates string that is no set name is a file's text, never a path to read.
        assert!(refused(
            r#"{"image": "data:;base64,AA==", "labels": "a", "templates": "/etc/hostname"}"#
        )
        .contains("templates: line 1"));
        assert!(
            refused(r#"{"image": "data:;base64,AA==", "labels": "a", "threshold": 0.2}"#)
                .contains("\"multi_label\": true")
        );
        assert!(
            refused(r#"{"image": "data:;base64,AA==", "labels": "a", "min_probability": 2}"#)
                .contains("min_probability must be between 0 and 1")
        );
        assert!(
            refused(r#"{"image": "data:;base64,AA==", "labels": "a", "top_k": 0}"#)
                .contains("at least 1")
        );
        assert!(
            refused(r#"{"image": "data:;base64,AA==", "labels": "a", "colour": 1}"#)
                .contains("unknown field `colour`")
        );
    }

    #[test]
    fn caption_and_ask_requests_are_checked_as_the_commands_check_their_flags() {
        let caption = |body: &str| parse::<CaptionRequest>(body.as_bytes(), "caption")?.plan();
        let ask = |body: &str| parse::<AskRequest>(body.as_bytes(), "ask")?.plan();
        let image = r#""image": "data:;base64,AA==""#;
        let plan = caption(&format!(
            r#"{{{image}, "prompt": "a photo of", "beams": 3, "max_new_tokens": 7}}"#
        ))
        .unwrap();
        assert_eq!(plan.name, "image");
        assert!(!plan.list);
        assert_eq!(
            plan.generate.request,
            Request::Caption {
                prompt: Some("a photo of".into())
            }
        );
        assert_eq!(plan.generate.options.num_beams, 3);
        assert_eq!(plan.generate.options.max_new_tokens, Some(7));
        let plan = ask(&format!(
            r#"{{{image}, "questions": ["a?", "b?"], "name": "x"}}"#
        ))
        .unwrap();
        assert!(plan.list);
        assert_eq!(plan.name, "x");
        assert_eq!(plan.generate.options, GenerationOptions::default());
        assert!(
            !ask(&format!(r#"{{{image}, "question": "a?"}}"#))
                .unwrap()
                .list
        );
        let refused = |result: Result<DescribePlan, BadRequest>| result.unwrap_err().0;
        for (body, says) in [
            (r#""prompt": "  ""#, "\"prompt\" is empty"),
            (r#""beams": 0"#, "\"beams\" is 0"),
            (r#""beams": 65"#, "\"beams\" is 65"),
            (r#""max_new_tokens": 0"#, "\"max_new_tokens\" is 0"),
            (r#""question": "a?""#, "unknown field `question`"),
        ] {
            let message = refused(caption(&format!("{{{image}, {body}}}")));
            assert!(message.contains(says), "{body}: {message}");
        }
        for (body, says) in [
            ("", "no question"),
            (r#""question": "a?", "questions": ["b?"]"#, "not both"),
            (r#""questions": []"#, "empty list"),
            (r#""questions": ["a?", " "]"#, "question 2 is empty"),
            (
                r#""question": "a?", "prompt": "x""#,
                "unknown field `prompt`",
            ),
        ] {
            let message = refused(ask(&format!(
                "{{{image}{}{body}}}",
                if body.is_empty() { "" } else { ", " }
            )));
            assert!(message.contains(says), "{body}: {message}");
        }
    }
}
