//! Known checkpoints: one TOML file per model in `models/`, embedded in the binary.

use super::SourceError;
use serde::Deserialize;

/// One supported checkpoint, as described by `models/<alias>.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Short name accepted by `--model`; equals the file stem.
    pub alias: String,
    /// Hugging Face repo id, `owner/name`.
    pub repo: String,
    /// Revision resolved by default (branch, tag, `refs/pr/N` or commit).
    pub revision: String,
    /// Architecture family, e.g. `clip`.
    pub family: String,
    /// Square input resolution in pixels.
    pub image_size: u32,
    /// Dimension of the joint embedding space (projection dim).
    pub embed_dim: u32,
    /// Licence of the weights.
    pub license: String,
    /// One-line human description.
    pub description: String,
}

/// The embedded registry files: (file name, contents).
const FILES: &[(&str, &str)] = &[
    ("clip-b32.toml", include_str!("../../models/clip-b32.toml")),
    ("clip-b16.toml", include_str!("../../models/clip-b16.toml")),
    ("clip-l14.toml", include_str!("../../models/clip-l14.toml")),
    (
        "clip-l14-336.toml",
        include_str!("../../models/clip-l14-336.toml"),
    ),
    (
        "laion-b32.toml",
        include_str!("../../models/laion-b32.toml"),
    ),
    (
        "laion-l14.toml",
        include_str!("../../models/laion-l14.toml"),
    ),
    (
        "laion-h14.toml",
        include_str!("../../models/laion-h14.toml"),
    ),
];

/// All registry entries, in registry order (default model first).
pub fn entries() -> Result<Vec<ModelEntry>, SourceError> {
    FILES.iter().map(|(file, text)| parse(file, text)).collect()
}

/// The entry whose alias is `alias`, if any.
pub fn lookup(alias: &str) -> Option<ModelEntry> {
    entries().ok()?.into_iter().find(|e| e.alias == alias)
}

/// The alias closest to a mistyped `spec`, as cargo and git suggest commands: the smallest
/// edit distance (a swap of two neighbouring characters counts as one edit), if it is at
/// most a third of the longer name (at least 1). Case is ignored.
pub fn suggest(spec: &str) -> Option<String> {
    let spec = spec.to_ascii_lowercase();
    entries()
        .ok()?
        .into_iter()
        .map(|e| (edit_distance(&spec, &e.alias), e.alias))
        .filter(|(d, alias)| *d <= (spec.chars().count().max(alias.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, alias)| alias)
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions and
/// transpositions of adjacent characters each cost 1.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows: two back (for transpositions), previous, current.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(before[j - 2] + 1);
            }
        }
        before = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}

/// The entry whose repo id is `repo`, if any (used to apply its pinned revision).
pub(crate) fn lookup_repo(repo: &str) -> Option<ModelEntry> {
    entries().ok()?.into_iter().find(|e| e.repo == repo)
}

fn parse(file: &str, text: &str) -> Result<ModelEntry, SourceError> {
    let bad = |cause: String| SourceError::Registry {
        file: file.to_string(),
        cause,
    };
    let entry: ModelEntry = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    let stem = file.strip_suffix(".toml").unwrap_or(file);
    if entry.alias != stem {
        return Err(bad(format!(
            "alias `{}` differs from the file name",
            entry.alias
        )));
    }
    if !is_alias(&entry.alias) {
        return Err(bad(format!(
            "alias `{}` must be lowercase letters, digits and dashes",
            entry.alias
        )));
    }
    if !super::is_repo_id(&entry.repo) {
        return Err(bad(format!("repo `{}` is not owner/name", entry.repo)));
    }
    for (name, value) in [
        ("revision", &entry.revision),
        ("family", &entry.family),
        ("license", &entry.license),
        ("description", &entry.description),
    ] {
        if value.trim().is_empty() {
            return Err(bad(format!("{name} is empty")));
        }
    }
    if entry.image_size == 0 || entry.embed_dim == 0 {
        return Err(bad("image_size and embed_dim must be positive".into()));
    }
    Ok(entry)
}

fn is_alias(s: &str) -> bool {
    !s.is_empty()
        && !s.contains('/')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_models_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("models/ is readable")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".toml"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|(f, _)| f.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
        // The embedded text is the file's current text, not a stale copy.
        for (file, text) in FILES {
            let disk = std::fs::read_to_string(dir.join(file)).expect("readable");
            assert_eq!(&disk, text, "{file}");
        }
    }

    #[test]
    fn entries_parse_and_are_consistent() {
        let entries = entries().expect("registry parses");
        assert_eq!(entries.len(), 7);
        let aliases: HashSet<_> = entries.iter().map(|e| e.alias.as_str()).collect();
        assert_eq!(aliases.len(), entries.len(), "aliases are unique");
        let repos: HashSet<_> = entries.iter().map(|e| e.repo.as_str()).collect();
        assert_eq!(repos.len(), entries.len(), "repos are unique");
        for e in &entries {
            assert_eq!(e.family, "clip", "{}", e.alias);
            assert!(
                [224, 336].contains(&e.image_size),
                "{}: {}",
                e.alias,
                e.image_size
            );
            assert!([512, 768, 1024].contains(&e.embed_dim), "{}", e.alias);
            // The repo name encodes the input size for the 336 px model only.
            assert_eq!(e.repo.ends_with("-336"), e.image_size == 336, "{}", e.alias);
            // ViT-B models project to 512, L to 768, H to 1024.
            let lower = e.repo.to_ascii_lowercase();
            let expected = if lower.contains("base") || lower.contains("-b-") {
                512
            } else if lower.contains("large") || lower.contains("-l-") {
                768
            } else {
                1024
            };
            assert_eq!(e.embed_dim, expected, "{}", e.alias);
        }
    }

    #[test]
    fn default_model_is_first_and_known() {
        let entries = entries().expect("registry parses");
        assert_eq!(entries[0].repo, super::super::DEFAULT_MODEL);
        assert_eq!(entries[0].alias, "clip-b32");
    }

    #[test]
    fn lookup_finds_aliases_only() {
        let e = lookup("laion-h14").expect("known alias");
        assert_eq!(e.repo, "laion/CLIP-ViT-H-14-laion2B-s32B-b79K");
        assert_eq!(e.embed_dim, 1024);
        assert_eq!(lookup("clip-l14-336").map(|e| e.image_size), Some(336));
        assert!(lookup("openai/clip-vit-base-patch32").is_none());
        assert!(lookup("nope").is_none());
        assert_eq!(
            lookup_repo("openai/clip-vit-base-patch16").map(|e| e.alias),
            Some("clip-b16".to_string())
        );
    }

    #[test]
    fn edit_distance_counts_swaps_as_one() {
        assert_eq!(edit_distance("clip-b23", "clip-b32"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
        assert_eq!(edit_distance("ab", "ba"), 1);
    }

    #[test]
    fn mistyped_aliases_get_the_nearest_alias() {
        assert_eq!(suggest("clip-b23").as_deref(), Some("clip-b32"));
        assert_eq!(suggest("CLIP-B32").as_deref(), Some("clip-b32"));
        assert_eq!(suggest("clip-l14-33").as_deref(), Some("clip-l14-336"));
        assert_eq!(suggest("laoin-h14").as_deref(), Some("laion-h14"));
        assert_eq!(suggest("clipb16").as_deref(), Some("clip-b16"));
        // Nothing close: no guess.
        assert_eq!(suggest("resnet50"), None);
        assert_eq!(suggest("x"), None);
    }

    #[test]
    fn malformed_entries_are_rejected_with_the_file_name() {
        let err = parse("x.toml", "alias = 1").unwrap_err().to_string();
        assert!(err.contains("models/x.toml"), "{err}");
        let text = include_str!("../../models/clip-b16.toml");
        let err = parse("other.toml", text).unwrap_err().to_string();
        assert!(err.contains("differs from the file name"), "{err}");
        let broken = text.replace("openai/clip-vit-base-patch16", "noslash");
        let err = parse("clip-b16.toml", &broken).unwrap_err().to_string();
        assert!(err.contains("not owner/name"), "{err}");
    }
}
