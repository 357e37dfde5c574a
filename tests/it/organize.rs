//! The organize API on a small tree of files in a temporary folder.

use std::fs;
use std::path::{Path, PathBuf};

use vlm::organize::{Mode, OrganizeError, Organizer, Placement};

/// `src/a/cat.jpg`, `src/b/cat.jpg`, `src/dog.png`, `src/README`, `src/a.tar.gz`, each
/// holding its own relative path so a mix-up shows.
fn tree(root: &Path) -> PathBuf {
    let src = root.join("src");
    for rel in ["a/cat.jpg", "b/cat.jpg", "dog.png", "README", "a.tar.gz"] {
        let path = src.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, rel).unwrap();
    }
    src
}

/// Every file under `dir`, relative, sorted; empty when `dir` is absent.
fn walk(dir: &Path) -> Vec<String> {
    fn go(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() && !path.is_symlink() {
                go(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    go(dir, dir, &mut out);
    out.sort();
    out
}

/// The plan for the standard set of placements, relative to `dest`.
fn run_all(src: &Path, dest: &Path, mode: Mode, dry_run: bool) -> Vec<String> {
    let mut org = Organizer::new(dest, mode, dry_run).unwrap();
    let jobs: [(&str, Option<&str>); 5] = [
        ("a/cat.jpg", Some("cat")),
        ("b/cat.jpg", Some("cat")),
        ("dog.png", Some("dog")),
        ("README", None),
        ("a.tar.gz", Some("cat")),
    ];
    jobs.iter()
        .map(|(rel, label)| {
            let p = org.place(&src.join(rel), *label).unwrap();
            assert_eq!(p.mode, mode);
            assert_eq!(p.dry_run, dry_run);
            assert!(!p.unchanged);
            rel_dest(&p, dest)
        })
        .collect()
}

fn rel_dest(p: &Placement, dest: &Path) -> String {
    p.destination
        .strip_prefix(dest)
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/")
}

const PLAN: [&str; 5] = [
    "cat/cat.jpg",
    "cat/cat-1.jpg",
    "dog/dog.png",
    "_uncertain/README",
    "cat/a.tar.gz",
];

#[test]
fn copy_sorts_into_label_folders_and_keeps_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let dest = tmp.path().join("out");

    assert_eq!(run_all(&src, &dest, Mode::Copy, false), PLAN);

    assert_eq!(walk(&dest), {
        let mut v = PLAN.to_vec();
        v.sort();
        v
    });
    assert_eq!(
        fs::read_to_string(dest.join("cat/cat.jpg")).unwrap(),
        "a/cat.jpg"
    );
    assert_eq!(
        fs::read_to_string(dest.join("cat/cat-1.jpg")).unwrap(),
        "b/cat.jpg"
    );
    assert_eq!(
        fs::read_to_string(dest.join("_uncertain/README")).unwrap(),
        "README"
    );
    assert_eq!(walk(&src).len(), 5);
}

#[test]
fn move_removes_sources_and_keeps_content() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let dest = tmp.path().join("out");

    assert_eq!(run_all(&src, &dest, Mode::Move, false), PLAN);

    assert!(walk(&src).is_empty(), "{:?}", walk(&src));
    assert_eq!(
        fs::read_to_string(dest.join("cat/cat.jpg")).unwrap(),
        "a/cat.jpg"
    );
    assert_eq!(
        fs::read_to_string(dest.join("cat/cat-1.jpg")).unwrap(),
        "b/cat.jpg"
    );
    assert_eq!(
        fs::read_to_string(dest.join("dog/dog.png")).unwrap(),
        "dog.png"
    );
    assert_eq!(
        fs::read_to_string(dest.join("cat/a.tar.gz")).unwrap(),
        "a.tar.gz"
    );
}

#[cfg(unix)]
#[test]
fn link_points_at_the_absolute_source() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let dest = tmp.path().join("out");

    assert_eq!(run_all(&src, &dest, Mode::Link, false), PLAN);

    let link = dest.join("cat/cat-1.jpg");
    let target = fs::read_link(&link).unwrap();
    assert!(target.is_absolute(), "{}", target.display());
    assert_eq!(target, fs::canonicalize(src.join("b/cat.jpg")).unwrap());
    assert_eq!(fs::read_to_string(&link).unwrap(), "b/cat.jpg");
    assert_eq!(walk(&src).len(), 5);
}

#[cfg(not(unix))]
#[test]
fn link_is_refused_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Organizer::new(&tmp.path().join("out"), Mode::Link, false).unwrap_err();
    assert!(err.to_string().contains("use --organize copy"), "{err}");
}

#[test]
fn clashes_with_files_from_an_earlier_run_get_the_next_suffix() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let dest = tmp.path().join("out");
    fs::create_dir_all(dest.join("cat")).unwrap();
    fs::write(dest.join("cat/cat.jpg"), "old").unwrap();
    fs::create_dir_all(dest.join("_uncertain")).unwrap();
    fs::write(dest.join("_uncertain/README"), "old").unwrap();

    let plan = run_all(&src, &dest, Mode::Copy, false);

    assert_eq!(
        plan,
        [
            "cat/cat-1.jpg",
            "cat/cat-2.jpg",
            "dog/dog.png",
            "_uncertain/README-1",
            "cat/a.tar.gz",
        ]
    );
    assert_eq!(fs::read_to_string(dest.join("cat/cat.jpg")).unwrap(), "old");
    assert_eq!(
        fs::read_to_string(dest.join("_uncertain/README")).unwrap(),
        "old"
    );
    assert_eq!(
        fs::read_to_string(dest.join("cat/cat-2.jpg")).unwrap(),
        "b/cat.jpg"
    );

    // A second run over the same sources piles on rather than overwriting.
    let again = run_all(&src, &dest, Mode::Copy, false);
    assert_eq!(again[0], "cat/cat-3.jpg");
    assert_eq!(again[4], "cat/a.tar-1.gz");
}

#[test]
fn dry_run_writes_nothing_and_plans_what_a_real_run_does() {
    for mode in [Mode::Copy, Mode::Move, Mode::Link] {
        let tmp = tempfile::tempdir().unwrap();
        let src = tree(tmp.path());
        let dest = tmp.path().join("out");
        // One clash with an earlier run, so the plan has to consult the disk too.
        fs::create_dir_all(dest.join("dog")).unwrap();
        fs::write(dest.join("dog/dog.png"), "old").unwrap();
        let before = walk(tmp.path());

        let planned = run_all(&src, &dest, mode, true);

        assert_eq!(walk(tmp.path()), before, "{mode}: dry run touched files");
        if cfg!(not(unix)) && mode == Mode::Link {
            continue;
        }
        let actual = run_all(&src, &dest, mode, false);
        assert_eq!(planned, actual, "{mode}");
        assert_eq!(planned[2], "dog/dog-1.png");
    }
}

#[test]
fn dry_run_does_not_create_dest() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let dest = tmp.path().join("out");

    let mut org = Organizer::new(&dest, Mode::Copy, true).unwrap();
    let p = org.place(&src.join("a/cat.jpg"), Some("cat")).unwrap();

    assert!(!dest.exists());
    assert_eq!(
        p.to_string(),
        format!(
            "would copy {} -> {}",
            src.join("a/cat.jpg").display(),
            dest.join("cat").join("cat.jpg").display()
        )
    );
}

#[test]
fn labels_that_sanitise_alike_share_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let dest = tmp.path().join("out");
    let mut org = Organizer::new(&dest, Mode::Copy, false).unwrap();

    let a = org.place(&src.join("a/cat.jpg"), Some("big/cat")).unwrap();
    let b = org.place(&src.join("b/cat.jpg"), Some("big_cat")).unwrap();
    let c = org
        .place(&src.join("dog.png"), Some("../../escape"))
        .unwrap();

    assert_eq!(rel_dest(&a, &dest), "big_cat/cat.jpg");
    assert_eq!(rel_dest(&b, &dest), "big_cat/cat-1.jpg");
    assert_eq!(rel_dest(&c, &dest), "______escape/dog.png");
    assert!(c.destination.starts_with(&dest));
}

#[test]
fn a_file_already_in_its_place_is_left_alone() {
    for mode in [Mode::Copy, Mode::Move, Mode::Link] {
        let tmp = tempfile::tempdir().unwrap();
        // Destination inside the folder being classified, as after an earlier run.
        let src = tmp.path().join("photos");
        let dest = src.join("sorted");
        fs::create_dir_all(dest.join("cat")).unwrap();
        let placed = dest.join("cat/cat.jpg");
        fs::write(&placed, "meow").unwrap();

        let mut org = Organizer::new(&dest, mode, false).unwrap();
        let p = org.place(&placed, Some("cat")).unwrap();

        assert!(p.unchanged, "{mode}");
        assert_eq!(p.destination, placed);
        assert_eq!(walk(&dest), ["cat/cat.jpg"], "{mode}");
        assert_eq!(fs::read_to_string(&placed).unwrap(), "meow");
        assert!(!fs::symlink_metadata(&placed).unwrap().is_symlink());
    }
}

#[test]
fn a_failing_move_leaves_the_source_and_no_temp_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let dest = tmp.path().join("out");
    fs::create_dir_all(&dest).unwrap();
    // A file where the label folder must go.
    fs::write(dest.join("cat"), "not a folder").unwrap();

    let mut org = Organizer::new(&dest, Mode::Move, false).unwrap();
    let err = org.place(&src.join("a/cat.jpg"), Some("cat")).unwrap_err();

    assert!(matches!(err, OrganizeError::NotAFolder { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&src.join("a/cat.jpg").display().to_string()),
        "{msg}"
    );
    assert!(
        msg.contains(&dest.join("cat").display().to_string()),
        "{msg}"
    );
    assert_eq!(
        fs::read_to_string(src.join("a/cat.jpg")).unwrap(),
        "a/cat.jpg"
    );
    assert_eq!(walk(&dest), ["cat"]);

    // The dry run refuses the same way.
    let mut dry = Organizer::new(&dest, Mode::Move, true).unwrap();
    assert!(dry.place(&src.join("a/cat.jpg"), Some("cat")).is_err());

    // Other labels still work after the failure.
    let p = org.place(&src.join("dog.png"), Some("dog")).unwrap();
    assert_eq!(rel_dest(&p, &dest), "dog/dog.png");
}

#[test]
fn a_missing_source_is_reported_with_both_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("out");
    let mut org = Organizer::new(&dest, Mode::Copy, false).unwrap();
    let missing = tmp.path().join("gone.jpg");

    let err = org.place(&missing, Some("cat")).unwrap_err();

    assert!(matches!(err, OrganizeError::ReadSource { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("gone.jpg") && msg.contains(&dest.join("cat").display().to_string()));
    assert!(walk(&dest).is_empty());
}

#[test]
fn dest_that_is_a_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("out");
    fs::write(&dest, "file").unwrap();

    for dry_run in [false, true] {
        let err = Organizer::new(&dest, Mode::Copy, dry_run).unwrap_err();
        assert!(err.to_string().contains("--dest"), "{err}");
    }
}
