//! The classify run: find the inputs, load the model, build the scorer once, label every
//! input with the [`job`](crate::job) and hand each result to the result writer and to the
//! other consumers of classify results (the organizer, a store, a review page). `vlm
//! classify` and `vlm report DIR` both run it; they differ only in the sinks they add.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::decide::{
    DecideError, Decisions, ExampleSettings, LabelSource, Labeller, Scorer, ScorerError,
};
use crate::inputs::{InputError, InputSpec};
use crate::job::{JobError, Level, Progress, Sink, Tally, WriteError};
use crate::organize::{self, OrganizeError, Organizer};
use crate::output::{self, Format, ImageResult, Labelled, OpenError, ResultSink};
use crate::session::{ModelSettings, Session, SessionError};
use crate::store::{Address, LabelStore, ModelStamp, StoreError};
use crate::xmp::{SidecarWriter, XmpOptions};

/// `--organize`: where and how to sort the labelled files.
#[derive(Debug, Clone)]
pub struct OrganizeSettings {
    pub dest: PathBuf,
    pub mode: organize::Mode,
    pub dry_run: bool,
}

/// `--write-xmp`: how sidecars are named, the root of vlm's keywords, and whether to
/// only say what would change.
#[derive(Debug, Clone)]
pub struct XmpSettings {
    pub options: XmpOptions,
    pub dry_run: bool,
}

/// Where the results go.
#[derive(Debug, Clone)]
pub struct ResultsTo {
    /// A file, or standard output when `None`.
    pub path: Option<PathBuf>,
    pub format: Format,
    /// Keep the results already in the (JSON Lines) file and label only the other inputs.
    pub resume: bool,
}

/// The results file could not be read to resume.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {} to resume", path.display())]
pub struct ResumeError {
    pub path: PathBuf,
    #[source]
    pub cause: io::Error,
}

impl ResultsTo {
    /// With `--resume`: what the results file already holds, keyed by `read` (which also
    /// cuts off a torn last line), said with `--verbose` as so many `what`.
    pub fn already_done(
        &self,
        what: &str,
        read: impl FnOnce(&Path) -> io::Result<HashSet<String>>,
        progress: &dyn Progress,
    ) -> Result<HashSet<String>, ResumeError> {
        let Some(path) = self.path.as_deref().filter(|_| self.resume) else {
            return Ok(HashSet::new());
        };
        let done = read(path).map_err(|cause| ResumeError {
            path: path.to_path_buf(),
            cause,
        })?;
        progress.say(
            Level::Detail,
            &format_args!(
                "resuming: {} {what} already in {}",
                done.len(),
                path.display()
            ),
        );
        Ok(done)
    }
}

/// Says what an interrupted run left: `written` results in `to`, the rest not `done`
/// ("labelled"), and, when they went to a file, how to finish.
pub fn say_interrupted(
    written: usize,
    to: &str,
    to_file: bool,
    done: &str,
    progress: &dyn Progress,
) {
    progress.say(
        Level::Error,
        &format_args!(
            "interrupted: {written} results written to {to}; the rest were not {done}{}",
            if to_file {
                "; run the same command with --resume to finish"
            } else {
                ""
            }
        ),
    );
}

/// Everything a classify run needs besides the model.
pub struct Classify {
    pub inputs: InputSpec,
    pub labels: LabelSource,
    pub examples: Option<ExampleSettings>,
    pub decisions: Decisions,
    /// `--threshold` as given (the default depends on the model's scoring).
    pub threshold: Option<f32>,
    pub organize: Option<OrganizeSettings>,
    /// `--write-xmp`: each image's accepted labels also go to its XMP sidecar.
    pub xmp: Option<XmpSettings>,
    /// `--to`: also store embeddings and labels there.
    pub store: Option<Address>,
    pub results: ResultsTo,
}

/// Why a classify run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Resume(#[from] ResumeError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Scorer(Box<ScorerError>),
    #[error(transparent)]
    Decide(#[from] DecideError),
    #[error(transparent)]
    Organize(#[from] OrganizeError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Job(#[from] JobError),
}

impl From<ScorerError> for ClassifyError {
    fn from(error: ScorerError) -> Self {
        Self::Scorer(Box::new(error))
    }
}

/// A finished (or interrupted) classify run.
pub struct Classified {
    pub session: Session,
    pub tally: Tally,
    /// Where the results went: "standard output" or the file's path.
    pub written_to: String,
    /// The results went to a file (which `--resume` can finish).
    pub to_file: bool,
}

impl Classify {
    /// Finds the inputs (saying what is skipped or unreadable), reads what `--resume`
    /// keeps, loads the model, opens the store, builds the scorer, then labels every input
    /// and writes its result, handing each labelled batch to `extra` too. `None` when
    /// Ctrl-C stopped the run while it read the examples (nothing was labelled).
    pub fn run<S>(
        self,
        model: &ModelSettings,
        extra: S,
        progress: &dyn Progress,
    ) -> Result<Option<Classified>, ClassifyError>
    where
        S: for<'b> Sink<Labelled<'b>>,
    {
        // `--files-from -` streams: each line is labelled while stdin stays open, for a
        // long-lived worker fed by Spark or Ray.
        let found = if self.inputs.is_stream() {
            None
        } else {
            Some(self.inputs.find(progress)?)
        };
        let done = self.already_done(progress)?;
        let session = Session::open(model, progress)?;
        let stamp = ModelStamp::of(&session.files, &session.checkpoint);
        // Opened before labelling, so that a table of another model is refused before any work.
        let store = self
            .store
            .as_ref()
            .map(|address| LabelStore::open(address, stamp))
            .transpose()?;
        let Some(scorer) = Scorer::build(self.labels, self.examples.as_ref(), &session, progress)?
        else {
            return Ok(None);
        };
        let checkpoint = &session.checkpoint;
        // The threshold applies to the probability or the cosine: the model's scoring decides.
        let decisions = self
            .decisions
            .with_threshold_on(self.threshold, scorer.thresholds_probability(checkpoint))?;
        let organizer = self
            .organize
            .map(|o| Organizer::new(&o.dest, o.mode, o.dry_run))
            .transpose()?;
        let sidecars = self.xmp.map(|x| SidecarWriter::new(x.options, x.dry_run));
        let results = &self.results;
        let mut writer = ResultSink::open(results.path.as_deref(), results.resume, results.format)?
            .describe(scorer.similarity_name(), scorer.scoring_name(checkpoint));
        let mut job = session.job();
        if store.is_some() {
            job = job.with_keys();
        }
        let todo = |input: &crate::inputs::Input| !done.contains(&input.display);
        let stream_failed = AtomicUsize::new(0);
        let (inputs, rest) = self.inputs.to_run(found, todo, &stream_failed, progress)?;
        for (path, message) in &rest.unreadable {
            writer.write(&ImageResult::failed(path.clone(), message.clone()))?;
        }
        let sinks = (&mut writer, organizer, (store, sidecars), extra);
        let mut labeller = Labeller::new(checkpoint, &scorer, decisions, sinks);
        let mut tally = job.run(inputs, &mut labeller, progress)?;
        tally.add_found(&rest);
        let written_to = writer.name().to_string();
        writer.finish()?;
        tally.failed += stream_failed.load(Ordering::Relaxed);
        Ok(Some(Classified {
            session,
            tally,
            written_to,
            to_file: self.results.path.is_some(),
        }))
    }

    /// With `--resume`: the inputs already in the results file (said with `--verbose`).
    fn already_done(&self, progress: &dyn Progress) -> Result<HashSet<String>, ResumeError> {
        self.results
            .already_done("inputs", output::resume_jsonl, progress)
    }
}

impl Classified {
    /// The closing line, or what an interrupted run left, and with `--verbose` the
    /// encoder's work.
    pub fn say_summary(&self, seconds: f64, progress: &dyn Progress) {
        let tally = &self.tally;
        if tally.cancelled {
            say_interrupted(
                tally.done + tally.failed,
                &self.written_to,
                self.to_file,
                "labelled",
                progress,
            );
            return;
        }
        progress.say(
            Level::Note,
            &format_args!(
                "labelled {}, failed {}, skipped {} in {seconds:.1} s",
                tally.done, tally.failed, tally.skipped
            ),
        );
        self.session.say_stats(tally, progress);
    }
}
