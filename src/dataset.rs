//! Labelled image folders, `DIR/<label>/<images>`: the input of `vlm eval`, `vlm fit` and
//! few-shot `--examples`.
//!
//! Each direct subdirectory of `DIR` is a class, named by the folder or by a mapping file
//! (`FOLDER<TAB>LABEL` or `FOLDER=LABEL` per line, for folders named like `n01440764`).
//! Images are found below each class folder with the same rules as every other input
//! (recursive, hidden files skipped, images by extension or content).
//!
//! A labelled list works too: a JSON Lines file of `{"path": ..., "label": ...}` objects
//! (what the review page of `vlm report` exports as corrections), either instead of `DIR`
//! or as the mapping file, where each listed file's label replaces its folder's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::inputs::{self, Event, Input, InputError, InputOptions};
use crate::job::{Embedded, Job, JobError, Progress, SinkFn, Tally};

/// Why a labelled folder cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {}: {cause}; pass a folder that holds one subfolder per label", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{} has no subfolders; put the images of each label in DIR/<label>/", path.display())]
    NoClasses { path: PathBuf },
    #[error("{}: no images in the label folders; put the images of each label in DIR/<label>/", path.display())]
    NoImages { path: PathBuf },
    #[error("{}, line {line}: expected FOLDER<TAB>LABEL or FOLDER=LABEL", path.display())]
    MappingSyntax { path: PathBuf, line: usize },
    #[error("{}: folder {folder:?} is mapped twice; keep one line per folder", path.display())]
    MappingDuplicate { path: PathBuf, folder: String },
    #[error("{}: label {label:?} is given to both {first:?} and {second:?}; give each folder its own label or merge the folders", path.display())]
    LabelTwice {
        path: PathBuf,
        label: String,
        first: String,
        second: String,
    },
    #[error("{}, line {line}: expected a JSON object {{\"path\": ..., \"label\": ...}} with a non-empty label ({reason}); fix or remove the line", path.display())]
    ListSyntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{}: no labelled images listed; add {{\"path\": ..., \"label\": ...}} lines", path.display())]
    EmptyList { path: PathBuf },
    #[error(transparent)]
    Input(#[from] InputError),
}

/// One line of a labelled list.
#[derive(serde::Deserialize)]
struct ListLine {
    path: String,
    label: String,
}

/// Reads a labelled list: `(path, label)` per non-blank line.
fn read_list(path: &Path) -> Result<Vec<(String, String)>, DatasetError> {
    let text = std::fs::read_to_string(path).map_err(|cause| DatasetError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let syntax = |reason: String| DatasetError::ListSyntax {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let parsed: ListLine = serde_json::from_str(line).map_err(|e| syntax(e.to_string()))?;
        let label = parsed.label.trim();
        if label.is_empty() || parsed.path.is_empty() {
            return Err(syntax("empty path or label".to_string()));
        }
        entries.push((parsed.path, label.to_string()));
    }
    Ok(entries)
}

/// Whether `path` holds a labelled list rather than folder mappings: named `.jsonl`, or
/// its first non-blank line is a JSON object.
fn is_list(path: &Path, text: &str) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"))
        || text
            .lines()
            .find(|l| !l.trim().is_empty())
            .is_some_and(|l| l.trim_start().starts_with('{'))
}

/// The key a file is matched by: its canonical path, else the path as given.
fn file_key(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Folder name → label, read from a mapping file; or file → label, from a labelled list.
#[derive(Debug, Clone, Default)]
pub struct LabelMap {
    map: BTreeMap<String, String>,
    /// Per-file labels (a labelled list), by [`file_key`], in the list's order.
    files: Vec<(PathBuf, String, String)>,
}

impl LabelMap {
    /// Reads `FOLDER<TAB>LABEL` or `FOLDER=LABEL` lines (blank lines and `#` comments are
    /// skipped), or a labelled list (`{"path","label"}` JSON Lines) whose labels replace
    /// the folders' for the files it names.
    pub fn read(path: &Path) -> Result<Self, DatasetError> {
        let text = std::fs::read_to_string(path).map_err(|source| DatasetError::Read {
            path: path.to_path_buf(),
            cause: source,
        })?;
        if is_list(path, &text) {
            let files = read_list(path)?
                .into_iter()
                .map(|(file, label)| (file_key(Path::new(&file)), file, label))
                .collect();
            return Ok(Self {
                map: BTreeMap::new(),
                files,
            });
        }
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self, DatasetError> {
        let mut map = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (folder, label) = line
                .split_once('\t')
                .or_else(|| line.split_once('='))
                .map(|(f, l)| (f.trim(), l.trim()))
                .filter(|(f, l)| !f.is_empty() && !l.is_empty())
                .ok_or_else(|| DatasetError::MappingSyntax {
                    path: path.to_path_buf(),
                    line: i + 1,
                })?;
            if map.insert(folder.to_string(), label.to_string()).is_some() {
                return Err(DatasetError::MappingDuplicate {
                    path: path.to_path_buf(),
                    folder: folder.to_string(),
                });
            }
        }
        Ok(Self {
            map,
            files: Vec::new(),
        })
    }

    /// The label for a folder: mapped, else the folder name itself.
    pub fn label<'a>(&'a self, folder: &'a str) -> &'a str {
        self.map.get(folder).map_or(folder, String::as_str)
    }
}

/// One image with its class.
#[derive(Debug, Clone)]
pub struct LabelledImage {
    pub input: Input,
    /// Index into [`Dataset::labels`].
    pub label: usize,
    /// The path below the dataset folder, `/`-separated (e.g. `red/01.png`): the same
    /// however the folder was named on the command line.
    pub relative: String,
}

/// A labelled folder, read.
#[derive(Debug)]
pub struct Dataset {
    /// Class labels, in folder-name order.
    pub labels: Vec<String>,
    /// The folder each label came from.
    pub folders: Vec<String>,
    /// Images, grouped by class in label order, each class in the input walk's order.
    pub images: Vec<LabelledImage>,
    /// Entries skipped while walking (not images, hidden...).
    pub skipped: Vec<(PathBuf, String)>,
    /// Entries that could not be read while walking.
    pub errors: Vec<InputError>,
}

impl Dataset {
    /// Reads `dir`: one class per direct subfolder (hidden ones skipped unless
    /// `options.hidden`), images found inside with `options`. Files directly in `dir` are
    /// not part of any class and are reported as skipped.
    pub fn from_dir(
        dir: &Path,
        options: &InputOptions,
        mapping: Option<&LabelMap>,
    ) -> Result<Self, DatasetError> {
        let read_err = |source| DatasetError::Read {
            path: dir.to_path_buf(),
            cause: source,
        };
        let mut folders = Vec::new();
        let mut skipped = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && !options.hidden {
                continue;
            }
            if path.is_dir() {
                folders.push(name);
            } else {
                skipped.push((path, "not inside a label folder".to_string()));
            }
        }
        folders.sort();
        if folders.is_empty() {
            return Err(DatasetError::NoClasses {
                path: dir.to_path_buf(),
            });
        }
        let empty = LabelMap::default();
        let mapping = mapping.unwrap_or(&empty);
        let mut labels: Vec<String> = Vec::with_capacity(folders.len());
        for folder in &folders {
            let label = mapping.label(folder).to_string();
            if let Some(first) = labels.iter().position(|l| *l == label) {
                return Err(DatasetError::LabelTwice {
                    path: dir.to_path_buf(),
                    label,
                    first: folders[first].clone(),
                    second: folder.clone(),
                });
            }
            labels.push(label);
        }

        let mut images = Vec::new();
        let mut errors = Vec::new();
        for (label, folder) in folders.iter().enumerate() {
            let path = dir.join(folder);
            let arg = path.to_string_lossy().into_owned();
            for event in inputs::discover(&[arg], None, options)? {
                match event {
                    Event::Input(input) => {
                        let relative = relative_name(&input, dir);
                        images.push(LabelledImage {
                            input,
                            label,
                            relative,
                        });
                    }
                    Event::Skipped { path, reason } => skipped.push((path, reason.to_string())),
                    Event::Error(err) => errors.push(err),
                }
            }
        }
        let mut data = Self {
            labels,
            folders,
            images,
            skipped,
            errors,
        };
        if !mapping.files.is_empty() {
            data.relabel(&mapping.files, options)?;
        }
        if data.images.is_empty() {
            return Err(DatasetError::NoImages {
                path: dir.to_path_buf(),
            });
        }
        Ok(data)
    }

    /// A labelled folder (`DIR/<label>/`) or a labelled list (a `{"path","label"}` JSON
    /// Lines file, as `vlm report` exports), whichever `path` is.
    pub fn open(
        path: &Path,
        options: &InputOptions,
        mapping: Option<&LabelMap>,
    ) -> Result<Self, DatasetError> {
        if path.is_file() {
            Self::from_list(path, options, mapping)
        } else {
            Self::from_dir(path, options, mapping)
        }
    }

    /// [`Self::open`] with the mapping in `labels_file`, when given.
    pub fn open_mapped(
        path: &Path,
        options: &InputOptions,
        labels_file: Option<&Path>,
    ) -> Result<Self, DatasetError> {
        let mapping = labels_file.map(LabelMap::read).transpose()?;
        Self::open(path, options, mapping.as_ref())
    }

    /// Reads a labelled list: each line `{"path": ..., "label": ...}`, relative paths taken
    /// from the current folder. Classes are the labels in name order (each is also its own
    /// "folder"); `mapping` renames them as it renames folders.
    pub fn from_list(
        path: &Path,
        options: &InputOptions,
        mapping: Option<&LabelMap>,
    ) -> Result<Self, DatasetError> {
        let entries = read_list(path)?;
        if entries.is_empty() {
            return Err(DatasetError::EmptyList {
                path: path.to_path_buf(),
            });
        }
        let empty = LabelMap::default();
        let mapping = mapping.unwrap_or(&empty);
        let mut data = Self {
            labels: Vec::new(),
            folders: Vec::new(),
            images: Vec::new(),
            skipped: Vec::new(),
            errors: Vec::new(),
        };
        let files: Vec<(PathBuf, String, String)> = entries
            .into_iter()
            .map(|(file, label)| {
                let label = mapping.label(&label).to_string();
                (file_key(Path::new(&file)), file, label)
            })
            .collect();
        data.relabel(&files, options)?;
        if data.images.is_empty() {
            return Err(DatasetError::NoImages {
                path: path.to_path_buf(),
            });
        }
        Ok(data)
    }

    /// Gives the listed files their listed labels: images already found take the new
    /// label, others are found and added; then classes are the labels still in use, in
    /// name order.
    fn relabel(
        &mut self,
        files: &[(PathBuf, String, String)],
        options: &InputOptions,
    ) -> Result<(), DatasetError> {
        let mut names: Vec<String> = self.labels.clone();
        let index_of = |names: &mut Vec<String>, label: &str| {
            names.iter().position(|l| l == label).unwrap_or_else(|| {
                names.push(label.to_string());
                names.len() - 1
            })
        };
        let mut known: std::collections::HashMap<PathBuf, usize> = self
            .images
            .iter()
            .enumerate()
            .filter_map(|(i, image)| match &image.input.source {
                crate::inputs::Source::File(p) => Some((file_key(p), i)),
                _ => None,
            })
            .collect();
        for (key, file, label) in files {
            let class = index_of(&mut names, label);
            if let Some(&i) = known.get(key) {
                self.images[i].label = class;
                continue;
            }
            for event in inputs::discover(std::slice::from_ref(file), None, options)? {
                match event {
                    Event::Input(input) => {
                        known.insert(key.clone(), self.images.len());
                        self.images.push(LabelledImage {
                            relative: input.display.clone(),
                            input,
                            label: class,
                        });
                    }
                    Event::Skipped { path, reason } => {
                        self.skipped.push((path, reason.to_string()))
                    }
                    Event::Error(err) => self.errors.push(err),
                }
            }
        }
        // Classes in name order, the unused ones dropped; images grouped by class.
        let mut used: Vec<usize> = self.images.iter().map(|i| i.label).collect();
        used.sort_unstable();
        used.dedup();
        used.sort_by(|&a, &b| names[a].cmp(&names[b]));
        let mut new_index = vec![usize::MAX; names.len()];
        for (new, &old) in used.iter().enumerate() {
            new_index[old] = new;
        }
        let folder_of = |old: usize| self.folders.get(old).cloned().unwrap_or(names[old].clone());
        let folders: Vec<String> = used.iter().map(|&old| folder_of(old)).collect();
        self.labels = used.iter().map(|&old| names[old].clone()).collect();
        self.folders = folders;
        for image in &mut self.images {
            image.label = new_index[image.label];
        }
        self.images.sort_by_key(|i| i.label);
        Ok(())
    }

    /// Number of images of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.labels.len()];
        for image in &self.images {
            counts[image.label] += 1;
        }
        counts
    }

    /// A reproducible stratified split: within each class, images are ordered by a hash of
    /// `seed` and their path below the dataset folder, and the first `round(fraction × n)` go to the held-out part
    /// (at least one when the class has two or more images, never all of them). Returns
    /// (train, held-out) indices into [`Self::images`]. The same seed and files give the
    /// same split on every machine, whatever order the files were found in.
    pub fn split(&self, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
        self.split_among(0..self.images.len(), fraction, seed)
    }

    /// [`Self::split`] of the images at `indices` only (e.g. those that could be read), as
    /// if the others were not in the folder: each image's side depends on its path and on how
    /// many of its class take part, never on the images left out.
    pub fn split_among(
        &self,
        indices: impl IntoIterator<Item = usize>,
        fraction: f64,
        seed: u64,
    ) -> (Vec<usize>, Vec<usize>) {
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.labels.len()];
        for i in indices {
            by_class[self.images[i].label].push(i);
        }
        let (mut train, mut held) = (Vec::new(), Vec::new());
        for mut members in by_class {
            members.sort_by_key(|&i| (mix(seed, &self.images[i].relative), i));
            let n = members.len();
            let want = (fraction.clamp(0.0, 1.0) * n as f64).round() as usize;
            let take = if n >= 2 { want.clamp(1, n - 1) } else { 0 };
            held.extend_from_slice(&members[..take]);
            train.extend_from_slice(&members[take..]);
        }
        train.sort_unstable();
        held.sort_unstable();
        (train, held)
    }
}

/// A dataset's images embedded, in the dataset's order, ready to pair with their labels.
#[derive(Debug, Default)]
pub struct LabelledRows {
    /// One per image of [`Dataset::images`] that the run reached (all of them unless it
    /// was interrupted): its embedding, or why there is none.
    pub embeddings: Vec<Result<Vec<f32>, String>>,
    /// The embedding run's counts.
    pub tally: Tally,
}

impl LabelledRows {
    /// The images that were embedded, with their embeddings, in dataset order.
    pub fn embedded<'a>(
        &'a self,
        dataset: &'a Dataset,
    ) -> impl Iterator<Item = (&'a LabelledImage, &'a [f32])> + 'a {
        dataset
            .images
            .iter()
            .zip(&self.embeddings)
            .filter_map(|(image, e)| Some((image, e.as_deref().ok()?)))
    }

    /// The images that could not be embedded, and why.
    pub fn failed<'a>(
        &'a self,
        dataset: &'a Dataset,
    ) -> impl Iterator<Item = (&'a LabelledImage, &'a str)> + 'a {
        dataset
            .images
            .iter()
            .zip(&self.embeddings)
            .filter_map(|(image, e)| Some((image, e.as_ref().err()?.as_str())))
    }

    /// The embedded rows and their classes, for scoring.
    pub fn rows_and_labels<'a>(&'a self, dataset: &'a Dataset) -> (Vec<&'a [f32]>, Vec<usize>) {
        self.embedded(dataset)
            .map(|(image, row)| (row, image.label))
            .unzip()
    }
}

impl Dataset {
    /// Embeds every image with `job`, reporting progress and failures to `progress`: the
    /// one way a labelled folder becomes embeddings paired with labels (`vlm eval`,
    /// `vlm fit`, `--examples`).
    pub fn embed(&self, job: &Job, progress: &dyn Progress) -> Result<LabelledRows, JobError> {
        let mut embeddings = Vec::with_capacity(self.images.len());
        let inputs: Vec<Input> = self.images.iter().map(|i| i.input.clone()).collect();
        let mut sink = SinkFn(|batch: &[Embedded], _: &dyn Progress| {
            embeddings.extend(batch.iter().map(|done| match &done.embedding {
                Ok(row) => Ok(row.clone()),
                Err(err) => Err(err.to_string()),
            }));
            Ok(())
        });
        let tally = job.run(inputs, &mut sink, progress)?;
        Ok(LabelledRows { embeddings, tally })
    }
}

/// `input`'s path below `dir`, with `/` separators; the displayed path if it is not below.
fn relative_name(input: &Input, dir: &Path) -> String {
    let path = match &input.source {
        crate::inputs::Source::File(path) => path.as_path(),
        _ => Path::new(&input.display),
    };
    let below = path.strip_prefix(dir).unwrap_or(path);
    below
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// FNV-1a 64 over the seed and a path: stable across platforms and releases.
fn mix(seed: u64, text: &str) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for byte in seed.to_le_bytes().iter().chain(text.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(classes: &[(&str, usize)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, n) in classes {
            let folder = dir.path().join(name);
            std::fs::create_dir(&folder).unwrap();
            for i in 0..*n {
                // A PNG signature is enough for discovery (by extension anyway).
                std::fs::write(folder.join(format!("{i}.png")), b"\x89PNG\r\n\x1a\n").unwrap();
            }
        }
        dir
    }

    #[test]
    fn classes_come_from_sorted_folders_and_mapping() {
        let dir = tree(&[("n02", 2), ("n01", 3)]);
        std::fs::write(dir.path().join("stray.png"), b"x").unwrap();
        let map = LabelMap::parse("# comment\nn01\ttench\nn02=goldfish\n", Path::new("m")).unwrap();
        let data = Dataset::from_dir(dir.path(), &InputOptions::default(), Some(&map)).unwrap();
        assert_eq!(data.labels, ["tench", "goldfish"]);
        assert_eq!(data.folders, ["n01", "n02"]);
        assert_eq!(data.class_counts(), [3, 2]);
        assert_eq!(data.skipped.len(), 1);
    }

    #[test]
    fn bad_trees_and_mappings_are_errors() {
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            Dataset::from_dir(empty.path(), &InputOptions::default(), None),
            Err(DatasetError::NoClasses { .. })
        ));
        let no_images = tree(&[("a", 0)]);
        assert!(matches!(
            Dataset::from_dir(no_images.path(), &InputOptions::default(), None),
            Err(DatasetError::NoImages { .. })
        ));
        assert!(matches!(
            LabelMap::parse("just-a-folder\n", Path::new("m")),
            Err(DatasetError::MappingSyntax { line: 1, .. })
        ));
        assert!(matches!(
            LabelMap::parse("a=x\na=y\n", Path::new("m")),
            Err(DatasetError::MappingDuplicate { .. })
        ));
        let two = tree(&[("a", 1), ("b", 1)]);
        let map = LabelMap::parse("a=x\nb=x\n", Path::new("m")).unwrap();
        assert!(matches!(
            Dataset::from_dir(two.path(), &InputOptions::default(), Some(&map)),
            Err(DatasetError::LabelTwice { .. })
        ));
    }

    #[test]
    fn split_does_not_depend_on_how_the_folder_is_named() {
        let dir = tree(&[("a", 6), ("b", 6)]);
        let direct = Dataset::from_dir(dir.path(), &InputOptions::default(), None).unwrap();
        let dotted = dir.path().join("a").join("..");
        let roundabout = Dataset::from_dir(&dotted, &InputOptions::default(), None).unwrap();
        assert_eq!(direct.images[0].relative, "a/0.png");
        assert_eq!(direct.split(0.5, 3), roundabout.split(0.5, 3));
    }

    #[test]
    fn split_is_stratified_reproducible_and_seed_dependent() {
        let dir = tree(&[("a", 10), ("b", 5), ("c", 1)]);
        let data = Dataset::from_dir(dir.path(), &InputOptions::default(), None).unwrap();
        let (train, held) = data.split(0.3, 7);
        assert_eq!(train.len() + held.len(), 16);
        let held_of = |class| {
            held.iter()
                .filter(|&&i| data.images[i].label == class)
                .count()
        };
        assert_eq!((held_of(0), held_of(1), held_of(2)), (3, 2, 0));
        assert_eq!(data.split(0.3, 7), (train.clone(), held.clone()));
        let others: Vec<_> = (0..20).map(|seed| data.split(0.3, seed).1).collect();
        assert!(others.iter().any(|h| *h != held));
    }

    #[test]
    fn a_split_among_some_images_is_the_split_without_the_others() {
        let all = tree(&[("a", 9), ("b", 7)]);
        let data = Dataset::from_dir(all.path(), &InputOptions::default(), None).unwrap();
        // The same folder without a/3.png, b/0.png and b/5.png.
        let fewer = tree(&[("a", 9), ("b", 7)]);
        for gone in ["a/3.png", "b/0.png", "b/5.png"] {
            std::fs::remove_file(fewer.path().join(gone)).unwrap();
        }
        let less = Dataset::from_dir(fewer.path(), &InputOptions::default(), None).unwrap();
        let kept: Vec<usize> = (0..data.images.len())
            .filter(|&i| {
                !["a/3.png", "b/0.png", "b/5.png"].contains(&data.images[i].relative.as_str())
            })
            .collect();
        let names = |data: &Dataset, indices: Vec<usize>| -> Vec<String> {
            indices
                .into_iter()
                .map(|i| data.images[i].relative.clone())
                .collect()
        };
        for seed in 0..5 {
            let (train, held) = data.split_among(kept.iter().copied(), 0.3, seed);
            let (want_train, want_held) = less.split(0.3, seed);
            assert_eq!(names(&data, train), names(&less, want_train), "seed {seed}");
            assert_eq!(names(&data, held), names(&less, want_held), "seed {seed}");
        }
    }

    #[test]
    fn a_labelled_list_is_a_dataset() {
        let dir = tree(&[("x", 3)]);
        let file = |i: usize| dir.path().join("x").join(format!("{i}.png"));
        let list = dir.path().join("fixes.jsonl");
        let lines = [
            serde_json::json!({"path": file(0), "label": "zebra"}),
            serde_json::json!({"path": file(1), "label": "ant"}),
            serde_json::json!({"path": file(2), "label": "zebra", "extra": 1}),
        ];
        let text: String = lines.iter().map(|l| format!("{l}\n\n")).collect();
        std::fs::write(&list, text).unwrap();
        let data = Dataset::open(&list, &InputOptions::default(), None).unwrap();
        assert_eq!(data.labels, ["ant", "zebra"]);
        assert_eq!(data.folders, ["ant", "zebra"]);
        assert_eq!(data.class_counts(), [1, 2]);
        assert_eq!(data.images[0].input.display, file(1).display().to_string());

        std::fs::write(&list, "{\"path\": \"a.png\"}\n").unwrap();
        let err = Dataset::open(&list, &InputOptions::default(), None).unwrap_err();
        assert!(
            matches!(err, DatasetError::ListSyntax { line: 1, .. }),
            "{err}"
        );
        std::fs::write(&list, "\n").unwrap();
        assert!(matches!(
            Dataset::open(&list, &InputOptions::default(), None),
            Err(DatasetError::EmptyList { .. })
        ));
    }

    #[test]
    fn a_labelled_list_as_mapping_relabels_the_files_it_names() {
        let dir = tree(&[("a", 2), ("b", 1)]);
        let extra = tree(&[("elsewhere", 1)]);
        let list = extra.path().join("fixes.jsonl");
        let lines = [
            // b's only image moves to a: class b is left empty and dropped.
            serde_json::json!({"path": dir.path().join("b/0.png"), "label": "a"}),
            serde_json::json!({"path": dir.path().join("a/1.png"), "label": "new"}),
            // A file outside the folder is added.
            serde_json::json!({"path": extra.path().join("elsewhere/0.png"), "label": "new"}),
        ];
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&list, text).unwrap();
        let map = LabelMap::read(&list).unwrap();
        let data = Dataset::from_dir(dir.path(), &InputOptions::default(), Some(&map)).unwrap();
        assert_eq!(data.labels, ["a", "new"]);
        assert_eq!(data.folders, ["a", "new"]);
        assert_eq!(data.class_counts(), [2, 2]);
        let of = |name: &str| {
            data.images
                .iter()
                .find(|i| i.input.display.ends_with(name))
                .map(|i| data.labels[i.label].as_str())
        };
        assert_eq!(of("b/0.png"), Some("a"));
        assert_eq!(of("a/1.png"), Some("new"));
        assert_eq!(of("elsewhere/0.png"), Some("new"));
    }
}
