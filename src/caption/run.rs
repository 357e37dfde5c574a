//! The caption and question runs (`vlm caption`, `vlm ask`): find the inputs, load the BLIP
//! checkpoint, encode every image once with the [`job`](crate::job) (BLIP's vision tower
//! is the job's [`ImageEncoder`](crate::job::ImageEncoder), so the embedding cache keeps
//! its encodings), and let a [`Describer`] sink generate each batch's captions or answers
//! and hand the records to a [`RecordWriter`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::records::{self, Record, RecordWriter, Said};
use super::{CaptionError, Captioner, GenerationOptions};
use crate::cache::EmbeddingCache;
use crate::classify::{say_interrupted, ResultsTo, ResumeError, XmpSettings};
use crate::device;
use crate::inputs::{Input, InputError, InputSpec};
use crate::job::{Embedded, Item, Job, JobError, Level, Progress, Sink, Tally, WriteError};
use crate::model::blip::BlipTask;
use crate::output::OpenError;
use crate::pipeline::PipelineOptions;
use crate::session::{self, ModelSettings, SessionError};
use crate::source::registry::Task;
use crate::source::ModelFiles;
use crate::store::{Address, CaptionRow, CaptionStore, StoreError};
use crate::xmp::{SidecarWriter, Tags};

/// What to say about each image.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// A caption, continuing `prompt` when given ("a photograph of").
    Caption { prompt: Option<String> },
    /// An answer to each question (a question-answering checkpoint).
    Ask { questions: Vec<String> },
}

impl Request {
    fn task(&self) -> BlipTask {
        match self {
            Request::Caption { .. } => BlipTask::Caption,
            Request::Ask { .. } => BlipTask::Answer,
        }
    }

    /// The prompt (captions) or the questions (answers).
    fn texts(&self) -> Vec<&str> {
        match self {
            Request::Caption { prompt } => prompt.as_deref().into_iter().collect(),
            Request::Ask { questions } => questions.iter().map(String::as_str).collect(),
        }
    }

    /// The questions each image gets: one `None` for a caption.
    fn questions(&self) -> Vec<Option<&str>> {
        match self {
            Request::Caption { .. } => vec![None],
            Request::Ask { questions } => questions.iter().map(|q| Some(q.as_str())).collect(),
        }
    }
}

/// Everything a caption or question run needs besides the model.
pub struct Describe {
    pub inputs: InputSpec,
    pub request: Request,
    pub generation: GenerationOptions,
    pub results: ResultsTo,
    /// `--to`: also store the captions beside the embeddings of this table.
    pub store: Option<Address>,
    /// `--write-xmp` (captions): each caption also goes to its image's XMP sidecar, as
    /// `dc:description`.
    pub xmp: Option<XmpSettings>,
}

/// Why a caption or question run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Resume(#[from] ResumeError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Caption(#[from] CaptionError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A loaded BLIP checkpoint, its files, the encoding cache and the pipeline's sizes.
pub struct CaptionSession {
    pub files: ModelFiles,
    pub captioner: Captioner,
    pub cache: Option<EmbeddingCache>,
    pub pipeline: PipelineOptions,
}

impl CaptionSession {
    /// Resolves and loads a checkpoint that does `task` (another is refused before it is
    /// downloaded when the registry or its directory tells, else when its config is
    /// read), and opens the cache.
    pub fn open(
        settings: &ModelSettings,
        task: BlipTask,
        progress: &dyn Progress,
    ) -> Result<Self, DescribeError> {
        let started = Instant::now();
        let wanted = match task {
            BlipTask::Caption => Task::Caption,
            BlipTask::Answer => Task::Answer,
        };
        let files = session::resolve(settings, wanted)?;
        let device = device::select(settings.device).map_err(SessionError::from)?;
        let mut captioner = Captioner::load(
            &files,
            &device,
            settings.dtype,
            &session::load_options(settings)?,
        )?;
        captioner.require(task)?;
        captioner.set_decode_options(session::decode_options(
            settings,
            captioner.preprocess_config(),
        ));
        session::say_loaded(progress, &files.id, started);
        let namespace = session::namespace_of(
            &files,
            captioner.preprocess_config(),
            &captioner.compute_fingerprint(),
            session::PIXEL_PIPELINE_VERSION,
        );
        let cache = session::open_cache(&settings.cache, namespace)?;
        Ok(Self {
            files,
            captioner,
            cache,
            pipeline: settings.pipeline,
        })
    }

    /// A job on the vision tower, with the cache.
    pub fn job(&self) -> Job<'_> {
        Job::new(&self.captioner, self.pipeline).with_cache(self.cache.as_ref())
    }
}

/// A finished (or interrupted) caption or question run.
pub struct Described {
    pub session: CaptionSession,
    pub tally: Tally,
    /// Records written (one per image and question).
    pub records: usize,
    /// Where the records went: "standard output" or the file's path.
    pub written_to: String,
    /// The records went to a file (which `--resume` can finish).
    pub to_file: bool,
    answers: bool,
}

impl Describe {
    /// Finds the inputs, reads what `--resume` keeps, loads the checkpoint, checks the
    /// prompt or questions, then encodes every image not done yet (once, however many
    /// questions it gets) and writes its captions or answers.
    pub fn run(
        self,
        model: &ModelSettings,
        progress: &dyn Progress,
    ) -> Result<Described, DescribeError> {
        // `--files-from -` streams: each line is described while stdin stays open.
        let found = if self.inputs.is_stream() {
            None
        } else {
            Some(self.inputs.find(progress)?)
        };
        let done = self.already_done(progress)?;
        // Connected before the model loads, so that a missing table is said at once.
        let store = self.store.as_ref().map(CaptionStore::open).transpose()?;
        let session = CaptionSession::open(model, self.request.task(), progress)?;
        let captioner = &session.captioner;
        captioner.check(self.request.task(), &self.request.texts(), &self.generation)?;
        let answers = matches!(self.request, Request::Ask { .. });
        let results = &self.results;
        let mut writer = RecordWriter::open(
            results.path.as_deref(),
            results.resume,
            results.format,
            &session.files.id,
            answers,
        )?;
        let questions = self.request.questions();
        let todo = |input: &Input| {
            questions
                .iter()
                .any(|q| !done.contains(&records::record_key(&input.display, *q)))
        };
        let mut describer = Describer {
            captioner,
            request: &self.request,
            options: &self.generation,
            writer: &mut writer,
            done: &done,
            records: 0,
            store,
            model: &session.files.id,
            sidecars: self
                .xmp
                .clone()
                .map(|x| SidecarWriter::new(x.options, x.dry_run)),
        };
        let mut job = session.job();
        if describer.store.is_some() {
            job = job.with_keys();
        }
        let stream_failed = AtomicUsize::new(0);
        let (inputs, rest) = self.inputs.to_run(found, todo, &stream_failed, progress)?;
        for (path, message) in &rest.unreadable {
            describer.write_failed(path, message, progress)?;
        }
        let mut tally = job.run(inputs, &mut describer, progress)?;
        tally.add_found(&rest);
        let records = describer.records;
        let written_to = writer.name().to_string();
        writer.finish()?;
        tally.failed += stream_failed.load(Ordering::Relaxed);
        Ok(Described {
            session,
            tally,
            records,
            written_to,
            to_file: self.results.path.is_some(),
            answers,
        })
    }

    /// With `--resume`: the records already in the results file (said with `--verbose`).
    fn already_done(&self, progress: &dyn Progress) -> Result<HashSet<String>, ResumeError> {
        self.results
            .already_done("records", records::resume, progress)
    }
}

impl Described {
    /// The closing line, or what an interrupted run left, and with `--verbose` the
    /// encoder's work.
    pub fn say_summary(&self, seconds: f64, progress: &dyn Progress) {
        let tally = &self.tally;
        if tally.cancelled {
            let what = if self.answers {
                "answered"
            } else {
                "captioned"
            };
            say_interrupted(self.records, &self.written_to, self.to_file, what, progress);
            return;
        }
        let what = if self.answers {
            format!(
                "answered {} questions about {} images",
                self.records, tally.done
            )
        } else {
            format!("captioned {}", tally.done)
        };
        progress.say(
            Level::Note,
            &format_args!(
                "{what}, failed {}, skipped {} in {seconds:.1} s",
                tally.failed, tally.skipped
            ),
        );
        session::say_stats(tally, self.session.cache.as_ref(), progress);
    }
}

/// The sink of a caption or question run: generates the captions or answers of each batch
/// of image encodings and writes one record per image (and question).
pub struct Describer<'a> {
    captioner: &'a Captioner,
    request: &'a Request,
    options: &'a GenerationOptions,
    writer: &'a mut RecordWriter,
    /// Records already written by an earlier run (`--resume`).
    done: &'a HashSet<String>,
    records: usize,
    /// `--to`: where captions are also stored.
    store: Option<CaptionStore>,
    /// The checkpoint, as stored rows name it.
    model: &'a str,
    /// `--write-xmp`: where captions also go.
    sidecars: Option<SidecarWriter>,
}

impl Describer<'_> {
    fn write(&mut self, record: &Record<'_>, progress: &dyn Progress) -> Result<(), WriteError> {
        let mut written = Ok(());
        progress.suspend(&mut || written = self.writer.write(record));
        self.records += 1;
        written
    }

    /// The failure records of an input (one per question).
    fn write_failed(
        &mut self,
        path: &str,
        message: &str,
        progress: &dyn Progress,
    ) -> Result<(), WriteError> {
        for question in self.request.questions() {
            let record = Record {
                path,
                question,
                said: Said::Failed(message),
            };
            self.write(&record, progress)?;
        }
        Ok(())
    }
}

impl<T: Item> Sink<Embedded<T>> for Describer<'_> {
    fn write(&mut self, batch: &[Embedded<T>], progress: &dyn Progress) -> Result<(), JobError> {
        // (input, question) pairs still to do, over the images that have an encoding.
        let questions = self.request.questions();
        let mut pairs: Vec<(&Embedded<T>, Option<&str>, &[f32])> = Vec::new();
        for embedded in batch {
            let name = embedded.input.name();
            let Some(encoding) = embedded.ok() else {
                continue;
            };
            for question in &questions {
                if !self.done.contains(&records::record_key(name, *question)) {
                    pairs.push((embedded, *question, encoding));
                }
            }
        }
        let images: Vec<&[f32]> = pairs.iter().map(|p| p.2).collect();
        let generated = match self.request {
            _ if pairs.is_empty() => Ok(Vec::new()),
            Request::Caption { prompt } => {
                self.captioner
                    .caption(&images, prompt.as_deref(), self.options)
            }
            Request::Ask { .. } => {
                let asked: Vec<&str> = pairs.iter().map(|p| p.1.unwrap_or_default()).collect();
                self.captioner.answer(&images, &asked, self.options)
            }
        }
        .map_err(|err| match err {
            CaptionError::Core(err) => JobError::Encode(err),
            other => JobError::sink(other),
        })?;
        if let Some(store) = &mut self.store {
            // Keyed as the embeddings are: losslessly (a name that is not UTF-8 is escaped,
            // not shown lossily), so the row meets its embedding and no two files share one.
            let rows: Vec<(String, &super::Generated, String)> = pairs
                .iter()
                .zip(&generated)
                .filter_map(|((e, _, _), g)| {
                    Some((e.input.id().into_owned(), g, e.key.as_ref()?.to_hex()))
                })
                .collect();
            let rows: Vec<CaptionRow<'_>> = rows
                .iter()
                .map(|(id, g, hash)| CaptionRow {
                    path: id,
                    content_hash: hash,
                    model: self.model,
                    caption: &g.text,
                    log_prob: g.log_prob,
                    tokens_json: serde_json::json!(g.tokens).to_string(),
                })
                .collect();
            store.store(&rows).map_err(JobError::sink)?;
        }
        // Records in input order: an image's failure, or its captions and answers.
        let mut results = pairs.iter().zip(&generated).peekable();
        for embedded in batch {
            let name = embedded.input.name();
            if let Err(err) = &embedded.embedding {
                self.write_failed(name, &err.to_string(), progress)?;
                continue;
            }
            while let Some(((_, question, _), generated)) =
                results.next_if(|((e, _, _), _)| std::ptr::eq(*e, embedded))
            {
                let record = Record {
                    path: name,
                    question: *question,
                    said: Said::Text(generated),
                };
                self.write(&record, progress)?;
                if let (Some(sidecars), None) = (&mut self.sidecars, question) {
                    let tags = Tags {
                        labels: None,
                        description: Some(&generated.text),
                    };
                    sidecars.write_for(name, embedded.input.file(), tags, progress);
                }
            }
        }
        Ok(())
    }

    /// Sidecars that could not be written.
    fn failed(&self) -> usize {
        self.sidecars.as_ref().map_or(0, SidecarWriter::failed)
    }
}
