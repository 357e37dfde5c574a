//! Inputs: turning the user's input arguments into a stream of images to label.
//!
//! [`discover`] takes files, directories, quoted glob patterns and http(s) URLs, in any
//! mix, plus an optional `--files-from` list, and returns [`Discover`], an iterator of
//! [`Event`]s. Problems with one entry (a missing path, an unreadable directory, a symlink
//! loop) are events too, so the walk goes on; only unusable options fail up front.
//!
//! Behaviour:
//! - **Order** is deterministic: arguments in the order given, then the `--files-from`
//!   entries in list order; directory contents sorted by file name at every level.
//! - **Streaming**: directories are walked lazily (walkdir) and the list is read entry by
//!   entry, so the first input comes out before a large tree is read. Nothing counts the
//!   inputs ahead of time: a caller that wants a total for a progress bar collects the
//!   events first (memory is one [`Event`] per entry) or runs `discover` twice.
//! - **Directories** are walked recursively, following symlinks; `max_depth` 1 means only
//!   the directory's own entries. A symlink back to an ancestor is reported as
//!   [`SkipReason::SymlinkLoop`] and not followed again.
//! - **Hidden** entries (names starting with `.`) found inside a directory or by a glob
//!   are skipped unless `hidden` is set; a hidden directory is skipped as one entry.
//!   Arguments themselves are never hidden (`vlm .config/pics` walks it).
//! - **Images** inside directories and glob matches are recognised by extension
//!   (case-insensitive, [`default_extensions`] or `extensions`), else — for no or an
//!   unknown extension — by the file's first bytes ([`sniff_bytes`]). A file with another
//!   image format's extension that `extensions` leaves out is skipped without sniffing.
//! - **Named files** (arguments and list entries) are always taken, whatever their name or
//!   content; decoding reports what is not an image. `exclude` still applies to them.
//! - **Exclude** globs match if they match the path as displayed (without a leading `./`),
//!   the path relative to the directory argument it was found under, or the file name.
//!   `*` does not cross `/`; `**` does. A matching directory is skipped whole.
//! - **Globs** (arguments with `*?[{` that are not an existing path) walk their literal
//!   leading directories and take matching files only; a glob matching nothing is an error.
//!   `--files-from` entries are never globs.
//! - **Duplicates**: a file reached twice (named twice, or through a symlink) is yielded
//!   once, at its first occurrence, by canonical path; a URL given twice, once. Distinct
//!   files with identical content are distinct inputs.
//! - **Shards** keep the inputs whose display path hashes (FNV-1a 64) into the shard; see
//!   [`Shard::of`]. Duplicates are removed before sharding, so every shard agrees on which
//!   occurrence counts and the N shards partition the inputs exactly. Inputs of other
//!   shards produce no event; [`Discover::counts`] counts them.

mod error;
mod fetch;
mod found;
mod glob;
mod list;
mod shard;
mod sniff;

pub use error::InputError;
pub use fetch::read_bytes;
pub use found::{Found, InputSpec, ToRun};
pub use shard::Shard;
pub use sniff::{default_extensions, sniff_bytes, ImageFormat};

use glob::InputGlob;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use list::ListReader;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt;
use std::io::BufRead;
use std::path::{Component, Path, PathBuf};

/// How inputs are found and filtered.
#[derive(Debug, Clone, Default)]
pub struct InputOptions {
    /// Deepest directory level to walk; 1 = a directory's own entries. `None` = no limit.
    pub max_depth: Option<usize>,
    /// Include hidden files and directories (names starting with `.`).
    pub hidden: bool,
    /// Extensions (no dot, any case) that count as images; `None` = [`default_extensions`].
    pub extensions: Option<Vec<String>>,
    /// Glob patterns of paths to leave out.
    pub exclude: Vec<String>,
    /// Keep only this slice of the inputs.
    pub shard: Option<Shard>,
    /// The `--files-from` list is NUL-separated (`-0`) rather than newline-separated.
    pub null_separated: bool,
}

/// Where an input's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A local file.
    File(PathBuf),
    /// An http(s) URL.
    Url(String),
}

/// One image to label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// As the user will see it in output: the path as given or joined, or the URL.
    pub display: String,
    /// Where to read it from ([`read_bytes`]).
    pub source: Source,
}

impl Input {
    /// A key that tells every input apart, for stores that index by path: the URL, or the
    /// path by [`path_key`]. [`Input::display`] is for people: it shows a file name that is
    /// not UTF-8 with U+FFFD in place of the bytes it cannot show, so two such names may
    /// look alike.
    pub fn key(&self) -> String {
        match &self.source {
            Source::File(path) => path_key(path),
            Source::Url(url) => url.clone(),
        }
    }
}

/// `path` as text without losing a byte. A UTF-8 path is its own key (as shown, in
/// stores and output alike); in any other, each byte that is not UTF-8 is written `\xNN`
/// (two lowercase hex digits) and a backslash `\\`, which reads back to the exact
/// bytes. Two paths share a key only if one of them is UTF-8 and spells out the other's
/// escapes literally.
pub fn path_key(path: &Path) -> String {
    use std::fmt::Write;
    let bytes = path.as_os_str().as_encoded_bytes();
    if let Ok(text) = std::str::from_utf8(bytes) {
        return text.to_string();
    }
    let mut key = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => key.push_str("\\\\"),
                c => key.push(c),
            }
        }
        for byte in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(key, "\\x{byte:02x}");
        }
    }
    key
}

/// Why an entry was not taken as an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Its name starts with `.` and hidden entries were not asked for.
    Hidden,
    /// It matches an `exclude` glob.
    Excluded,
    /// No image extension and its first bytes are no image signature.
    NotImage,
    /// An image, but its extension (or sniffed format) is not among `extensions`.
    ExtensionNotSelected,
    /// Neither a regular file nor a directory (a socket, a FIFO, a device).
    NotAFile,
    /// The same file (by canonical path) or URL was already yielded.
    Duplicate,
    /// A directory symlink pointing back to `ancestor`, which is being walked already.
    SymlinkLoop {
        /// The directory the link leads back to.
        ancestor: PathBuf,
    },
    /// A symlink whose target does not exist.
    BrokenSymlink,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Hidden => f.write_str("hidden (pass --hidden to include it)"),
            SkipReason::Excluded => f.write_str("matches --exclude"),
            SkipReason::NotImage => f.write_str("not an image (by extension and first bytes)"),
            SkipReason::ExtensionNotSelected => f.write_str("image type not selected by --ext"),
            SkipReason::NotAFile => f.write_str("not a regular file"),
            SkipReason::Duplicate => f.write_str("same file already listed"),
            SkipReason::SymlinkLoop { ancestor } => {
                write!(
                    f,
                    "symlink loop back to {}; not followed",
                    ancestor.display()
                )
            }
            SkipReason::BrokenSymlink => f.write_str("broken symlink"),
        }
    }
}

/// What discovery found, one entry at a time.
#[derive(Debug)]
pub enum Event {
    /// An image to label.
    Input(Input),
    /// An entry left out, and why.
    Skipped {
        /// The entry (a URL is carried as a path).
        path: PathBuf,
        /// Why.
        reason: SkipReason,
    },
    /// A problem with one entry; discovery goes on with the next.
    Error(InputError),
}

/// Where the `--files-from` list is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilesFrom {
    /// A file holding the list.
    Path(PathBuf),
    /// Standard input.
    Stdin,
}

impl FilesFrom {
    /// `-` means standard input, anything else a file.
    pub fn from_arg(arg: impl AsRef<OsStr>) -> Self {
        let arg = arg.as_ref();
        if arg == "-" {
            FilesFrom::Stdin
        } else {
            FilesFrom::Path(PathBuf::from(arg))
        }
    }
}

/// Running totals of what [`Discover`] has produced so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// [`Event::Input`]s yielded.
    pub inputs: usize,
    /// [`Event::Skipped`]s yielded.
    pub skipped: usize,
    /// [`Event::Error`]s yielded.
    pub errors: usize,
    /// Inputs left to other shards (these yield no event).
    pub other_shard: usize,
}

/// Starts discovering inputs; iterate the result for [`Event`]s.
///
/// Fails up front only for unusable options: a bad glob (argument or `exclude`), an empty
/// `extensions` entry, or a `--files-from` file that cannot be opened.
pub fn discover(
    args: &[String],
    files_from: Option<FilesFrom>,
    options: &InputOptions,
) -> Result<Discover, InputError> {
    let list = match files_from {
        None => None,
        Some(FilesFrom::Stdin) => Some(ListReader::new(
            // Not `stdin().lock()`: a stream is read on the pipeline's feeder thread.
            Box::new(std::io::BufReader::new(std::io::stdin())),
            "<stdin>".to_string(),
            options.null_separated,
        )),
        Some(FilesFrom::Path(path)) => {
            let file = std::fs::File::open(&path).map_err(|source| InputError::OpenList {
                path: path.clone(),
                cause: source,
            })?;
            Some(ListReader::new(
                Box::new(std::io::BufReader::new(file)),
                path.display().to_string(),
                options.null_separated,
            ))
        }
    };
    Discover::new(args, list, options)
}

/// What to say when `args` and the `files_from` list held no image: where vlm looked and
/// which extensions `options` count as images.
pub fn no_images(
    args: &[String],
    files_from: Option<&FilesFrom>,
    options: &InputOptions,
) -> InputError {
    let mut places = Vec::new();
    if !args.is_empty() {
        places.push(format!("under {}", args.join(", ")));
    }
    match files_from {
        Some(FilesFrom::Path(path)) => places.push(format!("in the list {}", path.display())),
        Some(FilesFrom::Stdin) => places.push("in the list on stdin".to_string()),
        None => {}
    }
    let extensions = match &options.extensions {
        Some(list) => list
            .iter()
            .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
            .collect(),
        None => default_extensions(),
    };
    InputError::NoImages {
        places: places.join(" or "),
        extensions: extensions.join(", "),
    }
}

/// Like [`discover`], reading the path list from `reader` (named `name` in messages).
pub fn discover_with_list(
    args: &[String],
    reader: Box<dyn BufRead + Send>,
    name: &str,
    options: &InputOptions,
) -> Result<Discover, InputError> {
    let list = ListReader::new(reader, name.to_string(), options.null_separated);
    Discover::new(args, Some(list), options)
}

/// An input argument, classified.
enum Arg {
    Url(String),
    Path(PathBuf),
    Glob(InputGlob),
}

/// Whether `arg` is an http(s) URL (the scheme in any case): the one rule for telling a
/// URL from a path.
pub fn is_url(arg: &str) -> bool {
    let lower = |n: usize| arg.get(..n).map(str::to_ascii_lowercase);
    lower(7).as_deref() == Some("http://") || lower(8).as_deref() == Some("https://")
}

/// The iterator of [`Event`]s returned by [`discover`].
pub struct Discover {
    args: std::vec::IntoIter<Arg>,
    list: Option<ListReader>,
    walk: Option<Walk>,
    ctx: Ctx,
}

/// A directory walk in progress: a directory argument, or the base of a glob.
struct Walk {
    iter: walkdir::IntoIter,
    root: PathBuf,
    glob: Option<InputGlob>,
    /// Files the glob matched, to report a glob that matched nothing.
    matched: usize,
    /// The root itself failed (already reported), so "no match" would say it twice.
    root_failed: bool,
}

/// Filters and state shared by every walk.
struct Ctx {
    hidden: bool,
    /// Lower case, no dot.
    extensions: Vec<String>,
    exclude: Option<GlobSet>,
    shard: Option<Shard>,
    max_depth: Option<usize>,
    seen_files: HashSet<PathBuf>,
    seen_urls: HashSet<String>,
    counts: Counts,
}

impl Discover {
    fn new(
        args: &[String],
        list: Option<ListReader>,
        options: &InputOptions,
    ) -> Result<Self, InputError> {
        let args = args
            .iter()
            .map(|arg| {
                Ok(if is_url(arg) {
                    Arg::Url(arg.clone())
                } else if glob::has_glob_syntax(arg) && !Path::new(arg).exists() {
                    Arg::Glob(InputGlob::new(arg)?)
                } else {
                    Arg::Path(PathBuf::from(arg))
                })
            })
            .collect::<Result<Vec<_>, InputError>>()?;
        Ok(Discover {
            args: args.into_iter(),
            list,
            walk: None,
            ctx: Ctx::new(options)?,
        })
    }

    /// What has been produced so far; complete once the iterator returns `None`.
    pub fn counts(&self) -> Counts {
        self.ctx.counts
    }

    /// Handles one argument or list entry; a directory or glob becomes the current walk.
    fn start(&mut self, arg: Arg) -> Option<Event> {
        match arg {
            Arg::Url(url) => self.ctx.url(url),
            Arg::Glob(glob) => {
                let depth = match (glob.max_depth, self.ctx.max_depth) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                self.walk = Some(Walk::new(glob.walk_root().to_path_buf(), depth, Some(glob)));
                None
            }
            Arg::Path(path) => match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => {
                    self.walk = Some(Walk::new(path, self.ctx.max_depth, None));
                    None
                }
                Ok(_) => self.ctx.named_file(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let is_link = path.symlink_metadata().is_ok_and(|m| m.is_symlink());
                    Some(Event::Error(if is_link {
                        InputError::BrokenSymlink { path }
                    } else {
                        InputError::NotFound { path }
                    }))
                }
                Err(source) => Some(Event::Error(InputError::Io {
                    path,
                    cause: source,
                })),
            },
        }
    }
}

impl Iterator for Discover {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            let event = if let Some(walk) = self.walk.as_mut() {
                match walk.iter.next() {
                    Some(entry) => self.ctx.walk_entry(walk, entry),
                    None => {
                        let done = self.walk.take();
                        done.and_then(Walk::finish)
                    }
                }
            } else if let Some(arg) = self.args.next() {
                self.start(arg)
            } else if let Some(list) = self.list.as_mut() {
                match list.next_entry() {
                    None => {
                        self.list = None;
                        None
                    }
                    Some(Err(e)) => {
                        // A read error leaves the stream in an unknown place; stop there.
                        self.list = None;
                        Some(Event::Error(e))
                    }
                    Some(Ok(entry)) => {
                        let arg = match entry.to_str() {
                            Some(s) if is_url(s) => Arg::Url(s.to_string()),
                            _ => Arg::Path(PathBuf::from(entry)),
                        };
                        self.start(arg)
                    }
                }
            } else {
                return None;
            };
            if let Some(event) = event {
                let counts = &mut self.ctx.counts;
                match &event {
                    Event::Input(_) => counts.inputs += 1,
                    Event::Skipped { .. } => counts.skipped += 1,
                    Event::Error(_) => counts.errors += 1,
                }
                return Some(event);
            }
        }
    }
}

impl Walk {
    fn new(root: PathBuf, max_depth: Option<usize>, glob: Option<InputGlob>) -> Self {
        let mut walker = walkdir::WalkDir::new(&root)
            .follow_links(true)
            .sort_by_file_name();
        if let Some(depth) = max_depth {
            walker = walker.max_depth(depth);
        }
        Walk {
            iter: walker.into_iter(),
            root,
            glob,
            matched: 0,
            root_failed: false,
        }
    }

    /// Whether a file at `rel` (relative to the root) is wanted: always for a directory
    /// argument, by the pattern for a glob.
    fn glob_matches(&self, rel: Option<&Path>) -> bool {
        match (&self.glob, rel) {
            (None, _) => true,
            (Some(glob), Some(rel)) => glob.matcher.is_match(rel),
            (Some(_), None) => false,
        }
    }

    /// A glob based on the current directory displays `a.jpg`, not `./a.jpg`.
    fn display_path(&self, full: PathBuf, rel: Option<&Path>) -> PathBuf {
        match (&self.glob, rel) {
            (Some(glob), Some(rel)) if glob.base.is_none() => rel.to_path_buf(),
            _ => full,
        }
    }

    fn finish(self) -> Option<Event> {
        match self.glob {
            Some(glob) if self.matched == 0 && !self.root_failed => {
                Some(Event::Error(InputError::NoMatch {
                    pattern: glob.pattern,
                }))
            }
            _ => None,
        }
    }
}

fn is_hidden(name: Option<&OsStr>) -> bool {
    name.is_some_and(|n| n.as_encoded_bytes().first() == Some(&b'.'))
}

/// `./a/b` → `a/b`, so exclude globs written without `./` still match.
fn strip_cur_dir(path: &Path) -> PathBuf {
    path.components()
        .skip_while(|c| matches!(c, Component::CurDir))
        .collect()
}

fn lossy(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

impl Ctx {
    fn new(options: &InputOptions) -> Result<Self, InputError> {
        let extensions = match &options.extensions {
            None => default_extensions(),
            Some(list) => list
                .iter()
                .map(|e| {
                    let e = e.trim().trim_start_matches('.').to_ascii_lowercase();
                    if e.is_empty() {
                        Err(InputError::BadExtension {
                            value: list.join(","),
                        })
                    } else {
                        Ok(e)
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        let exclude = if options.exclude.is_empty() {
            None
        } else {
            let mut set = GlobSetBuilder::new();
            for pattern in &options.exclude {
                let glob = GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build()
                    .map_err(|source| InputError::BadGlob {
                        pattern: pattern.clone(),
                        cause: source,
                    })?;
                set.add(glob);
            }
            Some(set.build().map_err(|source| InputError::BadGlob {
                pattern: options.exclude.join(" "),
                cause: source,
            })?)
        };
        Ok(Ctx {
            hidden: options.hidden,
            extensions,
            exclude,
            shard: options.shard,
            max_depth: options.max_depth,
            seen_files: HashSet::new(),
            seen_urls: HashSet::new(),
            counts: Counts::default(),
        })
    }

    fn excluded(&self, path: &Path, rel: Option<&Path>) -> bool {
        let Some(set) = &self.exclude else {
            return false;
        };
        set.is_match(strip_cur_dir(path))
            || rel.is_some_and(|r| !r.as_os_str().is_empty() && set.is_match(r))
            || path.file_name().is_some_and(|n| set.is_match(n))
    }

    fn url(&mut self, url: String) -> Option<Event> {
        if self.excluded(Path::new(&url), None) {
            return Some(skipped(PathBuf::from(url), SkipReason::Excluded));
        }
        if !self.seen_urls.insert(url.clone()) {
            return Some(skipped(PathBuf::from(url), SkipReason::Duplicate));
        }
        self.sharded(Input {
            display: url.clone(),
            source: Source::Url(url),
        })
    }

    /// A file named as an argument or list entry: taken whatever it looks like.
    fn named_file(&mut self, path: PathBuf) -> Option<Event> {
        if self.excluded(&path, None) {
            return Some(skipped(path, SkipReason::Excluded));
        }
        self.take_file(path)
    }

    /// Dedupe, then shard, a file that passed the filters.
    fn take_file(&mut self, path: PathBuf) -> Option<Event> {
        // If canonicalising fails (the file vanished meanwhile) the path itself is the
        // best key left; reading it will report the problem.
        let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if !self.seen_files.insert(key) {
            return Some(skipped(path, SkipReason::Duplicate));
        }
        self.sharded(Input {
            display: lossy(&path),
            source: Source::File(path),
        })
    }

    fn sharded(&mut self, input: Input) -> Option<Event> {
        match self.shard {
            Some(shard) if !shard.contains(&input.display) => {
                self.counts.other_shard += 1;
                None
            }
            _ => Some(Event::Input(input)),
        }
    }

    fn walk_entry(
        &mut self,
        walk: &mut Walk,
        entry: walkdir::Result<walkdir::DirEntry>,
    ) -> Option<Event> {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => return self.walk_error(walk, err),
        };
        if entry.depth() == 0 {
            return None;
        }
        // With links followed, the file type is the target's.
        let is_dir = entry.file_type().is_dir();
        let is_file = entry.file_type().is_file();
        let full = entry.into_path();
        let rel = full.strip_prefix(&walk.root).ok().map(Path::to_path_buf);
        let rel = rel.as_deref();
        let path = walk.display_path(full, rel);
        let hidden = is_hidden(path.file_name()) && !self.hidden;
        if is_dir {
            let reason = if hidden {
                SkipReason::Hidden
            } else if self.excluded(&path, rel) {
                SkipReason::Excluded
            } else {
                return None;
            };
            // Pruned whole: one event, not one per file inside. A glob prunes silently,
            // as a shell does, since the directory itself was never a match.
            walk.iter.skip_current_dir();
            return walk.glob.is_none().then(|| skipped(path, reason));
        }
        if !walk.glob_matches(rel) {
            return None;
        }
        walk.matched += 1;
        if hidden {
            return Some(skipped(path, SkipReason::Hidden));
        }
        if self.excluded(&path, rel) {
            return Some(skipped(path, SkipReason::Excluded));
        }
        // Sniffing a FIFO would block, so only regular files go on.
        if !is_file {
            return Some(skipped(path, SkipReason::NotAFile));
        }
        match self.image_check(&path) {
            Ok(None) => self.take_file(path),
            Ok(Some(reason)) => Some(skipped(path, reason)),
            Err(source) => Some(Event::Error(InputError::Io {
                path,
                cause: source,
            })),
        }
    }

    /// `None` if `path` counts as an image, else why not.
    fn image_check(&self, path: &Path) -> std::io::Result<Option<SkipReason>> {
        let ext = path
            .extension()
            .and_then(OsStr::to_str)
            .map(str::to_ascii_lowercase);
        if let Some(ext) = &ext {
            if self.extensions.contains(ext) {
                return Ok(None);
            }
            if sniff::is_known_image_extension(ext) {
                return Ok(Some(SkipReason::ExtensionNotSelected));
            }
        }
        Ok(match sniff::sniff_file(path)? {
            None => Some(SkipReason::NotImage),
            Some(format)
                if format
                    .extensions()
                    .iter()
                    .any(|e| self.extensions.iter().any(|x| x == e)) =>
            {
                None
            }
            Some(_) => Some(SkipReason::ExtensionNotSelected),
        })
    }

    fn walk_error(&mut self, walk: &mut Walk, err: walkdir::Error) -> Option<Event> {
        let depth = err.depth();
        if depth == 0 {
            walk.root_failed = true;
        }
        let full = err
            .path()
            .map_or_else(|| walk.root.clone(), Path::to_path_buf);
        let rel = full
            .strip_prefix(&walk.root)
            .ok()
            .filter(|_| depth > 0)
            .map(Path::to_path_buf);
        let rel = rel.as_deref();
        let path = walk.display_path(full, rel);
        // A glob only speaks of what its pattern matches: a shell would pass over a loop
        // or a dangling link elsewhere without a word. Real I/O errors are still reported,
        // since they may hide matches.
        let quiet = walk.glob.is_some() && depth > 0 && !walk.glob_matches(rel);
        let reason = if depth > 0 && is_hidden(path.file_name()) && !self.hidden {
            Some(SkipReason::Hidden)
        } else if depth > 0 && self.excluded(&path, rel) {
            Some(SkipReason::Excluded)
        } else if let Some(ancestor) = err.loop_ancestor() {
            Some(SkipReason::SymlinkLoop {
                ancestor: ancestor.to_path_buf(),
            })
        } else if path.symlink_metadata().is_ok_and(|m| m.is_symlink()) && !path.exists() {
            Some(SkipReason::BrokenSymlink)
        } else {
            None
        };
        if let Some(reason) = reason {
            return (!quiet).then(|| skipped(path, reason));
        }
        let message = err.to_string();
        Some(Event::Error(match err.into_io_error() {
            Some(source) => InputError::Io {
                path,
                cause: source,
            },
            None => InputError::Walk { path, message },
        }))
    }
}

fn skipped(path: PathBuf, reason: SkipReason) -> Event {
    Event::Skipped { path, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs_and_errors(d: Discover) -> (Vec<String>, Vec<String>) {
        let (mut inputs, mut errors) = (Vec::new(), Vec::new());
        for event in d {
            match event {
                Event::Input(i) => inputs.push(i.display),
                Event::Skipped { .. } => {}
                Event::Error(e) => errors.push(e.to_string()),
            }
        }
        (inputs, errors)
    }

    #[test]
    fn list_from_a_reader_streams_like_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jpg");
        let b = dir.path().join("b c.png");
        std::fs::write(&a, b"x").unwrap();
        std::fs::write(&b, b"x").unwrap();
        let list = format!("{}\0{}\0", a.display(), b.display());
        let opts = InputOptions {
            null_separated: true,
            ..Default::default()
        };
        let d = discover_with_list(&[], Box::new(std::io::Cursor::new(list)), "<stdin>", &opts)
            .unwrap();
        let (inputs, errors) = inputs_and_errors(d);
        assert_eq!(inputs, [a.display().to_string(), b.display().to_string()]);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn list_read_error_is_reported_once_and_ends_the_list() {
        struct Failing;
        impl std::io::Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("pipe closed"))
            }
        }
        let reader = Box::new(std::io::BufReader::new(Failing));
        let d = discover_with_list(&[], reader, "<stdin>", &InputOptions::default()).unwrap();
        let (inputs, errors) = inputs_and_errors(d);
        assert!(inputs.is_empty());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("<stdin>") && errors[0].contains("pipe closed"));
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_names_from_a_list_still_open() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let name = OsStr::from_bytes(b"caf\xe9.jpg");
        let path = dir.path().join(name);
        std::fs::write(&path, b"x").unwrap();
        let mut list = path.as_os_str().as_bytes().to_vec();
        list.push(b'\n');
        let d = discover_with_list(
            &[],
            Box::new(std::io::Cursor::new(list)),
            "<stdin>",
            &InputOptions::default(),
        )
        .unwrap();
        let events: Vec<Event> = d.collect();
        assert_eq!(events.len(), 1);
        match &events[0] {
            Event::Input(input) => {
                assert_eq!(input.source, Source::File(path));
                assert!(
                    input.display.ends_with("caf\u{FFFD}.jpg"),
                    "{}",
                    input.display
                );
            }
            other => panic!("expected an input, got {other:?}"),
        }
    }

    /// Reads a [`path_key`] back to the path's bytes.
    fn bytes_of_key(key: &str) -> Vec<u8> {
        let (mut out, bytes, mut i) = (Vec::new(), key.as_bytes(), 0);
        while i < bytes.len() {
            match (bytes[i], bytes.get(i + 1)) {
                (b'\\', Some(b'\\')) => {
                    out.push(b'\\');
                    i += 2;
                }
                (b'\\', Some(b'x')) => {
                    let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 4;
                }
                (b, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        out
    }

    #[cfg(unix)]
    #[test]
    fn names_that_look_alike_keep_keys_of_their_own() {
        use std::os::unix::ffi::OsStrExt;
        let unshown: [&[u8]; 4] = [
            b"caf\xe9.jpg",
            b"caf\xe8.jpg",
            b"caf\xe9\xe9.jpg",
            b"a\\b\xff\xfe\\.png",
        ];
        let shown: [&[u8]; 3] = [
            "caf\u{FFFD}.jpg".as_bytes(),
            "plain é.jpg".as_bytes(),
            b"a\\b.png",
        ];
        let key = |n: &[u8]| path_key(Path::new(OsStr::from_bytes(n)));
        for name in unshown {
            assert_eq!(bytes_of_key(&key(name)), name, "{}", key(name));
        }
        for name in shown {
            assert_eq!(key(name).as_bytes(), name, "a UTF-8 name is its own key");
        }
        let keys: HashSet<String> = unshown.iter().chain(&shown).map(|n| key(n)).collect();
        assert_eq!(keys.len(), unshown.len() + shown.len(), "{keys:?}");
        // The first two look alike to people, and are two inputs to a store.
        let input = |n: &[u8]| Input {
            display: lossy(Path::new(OsStr::from_bytes(n))),
            source: Source::File(OsStr::from_bytes(n).into()),
        };
        let (a, b) = (input(unshown[0]), input(unshown[1]));
        assert_eq!(a.display, b.display);
        assert_ne!(a.key(), b.key());
        assert_eq!(a.key(), "caf\\xe9.jpg");
    }

    #[test]
    fn urls_are_recognised_by_scheme_only() {
        assert!(is_url("http://x/a.jpg"));
        assert!(is_url("HTTPS://x/a.jpg"));
        assert!(!is_url("ftp://x/a.jpg"));
        assert!(!is_url("http:/x"));
        assert!(!is_url("photos/http://"));
        assert!(!is_url("é"), "short non-ASCII args must not panic");
    }

    #[test]
    fn urls_pass_exclude_dedupe_and_shard() {
        let urls = [
            "http://h/a.jpg".to_string(),
            "http://h/b.gif".to_string(),
            "http://h/a.jpg".to_string(),
        ];
        let opts = InputOptions {
            exclude: vec!["*.gif".into()],
            ..Default::default()
        };
        let events: Vec<Event> = discover(&urls, None, &opts).unwrap().collect();
        let skips: Vec<&SkipReason> = events
            .iter()
            .filter_map(|e| match e {
                Event::Skipped { reason, .. } => Some(reason),
                _ => None,
            })
            .collect();
        assert_eq!(skips, [&SkipReason::Excluded, &SkipReason::Duplicate]);
        let shard = Shard::of("http://h/a.jpg", 2);
        let opts = InputOptions {
            shard: Some(Shard {
                index: 3 - shard,
                count: 2,
            }),
            ..Default::default()
        };
        let mut d = discover(&urls[..1], None, &opts).unwrap();
        assert!(d.next().is_none(), "the other shard yields nothing");
        assert_eq!(d.counts().other_shard, 1);
    }

    #[test]
    fn empty_extension_is_refused_up_front() {
        let opts = InputOptions {
            extensions: Some(vec!["jpg".into(), " ".into()]),
            ..Default::default()
        };
        let err = discover(&[], None, &opts).err();
        assert!(
            matches!(err, Some(InputError::BadExtension { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn missing_argument_is_an_event_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope").display().to_string();
        let (inputs, errors) =
            inputs_and_errors(discover(&[missing], None, &InputOptions::default()).unwrap());
        assert!(inputs.is_empty());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("nope: no such file"), "{}", errors[0]);
    }

    #[test]
    fn files_from_dash_is_stdin() {
        assert_eq!(FilesFrom::from_arg("-"), FilesFrom::Stdin);
        assert_eq!(
            FilesFrom::from_arg("list.txt"),
            FilesFrom::Path(PathBuf::from("list.txt"))
        );
    }

    #[test]
    fn leading_cur_dir_is_stripped_for_exclude() {
        assert_eq!(strip_cur_dir(Path::new("./a/b.jpg")), Path::new("a/b.jpg"));
        assert_eq!(strip_cur_dir(Path::new("a/./b.jpg")), Path::new("a/b.jpg"));
        let ctx = Ctx::new(&InputOptions {
            exclude: vec!["photos/*.gif".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(ctx.excluded(Path::new("./photos/a.gif"), None));
        assert!(
            !ctx.excluded(Path::new("./photos/sub/a.gif"), None),
            "* stops at /"
        );
    }

    #[test]
    fn hidden_means_a_leading_dot() {
        assert!(is_hidden(Some(OsStr::new(".git"))));
        assert!(!is_hidden(Some(OsStr::new("a.jpg"))));
        assert!(!is_hidden(None));
    }
}
