//! Errors raised while turning input arguments into images to label.

use std::path::PathBuf;

/// Why an input or an input option could not be used; every message names the path (or
/// URL, or option value) and says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A `--shard` value is not of the form `K/N` with `1 <= K <= N`.
    #[error("invalid shard `{value}`: {reason}; expected K/N with 1 <= K <= N, e.g. 2/8")]
    InvalidShard {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A glob pattern (an input argument or `--exclude`) does not parse.
    #[error("invalid glob pattern `{pattern}`: {cause}; fix the pattern, or quote it differently")]
    BadGlob {
        /// The pattern as given.
        pattern: String,
        /// The parser's complaint.
        cause: globset::Error,
    },

    /// An `--ext` list holds an empty entry (e.g. `jpg,,png`).
    #[error("invalid --ext list `{value}`: it has an empty entry; pass extensions separated by commas, e.g. jpg,png")]
    BadExtension {
        /// The list as given.
        value: String,
    },

    /// The `--files-from` list could not be opened.
    #[error("cannot open the path list {}: {cause}; check the --files-from path", path.display())]
    OpenList {
        /// The list file.
        path: PathBuf,
        /// The underlying I/O error.
        cause: std::io::Error,
    },

    /// Reading the `--files-from` list failed part way; the entries read so far were used.
    #[error("cannot read the path list {list}: {cause}; the entries before this point were used, the rest were not")]
    ReadList {
        /// The list file, or `<stdin>`.
        list: String,
        /// The underlying I/O error.
        cause: std::io::Error,
    },

    /// A `--files-from` entry is not valid UTF-8 on a platform that needs it.
    #[error(
        "entry {line} of the path list {list} is not valid UTF-8; this platform needs UTF-8 paths"
    )]
    ListEntryNotUtf8 {
        /// The list file, or `<stdin>`.
        list: String,
        /// 1-based entry number.
        line: usize,
    },

    /// A path named as an input does not exist.
    #[error("{}: no such file or directory; check the path (a glob pattern must be quoted so vlm expands it)", path.display())]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },

    /// A path named as an input is a symlink whose target does not exist.
    #[error("{}: broken symlink (its target does not exist); fix or remove the link", path.display())]
    BrokenSymlink {
        /// The link as given.
        path: PathBuf,
    },

    /// A glob pattern matched no file.
    #[error(
        "glob pattern `{pattern}` matched no files; check the pattern (hidden files need --hidden)"
    )]
    NoMatch {
        /// The pattern as given.
        pattern: String,
    },

    /// A filesystem error on one entry while inspecting an input or walking a directory.
    #[error("{}: {cause}; check its permissions, or --exclude it", path.display())]
    Io {
        /// The entry.
        path: PathBuf,
        /// The underlying I/O error.
        cause: std::io::Error,
    },

    /// An error walking a directory that carries no I/O error (walkdir reports loops so,
    /// but those become [`SkipReason::SymlinkLoop`](super::SkipReason::SymlinkLoop)).
    #[error("{}: {message}; check the directory, or --exclude it", path.display())]
    Walk {
        /// The entry.
        path: PathBuf,
        /// The walker's message.
        message: String,
    },

    /// A named input is a device or socket: reading it would never end, or read whatever
    /// it streams up to the size cap.
    #[error("{}: {kind}, not a regular file; give the path of an image file (a FIFO or /dev/stdin, as from <(...), works too)", path.display())]
    NotAFile {
        /// The path as given.
        path: PathBuf,
        /// What it is, e.g. "a character device".
        kind: &'static str,
    },

    /// The inputs held no image at all.
    #[error("no images found {places} (extensions looked for: {extensions}); check the paths, --ext, --exclude and --hidden (--verbose lists what was skipped), or pass --allow-empty to accept finding none")]
    NoImages {
        /// Where vlm looked, e.g. "under photos/".
        places: String,
        /// The extensions that count as images, comma-separated.
        extensions: String,
    },

    /// A file is larger than the size cap for one input.
    #[error("{display}: larger than the {limit}-byte limit for one image; resize it, or raise the limit")]
    TooLarge {
        /// The path or URL.
        display: String,
        /// The cap in bytes.
        limit: u64,
    },

    /// A URL answered with a non-2xx status.
    #[error("{url}: the server answered HTTP {status}; check the URL, or download the image and pass its path")]
    HttpStatus {
        /// The URL as given.
        url: String,
        /// The HTTP status code.
        status: u16,
    },

    /// A URL could not be fetched (DNS, connect, TLS, timeout, malformed URL...).
    #[error("{url}: {message}; check the URL and your network (or proxy), or download the image and pass its path")]
    Network {
        /// The URL as given.
        url: String,
        /// What went wrong.
        message: String,
    },
}

impl InputError {
    /// The input this error is about, as the output names it; `None` for errors about
    /// options or path lists rather than one input.
    pub fn subject(&self) -> Option<String> {
        match self {
            Self::NotFound { path }
            | Self::BrokenSymlink { path }
            | Self::Io { path, .. }
            | Self::Walk { path, .. }
            | Self::NotAFile { path, .. } => Some(path.display().to_string()),
            Self::TooLarge { display, .. } => Some(display.clone()),
            Self::HttpStatus { url, .. } | Self::Network { url, .. } => Some(url.clone()),
            _ => None,
        }
    }
}
