//! Known checkpoints: one TOML file per model in `models/`, embedded in the binary.

use super::SourceError;
use serde::Deserialize;

/// What a checkpoint does, and so which command runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Image-text matching (CLIP, SigLIP, ...): `vlm classify`, `search`, `eval`, ...
    #[default]
    Classify,
    /// Captions (BLIP captioning): `vlm caption`.
    Caption,
    /// Answers to questions about an image (BLIP question answering): `vlm ask`.
    Answer,
}

impl Task {
    /// The name registry files and `vlm models` use.
    pub fn name(self) -> &'static str {
        match self {
            Task::Classify => "classify",
            Task::Caption => "caption",
            Task::Answer => "answer",
        }
    }

    /// What a checkpoint of this task is, as messages say it.
    pub fn checkpoint(self) -> &'static str {
        match self {
            Task::Classify => "an image-text matching checkpoint (it scores labels)",
            Task::Caption => "a BLIP captioning checkpoint",
            Task::Answer => "a BLIP question-answering checkpoint",
        }
    }

    /// The command that runs checkpoints of this task.
    pub fn command(self) -> &'static str {
        match self {
            Task::Classify => "vlm classify",
            Task::Caption => "vlm caption",
            Task::Answer => "vlm ask",
        }
    }
}

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
    /// Architecture family: `clip`, `siglip`, `metaclip_2` or `open_clip`
    /// ([`crate::family::Family::name`]), or `blip` for captions and answers.
    pub family: String,
    /// What the checkpoint does (`classify` when absent).
    #[serde(default)]
    pub task: Task,
    /// How probabilities are computed: `softmax` or `sigmoid`; must be the family's.
    /// Classification checkpoints only.
    #[serde(default)]
    pub scoring: Option<String>,
    /// Size of the weights file vlm downloads, in MB (approximate, as the hub lists it).
    pub weights_mb: u32,
    /// open_clip only: the activation the checkpoint was trained with, for repos whose
    /// `open_clip_config.json` omits `quick_gelu` (the flag is not in the weights).
    #[serde(default)]
    pub quick_gelu: Option<bool>,
    /// open_clip only: the resize mode (`shortest` or `squash`), for repos whose config omits it.
    #[serde(default)]
    pub resize_mode: Option<String>,
    /// Square input resolution in pixels.
    pub image_size: u32,
    /// Dimension of the joint embedding space (projection dim); classification only.
    #[serde(default)]
    pub embed_dim: Option<u32>,
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
    (
        "siglip-b16.toml",
        include_str!("../../models/siglip-b16.toml"),
    ),
    (
        "siglip-so400m.toml",
        include_str!("../../models/siglip-so400m.toml"),
    ),
    (
        "siglip2-b16.toml",
        include_str!("../../models/siglip2-b16.toml"),
    ),
    (
        "siglip2-so400m.toml",
        include_str!("../../models/siglip2-so400m.toml"),
    ),
    (
        "metaclip2-l14.toml",
        include_str!("../../models/metaclip2-l14.toml"),
    ),
    (
        "dfn5b-h14-378.toml",
        include_str!("../../models/dfn5b-h14-378.toml"),
    ),
    (
        "metaclip-l14.toml",
        include_str!("../../models/metaclip-l14.toml"),
    ),
    (
        "blip-base.toml",
        include_str!("../../models/blip-base.toml"),
    ),
    (
        "blip-large.toml",
        include_str!("../../models/blip-large.toml"),
    ),
    ("blip-vqa.toml", include_str!("../../models/blip-vqa.toml")),
    (
        "blip-vqa-capfilt-large.toml",
        include_str!("../../models/blip-vqa-capfilt-large.toml"),
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
    if entry.task != Task::Classify {
        // Captions and answers: BLIP, which neither scores labels nor embeds.
        if entry.family != "blip" {
            return Err(bad(format!(
                "task `{}` needs family `blip`, not `{}`",
                entry.task.name(),
                entry.family
            )));
        }
        if entry.scoring.is_some() || entry.embed_dim.is_some() {
            return Err(bad(format!(
                "scoring and embed_dim are for classification checkpoints, not task `{}`",
                entry.task.name()
            )));
        }
        if entry.quick_gelu.is_some() || entry.resize_mode.is_some() {
            return Err(bad(
                "quick_gelu and resize_mode are for open_clip entries".into()
            ));
        }
        if entry.image_size == 0 || entry.weights_mb == 0 {
            return Err(bad("image_size and weights_mb must be positive".into()));
        }
        return Ok(entry);
    }
    let family = crate::family::Family::parse(&entry.family).ok_or_else(|| {
        bad(format!(
            "family `{}` is not one of clip, siglip, metaclip_2, open_clip (or blip, with a \
             caption or answer task)",
            entry.family
        ))
    })?;
    let scoring = entry.scoring.as_deref().unwrap_or_default();
    if scoring != family.scoring().name() {
        return Err(bad(format!(
            "scoring `{scoring}` is not the {} family's ({})",
            family,
            family.scoring()
        )));
    }
    if family != crate::family::Family::OpenClip
        && (entry.quick_gelu.is_some() || entry.resize_mode.is_some())
    {
        return Err(bad(
            "quick_gelu and resize_mode are for open_clip entries".into()
        ));
    }
    if let Some(mode) = entry
        .resize_mode
        .as_deref()
        .filter(|m| !["shortest", "squash"].contains(m))
    {
        return Err(bad(format!(
            "resize_mode `{mode}` is not shortest or squash"
        )));
    }
    if entry.image_size == 0 || entry.embed_dim.unwrap_or(0) == 0 || entry.weights_mb == 0 {
        return Err(bad(
            "image_size, embed_dim and weights_mb must be positive".into()
        ));
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
        assert_eq!(entries.len(), 18);
        let aliases: HashSet<_> = entries.iter().map(|e| e.alias.as_str()).collect();
        assert_eq!(aliases.len(), entries.len(), "aliases are unique");
        let repos: HashSet<_> = entries.iter().map(|e| e.repo.as_str()).collect();
        assert_eq!(repos.len(), entries.len(), "repos are unique");
        for e in entries
            .iter()
            .filter(|e| e.family == "siglip" || e.family == "open_clip")
        {
            let family = crate::family::Family::parse(&e.family).expect("known family");
            assert_eq!(
                e.scoring.as_deref(),
                Some(family.scoring().name()),
                "{}",
                e.alias
            );
            // The repo name states the input size.
            assert!(
                e.repo.contains(&e.image_size.to_string()),
                "{}: {}",
                e.alias,
                e.image_size
            );
        }
        for e in entries.iter().filter(|e| e.family == "clip") {
            assert_eq!(e.scoring.as_deref(), Some("softmax"), "{}", e.alias);
            assert!(
                [224, 336].contains(&e.image_size),
                "{}: {}",
                e.alias,
                e.image_size
            );
            let dim = e.embed_dim.unwrap_or(0);
            assert!([512, 768, 1024].contains(&dim), "{}", e.alias);
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
            assert_eq!(dim, expected, "{}", e.alias);
        }
    }

    #[test]
    fn every_family_has_an_alias_and_open_clip_entries_pin_their_training() {
        let entries = entries().expect("registry parses");
        for family in crate::family::Family::ALL {
            assert!(
                entries.iter().any(|e| e.family == family.name()),
                "no alias for {family}"
            );
        }
        for e in entries.iter().filter(|e| e.family == "open_clip") {
            assert!(
                e.quick_gelu.is_some() && e.resize_mode.is_some(),
                "{}",
                e.alias
            );
        }
        let dfn = lookup("dfn5b-h14-378").expect("alias");
        assert_eq!(
            (dfn.quick_gelu, dfn.resize_mode.as_deref()),
            (Some(true), Some("squash"))
        );
        let text = include_str!("../../models/siglip-b16.toml");
        let err = parse(
            "siglip-b16.toml",
            &text.replace("\"sigmoid\"", "\"softmax\""),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("scoring"), "{err}");
    }

    #[test]
    fn blip_entries_say_their_task_and_licence() {
        let entries = entries().expect("registry parses");
        let blip: Vec<_> = entries.iter().filter(|e| e.family == "blip").collect();
        let aliases: Vec<&str> = blip.iter().map(|e| e.alias.as_str()).collect();
        assert_eq!(
            aliases,
            [
                "blip-base",
                "blip-large",
                "blip-vqa",
                "blip-vqa-capfilt-large"
            ]
        );
        for e in &blip {
            assert_eq!(e.license, "BSD-3-Clause", "{}", e.alias);
            assert_eq!(e.image_size, 384, "{}", e.alias);
            assert!(e.repo.starts_with("Salesforce/blip-"), "{}", e.alias);
            let want = if e.repo.contains("vqa") {
                Task::Answer
            } else {
                Task::Caption
            };
            assert_eq!(e.task, want, "{}", e.alias);
            assert_eq!((e.scoring.as_deref(), e.embed_dim), (None, None));
        }
        assert!(entries
            .iter()
            .filter(|e| e.family != "blip")
            .all(|e| e.task == Task::Classify));
        assert_eq!(Task::Answer.command(), "vlm ask");
        // A caption entry that claims a scoring, or a CLIP family, is refused.
        let text = include_str!("../../models/blip-base.toml");
        let err = parse("blip-base.toml", &format!("{text}scoring = \"softmax\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("scoring"), "{err}");
        let err = parse(
            "blip-base.toml",
            &text.replace("family = \"blip\"", "family = \"clip\""),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("needs family `blip`"), "{err}");
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
        assert_eq!(e.embed_dim, Some(1024));
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
