//! `vlm report`: a static review page for labelled images, opened from disk with no server
//! and no network.
//!
//! The page is `NAME.html` plus a folder `NAME_files/` of JPEG thumbnails (or, self-
//! contained, one file with the thumbnails inlined as `data:` URIs). Results are streamed:
//! a chunk of records is read, its thumbnails are made in parallel, the records are written,
//! and the chunk is dropped, so memory does not grow with the number of images (only the
//! label names are kept; several results files joined by path are held whole). See
//! [`page`] for what keeps file names from becoming markup.

mod eval;
pub mod page;
pub mod record;
pub mod thumbnail;

pub use eval::{check_eval_page, write_evaluation_page};

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::inputs::is_url;
use crate::job::{JobError, Progress, Sink};
use crate::output::Labelled;
use crate::preprocess::DEFAULT_MAX_PIXELS;
use page::PageWriter;
use record::{Joined, LabelIndex, PageRecord, ResultRecord};

/// Records read and thumbnailed together: enough to keep every core busy, few enough that
/// a chunk's thumbnails (about 15 KB each) stay small.
const CHUNK: usize = 256;

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("cannot read results {}: {cause}; pass the file written by `vlm classify` or `vlm caption` with --format jsonl", path.display())]
    ReadResults { path: PathBuf, cause: io::Error },
    #[error("{}, line {line}: not a vlm result record ({cause}); pass the file written by `vlm classify` or `vlm caption` with --format jsonl", path.display())]
    BadRecord {
        path: PathBuf,
        line: usize,
        cause: serde_json::Error,
    },
    #[error("cannot write the report {}: {cause}; check that its folder exists and is writable, or choose another --output", path.display())]
    Write { path: PathBuf, cause: io::Error },
    #[error("cannot create {} for the page; choose another --output", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        cause: io::Error,
    },
    #[error("cannot read the current folder; run vlm {command} from a folder that exists")]
    CurrentDir {
        command: &'static str,
        #[source]
        cause: io::Error,
    },
}

/// How a page is made.
#[derive(Debug, Clone)]
pub struct PageOptions {
    /// The `.html` file to write; thumbnails go to [`files_dir`] of it.
    pub output: PathBuf,
    /// Inline the thumbnails as `data:` URIs (one file, larger, no originals in the detail
    /// view) instead of writing them to the files folder.
    pub self_contained: bool,
    /// The page title.
    pub title: String,
    /// Longest side of a thumbnail.
    pub thumb_side: u32,
    /// Images above this many pixels are not decoded (as for classification).
    pub max_pixels: u64,
    /// Folders that relative image paths are looked up in, in order (usually the current
    /// folder, where `vlm classify` ran, then the results file's folder).
    pub search_dirs: Vec<PathBuf>,
}

impl PageOptions {
    /// Defaults for a page written to `output`, with relative paths looked up in `search_dirs`.
    pub fn new(output: PathBuf, search_dirs: Vec<PathBuf>) -> Self {
        Self {
            output,
            self_contained: false,
            title: "vlm report".to_string(),
            thumb_side: thumbnail::DEFAULT_SIDE,
            max_pixels: DEFAULT_MAX_PIXELS,
            search_dirs,
        }
    }
}

/// What went into a page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageSummary {
    pub records: usize,
    /// Records of images the classifier could not read.
    pub failed: usize,
    pub thumbnails: usize,
    /// Thumbnails that could not be made (missing or unreadable files, URLs).
    pub thumbnail_errors: usize,
}

impl PageSummary {
    /// The closing line: where the page went, what is in it, how long it took.
    pub fn describe(&self, output: &Path, inline: bool, seconds: f64) -> String {
        let thumbs = if inline {
            "inlined".to_string()
        } else {
            format!("in {}", files_dir(output).display())
        };
        format!(
            "wrote {}: {} images ({} failed), {} thumbnails {thumbs}, {} without one, in {seconds:.1} s",
            output.display(),
            self.records,
            self.failed,
            self.thumbnails,
            self.thumbnail_errors,
        )
    }
}

/// The pixel limit of [`PageOptions::max_pixels`] for `--max-megapixels`.
pub fn max_pixels(megapixels: f64) -> u64 {
    (megapixels.max(0.0) * 1e6) as u64
}

/// Creates the folder `output` is to be written in, if missing.
pub fn create_parent(output: &Path) -> Result<(), PageError> {
    match output.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => std::fs::create_dir_all(parent).map_err(|cause| PageError::CreateDir {
            path: parent.to_path_buf(),
            cause,
        }),
        None => Ok(()),
    }
}

/// Where relative image paths of results files are looked up: where `vlm classify` most
/// likely ran (here), then beside each results file.
pub fn search_dirs(results: &[PathBuf]) -> Result<Vec<PathBuf>, PageError> {
    let here = std::env::current_dir().map_err(|cause| PageError::CurrentDir {
        command: "report",
        cause,
    })?;
    let mut dirs = vec![here.clone()];
    for parent in results.iter().filter_map(|r| r.parent()) {
        let beside = here.join(parent);
        let beside = std::fs::canonicalize(&beside).unwrap_or(beside);
        if !dirs.contains(&beside) {
            dirs.push(beside);
        }
    }
    Ok(dirs)
}

/// The names of results files as a page shows them: `labels.jsonl + captions.jsonl`.
pub fn results_names(results: &[PathBuf]) -> String {
    let names: Vec<String> = results.iter().map(|r| file_name(r)).collect();
    names.join(" + ")
}

/// A results file as the page names it: its file name.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The folder beside `output` that holds its thumbnails: `report.html` → `report_files`.
pub fn files_dir(output: &Path) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".to_string());
    output.with_file_name(format!("{stem}_files"))
}

/// What the classify page shows above the grid.
#[derive(Serialize)]
struct ClassifyMeta<'a> {
    results: &'a str,
}

/// Writes the review page for results files (JSON Lines) of `vlm classify` (single- or
/// multi-label, with or without `uncertain`, with error records), `vlm caption` or `vlm
/// ask`. One file streams, a chunk at a time; several (the labels and the captions of one
/// folder) are joined by path ([`record::Joined`]) so each image is one card with its
/// labels and its caption, in the order images first appear.
pub fn write_results_page(
    results: &[PathBuf],
    options: &PageOptions,
) -> Result<PageSummary, PageError> {
    let mut labels = LabelIndex::default();
    let name = results_names(results);
    let mut build = Builder::start(options, "classify", &ClassifyMeta { results: &name })?;
    let mut chunk: Vec<PageRecord> = Vec::with_capacity(CHUNK);
    if let [one] = results {
        read_results(one, |record| {
            chunk.push(PageRecord::from_result(record, &mut labels));
            if chunk.len() == CHUNK {
                build.add(&mut chunk)?;
            }
            Ok(())
        })?;
    } else {
        let mut joined = Joined::default();
        for file in results {
            let source = file_name(file);
            read_results(file, |record| {
                joined.add(PageRecord::from_result(record, &mut labels), &source);
                Ok(())
            })?;
        }
        for record in joined.into_records() {
            chunk.push(record);
            if chunk.len() == CHUNK {
                build.add(&mut chunk)?;
            }
        }
    }
    build.add(&mut chunk)?;
    build.finish(labels.names())
}

/// Hands each record of a results file to `each`, in order (blank lines skipped).
fn read_results(
    results: &Path,
    mut each: impl FnMut(ResultRecord) -> Result<(), PageError>,
) -> Result<(), PageError> {
    let read_err = |cause| PageError::ReadResults {
        path: results.to_path_buf(),
        cause,
    };
    let reader = BufReader::new(File::open(results).map_err(read_err)?);
    for (number, line) in reader.lines().enumerate() {
        let line = line.map_err(read_err)?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ResultRecord =
            serde_json::from_str(&line).map_err(|cause| PageError::BadRecord {
                path: results.to_path_buf(),
                line: number + 1,
                cause,
            })?;
        each(parsed)?;
    }
    Ok(())
}

/// A review page written while a classify run goes: a sink of labelled results, whose
/// records are thumbnailed a chunk at a time as they come, as [`write_results_page`]
/// does for the lines of the results file `results_name` (which the run writes beside).
/// [`ReviewSink::finish`] puts the page in place.
pub struct ReviewSink<'a> {
    build: Builder<'a>,
    labels: LabelIndex,
    chunk: Vec<PageRecord>,
}

impl<'a> ReviewSink<'a> {
    /// Starts the page of `options` for the results written to `results_name`.
    pub fn start(options: &'a PageOptions, results_name: &str) -> Result<Self, PageError> {
        Ok(Self {
            build: Builder::start(
                options,
                "classify",
                &ClassifyMeta {
                    results: results_name,
                },
            )?,
            labels: LabelIndex::default(),
            chunk: Vec::with_capacity(CHUNK),
        })
    }

    /// Thumbnails the last records and puts the page in place.
    pub fn finish(mut self) -> Result<PageSummary, PageError> {
        self.build.add(&mut self.chunk)?;
        self.build.finish(self.labels.names())
    }
}

impl Sink<Labelled<'_>> for ReviewSink<'_> {
    fn write(&mut self, batch: &[Labelled<'_>], _: &dyn Progress) -> Result<(), JobError> {
        for labelled in batch {
            self.chunk.push(PageRecord::from_image_result(
                &labelled.result,
                &mut self.labels,
            ));
            if self.chunk.len() == CHUNK {
                self.build.add(&mut self.chunk).map_err(JobError::sink)?;
            }
        }
        Ok(())
    }
}

/// Everything an eval page shows besides the images.
#[derive(Debug, Clone, Serialize)]
pub struct EvalMeta {
    /// The prompt spec, as described to the user.
    pub spec: String,
    pub images: u64,
    pub failed: usize,
    pub k: usize,
    pub top1: f64,
    pub top_k: f64,
    /// Rows: true class; columns: predicted class (the order of the page's labels).
    pub confusion: Vec<Vec<u64>>,
    pub per_class: Vec<EvalClass>,
    pub macro_f1: f64,
}

/// One class's scores on an eval page.
#[derive(Debug, Clone, Serialize)]
pub struct EvalClass {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

/// One evaluated image: its path, true class and every class's score, best first (class
/// numbers are indices into the `classes` given to [`write_eval_page`]).
#[derive(Debug, Clone)]
pub struct EvalImage {
    pub path: String,
    pub truth: usize,
    pub scores: Vec<crate::score::Score>,
}

/// Writes the page of a `vlm eval` run: metrics, confusion heat map, most-confused pairs
/// and per-class bars above the same grid as the review page; failed images are listed
/// as error records.
pub fn write_eval_page(
    classes: &[String],
    meta: &EvalMeta,
    images: impl IntoIterator<Item = EvalImage>,
    failed: impl IntoIterator<Item = (String, String)>,
    options: &PageOptions,
) -> Result<PageSummary, PageError> {
    let mut build = Builder::start(options, "eval", meta)?;
    let mut chunk: Vec<PageRecord> = Vec::with_capacity(CHUNK);
    let images = images.into_iter().map(|image| PageRecord {
        scores: image
            .scores
            .iter()
            .map(|s| record::PageScore {
                label: s.index,
                probability: f64::from(s.probability),
                similarity: Some(f64::from(s.similarity)),
                selected: None,
            })
            .collect(),
        truth: Some(image.truth),
        ..PageRecord::new(image.path)
    });
    let failed = failed.into_iter().map(|(path, error)| PageRecord {
        error: Some(error),
        ..PageRecord::new(path)
    });
    for record in images.chain(failed) {
        chunk.push(record);
        if chunk.len() == CHUNK {
            build.add(&mut chunk)?;
        }
    }
    build.add(&mut chunk)?;
    build.finish(classes)
}

/// What a duplicates page shows above the groups.
#[derive(Debug, Clone, Serialize)]
struct DuplicatesMeta {
    /// The cosine similarity that linked two images.
    threshold: f32,
    /// How the pairs were found (exact all-pairs or a database's index).
    method: String,
    /// Images compared.
    images: usize,
}

/// Writes the page of `vlm dedup --report`: one section per group (its "label" is
/// `group N`), each member with its similarity to the group's first image as its score,
/// and above them the threshold and the search that found them.
pub fn write_duplicates_page(
    duplicates: &crate::dedup::Duplicates,
    options: &PageOptions,
) -> Result<PageSummary, PageError> {
    let meta = DuplicatesMeta {
        threshold: duplicates.threshold,
        method: duplicates.method.to_string(),
        images: duplicates.images,
    };
    let groups = duplicates.records();
    let mut build = Builder::start(options, "duplicates", &meta)?;
    let mut chunk: Vec<PageRecord> = Vec::with_capacity(CHUNK);
    let names: Vec<String> = groups
        .iter()
        .map(|g| format!("group {}", g.group))
        .collect();
    for (label, group) in groups.iter().enumerate() {
        for (i, member) in group.members.iter().enumerate() {
            let similarity = f64::from(member.similarity);
            chunk.push(PageRecord {
                scores: vec![record::PageScore {
                    label,
                    probability: similarity,
                    similarity: Some(similarity),
                    // The first image, which the others are compared with.
                    selected: Some(i == 0),
                }],
                ..PageRecord::new(member.path.to_string())
            });
            if chunk.len() == CHUNK {
                build.add(&mut chunk)?;
            }
        }
    }
    build.add(&mut chunk)?;
    build.finish(&names)
}

/// A page being written: to a temporary file beside the output, renamed into place at
/// the end, so a page is never left half-written.
struct Builder<'a> {
    options: &'a PageOptions,
    page: PageWriter<BufWriter<File>>,
    temp: Partial,
    files: PathBuf,
    /// The files folder's name as a URL segment, for thumbnail URLs.
    files_url: String,
    summary: PageSummary,
}

impl<'a> Builder<'a> {
    fn start<M: Serialize>(
        options: &'a PageOptions,
        kind: &str,
        meta: &M,
    ) -> Result<Self, PageError> {
        let write_err = |cause| PageError::Write {
            path: options.output.clone(),
            cause,
        };
        let files = files_dir(&options.output);
        // A thumbnails folder made here goes again with a page that is not finished.
        let made_files = !options.self_contained && !files.exists();
        if !options.self_contained {
            std::fs::create_dir_all(files.join("t")).map_err(|cause| PageError::Write {
                path: files.clone(),
                cause,
            })?;
        }
        let files_url = files
            .file_name()
            .map(|n| thumbnail::url_segment(&n.to_string_lossy()))
            .unwrap_or_default();
        let temp = options.output.with_file_name(format!(
            ".{}.vlm-partial",
            options
                .output
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let file = File::create(&temp).map_err(write_err)?;
        let temp = Partial {
            path: temp,
            files: made_files.then(|| files.clone()),
            done: false,
        };
        let page = PageWriter::start(BufWriter::new(file), &options.title, kind, meta)
            .map_err(write_err)?;
        Ok(Self {
            options,
            page,
            temp,
            files,
            files_url,
            summary: PageSummary::default(),
        })
    }

    /// Thumbnails the chunk in parallel, writes its records and empties it.
    fn add(&mut self, chunk: &mut Vec<PageRecord>) -> Result<(), PageError> {
        let first = self.summary.records;
        let options = self.options;
        let files = &self.files;
        let files_url = &self.files_url;
        let outcomes: Vec<Result<(), PageError>> = chunk
            .par_iter_mut()
            .enumerate()
            .map(|(i, record)| {
                let number = first + i;
                let Some(path) = locate(&record.path, &options.search_dirs) else {
                    record.thumb_error = Some(if is_url(&record.path) {
                        "a URL: the page loads nothing from the network".to_string()
                    } else {
                        "file not found".to_string()
                    });
                    return Ok(());
                };
                record.file = Some(path.to_string_lossy().into_owned());
                match thumbnail::thumbnail(&path, options.thumb_side, options.max_pixels) {
                    Ok(bytes) if options.self_contained => {
                        record.thumb = Some(format!(
                            "data:image/jpeg;base64,{}",
                            thumbnail::base64(&bytes)
                        ));
                    }
                    Ok(bytes) => {
                        let name = format!("{number}.jpg");
                        let target = files.join("t").join(&name);
                        std::fs::write(&target, bytes).map_err(|cause| PageError::Write {
                            path: target,
                            cause,
                        })?;
                        record.thumb = Some(format!("{files_url}/t/{name}"));
                        record.src = Some(thumbnail::file_url(&path));
                    }
                    Err(err) => record.thumb_error = Some(err.to_string()),
                }
                Ok(())
            })
            .collect();
        outcomes.into_iter().collect::<Result<(), _>>()?;
        for record in chunk.drain(..) {
            self.summary.records += 1;
            self.summary.failed += usize::from(record.error.is_some());
            if record.thumb.is_some() {
                self.summary.thumbnails += 1;
            } else {
                self.summary.thumbnail_errors += 1;
            }
            self.page
                .record(&record)
                .map_err(|cause| PageError::Write {
                    path: self.options.output.clone(),
                    cause,
                })?;
        }
        Ok(())
    }

    fn finish(self, labels: &[String]) -> Result<PageSummary, PageError> {
        let Self {
            options,
            page,
            mut temp,
            summary,
            ..
        } = self;
        let write_err = |cause| PageError::Write {
            path: options.output.clone(),
            cause,
        };
        let root = options
            .search_dirs
            .first()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = page
            .finish(labels, &root)
            .map_err(write_err)?
            .into_inner()
            .map_err(|e| write_err(e.into_error()))?;
        file.sync_all().map_err(write_err)?;
        drop(file);
        std::fs::rename(&temp.path, &options.output).map_err(write_err)?;
        temp.done = true;
        Ok(summary)
    }
}

/// The page while it is written: removed unless it was renamed into place, with the
/// thumbnails folder when it was made for this page.
struct Partial {
    path: PathBuf,
    files: Option<PathBuf>,
    done: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
            if let Some(files) = &self.files {
                let _ = std::fs::remove_dir_all(files);
            }
        }
    }
}

/// The absolute path of the image a record names: as given when absolute, else the first
/// of `dirs` that has it. URLs are never fetched.
fn locate(path: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if is_url(path) {
        return None;
    }
    let given = Path::new(path);
    let candidates: Vec<PathBuf> = if given.is_absolute() {
        vec![given.to_path_buf()]
    } else {
        dirs.iter().map(|d| d.join(given)).collect()
    };
    candidates
        .into_iter()
        .find(|c| c.is_file())
        .map(|c| std::fs::canonicalize(&c).unwrap_or(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_data(html: &str) -> serde_json::Value {
        let data = html
            .split_once("id=\"vlm-data\">")
            .unwrap()
            .1
            .split_once("</script>")
            .unwrap()
            .0;
        serde_json::from_str(data).unwrap()
    }

    fn images(dir: &Path, n: usize) -> String {
        let mut results = String::new();
        for i in 0..n {
            let name = format!("img {i}.png");
            image::RgbImage::from_pixel(40 + i as u32, 30, image::Rgb([i as u8 * 20, 80, 160]))
                .save(dir.join(&name))
                .unwrap();
            let label = if i % 2 == 0 { "red" } else { "blue" };
            results.push_str(&format!(
                "{{\"path\":\"{name}\",\"results\":[{{\"label\":\"{label}\",\"prompt\":\"\",\"probability\":0.7,\"similarity\":0.3}}]}}\n"
            ));
        }
        results
    }

    #[test]
    fn a_results_file_becomes_a_page_with_a_thumbnail_per_image() {
        let dir = tempfile::tempdir().unwrap();
        let mut results = images(dir.path(), 3);
        results.push_str("{\"path\":\"gone.png\",\"error\":\"cannot read gone.png\"}\n\n");
        let results_path = dir.path().join("labels.jsonl");
        std::fs::write(&results_path, results).unwrap();
        let out = dir.path().join("review.html");
        let options = PageOptions::new(out.clone(), vec![dir.path().to_path_buf()]);
        let summary = write_results_page(std::slice::from_ref(&results_path), &options).unwrap();
        assert_eq!(
            summary,
            PageSummary {
                records: 4,
                failed: 1,
                thumbnails: 3,
                thumbnail_errors: 1
            }
        );
        let data = page_data(&std::fs::read_to_string(&out).unwrap());
        assert_eq!(data["labels"], serde_json::json!(["red", "blue"]));
        assert_eq!(data["records"][1]["thumb"], "review_files/t/1.jpg");
        assert!(dir.path().join("review_files/t/1.jpg").is_file());
        assert_eq!(data["records"][3]["thumb_error"], "file not found");
        assert!(!dir.path().join(".review.html.vlm-partial").exists());
    }

    #[test]
    fn a_self_contained_page_inlines_the_thumbnails() {
        let dir = tempfile::tempdir().unwrap();
        let results_path = dir.path().join("labels.jsonl");
        std::fs::write(&results_path, images(dir.path(), 2)).unwrap();
        let out = dir.path().join("one.html");
        let mut options = PageOptions::new(out.clone(), vec![dir.path().to_path_buf()]);
        options.self_contained = true;
        write_results_page(std::slice::from_ref(&results_path), &options).unwrap();
        let data = page_data(&std::fs::read_to_string(&out).unwrap());
        let thumb = data["records"][0]["thumb"].as_str().unwrap();
        assert!(thumb.starts_with("data:image/jpeg;base64,/9j/"), "{thumb}");
        assert!(data["records"][0].get("src").is_none());
        assert!(!dir.path().join("one_files").exists());
    }

    #[test]
    fn a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let results_path = dir.path().join("labels.jsonl");
        std::fs::write(&results_path, "{\"path\":\"a\"}\nnot json\n").unwrap();
        let options = PageOptions::new(dir.path().join("r.html"), vec![]);
        let err = write_results_page(std::slice::from_ref(&results_path), &options).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(!dir.path().join("r.html").exists());
        assert!(!dir.path().join(".r.html.vlm-partial").exists());
    }

    #[test]
    fn urls_are_never_located() {
        assert_eq!(
            locate("https://example.com/a.jpg", &[PathBuf::from("/")]),
            None
        );
        assert_eq!(
            files_dir(Path::new("out/my report.html")),
            Path::new("out/my report_files")
        );
    }
}
