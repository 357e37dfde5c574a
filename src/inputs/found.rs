//! A command's inputs, found: collected before the run ([`InputSpec::find`]: a total for
//! the progress display) or handed on as they arrive ([`InputSpec::stream`], for
//! `--files-from -`). Skips are said with `--verbose`, entries that fail as they come.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{
    discover, is_url, no_images, Event, FilesFrom, Input, InputError, InputOptions, Source,
};
use crate::progress::{Level, Progress};

/// What the user gave as inputs: arguments, a `--files-from` list, and the walk's options.
#[derive(Debug, Clone, Default)]
pub struct InputSpec {
    /// Files, directories, globs and URLs, in order.
    pub paths: Vec<String>,
    pub files_from: Option<FilesFrom>,
    pub options: InputOptions,
    /// Finding no image is not an error (`--allow-empty`): [`InputSpec::find`] then gives
    /// an empty [`Found`] instead of [`InputError::NoImages`].
    pub allow_empty: bool,
}

/// The inputs found, and what could not be used.
#[derive(Debug, Default)]
pub struct Found {
    pub inputs: Vec<Input>,
    /// Inputs that exist by name but cannot be used: (displayed path, message).
    pub unreadable: Vec<(String, String)>,
    /// Entries skipped (not images, hidden, other shards...).
    pub skipped: usize,
    /// Entries that failed, including those without a path of their own.
    pub failed: usize,
}

impl Found {
    /// How the inputs are named, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.inputs.iter().map(|input| input.display.as_str())
    }
}

impl InputSpec {
    /// The list is read from standard input, so the inputs are a stream.
    pub fn is_stream(&self) -> bool {
        self.files_from == Some(FilesFrom::Stdin)
    }

    /// Walks every input; skips (with `--verbose`) and per-entry errors are said as they
    /// come. Finding no image at all and no entry that failed is
    /// [`InputError::NoImages`] unless [`InputSpec::allow_empty`].
    pub fn find(&self, progress: &dyn Progress) -> Result<Found, InputError> {
        let mut found = Found::default();
        for event in discover(&self.paths, self.files_from.clone(), &self.options)? {
            match event {
                Event::Input(input) => found.inputs.push(input),
                Event::Skipped { path, reason } => {
                    found.skipped += 1;
                    say_skipped(progress, &path, &reason);
                }
                Event::Error(err) => {
                    found.failed += 1;
                    progress.say(Level::Error, &err);
                    if let Some(path) = err.subject() {
                        found.unreadable.push((path, err.to_string()));
                    }
                }
            }
        }
        if found.inputs.is_empty() && found.failed == 0 && !self.allow_empty {
            return Err(no_images(
                &self.paths,
                self.files_from.as_ref(),
                &self.options,
            ));
        }
        Ok(found)
    }

    /// The inputs as a lazy stream, each handed on as it is read, so results come back
    /// while standard input stays open. Skips are said with `--verbose`; an entry that
    /// names a path but cannot be used goes on as an input, so that it fails in order with
    /// a result of its own; other errors are said and counted in `failed`.
    pub fn stream<'a>(
        &self,
        progress: &'a dyn Progress,
        failed: &'a AtomicUsize,
    ) -> Result<impl Iterator<Item = Input> + Send + 'a, InputError> {
        let events = discover(&self.paths, self.files_from.clone(), &self.options)?;
        Ok(events.filter_map(move |event| match event {
            Event::Input(input) => Some(input),
            Event::Skipped { path, reason } => {
                say_skipped(progress, &path, &reason);
                None
            }
            Event::Error(err) => match err.subject() {
                Some(display) => Some(Input {
                    source: if is_url(&display) {
                        Source::Url(display.clone())
                    } else {
                        Source::File(display.clone().into())
                    },
                    display,
                }),
                None => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    progress.say(Level::Error, &err);
                    None
                }
            },
        }))
    }
}

/// The inputs of a run, as [`InputSpec::to_run`] gives them: a boxed iterator that knows
/// its length when the inputs were found before the run (for the progress total).
pub type ToRun<'a> = Box<dyn Iterator<Item = Input> + Send + 'a>;

impl InputSpec {
    /// What a run goes over: the inputs `found` before it (walks and lists), or, when
    /// `found` is `None` (`--files-from -`), the stream of standard input, read as the run
    /// goes; either way only those `todo` keeps (e.g. not already in a resumed results
    /// file). The rest of `found` comes back without its inputs: the unreadable entries, to
    /// report as results of their own, and the counts for [`crate::job::Tally::add_found`].
    /// Stream entries that fail without a path are counted in `stream_failed`.
    pub fn to_run<'a>(
        &self,
        found: Option<Found>,
        todo: impl Fn(&Input) -> bool + Send + 'a,
        stream_failed: &'a AtomicUsize,
        progress: &'a dyn Progress,
    ) -> Result<(ToRun<'a>, Found), InputError> {
        Ok(match found {
            Some(mut found) => {
                let inputs: Vec<Input> = std::mem::take(&mut found.inputs)
                    .into_iter()
                    .filter(|input| todo(input))
                    .collect();
                (Box::new(inputs.into_iter()), found)
            }
            None => (
                Box::new(
                    self.stream(progress, stream_failed)?
                        .filter(move |input| todo(input)),
                ),
                Found::default(),
            ),
        })
    }
}

fn say_skipped(progress: &dyn Progress, path: &std::path::Path, reason: &dyn std::fmt::Display) {
    progress.say(
        Level::Detail,
        &format_args!("skipped {}: {reason}", path.display()),
    );
}
