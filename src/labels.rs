//! The user's labels and the prompt template that turns each label into a sentence.

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
    #[error("cannot read labels file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
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

/// Labels split from a comma-separated list, trimmed.
pub fn parse_list(list: &str) -> Result<Vec<String>, LabelError> {
    check(list.split(',').map(str::trim).map(str::to_string).collect())
}

/// Labels from a file: one per line (commas are part of the label), trimmed; blank lines
/// and lines starting with `#` are skipped.
pub fn read_file(path: &Path) -> Result<Vec<String>, LabelError> {
    let text = std::fs::read_to_string(path).map_err(|source| LabelError::Read {
        path: path.to_path_buf(),
        source,
    })?;
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
    fn templates_need_a_placeholder() {
        assert_eq!(Template::default().apply("cat"), "a photo of a cat.");
        assert_eq!(Template::new("{}").unwrap().apply("cat"), "cat");
        assert!(Template::new("a photo").is_err());
    }
}
