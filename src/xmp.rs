//! XMP sidecars: labels written where photo tools read them.
//!
//! Each image's accepted labels go into a sidecar beside it (`photo.jpg.xmp`, as digiKam
//! and darktable name them, or `photo.xmp`, as Lightroom and Capture One do) in three forms
//! that photo tools read: flat keywords (`dc:subject`), keyword paths under a root
//! (`lr:hierarchicalSubject`, `vlm|cat`) and digiKam's tag paths (`digiKam:TagsList`,
//! `vlm/cat`); a caption, when there is one, becomes `dc:description`.
//!
//! An existing sidecar is merged, never replaced: it is read with quick-xml, and only the
//! byte ranges of the properties that change are rewritten, so other tags, namespaces,
//! comments and unknown elements stay byte for byte. vlm's own earlier labels (the paths
//! under its root, and the flat keywords that are their leaves) are replaced; everything
//! else is kept, and a re-run with the same labels leaves the file untouched. Properties
//! may sit in any `rdf:Description` of the file, as elements, in an `rdf:Bag` or an
//! `rdf:Seq`, with or without the `x:xmpmeta` wrapper and the `xpacket` instructions.
//!
//! Writes go to a temporary file in the sidecar's folder that is renamed over the sidecar,
//! so a reader (or a killed run) sees the old sidecar or the new one, never a torn one. The
//! image itself is never opened.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::writer::Writer;
use quick_xml::Reader;

use crate::decide;
use crate::job::{Item as _, JobError, Level, Progress, Sink};
use crate::output::Labelled;

/// The RDF namespace.
pub const NS_RDF: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#";
/// Dublin Core: `dc:subject` (keywords) and `dc:description` (caption).
pub const NS_DC: &str = "http://purl.org/dc/elements/1.1/";
/// Lightroom: `lr:hierarchicalSubject` (keyword paths, `|`-separated).
pub const NS_LR: &str = "http://ns.adobe.com/lightroom/1.0/";
/// digiKam: `digiKam:TagsList` (tag paths, `/`-separated).
pub const NS_DIGIKAM: &str = "http://www.digikam.org/ns/1.0/";
/// The XMP packet wrapper.
pub const NS_X: &str = "adobe:ns:meta/";

/// The root keyword vlm's labels are filed under unless `--xmp-root` says otherwise.
pub const DEFAULT_ROOT: &str = "vlm";

/// Why a sidecar could not be read, merged or written; each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum XmpError {
    #[error(
        "--xmp-root {given:?} is not a keyword path: give names separated by |, e.g. \"vlm\" \
         or \"auto|vlm\", none empty and none containing /"
    )]
    Root { given: String },
    #[error("cannot read the sidecar {}: {cause}; check its permissions, or move it away to start a new one", path.display())]
    Read { path: PathBuf, cause: io::Error },
    #[error("cannot merge into the sidecar {}: it is not UTF-8 text; move it away (vlm then writes a new one) or re-save it with a photo tool", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("cannot merge into the sidecar {}: not well-formed XML near byte {position} ({cause}); it was left as it is; repair it or move it away", path.display())]
    Malformed {
        path: PathBuf,
        position: u64,
        cause: String,
    },
    #[error("cannot merge into the sidecar {}: it has no rdf:RDF element with an rdf:Description, so it is not XMP; it was left as it is; move it away to have vlm write a new one", path.display())]
    NotXmp { path: PathBuf },
    #[error("cannot merge into the sidecar {}: its {property} holds structured items, not text; it was left as it is; edit that property in a photo tool or move the sidecar away", path.display())]
    Structured {
        path: PathBuf,
        property: &'static str,
    },
    #[error("cannot write the sidecar {}: {cause}; the old sidecar, if any, is unchanged; check that the folder is writable and has free space", path.display())]
    Write { path: PathBuf, cause: io::Error },
}

/// How a sidecar is named after its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Naming {
    /// `photo.jpg.xmp`: digiKam, darktable (one sidecar per file, also for RAW+JPEG pairs).
    #[default]
    Appended,
    /// `photo.xmp`: Lightroom, Capture One (a RAW+JPEG pair shares it).
    Basename,
}

/// The sidecar path of `image` under `naming`.
pub fn sidecar_path(image: &Path, naming: Naming) -> PathBuf {
    match naming {
        Naming::Appended => {
            let mut name = image.as_os_str().to_os_string();
            name.push(".xmp");
            PathBuf::from(name)
        }
        Naming::Basename => image.with_extension("xmp"),
    }
}

/// Where and under which root labels are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmpOptions {
    pub naming: Naming,
    /// The keyword path labels are filed under, e.g. `["vlm"]`.
    root: Vec<String>,
}

impl XmpOptions {
    /// `root` is a `|`-separated keyword path such as `vlm` or `auto|vlm`.
    pub fn new(naming: Naming, root: &str) -> Result<Self, XmpError> {
        let parts: Vec<String> = root.split('|').map(|p| p.trim().to_string()).collect();
        if parts.iter().any(|p| p.is_empty() || p.contains('/')) {
            return Err(XmpError::Root {
                given: root.to_string(),
            });
        }
        Ok(Self {
            naming,
            root: parts,
        })
    }

    /// `lr:hierarchicalSubject` entries start with this (`vlm|`).
    fn lr_prefix(&self) -> String {
        format!("{}|", self.root.join("|"))
    }

    /// `digiKam:TagsList` entries start with this (`vlm/`).
    fn digikam_prefix(&self) -> String {
        format!("{}/", self.root.join("/"))
    }

    /// The Lightroom path of `label`: a `|` inside it would make a level, so it becomes `/`.
    fn lr_path(&self, label: &str) -> String {
        format!("{}{}", self.lr_prefix(), label.replace('|', "/"))
    }

    /// The digiKam path of `label`: a `/` inside it would make a level, so it becomes `|`.
    fn digikam_path(&self, label: &str) -> String {
        format!("{}{}", self.digikam_prefix(), label.replace('/', "|"))
    }
}

impl Default for XmpOptions {
    fn default() -> Self {
        Self {
            naming: Naming::Appended,
            root: vec![DEFAULT_ROOT.to_string()],
        }
    }
}

/// What one image's sidecar should say.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tags<'a> {
    /// The accepted labels, best first; empty removes vlm's earlier labels, `None` leaves
    /// them as they are (a caption run).
    pub labels: Option<&'a [String]>,
    /// A caption for `dc:description` (its default language); `None` leaves any there.
    pub description: Option<&'a str>,
}

/// What a merge did to a sidecar's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The sidecar's new text (equal to the old one when nothing changed).
    pub text: String,
    /// vlm labels that were not in the sidecar before.
    pub added: Vec<String>,
    /// vlm labels that were in the sidecar and are no longer.
    pub removed: Vec<String>,
    /// The description was set or changed.
    pub description: bool,
}

/// Whether a sidecar was created, changed or left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
}

/// What [`SidecarWriter::write`] did (or would do, in a dry run) for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub sidecar: PathBuf,
    pub change: Change,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The new description, when it was set or changed.
    pub description: Option<String>,
    pub dry_run: bool,
    /// Another image of this run was written to the same sidecar before (basename
    /// naming and files that differ only by extension): this one's labels replaced them.
    pub shared_with: Option<PathBuf>,
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run && self.change != Change::Unchanged {
            f.write_str("would ")?;
        }
        let verb = match (self.change, self.dry_run) {
            (Change::Created, _) => "create",
            (Change::Updated, _) => "update",
            (Change::Unchanged, _) => {
                return write!(f, "{} unchanged", self.sidecar.display());
            }
        };
        write!(f, "{verb} {}:", self.sidecar.display())?;
        for label in &self.removed {
            write!(f, " -{label:?}")?;
        }
        for label in &self.added {
            write!(f, " +{label:?}")?;
        }
        if let Some(description) = &self.description {
            write!(f, " description {description:?}")?;
        }
        Ok(())
    }
}

/// Writes the sidecars of one run: remembers which it wrote, so that two images sharing a
/// sidecar are reported.
#[derive(Debug)]
pub struct SidecarWriter {
    options: XmpOptions,
    dry_run: bool,
    written: std::collections::HashMap<PathBuf, PathBuf>,
    /// Images whose sidecar could not be written.
    failed: usize,
}

impl SidecarWriter {
    /// With `dry_run` nothing is written; [`Self::write`] reports what would change.
    pub fn new(options: XmpOptions, dry_run: bool) -> Self {
        Self {
            options,
            dry_run,
            written: std::collections::HashMap::new(),
            failed: 0,
        }
    }

    /// Merges `tags` into the sidecar of `image` (created when missing) and writes it if it
    /// changed. The image is never opened.
    pub fn write(&mut self, image: &Path, tags: Tags<'_>) -> Result<Written, XmpError> {
        let sidecar = sidecar_path(image, self.options.naming);
        let existing = match fs::read(&sidecar) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(cause) => {
                return Err(XmpError::Read {
                    path: sidecar,
                    cause,
                })
            }
        };
        let text = match &existing {
            Some(bytes) => Some(std::str::from_utf8(bytes).map_err(|_| XmpError::NotUtf8 {
                path: sidecar.clone(),
            })?),
            None => None,
        };
        if text.is_none()
            && tags.labels.is_none_or(<[String]>::is_empty)
            && tags.description.is_none()
        {
            // Nothing to say, and no sidecar to take vlm's earlier labels out of.
            return Ok(Written {
                sidecar,
                change: Change::Unchanged,
                added: Vec::new(),
                removed: Vec::new(),
                description: None,
                dry_run: self.dry_run,
                shared_with: None,
            });
        }
        let merged = merge(text, tags, &self.options).map_err(|e| e.at(&sidecar))?;
        let change = match text {
            None => Change::Created,
            Some(old) if old == merged.text => Change::Unchanged,
            Some(_) => Change::Updated,
        };
        if change != Change::Unchanged && !self.dry_run {
            write_atomically(&sidecar, merged.text.as_bytes()).map_err(|cause| {
                XmpError::Write {
                    path: sidecar.clone(),
                    cause,
                }
            })?;
        }
        let shared_with = self
            .written
            .insert(sidecar.clone(), image.to_path_buf())
            .filter(|other| other != image);
        Ok(Written {
            sidecar,
            change,
            added: merged.added,
            removed: merged.removed,
            description: tags
                .description
                .filter(|_| merged.description)
                .map(str::to_string),
            dry_run: self.dry_run,
            shared_with,
        })
    }
}

impl SidecarWriter {
    /// Inputs whose sidecar could not be written.
    pub fn failed(&self) -> usize {
        self.failed
    }

    /// Writes the sidecar of one input of a run (`name` as messages show it, `file` when
    /// it is a local file) and says what changed: with `--verbose`, always in a dry run.
    /// An input that is not a local file has no sidecar (said as an error); a sidecar that
    /// cannot be written is that input's failure ([`Sink::failed`]).
    pub fn write_for(
        &mut self,
        name: &str,
        file: Option<&Path>,
        tags: Tags<'_>,
        progress: &dyn Progress,
    ) {
        let Some(path) = file else {
            progress.say(
                Level::Error,
                &format_args!("{name}: no sidecar written: only local files have sidecars"),
            );
            return;
        };
        match self.write(path, tags) {
            Ok(written) => {
                if let Some(other) = &written.shared_with {
                    progress.say(
                        Level::Warning,
                        &format_args!(
                            "{} and {} share the sidecar {}, which now holds what vlm wrote \
                             for {}; use --xmp-naming append to give each file its own",
                            other.display(),
                            path.display(),
                            written.sidecar.display(),
                            path.display()
                        ),
                    );
                }
                let changed = written.change != Change::Unchanged;
                progress.say(Level::of_change(self.dry_run && changed), &written);
            }
            Err(err) => {
                self.failed += 1;
                progress.say(Level::Error, &err);
            }
        }
    }
}

/// As a sink of classify results: each image's accepted labels
/// ([`decide::accepted`]) go to its sidecar ([`SidecarWriter::write_for`]).
impl Sink<Labelled<'_>> for SidecarWriter {
    fn write(&mut self, batch: &[Labelled<'_>], progress: &dyn Progress) -> Result<(), JobError> {
        for labelled in batch {
            let Some(labels) = decide::accepted(&labelled.result) else {
                continue;
            };
            let input = &labelled.embedded.input;
            let tags = Tags {
                labels: Some(&labels),
                description: None,
            };
            self.write_for(input.name(), input.file(), tags, progress);
        }
        Ok(())
    }

    fn failed(&self) -> usize {
        SidecarWriter::failed(self)
    }
}

/// A merge failure before the sidecar's path is known.
#[derive(Debug)]
pub enum MergeError {
    Malformed { position: u64, cause: String },
    NotXmp,
    Structured(&'static str),
}

impl MergeError {
    fn at(self, path: &Path) -> XmpError {
        let path = path.to_path_buf();
        match self {
            Self::Malformed { position, cause } => XmpError::Malformed {
                path,
                position,
                cause,
            },
            Self::NotXmp => XmpError::NotXmp { path },
            Self::Structured(property) => XmpError::Structured { path, property },
        }
    }
}

impl fmt::Display for MergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The path-less form; `XmpError` says it with the file's name.
        let err = match self {
            Self::Malformed { position, cause } => XmpError::Malformed {
                path: PathBuf::from("(text)"),
                position: *position,
                cause: cause.clone(),
            },
            Self::NotXmp => XmpError::NotXmp {
                path: PathBuf::from("(text)"),
            },
            Self::Structured(property) => XmpError::Structured {
                path: PathBuf::from("(text)"),
                property,
            },
        };
        err.fmt(f)
    }
}

impl std::error::Error for MergeError {}

/// The properties vlm writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prop {
    Subject,
    Hierarchical,
    TagsList,
    Description,
}

impl Prop {
    const ALL: [Prop; 4] = [
        Prop::Subject,
        Prop::Hierarchical,
        Prop::TagsList,
        Prop::Description,
    ];

    fn namespace(self) -> &'static str {
        match self {
            Prop::Subject | Prop::Description => NS_DC,
            Prop::Hierarchical => NS_LR,
            Prop::TagsList => NS_DIGIKAM,
        }
    }

    fn local(self) -> &'static str {
        match self {
            Prop::Subject => "subject",
            Prop::Hierarchical => "hierarchicalSubject",
            Prop::TagsList => "TagsList",
            Prop::Description => "description",
        }
    }

    /// The prefix vlm declares when the file has none for the namespace.
    fn usual_prefix(self) -> &'static str {
        match self {
            Prop::Subject | Prop::Description => "dc",
            Prop::Hierarchical => "lr",
            Prop::TagsList => "digiKam",
        }
    }

    /// The array type XMP specifies for the property.
    fn container(self) -> &'static str {
        match self {
            Prop::Subject | Prop::Hierarchical => "Bag",
            Prop::TagsList => "Seq",
            Prop::Description => "Alt",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Prop::Subject => "dc:subject",
            Prop::Hierarchical => "lr:hierarchicalSubject",
            Prop::TagsList => "digiKam:TagsList",
            Prop::Description => "dc:description",
        }
    }
}

/// One `rdf:li` of a property.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    text: String,
    /// `xml:lang`, for `dc:description`'s alternatives.
    lang: Option<String>,
}

impl Item {
    fn plain(text: &str) -> Self {
        Self {
            text: text.to_string(),
            lang: None,
        }
    }
}

/// A property found in the file.
#[derive(Debug, Clone)]
struct Found {
    /// The element, from its `<` to the end of its end tag.
    range: Range<usize>,
    /// Where the whitespace before the element starts (for a clean removal).
    space_before: usize,
    /// The property's name as written (`dc:subject`).
    qname: String,
    /// The array element's name as written (`rdf:Bag`), if any.
    container: Option<String>,
    items: Vec<Item>,
    /// The indentation of the property's line.
    indent: String,
}

/// An `rdf:Description` that properties can be added to.
#[derive(Debug, Clone)]
struct Description {
    /// Its start tag.
    start: Range<usize>,
    /// Written as `<rdf:Description .../>`.
    empty: bool,
    /// The end of its last child element (or of its start tag).
    last_child_end: usize,
    /// Its name as written.
    qname: String,
    /// The namespace bindings in scope inside it: (prefix, URI), innermost last.
    scope: Vec<(String, String)>,
    /// Indentation of its own line and of its children's lines.
    indent: String,
    child_indent: Option<String>,
    /// Where a namespace declaration goes in the start tag and what follows it (see
    /// [`declaration_place`]).
    declare_at: usize,
    declare_separator: (String, String),
}

/// What the reader found in a sidecar.
#[derive(Debug, Default)]
struct Parsed {
    descriptions: Vec<Description>,
    /// Each property vlm writes that the file has, with the description holding it.
    props: Vec<(Prop, Found, usize)>,
}

impl Parsed {
    fn find(&self, prop: Prop) -> Option<&Found> {
        self.props
            .iter()
            .find(|(p, ..)| *p == prop)
            .map(|(_, f, _)| f)
    }
}

/// One open element while reading.
struct Open {
    qname: String,
    namespace: Option<String>,
    local: String,
    /// Bindings this element declared.
    declared: usize,
    /// Index into `Parsed::descriptions` when this is a top-level rdf:Description.
    description: Option<usize>,
}

/// The whitespace-only text just before the current position, if the file has any.
fn indent_before(text: &str, at: usize) -> (usize, String) {
    let before = &text[..at];
    let trimmed = before.trim_end_matches([' ', '\t', '\r', '\n']);
    let space = &before[trimmed.len()..];
    let indent = space.rsplit('\n').next().unwrap_or("").to_string();
    (trimmed.len(), indent)
}

/// Where in a start tag (`<rdf:Description ...>`, as written) a namespace declaration is
/// added, and what follows it: before the first `xmlns` attribute (so every line of the
/// tag stays as it was), on a line of its own when that one has its own line; else right
/// after the name.
fn declaration_place(tag: &str, qname: &str) -> (usize, (String, String)) {
    let after_name = 1 + qname.len();
    let first = tag[after_name..]
        .match_indices("xmlns")
        .map(|(i, _)| after_name + i)
        .find(|&at| tag[..at].ends_with([' ', '\t', '\n', '\r']));
    match first {
        Some(at) if tag[..at].trim_end_matches([' ', '\t']).ends_with('\n') => {
            let (_, indent) = indent_before(tag, at);
            (at, (String::new(), format!("\n{indent}")))
        }
        Some(at) => (at, (String::new(), " ".to_string())),
        None => (after_name, (" ".to_string(), String::new())),
    }
}

fn resolve<'s>(scope: &'s [(String, String)], prefix: &str) -> Option<&'s str> {
    scope
        .iter()
        .rev()
        .find(|(p, _)| p == prefix)
        .map(|(_, uri)| uri.as_str())
}

fn split_qname(qname: &str) -> (&str, &str) {
    match qname.split_once(':') {
        Some((prefix, local)) => (prefix, local),
        None => ("", qname),
    }
}

fn malformed(reader: &Reader<&[u8]>, cause: impl fmt::Display) -> MergeError {
    MergeError::Malformed {
        position: reader.error_position().max(reader.buffer_position()),
        cause: cause.to_string(),
    }
}

/// Reads the parts of a sidecar that vlm may change, with their byte ranges.
fn parse(text: &str) -> Result<Parsed, MergeError> {
    let mut reader = Reader::from_str(text);
    let mut parsed = Parsed::default();
    let mut scope: Vec<(String, String)> = vec![("xml".into(), "xml".into())];
    let mut stack: Vec<Open> = Vec::new();
    // The property being read: (prop, its depth, found so far, its description).
    let mut current: Option<(Prop, usize, Found, usize)> = None;
    let mut item: Option<Item> = None;
    loop {
        let start = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader.read_event().map_err(|e| malformed(&reader, e))?;
        let end = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let qname = e.name().as_ref().to_string();
                let mut declared = 0;
                let mut lang = None;
                for attr in e.attributes() {
                    let attr = attr.map_err(|err| malformed(&reader, err))?;
                    let key = attr.key.as_ref();
                    let value = attr
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|err| malformed(&reader, err))?;
                    if let Some(prefix) = key.strip_prefix("xmlns:") {
                        scope.push((prefix.to_string(), value.into_owned()));
                        declared += 1;
                    } else if key == "xmlns" {
                        scope.push((String::new(), value.into_owned()));
                        declared += 1;
                    } else if key == "xml:lang" {
                        lang = Some(value.into_owned());
                    }
                }
                let (prefix, local) = split_qname(&qname);
                let (prefix, local) = (prefix.to_string(), local.to_string());
                let namespace = resolve(&scope, &prefix).map(str::to_string);
                let parent = stack.last();
                let in_rdf = parent
                    .is_some_and(|p| p.namespace.as_deref() == Some(NS_RDF) && p.local == "RDF");
                let is_description =
                    namespace.as_deref() == Some(NS_RDF) && local == "Description" && in_rdf;
                let mut description = None;
                let depth = stack.len();
                if let Some((prop, prop_depth, found, _)) = &mut current {
                    // Inside a property: its array, then its items.
                    if depth == *prop_depth + 1 && namespace.as_deref() == Some(NS_RDF) {
                        found.container = Some(qname.clone());
                    } else if depth == *prop_depth + 2
                        && namespace.as_deref() == Some(NS_RDF)
                        && local == "li"
                    {
                        if empty {
                            found.items.push(Item {
                                text: String::new(),
                                lang,
                            });
                        } else {
                            item = Some(Item {
                                text: String::new(),
                                lang,
                            });
                        }
                    } else {
                        return Err(MergeError::Structured(prop.name()));
                    }
                } else if is_description {
                    let (_, indent) = indent_before(text, start);
                    let (declare_at, declare_separator) =
                        declaration_place(&text[start..end], &qname);
                    parsed.descriptions.push(Description {
                        start: start..end,
                        empty,
                        last_child_end: end,
                        qname: qname.clone(),
                        scope: scope.clone(),
                        indent,
                        child_indent: None,
                        declare_at: start + declare_at,
                        declare_separator,
                    });
                    description = Some(parsed.descriptions.len() - 1);
                } else if let Some(d) = parent.and_then(|p| p.description) {
                    // A property of a description.
                    let (space_before, indent) = indent_before(text, start);
                    let desc = &mut parsed.descriptions[d];
                    desc.child_indent.get_or_insert_with(|| indent.clone());
                    let prop = Prop::ALL.into_iter().find(|p| {
                        namespace.as_deref() == Some(p.namespace()) && local == p.local()
                    });
                    if let Some(prop) = prop {
                        let found = Found {
                            range: start..end,
                            space_before,
                            qname: qname.clone(),
                            container: None,
                            items: Vec::new(),
                            indent,
                        };
                        if empty {
                            desc.last_child_end = end;
                            parsed.props.push((prop, found, d));
                        } else {
                            current = Some((prop, depth, found, d));
                        }
                    } else if empty {
                        desc.last_child_end = end;
                    }
                }
                if empty {
                    scope.truncate(scope.len() - declared);
                } else {
                    stack.push(Open {
                        qname,
                        namespace,
                        local,
                        declared,
                        description,
                    });
                }
            }
            Event::End(_) => {
                let Some(open) = stack.pop() else {
                    return Err(malformed(&reader, "an end tag without a start tag"));
                };
                scope.truncate(scope.len() - open.declared);
                let depth = stack.len();
                if let Some(done) = item.take() {
                    if let Some((_, _, found, _)) = &mut current {
                        found.items.push(done);
                    }
                }
                if current.as_ref().is_some_and(|(_, d, ..)| *d == depth) {
                    if let Some((prop, _, mut found, d)) = current.take() {
                        found.range.end = end;
                        parsed.descriptions[d].last_child_end = end;
                        parsed.props.push((prop, found, d));
                    }
                } else if current.is_none() {
                    if let Some(d) = stack.last().and_then(|p| p.description) {
                        parsed.descriptions[d].last_child_end = end;
                    }
                }
                let _ = open.qname;
            }
            Event::Text(t) => {
                if let Some(item) = &mut item {
                    item.text.push_str(&t.xml10_content());
                } else if current.is_some() && !t.xml10_content().trim().is_empty() {
                    if let Some((prop, ..)) = &current {
                        return Err(MergeError::Structured(prop.name()));
                    }
                }
            }
            Event::CData(t) => {
                if let Some(item) = &mut item {
                    item.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = r.xml10_content();
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| malformed(&reader, format!("unknown entity &{name};")))?
                            .to_string()
                    }
                    Err(e) => return Err(malformed(&reader, e)),
                };
                if let Some(item) = &mut item {
                    item.text.push_str(&resolved);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(MergeError::Malformed {
            position: text.len() as u64,
            cause: format!("<{}> is never closed", stack[stack.len() - 1].qname),
        });
    }
    if parsed.descriptions.is_empty() {
        return Err(MergeError::NotXmp);
    }
    Ok(parsed)
}

/// The list `existing` becomes: items vlm owns that are no longer `wanted` are dropped,
/// the rest keep their places, and `wanted` items not there yet are appended, so that the
/// same labels give the same list.
fn merge_list(existing: &[Item], owned: impl Fn(&str) -> bool, wanted: &[String]) -> Vec<Item> {
    let mut out: Vec<Item> = existing
        .iter()
        .filter(|i| !owned(&i.text) || wanted.contains(&i.text))
        .cloned()
        .collect();
    for w in wanted {
        if !out.iter().any(|i| &i.text == w) {
            out.push(Item::plain(w));
        }
    }
    out
}

/// The items each property should hold, from what the file has and the new tags.
fn wanted_items(parsed: &Parsed, tags: Tags<'_>, options: &XmpOptions) -> WantedItems {
    let items = |p: Prop| parsed.find(p).map(|f| f.items.clone()).unwrap_or_default();
    let (subject, hier, tags_list, description) = (
        items(Prop::Subject),
        items(Prop::Hierarchical),
        items(Prop::TagsList),
        items(Prop::Description),
    );
    let description = match tags.description {
        None => description,
        Some(caption) => {
            let mut items: Vec<Item> = description
                .into_iter()
                .filter(|i| i.lang.as_deref() != Some("x-default"))
                .collect();
            items.insert(
                0,
                Item {
                    text: caption.to_string(),
                    lang: Some("x-default".to_string()),
                },
            );
            items
        }
    };
    let Some(labels) = tags.labels else {
        // A caption run: vlm's labels (and everyone's keywords) stay as they are.
        return WantedItems {
            lists: [
                (Prop::Subject, subject),
                (Prop::Hierarchical, hier),
                (Prop::TagsList, tags_list),
                (Prop::Description, description),
            ],
            added: Vec::new(),
            removed: Vec::new(),
        };
    };
    let lr_prefix = options.lr_prefix();
    let dk_prefix = options.digikam_prefix();
    // Flat keywords vlm wrote are the leaves of its paths; a keyword that is also part of
    // a path vlm did not write is the user's too, and stays.
    let mut old_leaves: Vec<String> = Vec::new();
    let mut foreign_parts: HashSet<String> = HashSet::new();
    for item in &hier {
        match item.text.strip_prefix(&lr_prefix) {
            Some(leaf) => old_leaves.push(leaf.to_string()),
            None => foreign_parts.extend(item.text.split('|').map(str::to_string)),
        }
    }
    for item in &tags_list {
        match item.text.strip_prefix(&dk_prefix) {
            Some(leaf) => old_leaves.push(leaf.to_string()),
            None => foreign_parts.extend(item.text.split('/').map(str::to_string)),
        }
    }
    let new_hier: Vec<String> = labels.iter().map(|l| options.lr_path(l)).collect();
    let new_dk: Vec<String> = labels.iter().map(|l| options.digikam_path(l)).collect();
    let subject = merge_list(
        &subject,
        |k| !foreign_parts.contains(k) && old_leaves.iter().any(|leaf| leaf == k),
        labels,
    );
    // What changed, as the user sees it: the labels under vlm's root before and after (in
    // the Lightroom paths, or digiKam's where a file has only those).
    let leaf_of = |path: &String, prefix: &str| path.strip_prefix(prefix).map(str::to_string);
    let (before, now): (Vec<String>, Vec<String>) =
        if hier.iter().any(|i| i.text.starts_with(&lr_prefix)) || tags_list.is_empty() {
            (
                hier.iter()
                    .filter_map(|i| leaf_of(&i.text, &lr_prefix))
                    .collect(),
                new_hier
                    .iter()
                    .filter_map(|p| leaf_of(p, &lr_prefix))
                    .collect(),
            )
        } else {
            (
                tags_list
                    .iter()
                    .filter_map(|i| leaf_of(&i.text, &dk_prefix))
                    .collect(),
                new_dk
                    .iter()
                    .filter_map(|p| leaf_of(p, &dk_prefix))
                    .collect(),
            )
        };
    let added = labels
        .iter()
        .zip(&now)
        .filter(|(_, leaf)| !before.contains(leaf))
        .map(|(label, _)| label.clone())
        .collect();
    let mut removed: Vec<String> = Vec::new();
    for leaf in before.iter().filter(|leaf| !now.contains(leaf)) {
        if !removed.contains(leaf) {
            removed.push(leaf.clone());
        }
    }
    let hier_items = merge_list(&hier, |k| k.starts_with(&lr_prefix), &new_hier);
    let dk_items = merge_list(&tags_list, |k| k.starts_with(&dk_prefix), &new_dk);
    WantedItems {
        lists: [
            (Prop::Subject, subject),
            (Prop::Hierarchical, hier_items),
            (Prop::TagsList, dk_items),
            (Prop::Description, description),
        ],
        added,
        removed,
    }
}

struct WantedItems {
    lists: [(Prop, Vec<Item>); 4],
    added: Vec<String>,
    removed: Vec<String>,
}

/// Writes one property element: `<dc:subject><rdf:Bag><rdf:li>..</rdf:li>..</rdf:Bag></dc:subject>`
/// with one item per line, indented under `indent` by one space per level.
fn write_property(
    qname: &str,
    container: &str,
    li: &str,
    items: &[Item],
    indent: &str,
) -> io::Result<String> {
    let mut writer = Writer::new(Vec::new());
    let newline = |level: usize| format!("\n{indent}{}", " ".repeat(level));
    writer.write_event(Event::Start(BytesStart::new(qname)))?;
    writer.write_event(Event::Text(BytesText::from_escaped(newline(1))))?;
    writer.write_event(Event::Start(BytesStart::new(container)))?;
    for item in items {
        writer.write_event(Event::Text(BytesText::from_escaped(newline(2))))?;
        let mut start = BytesStart::new(li);
        if let Some(lang) = &item.lang {
            start.push_attribute(("xml:lang", lang.as_str()));
        }
        writer.write_event(Event::Start(start))?;
        writer.write_event(Event::Text(BytesText::new(&item.text)))?;
        writer.write_event(Event::End(BytesEnd::new(li)))?;
    }
    writer.write_event(Event::Text(BytesText::from_escaped(newline(1))))?;
    writer.write_event(Event::End(BytesEnd::new(container)))?;
    writer.write_event(Event::Text(BytesText::from_escaped(newline(0))))?;
    writer.write_event(Event::End(BytesEnd::new(qname)))?;
    String::from_utf8(writer.into_inner())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A fresh sidecar with one empty `rdf:Description`, for vlm to add its properties to.
fn skeleton() -> io::Result<String> {
    let mut writer = Writer::new(Vec::new());
    let text = |w: &mut Writer<Vec<u8>>, s: &str| {
        w.write_event(Event::Text(BytesText::from_escaped(s.to_string())))
    };
    writer.write_event(Event::PI(quick_xml::events::BytesPI::new(
        "xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"",
    )))?;
    text(&mut writer, "\n")?;
    let mut meta = BytesStart::new("x:xmpmeta");
    meta.push_attribute(("xmlns:x", NS_X));
    meta.push_attribute(("x:xmptk", "vlm"));
    writer.write_event(Event::Start(meta))?;
    text(&mut writer, "\n ")?;
    let mut rdf = BytesStart::new("rdf:RDF");
    rdf.push_attribute(("xmlns:rdf", NS_RDF));
    writer.write_event(Event::Start(rdf))?;
    text(&mut writer, "\n  ")?;
    let mut description = BytesStart::new("rdf:Description");
    description.push_attribute(("rdf:about", ""));
    writer.write_event(Event::Start(description))?;
    text(&mut writer, "\n  ")?;
    writer.write_event(Event::End(BytesEnd::new("rdf:Description")))?;
    text(&mut writer, "\n ")?;
    writer.write_event(Event::End(BytesEnd::new("rdf:RDF")))?;
    text(&mut writer, "\n")?;
    writer.write_event(Event::End(BytesEnd::new("x:xmpmeta")))?;
    text(&mut writer, "\n")?;
    writer.write_event(Event::PI(quick_xml::events::BytesPI::new(
        "xpacket end=\"w\"",
    )))?;
    text(&mut writer, "\n")?;
    String::from_utf8(writer.into_inner())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A namespace declaration written into a start tag.
fn declaration(prefix: &str, uri: &str) -> io::Result<String> {
    let mut start = BytesStart::new("t");
    start.push_attribute((format!("xmlns:{prefix}").as_str(), uri));
    let mut writer = Writer::new(Vec::new());
    writer.write_event(Event::Empty(start))?;
    let tag = String::from_utf8(writer.into_inner())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    // `<t xmlns:p="uri"/>` -> `xmlns:p="uri"`
    Ok(tag
        .trim_start_matches("<t ")
        .trim_end_matches("/>")
        .to_string())
}

/// Merges `tags` into a sidecar's text (`None`: no sidecar yet) and returns the new text.
///
/// Only the properties whose items change are rewritten; every other byte is kept.
pub fn merge(
    existing: Option<&str>,
    tags: Tags<'_>,
    options: &XmpOptions,
) -> Result<Merged, MergeError> {
    let io_err = |e: io::Error| MergeError::Malformed {
        position: 0,
        cause: e.to_string(),
    };
    let fresh;
    let text = match existing {
        Some(text) => text,
        None => {
            fresh = skeleton().map_err(io_err)?;
            &fresh
        }
    };
    // A byte-order mark is not markup; the reader should not see it.
    let bom = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let parsed = parse(&text[bom..]).map_err(|e| match e {
        MergeError::Malformed { position, cause } => MergeError::Malformed {
            position: position + bom as u64,
            cause,
        },
        other => other,
    })?;
    let wanted = wanted_items(&parsed, tags, options);
    // (range in `text`, replacement), applied from the end.
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    // Properties to add, per description: (description index, prop, items).
    let mut additions: Vec<(Prop, &Vec<Item>)> = Vec::new();
    for (prop, items) in &wanted.lists {
        match parsed.find(*prop) {
            Some(found) if found.items == *items => {}
            Some(found) if items.is_empty() => {
                edits.push((
                    found.space_before + bom..found.range.end + bom,
                    String::new(),
                ));
            }
            Some(found) => {
                let (rdf_prefix, _) = split_qname(
                    found
                        .container
                        .as_deref()
                        .unwrap_or(&parsed.descriptions[0].qname),
                );
                let container = found
                    .container
                    .clone()
                    .unwrap_or_else(|| qualified(rdf_prefix, prop.container()));
                let li = qualified(rdf_prefix, "li");
                let element = write_property(&found.qname, &container, &li, items, &found.indent)
                    .map_err(io_err)?;
                edits.push((found.range.start + bom..found.range.end + bom, element));
            }
            None if items.is_empty() => {}
            None => additions.push((*prop, items)),
        }
    }
    if !additions.is_empty() {
        edits.extend(add_properties(&parsed, &additions, bom).map_err(io_err)?);
    }
    edits.sort_by_key(|(range, _)| (range.start, range.end));
    let mut out = String::with_capacity(text.len() + 512);
    let mut at = 0;
    for (range, replacement) in &edits {
        out.push_str(&text[at..range.start]);
        out.push_str(replacement);
        at = range.end;
    }
    out.push_str(&text[at..]);
    let description_changed = tags.description.is_some()
        && parsed.find(Prop::Description).map(|f| &f.items) != Some(&wanted.lists[3].1);
    Ok(Merged {
        text: out,
        added: wanted.added,
        removed: wanted.removed,
        description: description_changed,
    })
}

fn qualified(prefix: &str, local: &str) -> String {
    if prefix.is_empty() {
        local.to_string()
    } else {
        format!("{prefix}:{local}")
    }
}

/// Edits that add `additions` to the first `rdf:Description`, declaring the namespaces it
/// lacks on its start tag.
fn add_properties(
    parsed: &Parsed,
    additions: &[(Prop, &Vec<Item>)],
    bom: usize,
) -> io::Result<Vec<(Range<usize>, String)>> {
    // Beside the keywords the file has, else where most namespaces needed are bound.
    let target = parsed.props.first().map_or_else(
        || {
            parsed
                .descriptions
                .iter()
                .enumerate()
                .max_by_key(|(i, d)| {
                    let bound = additions
                        .iter()
                        .filter(|(p, _)| d.scope.iter().any(|(_, uri)| uri == p.namespace()))
                        .count();
                    (bound, std::cmp::Reverse(*i))
                })
                .map_or(0, |(i, _)| i)
        },
        |(_, _, d)| *d,
    );
    let desc = &parsed.descriptions[target];
    let (rdf_prefix, _) = split_qname(&desc.qname);
    let child_indent = desc
        .child_indent
        .clone()
        .unwrap_or_else(|| format!("{} ", desc.indent));
    let mut scope = desc.scope.clone();
    let mut declarations = String::new();
    let mut body = String::new();
    for (prop, items) in additions {
        let prefix = match scope.iter().rev().find(|(_, uri)| uri == prop.namespace()) {
            Some((prefix, _)) => prefix.clone(),
            None => {
                // The usual prefix unless the file binds it to something else here.
                let mut prefix = prop.usual_prefix().to_string();
                let mut n = 1;
                while resolve(&scope, &prefix).is_some() {
                    prefix = format!("{}{n}", prop.usual_prefix());
                    n += 1;
                }
                declarations.push_str(&desc.declare_separator.0);
                declarations.push_str(&declaration(&prefix, prop.namespace())?);
                declarations.push_str(&desc.declare_separator.1);
                scope.push((prefix.clone(), prop.namespace().to_string()));
                prefix
            }
        };
        let element = write_property(
            &qualified(&prefix, prop.local()),
            &qualified(rdf_prefix, prop.container()),
            &qualified(rdf_prefix, "li"),
            items,
            &child_indent,
        )?;
        body.push_str(&format!("\n{child_indent}{element}"));
    }
    let mut edits = Vec::new();
    if !declarations.is_empty() {
        edits.push((desc.declare_at + bom..desc.declare_at + bom, declarations));
    }
    let tag_end = desc.start.end + bom;
    if desc.empty {
        // `<rdf:Description .../>` becomes a start tag, the properties and an end tag.
        let mut end_tag = Writer::new(Vec::new());
        end_tag.write_event(Event::End(BytesEnd::new(desc.qname.as_str())))?;
        let end_tag = String::from_utf8(end_tag.into_inner())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        edits.push((
            tag_end - 2..tag_end,
            format!(">{body}\n{}{end_tag}", desc.indent),
        ));
    } else {
        edits.push((desc.last_child_end + bom..desc.last_child_end + bom, body));
    }
    Ok(edits)
}

/// Counter for temporary names, so concurrent writes in one process never share one.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` through a temporary file in the same folder, renamed into place;
/// a symbolic link is followed, so the file it points to is the one replaced, and the old
/// file's permissions are kept.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let target = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path)?,
        _ => path.to_path_buf(),
    };
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Hidden and not ending in .xmp: photo tools never take it for a sidecar.
    let temp = dir.join(format!(
        ".{name}.{}-{}.vlm-partial",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        if let Ok(meta) = fs::metadata(&target) {
            file.set_permissions(meta.permissions())?;
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, &target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests;
