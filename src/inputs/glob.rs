//! Glob patterns given as inputs (`"photos/**/*.jpg"`), expanded by walking their
//! literal leading directory rather than by the shell.

use super::InputError;
use globset::{GlobBuilder, GlobMatcher};
use std::path::{Path, PathBuf};

/// Whether `arg` contains glob syntax.
pub(crate) fn has_glob_syntax(arg: &str) -> bool {
    arg.contains(['*', '?', '[', '{'])
}

/// A compiled input pattern: walk `base` (at most `max_depth` levels when the pattern
/// has no `**`) and take the files whose path relative to `base` matches.
#[derive(Debug)]
pub(crate) struct InputGlob {
    /// The pattern as given, for messages.
    pub pattern: String,
    /// The leading components without glob syntax; `None` when the pattern starts with one
    /// (walk the current directory and display paths without a `./` prefix).
    pub base: Option<PathBuf>,
    /// Matches paths relative to `base`.
    pub matcher: GlobMatcher,
    /// Walk depth bound, from the number of components after `base`; `None` with `**`.
    pub max_depth: Option<usize>,
}

impl InputGlob {
    /// Compiles `pattern`. `*` and `?` do not cross `/`, as in a shell; `**` does.
    pub fn new(pattern: &str) -> Result<Self, InputError> {
        let components: Vec<&str> = pattern.split('/').collect();
        let literal = components
            .iter()
            .take_while(|c| !has_glob_syntax(c))
            .count();
        // The last component is the file pattern even when literal (a glob arg always has
        // syntax somewhere, so `literal` < len unless only an escape made it look literal).
        let literal = literal.min(components.len().saturating_sub(1));
        let rest = components[literal..].join("/");
        let base = match literal {
            0 => None,
            // An absolute pattern: the empty first component is the root.
            _ if components[..literal].iter().all(|c| c.is_empty()) => Some(PathBuf::from("/")),
            _ => Some(PathBuf::from(components[..literal].join("/"))),
        };
        let matcher = GlobBuilder::new(&rest)
            .literal_separator(true)
            .build()
            .map_err(|source| InputError::BadGlob {
                pattern: pattern.to_string(),
                cause: source,
            })?
            .compile_matcher();
        let max_depth = if rest.contains("**") {
            None
        } else {
            Some(rest.split('/').filter(|c| !c.is_empty()).count())
        };
        Ok(InputGlob {
            pattern: pattern.to_string(),
            base,
            matcher,
            max_depth,
        })
    }

    /// The directory to walk.
    pub fn walk_root(&self) -> &Path {
        self.base.as_deref().unwrap_or(Path::new("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_literal_base_from_pattern() {
        let g = InputGlob::new("photos/2024/**/*.png").unwrap();
        assert_eq!(g.base.as_deref(), Some(Path::new("photos/2024")));
        assert_eq!(g.max_depth, None);
        assert!(g.matcher.is_match("a/b/c.png"));
        assert!(g.matcher.is_match("c.png"), "** matches zero directories");
        assert!(!g.matcher.is_match("c.jpg"));

        let g = InputGlob::new("photos/*.jpg").unwrap();
        assert_eq!(g.base.as_deref(), Some(Path::new("photos")));
        assert_eq!(g.max_depth, Some(1));
        assert!(g.matcher.is_match("a.jpg"));
        assert!(!g.matcher.is_match("sub/a.jpg"), "* must not cross /");

        let g = InputGlob::new("*/x?.gif").unwrap();
        assert_eq!(g.base, None);
        assert_eq!(g.walk_root(), Path::new("."));
        assert_eq!(g.max_depth, Some(2));
        assert!(g.matcher.is_match("d/x1.gif"));

        let g = InputGlob::new("/data/*.{jpg,png}").unwrap();
        assert_eq!(g.base.as_deref(), Some(Path::new("/data")));
        assert!(g.matcher.is_match("a.png"));

        let g = InputGlob::new("/*.jpg").unwrap();
        assert_eq!(g.base.as_deref(), Some(Path::new("/")));
    }

    #[test]
    fn bad_pattern_is_reported_with_the_pattern() {
        let err = InputGlob::new("photos/[a.jpg").unwrap_err();
        assert!(matches!(err, InputError::BadGlob { .. }));
        assert!(err.to_string().contains("`photos/[a.jpg`"), "{err}");
    }

    #[test]
    fn detects_glob_syntax() {
        assert!(has_glob_syntax("*.jpg"));
        assert!(has_glob_syntax("a/b?.png"));
        assert!(has_glob_syntax("a/[ab].png"));
        assert!(has_glob_syntax("a/{x,y}.png"));
        assert!(!has_glob_syntax("a/b.png"));
    }
}
