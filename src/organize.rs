//! Sorting classified images into one folder per label.
//!
//! An [`Organizer`] places each file under `DEST/<label>/` (or `DEST/_uncertain/`), never
//! overwriting: a clash, within the run or with a file already there, gets a `-1`, `-2`, …
//! suffix. Copies and cross-filesystem moves go through a temporary file in the destination
//! folder, so a final name never holds a half-written file and a failed move leaves the source
//! untouched.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::decide;
use crate::inputs::Source;
use crate::job::{JobError, Level, Progress, Sink};
use crate::output::Labelled;

/// Folder for images the caller marks uncertain.
pub const UNCERTAIN_FOLDER: &str = "_uncertain";

/// Folder for labels that sanitise to nothing.
const UNNAMED_FOLDER: &str = "_unnamed";

/// Folder names longer than this (in bytes) are cut; most filesystems stop at 255 and the
/// rest of the path still needs room.
const MAX_FOLDER_BYTES: usize = 200;

/// How a file gets into its label folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Copy the file; the source stays.
    Copy,
    /// Move the file; the source is removed only once the destination is complete.
    Move,
    /// Make a symbolic link to the source's absolute path (Unix only).
    Link,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Copy => "copy",
            Mode::Move => "move",
            Mode::Link => "link",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = OrganizeError;

    /// Parses `copy`, `move` or `link` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "copy" => Ok(Mode::Copy),
            "move" => Ok(Mode::Move),
            "link" => Ok(Mode::Link),
            _ => Err(OrganizeError::Mode {
                given: s.to_string(),
            }),
        }
    }
}

/// Why a file could not be organised.
#[derive(Debug, thiserror::Error)]
pub enum OrganizeError {
    #[error("unknown organize mode {given:?}; use copy, move or link")]
    Mode { given: String },
    #[error(
        "cannot link images into {}: symbolic links are not supported on this platform; \
         use --organize copy instead",
        dest.display()
    )]
    LinkUnsupported { dest: PathBuf },
    #[error(
        "cannot create destination folder {}: {cause}; check permissions or choose another --dest",
        dest.display()
    )]
    CreateDir { dest: PathBuf, cause: io::Error },
    #[error(
        "cannot sort {} into {}: that path exists but is not a folder; \
         move it out of the way or choose another --dest",
        from.display(),
        to.display()
    )]
    NotAFolder { from: PathBuf, to: PathBuf },
    #[error(
        "cannot sort {} into {}: {cause}; check that the file still exists and is readable",
        from.display(),
        to.display()
    )]
    ReadSource {
        from: PathBuf,
        to: PathBuf,
        cause: io::Error,
    },
    #[error(
        "cannot sort {} into {}: it is not a regular file; only image files can be organised",
        from.display(),
        to.display()
    )]
    NotAFile { from: PathBuf, to: PathBuf },
    #[error(
        "cannot {mode} {} to {}: {cause}; {} is unchanged; check that the destination \
         is writable and has free space, then run again",
        from.display(),
        to.display(),
        from.display()
    )]
    Transfer {
        mode: Mode,
        from: PathBuf,
        to: PathBuf,
        cause: io::Error,
    },
    #[error(
        "moved {} to {} but could not remove the original: {cause}; the copy at {} is \
         complete, so delete {} by hand",
        from.display(),
        to.display(),
        to.display(),
        from.display()
    )]
    RemoveSource {
        from: PathBuf,
        to: PathBuf,
        cause: io::Error,
    },
}

/// Where one file went (or would go, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The file as the caller named it.
    pub source: PathBuf,
    /// Its path in the label folder.
    pub destination: PathBuf,
    /// How it got (or would get) there.
    pub mode: Mode,
    /// True when nothing was touched.
    pub dry_run: bool,
    /// True when the source already sat at `destination`, so it was left alone.
    pub unchanged: bool,
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            f.write_str("would ")?;
        }
        if self.unchanged {
            write!(f, "keep {} (already in place)", self.destination.display())
        } else {
            write!(
                f,
                "{} {} -> {}",
                self.mode,
                self.source.display(),
                self.destination.display()
            )
        }
    }
}

/// Places files into per-label folders under one destination. As a sink of a classify run
/// it places each labelled file by [`decide::destination`], says each placement (always in
/// a dry run, else with `--verbose`) and counts the files it failed to place.
#[derive(Debug)]
pub struct Organizer {
    dest: PathBuf,
    mode: Mode,
    dry_run: bool,
    /// Destinations handed out in this run; a dry run writes nothing, so the disk alone
    /// cannot tell it that two `cat.jpg`s would collide.
    claimed: HashSet<PathBuf>,
    /// Files that could not be placed.
    failed: usize,
}

impl Organizer {
    /// Prepares to organise into `dest`, creating it unless `dry_run`.
    ///
    /// `dest` may lie inside a folder being classified.
    pub fn new(dest: &Path, mode: Mode, dry_run: bool) -> Result<Self, OrganizeError> {
        if cfg!(not(unix)) && mode == Mode::Link {
            return Err(OrganizeError::LinkUnsupported {
                dest: dest.to_path_buf(),
            });
        }
        if dest.exists() && !dest.is_dir() {
            return Err(OrganizeError::CreateDir {
                dest: dest.to_path_buf(),
                cause: io::Error::new(io::ErrorKind::AlreadyExists, "a file is in the way"),
            });
        }
        if !dry_run {
            fs::create_dir_all(dest).map_err(|source| OrganizeError::CreateDir {
                dest: dest.to_path_buf(),
                cause: source,
            })?;
        }
        Ok(Self {
            dest: dest.to_path_buf(),
            mode,
            dry_run,
            claimed: HashSet::new(),
            failed: 0,
        })
    }

    /// Places one file; returns the planned/actual destination. `label` None = uncertain.
    pub fn place(
        &mut self,
        source: &Path,
        label: Option<&str>,
    ) -> Result<Placement, OrganizeError> {
        let folder = match label {
            Some(label) => folder_name(label),
            None => UNCERTAIN_FOLDER.to_string(),
        };
        let dir = self.dest.join(folder);
        let Some(file_name) = source.file_name() else {
            return Err(OrganizeError::NotAFile {
                from: source.to_path_buf(),
                to: dir,
            });
        };

        let meta = fs::metadata(source).map_err(|e| OrganizeError::ReadSource {
            from: source.to_path_buf(),
            to: dir.clone(),
            cause: e,
        })?;
        if !meta.is_file() {
            return Err(OrganizeError::NotAFile {
                from: source.to_path_buf(),
                to: dir,
            });
        }
        // Checked in dry runs too, so the plan fails where the real run would.
        if fs::symlink_metadata(&dir).is_ok_and(|m| !m.is_dir()) {
            return Err(OrganizeError::NotAFolder {
                from: source.to_path_buf(),
                to: dir,
            });
        }

        let own_place = dir.join(file_name);
        if same_location(source, &own_place) {
            self.claimed.insert(claim_key(&own_place));
            return Ok(self.placement(source, own_place, true));
        }

        let destination = self.free_name(&dir, Path::new(file_name));
        if !self.dry_run {
            let done = fs::create_dir_all(&dir)
                .map_err(|e| OrganizeError::CreateDir {
                    dest: dir.clone(),
                    cause: e,
                })
                .and_then(|()| self.transfer(source, &destination));
            if let Err(e) = done {
                // Nothing landed there, so a later file may have the name.
                self.claimed.remove(&claim_key(&destination));
                return Err(e);
            }
        }
        Ok(self.placement(source, destination, false))
    }

    fn placement(&self, source: &Path, destination: PathBuf, unchanged: bool) -> Placement {
        Placement {
            source: source.to_path_buf(),
            destination,
            mode: self.mode,
            dry_run: self.dry_run,
            unchanged,
        }
    }

    /// The first of `name`, `name-1`, `name-2`, … in `dir` that is neither on disk nor
    /// claimed earlier in this run; claims it.
    fn free_name(&mut self, dir: &Path, name: &Path) -> PathBuf {
        let mut candidate = dir.join(name);
        let mut n: u64 = 0;
        loop {
            let taken = self.claimed.contains(&claim_key(&candidate))
                || fs::symlink_metadata(&candidate).is_ok();
            if !taken {
                self.claimed.insert(claim_key(&candidate));
                return candidate;
            }
            n += 1;
            candidate = dir.join(suffixed(name, n));
        }
    }

    fn transfer(&self, from: &Path, to: &Path) -> Result<(), OrganizeError> {
        let failed = |source: io::Error| OrganizeError::Transfer {
            mode: self.mode,
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            cause: source,
        };
        match self.mode {
            Mode::Copy => copy_then_rename(from, to).map_err(failed),
            Mode::Link => link(from, to),
            Mode::Move => match fs::rename(from, to) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::CrossesDevices => move_across(from, to),
                Err(e) => Err(failed(e)),
            },
        }
    }
}

impl Sink<Labelled<'_>> for Organizer {
    fn write(&mut self, batch: &[Labelled<'_>], progress: &dyn Progress) -> Result<(), JobError> {
        for labelled in batch {
            let Some(label) = decide::destination(&labelled.result) else {
                continue;
            };
            let input = &labelled.embedded.input;
            let Source::File(path) = &input.source else {
                progress.say(
                    Level::Error,
                    &format_args!(
                        "{}: not organized: only local files can be sorted",
                        input.display
                    ),
                );
                continue;
            };
            match self.place(path, label.as_deref()) {
                Ok(placement) => progress.say(Level::of_change(self.dry_run), &placement),
                Err(err) => {
                    self.failed += 1;
                    progress.say(Level::Error, &err);
                }
            }
        }
        Ok(())
    }

    fn failed(&self) -> usize {
        self.failed
    }
}

/// Turns a label into a folder name that is safe on Unix and Windows.
///
/// Separators, control characters, characters Windows forbids (`<>:"/\|?*`), `..`, leading
/// dots and trailing dots become `_`; surrounding whitespace is trimmed; Windows device names
/// (`con`, `nul`, `com1`, …) get a `_` prefix; an empty result becomes `_unnamed`. Unicode is
/// kept. Different labels may map to the same folder; they then share it.
pub fn folder_name(label: &str) -> String {
    let replaced: String = label
        .trim()
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '<' | '>' | ':' | '"' | '/' | '\\' | '|' | '?' | '*') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let mut name = replaced.replace("..", "__");
    // A leading dot hides the folder; Windows silently drops trailing ones.
    let leading = name.len() - name.trim_start_matches('.').len();
    let trailing = name.len() - name.trim_end_matches('.').len();
    if leading > 0 {
        name.replace_range(..leading, &"_".repeat(leading));
    }
    if trailing > 0 && trailing < name.len() {
        let at = name.len() - trailing;
        name.replace_range(at.., &"_".repeat(trailing));
    }
    let mut name = name.trim().to_string();
    if name.is_empty() {
        return UNNAMED_FOLDER.to_string();
    }
    if is_windows_device_name(&name) {
        name.insert(0, '_');
    }
    if name.len() > MAX_FOLDER_BYTES {
        let mut cut = MAX_FOLDER_BYTES;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name
}

fn is_windows_device_name(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).to_ascii_lowercase();
    matches!(stem.as_str(), "con" | "prn" | "aux" | "nul")
        || ((stem.starts_with("com") || stem.starts_with("lpt"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit())
}

/// `name` with `-n` before its last extension: `cat.jpg` → `cat-1.jpg`, `a.tar.gz` →
/// `a.tar-1.gz`, `README` → `README-1`, `.hidden` → `.hidden-1`.
fn suffixed(name: &Path, n: u64) -> OsString {
    let mut out = name
        .file_stem()
        .map(|s| s.to_os_string())
        .unwrap_or_else(|| name.as_os_str().to_os_string());
    out.push(format!("-{n}"));
    if let Some(ext) = name.extension() {
        out.push(".");
        out.push(ext);
    }
    out
}

/// Key for the claimed set; on case-insensitive filesystems `Cat.jpg` and `cat.jpg` collide.
fn claim_key(path: &Path) -> PathBuf {
    if cfg!(any(windows, target_os = "macos")) {
        PathBuf::from(path.to_string_lossy().to_lowercase())
    } else {
        path.to_path_buf()
    }
}

/// Whether `source` already is `place` (same folder on disk, same file name).
///
/// Compares canonical parents rather than the files, so a symlink at `place` pointing at
/// `source` (left by an earlier `link` run) does not count.
fn same_location(source: &Path, place: &Path) -> bool {
    if source.file_name() != place.file_name() {
        return false;
    }
    match (canonical_parent(source), canonical_parent(place)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn canonical_parent(path: &Path) -> Option<PathBuf> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::canonicalize(parent).ok()
}

/// Move across filesystems: a complete copy lands under the final name before the source
/// goes, so a failure at any point never loses the file.
fn move_across(from: &Path, to: &Path) -> Result<(), OrganizeError> {
    copy_then_rename(from, to).map_err(|source| OrganizeError::Transfer {
        mode: Mode::Move,
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        cause: source,
    })?;
    fs::remove_file(from).map_err(|source| OrganizeError::RemoveSource {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        cause: source,
    })
}

/// Copies `from` to a temporary file beside `to`, flushes it to disk, then renames it to
/// `to`. On error the temporary file is removed and `to` is not created.
fn copy_then_rename(from: &Path, to: &Path) -> io::Result<()> {
    let dir = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let temp = reserve_temp(dir)?;
    let result = (|| {
        fs::copy(from, &temp)?;
        fs::File::open(&temp)?.sync_all()?;
        // rename replaces silently on Unix; the name was free when chosen, so check again
        // right before rather than trust it.
        if fs::symlink_metadata(to).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "destination appeared while copying",
            ));
        }
        fs::rename(&temp, to)
    })();
    match result {
        Ok(()) => {
            sync_dir(dir);
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// Creates an empty, uniquely named hidden file in `dir` to copy into.
fn reserve_temp(dir: &Path) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".vlm-partial-{}-{n}", std::process::id()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
        {
            Ok(_) => return Ok(temp),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Makes the rename itself durable before a move deletes its source. Best effort: some
/// filesystems refuse to sync a directory, and the data is already safe on disk.
#[cfg(unix)]
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) {}

#[cfg(unix)]
fn link(from: &Path, to: &Path) -> Result<(), OrganizeError> {
    let failed = |source: io::Error| OrganizeError::Transfer {
        mode: Mode::Link,
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        cause: source,
    };
    // A relative target would resolve against the link's folder, not the caller's.
    let target = fs::canonicalize(from).map_err(failed)?;
    std::os::unix::fs::symlink(target, to).map_err(failed)
}

#[cfg(not(unix))]
fn link(_from: &Path, to: &Path) -> Result<(), OrganizeError> {
    Err(OrganizeError::LinkUnsupported {
        dest: to.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitises_labels_into_folder_names() {
        assert_eq!(folder_name("a/b"), "a_b");
        assert_eq!(folder_name("a\\b"), "a_b");
        assert_eq!(folder_name(".."), "__");
        assert_eq!(folder_name("."), "_");
        assert_eq!(folder_name("x/../y"), "x____y");
        assert_eq!(folder_name(".hidden"), "_hidden");
        assert_eq!(folder_name("  x  "), "x");
        assert_eq!(folder_name(""), "_unnamed");
        assert_eq!(folder_name("   "), "_unnamed");
        assert_eq!(folder_name("猫"), "猫");
        assert_eq!(folder_name("what?"), "what_");
        assert_eq!(folder_name("<>:\"|?*"), "_______");
        assert_eq!(folder_name("tab\there"), "tab_here");
        assert_eq!(folder_name("etc."), "etc_");
        assert_eq!(folder_name("golden retriever"), "golden retriever");
        assert_eq!(folder_name("CON"), "_CON");
        assert_eq!(folder_name("com1"), "_com1");
        assert_eq!(folder_name("nul.txt"), "_nul.txt");
        assert_eq!(folder_name("console"), "console");
    }

    #[test]
    fn cuts_long_labels_on_a_char_boundary() {
        let name = folder_name(&"猫".repeat(100));
        assert!(name.len() <= MAX_FOLDER_BYTES);
        assert!(name.chars().all(|c| c == '猫'));
    }

    #[test]
    fn suffix_goes_before_the_last_extension() {
        let s = |name: &str, n| suffixed(Path::new(name), n).into_string().unwrap();
        assert_eq!(s("cat.jpg", 1), "cat-1.jpg");
        assert_eq!(s("cat.jpg", 2), "cat-2.jpg");
        assert_eq!(s("a.tar.gz", 1), "a.tar-1.gz");
        assert_eq!(s("README", 1), "README-1");
        assert_eq!(s(".hidden", 3), ".hidden-3");
    }

    #[test]
    fn parses_modes() {
        assert_eq!("copy".parse::<Mode>().unwrap(), Mode::Copy);
        assert_eq!("Move".parse::<Mode>().unwrap(), Mode::Move);
        assert_eq!("link".parse::<Mode>().unwrap(), Mode::Link);
        let err = "hardlink".parse::<Mode>().unwrap_err().to_string();
        assert!(
            err.contains("hardlink") && err.contains("copy, move or link"),
            "{err}"
        );
    }

    #[test]
    fn displays_placements() {
        let mut p = Placement {
            source: PathBuf::from("a/cat.jpg"),
            destination: PathBuf::from("out/cat/cat.jpg"),
            mode: Mode::Copy,
            dry_run: false,
            unchanged: false,
        };
        assert_eq!(p.to_string(), "copy a/cat.jpg -> out/cat/cat.jpg");
        p.dry_run = true;
        p.mode = Mode::Move;
        assert_eq!(p.to_string(), "would move a/cat.jpg -> out/cat/cat.jpg");
        p.unchanged = true;
        assert_eq!(
            p.to_string(),
            "would keep out/cat/cat.jpg (already in place)"
        );
    }

    #[test]
    fn copy_then_rename_writes_the_full_file_and_no_temp() {
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("src.bin");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&from, &data).unwrap();
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        let to = out.join("dst.bin");

        copy_then_rename(&from, &to).unwrap();

        assert_eq!(fs::read(&to).unwrap(), data);
        assert_eq!(fs::read(&from).unwrap(), data);
        assert_eq!(entries(&out), vec!["dst.bin".to_string()]);
    }

    #[test]
    fn copy_then_rename_failing_at_the_rename_removes_the_temp() {
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("src.bin");
        fs::write(&from, b"image").unwrap();
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        // Something already holds the final name: the copy must not replace it.
        let to = out.join("dst.bin");
        fs::create_dir(&to).unwrap();

        assert!(copy_then_rename(&from, &to).is_err());

        assert!(to.is_dir());
        assert_eq!(entries(&out), vec!["dst.bin".to_string()]);
        assert_eq!(fs::read(&from).unwrap(), b"image");
    }

    #[test]
    fn copy_then_rename_into_a_missing_folder_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("src.bin");
        fs::write(&from, b"image").unwrap();

        assert!(copy_then_rename(&from, &tmp.path().join("nope/dst.bin")).is_err());

        assert_eq!(entries(tmp.path()), vec!["src.bin".to_string()]);
    }

    #[test]
    fn move_across_removes_the_source_only_after_the_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("cat.jpg");
        fs::write(&from, b"meow").unwrap();
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();

        move_across(&from, &out.join("cat.jpg")).unwrap();

        assert!(!from.exists());
        assert_eq!(fs::read(out.join("cat.jpg")).unwrap(), b"meow");
        assert_eq!(entries(&out), vec!["cat.jpg".to_string()]);
    }

    #[test]
    fn failed_move_across_keeps_the_source() {
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("cat.jpg");
        fs::write(&from, b"meow").unwrap();
        let out = tmp.path().join("out");
        fs::create_dir_all(out.join("cat.jpg")).unwrap();

        let err = move_across(&from, &out.join("cat.jpg")).unwrap_err();

        assert!(matches!(err, OrganizeError::Transfer { .. }), "{err}");
        assert_eq!(fs::read(&from).unwrap(), b"meow");
        assert_eq!(entries(&out), vec!["cat.jpg".to_string()]);
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}
