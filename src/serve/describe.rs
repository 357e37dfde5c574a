//! Captions and answers for `vlm serve`: a caption or question request's image goes
//! through the encoder queue like any other ([`Generate`] is what it asks), and
//! [`Generator`], the sink of the server's job, generates for each batch of encodings:
//! requests that share their settings (captions: the prompt and the generation options;
//! answers: the options) are generated together, each sequence finishing on its own as in
//! `vlm caption` and `vlm ask`.

use std::time::Instant;

use super::metrics::Metrics;
use super::queue::{Ask, ImageRequest};
use crate::caption::records::{self, Record, Said};
use crate::caption::{CaptionError, Captioner, Generated, GenerationOptions, Request};
use crate::job::{Embedded, Item, JobError, Level, Progress, Sink};
use crate::progress::input_message;

/// What a caption or question request asks of its image.
#[derive(Debug, Clone, PartialEq)]
pub struct Generate {
    /// A caption (with its prompt), or the answers to the questions.
    pub request: Request,
    pub options: GenerationOptions,
}

impl Ask for Generate {
    /// One caption, or one answer per question, in the order asked.
    type Answer = Vec<Generated>;
}

impl Generate {
    /// The questions asked (none for a caption).
    fn questions(&self) -> &[String] {
        match &self.request {
            Request::Caption { .. } => &[],
            Request::Ask { questions } => questions,
        }
    }

    /// Whether `self` and `other` can be generated in one batch: the same kind, prompt
    /// and options (questions may differ: each sequence has its own).
    fn shares_generation(&self, other: &Self) -> bool {
        let same_kind = match (&self.request, &other.request) {
            (Request::Caption { prompt: a }, Request::Caption { prompt: b }) => a == b,
            (Request::Ask { .. }, Request::Ask { .. }) => true,
            _ => false,
        };
        same_kind && self.options == other.options
    }

    /// The JSON of the response: what `vlm caption --format json` or `vlm ask --format
    /// json` writes for the image named `path` with `model` (one record; a list of
    /// records when `list`, one per question).
    pub fn response(
        &self,
        path: &str,
        model: &str,
        generated: &[Generated],
        list: bool,
    ) -> serde_json::Result<Vec<u8>> {
        let questions: Vec<Option<&str>> = match &self.request {
            Request::Caption { .. } => vec![None],
            Request::Ask { questions } => questions.iter().map(|q| Some(q.as_str())).collect(),
        };
        let answers = matches!(self.request, Request::Ask { .. });
        let kept: Vec<Record<'_>> = questions
            .into_iter()
            .zip(generated)
            .map(|(question, generated)| Record {
                path,
                question,
                said: Said::Text(generated),
            })
            .collect();
        let json: Vec<_> = kept
            .iter()
            .map(|record| records::json(record, model, answers))
            .collect();
        match json.first() {
            Some(one) if !list => serde_json::to_vec(one),
            _ => serde_json::to_vec(&json),
        }
    }
}

/// The sink of a BLIP server's job: generates the captions or answers of each batch and
/// hands them to the requests; a bad image is its request's message.
pub struct Generator<'a> {
    pub captioner: &'a Captioner,
    pub metrics: &'a Metrics,
}

type Done = Embedded<ImageRequest<Generate>>;

impl Sink<Done> for Generator<'_> {
    fn write(&mut self, batch: &[Done], progress: &dyn Progress) -> Result<(), JobError> {
        let mut groups: Vec<Vec<&Done>> = Vec::new();
        for done in batch {
            if let Err(err) = &done.embedding {
                done.input
                    .answer(Err(input_message(done.input.name(), err)));
                continue;
            }
            let ask = &done.input.ask;
            match groups
                .iter_mut()
                .find(|g| g[0].input.ask.shares_generation(ask))
            {
                Some(group) => group.push(done),
                None => groups.push(vec![done]),
            }
        }
        for group in groups {
            match self.generate(&group) {
                Ok(answers) => {
                    for (done, answer) in group.iter().zip(answers) {
                        done.input.answer(Ok(answer));
                    }
                }
                Err(err) => {
                    progress.say(
                        Level::Error,
                        &format_args!(
                            "generation failed for {} requests ({err}); they were answered \
                             with an error, and serving goes on",
                            group.len()
                        ),
                    );
                    for done in group {
                        done.input.abandon();
                    }
                }
            }
        }
        Ok(())
    }
}

impl Generator<'_> {
    /// The answers of `group` (requests that share their settings), in its order.
    fn generate(&self, group: &[&Done]) -> Result<Vec<Vec<Generated>>, CaptionError> {
        let Some(first) = group.first().map(|d| &d.input.ask) else {
            return Ok(Vec::new());
        };
        let started = Instant::now();
        let answers = match &first.request {
            Request::Caption { prompt } => {
                let images: Vec<&[f32]> = group.iter().filter_map(|d| d.ok()).collect();
                let captions =
                    self.captioner
                        .caption(&images, prompt.as_deref(), &first.options)?;
                self.metrics.generation(captions.len(), started.elapsed());
                captions.into_iter().map(|c| vec![c]).collect()
            }
            Request::Ask { .. } => {
                // Every question of every request in one batch, split back afterwards.
                let mut images: Vec<&[f32]> = Vec::new();
                let mut questions: Vec<&str> = Vec::new();
                for done in group {
                    let image = done.ok().unwrap_or_default();
                    for question in done.input.ask.questions() {
                        images.push(image);
                        questions.push(question);
                    }
                }
                let mut answers = self
                    .captioner
                    .answer(&images, &questions, &first.options)?
                    .into_iter();
                self.metrics.generation(questions.len(), started.elapsed());
                group
                    .iter()
                    .map(|d| {
                        answers
                            .by_ref()
                            .take(d.input.ask.questions().len())
                            .collect()
                    })
                    .collect()
            }
        };
        Ok(answers)
    }
}
