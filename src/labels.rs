//! The user's labels and the prompt templates that turn each label into sentences.
//!
//! A label may list synonyms, `cat|kitten`: one class, named after the first. With several
//! templates or synonyms, a class is the prompt ensemble of the CLIP paper's ImageNet
//! notebook: every prompt is embedded and L2-normalised, the class embedding is their mean,
//! normalised again.

use std::path::{Path, PathBuf};

/// The default prompt, the one the CLIP paper found to work well for photos.
pub const DEFAULT_TEMPLATE: &str = "a photo of a {}.";

/// Why labels or a template could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("no labels given; pass --labels \"dog,cat\" or --labels-file FILE")]
    None,
    #[error("label {position} is empty; remove the stray comma or blank entry from the list")]
    Empty { position: usize },
    #[error("label {label:?} is given twice; each label may appear once, since duplicates split the probability between them")]
    Duplicate { label: String },
    #[error("template {template:?} has no {{}} placeholder; write e.g. \"a photo of a {{}}.\" or \"{{}}\" for the bare label")]
    Template { template: String },
    #[error("label {position} has an empty synonym; write synonyms as \"cat|kitten\" with no empty part")]
    EmptySynonym { position: usize },
    #[error("templates file {} has no templates; write one template with a {{}} per line", path.display())]
    NoTemplates { path: PathBuf },
    #[error("{}: line {line}: template {template:?} has no {{}} placeholder", path.display())]
    FileTemplate {
        path: PathBuf,
        line: usize,
        template: String,
    },
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("prompt spec {spec:?} has no {{}} placeholder, is not imagenet80 or imagenet7, and cannot be used as a templates file: {cause}; write a template such as \"a photo of a {{}}.\", an ensemble name, or the path of a file with one template per line")]
    Spec {
        spec: String,
        cause: Box<LabelError>,
    },
}

/// A named set of templates: one template, or an ensemble averaged per class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSpec {
    /// As the user wrote it: the template, the ensemble name or the file path.
    pub name: String,
    pub templates: Templates,
}

impl PromptSpec {
    /// A template if `spec` contains `{}`; else `imagenet80`, `imagenet7`, or a file with
    /// one template per line.
    pub fn parse(spec: &str) -> Result<Self, LabelError> {
        let templates = if spec.contains("{}") {
            Template::new(spec).map(Templates::single)
        } else {
            Templates::from_arg(spec)
        }
        .map_err(|source| LabelError::Spec {
            spec: spec.to_string(),
            cause: Box::new(source),
        })?;
        Ok(Self {
            name: spec.to_string(),
            templates,
        })
    }

    /// The spec for `vlm classify`-style `--template T` / `--templates SET` options.
    pub fn from_options(template: &str, templates: Option<&str>) -> Result<Self, LabelError> {
        Ok(match templates {
            Some(set) => Self {
                name: set.to_string(),
                templates: Templates::from_arg(set)?,
            },
            None => Self {
                name: template.to_string(),
                templates: Templates::single(Template::new(template)?),
            },
        })
    }

    /// The name, with the number of templates when there are several.
    pub fn describe(&self) -> String {
        match self.templates.as_slice().len() {
            1 => self.name.clone(),
            n => format!("{} ({n} templates)", self.name),
        }
    }
}

/// A prompt template with a `{}` placeholder for the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(String);

impl Template {
    /// Checks that `template` has a `{}` placeholder.
    pub fn new(template: &str) -> Result<Self, LabelError> {
        if template.contains("{}") {
            Ok(Self(template.to_string()))
        } else {
            Err(LabelError::Template {
                template: template.to_string(),
            })
        }
    }

    /// The prompt for one label.
    pub fn apply(&self, label: &str) -> String {
        self.0.replace("{}", label)
    }
}

impl Default for Template {
    fn default() -> Self {
        Self(DEFAULT_TEMPLATE.to_string())
    }
}

/// The 80 prompt templates of CLIP's ImageNet evaluation.
const IMAGENET80: &str = include_str!("templates/imagenet80.txt");
/// The 7-template subset the same notebook found to do as well.
const IMAGENET7: &str = include_str!("templates/imagenet7.txt");

/// One or more templates whose prompts are averaged into one class embedding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates(Vec<Template>);

impl Templates {
    /// Just one template.
    pub fn single(template: Template) -> Self {
        Self(vec![template])
    }

    /// `imagenet80`, `imagenet7`, or a file with one template per line (blank lines and
    /// `#` comments skipped).
    pub fn from_arg(arg: &str) -> Result<Self, LabelError> {
        if let Some(set) = Self::named(arg) {
            return Ok(set);
        }
        let path = PathBuf::from(arg);
        let text = std::fs::read_to_string(&path).map_err(|source| LabelError::Read {
            path: path.clone(),
            cause: source,
        })?;
        Self::parse(&text, path)
    }

    /// The built-in set `imagenet80` or `imagenet7`; `None` for any other name.
    pub fn named(name: &str) -> Option<Self> {
        let text = match name {
            "imagenet80" => IMAGENET80,
            "imagenet7" => IMAGENET7,
            _ => return None,
        };
        Self::parse(text, PathBuf::from(name)).ok()
    }

    /// The templates of a templates file's text, one per line (blank lines and `#`
    /// comments skipped); `origin` names it in errors.
    pub fn parse(text: &str, origin: PathBuf) -> Result<Self, LabelError> {
        let mut templates = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            templates.push(Template::new(line).map_err(|_| LabelError::FileTemplate {
                path: origin.clone(),
                line: i + 1,
                template: line.to_string(),
            })?);
        }
        if templates.is_empty() {
            return Err(LabelError::NoTemplates { path: origin });
        }
        Ok(Self(templates))
    }

    /// The templates, in order.
    pub fn as_slice(&self) -> &[Template] {
        &self.0
    }
}

/// A class to score: a name and the synonyms (the name first) that describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    pub name: String,
    pub synonyms: Vec<String>,
}

/// Every prompt to embed, and which class each belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSet {
    pub classes: Vec<Class>,
    pub prompts: Vec<String>,
    /// `prompts[ranges[c].clone()]` are the prompts of `classes[c]`: each class's prompts
    /// are contiguous, in class order, and cover `prompts` exactly.
    pub ranges: Vec<std::ops::Range<usize>>,
}

impl PromptSet {
    /// Applies every template to every synonym of every label.
    pub fn new(labels: &[String], templates: &Templates) -> Result<Self, LabelError> {
        let mut classes = Vec::with_capacity(labels.len());
        let mut prompts = Vec::new();
        let mut ranges = Vec::with_capacity(labels.len());
        for (index, label) in labels.iter().enumerate() {
            let synonyms: Vec<String> = label.split('|').map(|s| s.trim().to_string()).collect();
            if synonyms.iter().any(String::is_empty) {
                return Err(LabelError::EmptySynonym {
                    position: index + 1,
                });
            }
            let start = prompts.len();
            for synonym in &synonyms {
                for template in templates.as_slice() {
                    prompts.push(template.apply(synonym));
                }
            }
            ranges.push(start..prompts.len());
            classes.push(Class {
                name: synonyms[0].clone(),
                synonyms,
            });
        }
        let names: Vec<String> = classes.iter().map(|c| c.name.clone()).collect();
        check(names)?;
        Ok(Self {
            classes,
            prompts,
            ranges,
        })
    }

    /// The prompt reported for a class: its only prompt, or the first of its ensemble.
    pub fn first_prompt(&self, class: usize) -> &str {
        self.ranges
            .get(class)
            .and_then(|range| self.prompts.get(range.start))
            .map_or("", String::as_str)
    }
}

/// Labels split from a comma-separated list, trimmed.
pub fn parse_list(list: &str) -> Result<Vec<String>, LabelError> {
    check(list.split(',').map(str::trim).map(str::to_string).collect())
}

/// Labels from a file: one per line (commas are part of the label), trimmed; blank lines
/// and lines starting with `#` are skipped.
pub fn read_file(path: &Path) -> Result<Vec<String>, LabelError> {
    let text = std::fs::read_to_string(path).map_err(|source| LabelError::Read {
        path: path.to_path_buf(),
        cause: source,
    })?;
    parse_lines(&text)
}

/// Labels from a labels file's text (see [`read_file`]).
pub fn parse_lines(text: &str) -> Result<Vec<String>, LabelError> {
    check(
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(str::to_string)
            .collect(),
    )
}

/// Refuses empty lists, empty labels and duplicates.
pub fn check(labels: Vec<String>) -> Result<Vec<String>, LabelError> {
    if labels.is_empty() || (labels.len() == 1 && labels[0].is_empty()) {
        return Err(LabelError::None);
    }
    for (i, label) in labels.iter().enumerate() {
        if label.is_empty() {
            return Err(LabelError::Empty { position: i + 1 });
        }
        if labels[..i].contains(label) {
            return Err(LabelError::Duplicate {
                label: label.clone(),
            });
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_split_and_trimmed() {
        assert_eq!(
            parse_list(" dog , cat,hot dog").unwrap(),
            vec!["dog", "cat", "hot dog"]
        );
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(matches!(parse_list(""), Err(LabelError::None)));
        assert!(matches!(
            parse_list("dog,,cat"),
            Err(LabelError::Empty { position: 2 })
        ));
        assert!(matches!(
            parse_list("dog,cat,dog"),
            Err(LabelError::Duplicate { .. })
        ));
    }

    #[test]
    fn files_skip_comments_and_blanks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.txt");
        std::fs::write(&path, "# animals\ndog\n\n  cat, small  \n").unwrap();
        assert_eq!(read_file(&path).unwrap(), vec!["dog", "cat, small"]);
        let missing = read_file(&dir.path().join("nope.txt")).unwrap_err();
        assert!(missing.to_string().contains("nope.txt"));
    }

    #[test]
    fn synonyms_and_templates_expand_into_owned_prompts() {
        let labels = parse_list("cat|kitten, dog").unwrap();
        let templates = Templates::from_arg("imagenet7").unwrap();
        assert_eq!(templates.as_slice().len(), 7);
        let set = PromptSet::new(&labels, &templates).unwrap();
        assert_eq!(set.classes[0].name, "cat");
        assert_eq!(set.classes[0].synonyms, vec!["cat", "kitten"]);
        assert_eq!(set.prompts.len(), 3 * 7);
        assert_eq!(set.ranges[0].len(), 14);
        assert_eq!(set.prompts[7], "itap of a kitten.");
        assert_eq!(set.first_prompt(1), "itap of a dog.");
        assert_eq!(
            Templates::from_arg("imagenet80").unwrap().as_slice().len(),
            80
        );
        assert!(matches!(
            PromptSet::new(&["cat|".to_string()], &templates),
            Err(LabelError::EmptySynonym { position: 1 })
        ));
        assert!(matches!(
            PromptSet::new(&["cat|kitten".to_string(), "cat".to_string()], &templates),
            Err(LabelError::Duplicate { .. })
        ));
    }

    #[test]
    fn template_files_are_checked_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.txt");
        std::fs::write(&path, "# mine\na photo of a {}.\n\nart of {}\n").unwrap();
        let templates = Templates::from_arg(path.to_str().unwrap()).unwrap();
        assert_eq!(templates.as_slice()[1].apply("x"), "art of x");
        std::fs::write(&path, "a photo\n").unwrap();
        let err = Templates::from_arg(path.to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(matches!(
            Templates::from_arg(path.to_str().unwrap()),
            Err(LabelError::NoTemplates { .. })
        ));
    }

    #[test]
    fn templates_need_a_placeholder() {
        assert_eq!(Template::default().apply("cat"), "a photo of a cat.");
        assert_eq!(Template::new("{}").unwrap().apply("cat"), "cat");
        assert!(Template::new("a photo").is_err());
    }

    #[test]
    fn classify_options_become_a_spec() {
        let one = PromptSpec::from_options("itap of a {}.", None).unwrap();
        assert_eq!(one.describe(), "itap of a {}.");
        let set = PromptSpec::from_options("ignored {}", Some("imagenet7")).unwrap();
        assert_eq!(set.templates.as_slice().len(), 7);
        assert!(PromptSpec::from_options("no placeholder", None).is_err());
    }
}
