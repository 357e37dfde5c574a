//! Input discovery against a generated tree (symlink loop, duplicates, hidden entries,
//! content sniffing) and URL reading against a loopback server.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use vlm::inputs::{
    discover, read_bytes, Event, FilesFrom, InputError, InputOptions, Shard, SkipReason, Source,
};

const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0];
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01";

/// What one discovery produced, with paths relative to the tree root.
#[derive(Debug, Default)]
struct Outcome {
    inputs: Vec<String>,
    skipped: Vec<(String, SkipReason)>,
    errors: Vec<String>,
}

impl Outcome {
    fn skipped_with(&self, wanted: fn(&SkipReason) -> bool) -> Vec<&str> {
        self.skipped
            .iter()
            .filter(|(_, r)| wanted(r))
            .map(|(p, _)| p.as_str())
            .collect()
    }
}

fn rel(root: &Path, shown: &str) -> String {
    let prefix = format!("{}/", root.display());
    shown.strip_prefix(&prefix).unwrap_or(shown).to_string()
}

fn run(
    root: &Path,
    args: &[String],
    files_from: Option<FilesFrom>,
    opts: &InputOptions,
) -> Outcome {
    let mut out = Outcome::default();
    let discovered = discover(args, files_from, opts).expect("options are valid");
    for event in discovered {
        match event {
            Event::Input(input) => {
                if let Source::File(path) = &input.source {
                    assert_eq!(
                        path.to_string_lossy(),
                        input.display,
                        "source opens what is shown"
                    );
                }
                out.inputs.push(rel(root, &input.display));
            }
            Event::Skipped { path, reason } => out
                .skipped
                .push((rel(root, &path.to_string_lossy()), reason)),
            Event::Error(e) => out.errors.push(e.to_string()),
        }
    }
    out
}

fn arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(unix)]
mod tree {
    use super::*;
    use std::os::unix::fs::symlink;

    /// ```text
    /// .hidden.jpg  .secret/s.jpg  a.jpg  b.PNG  broken -> missing.jpg  copy_of_a.jpg
    /// fake.jpg (text)  link_to_a.jpg -> a.jpg  nested/{c.gif, deeper/{d.webp, e.bmp,
    /// f.png, loop -> ../..}, thumbs/t.jpg}  noext_png  noext_text  notes.txt
    /// ```
    fn make_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let write = |p: &str, bytes: &[u8]| {
            let path = r.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        };
        let mut bmp = b"BM".to_vec();
        bmp.extend_from_slice(&[70, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0, 40, 0, 0, 0]);
        write(".hidden.jpg", JPEG);
        write(".secret/s.jpg", JPEG);
        write("a.jpg", JPEG);
        write("b.PNG", PNG);
        write("copy_of_a.jpg", JPEG);
        write("fake.jpg", b"this is text, named like a photo");
        write("nested/c.gif", b"GIF89a\x01\0\x01\0");
        write("nested/deeper/d.webp", b"RIFF\x1a\0\0\0WEBPVP8 ");
        write("nested/deeper/e.bmp", &bmp);
        write("nested/deeper/f.png", PNG);
        write("nested/thumbs/t.jpg", JPEG);
        write("noext_png", PNG);
        write("noext_text", b"plain words");
        write("notes.txt", b"more words");
        symlink("missing.jpg", r.join("broken")).unwrap();
        symlink("a.jpg", r.join("link_to_a.jpg")).unwrap();
        symlink("../..", r.join("nested/deeper/loop")).unwrap();
        dir
    }

    const ALL_IMAGES: [&str; 10] = [
        "a.jpg",
        "b.PNG",
        "copy_of_a.jpg",
        "fake.jpg",
        "nested/c.gif",
        "nested/deeper/d.webp",
        "nested/deeper/e.bmp",
        "nested/deeper/f.png",
        "nested/thumbs/t.jpg",
        "noext_png",
    ];

    fn walk(opts: &InputOptions) -> (tempfile::TempDir, Outcome) {
        let dir = make_tree();
        let out = run(dir.path(), &[arg(dir.path())], None, opts);
        (dir, out)
    }

    #[test]
    fn default_walk_yields_images_in_order_and_reports_the_rest() {
        let (_dir, out) = walk(&InputOptions::default());
        assert_eq!(out.inputs, ALL_IMAGES);
        let skipped: Vec<(&str, SkipReason)> = out
            .skipped
            .iter()
            .map(|(p, r)| (p.as_str(), r.clone()))
            .collect();
        let root = _dir.path().to_path_buf();
        assert_eq!(
            skipped,
            [
                (".hidden.jpg", SkipReason::Hidden),
                (".secret", SkipReason::Hidden),
                ("broken", SkipReason::BrokenSymlink),
                ("link_to_a.jpg", SkipReason::Duplicate),
                (
                    "nested/deeper/loop",
                    SkipReason::SymlinkLoop { ancestor: root }
                ),
                ("noext_text", SkipReason::NotImage),
                ("notes.txt", SkipReason::NotImage),
            ]
        );
        assert!(out.errors.is_empty(), "{:?}", out.errors);
    }

    #[test]
    fn counts_match_the_events() {
        let dir = make_tree();
        let mut d = discover(&[arg(dir.path())], None, &InputOptions::default()).unwrap();
        let first = d.next();
        assert!(matches!(first, Some(Event::Skipped { .. })), "{first:?}");
        let rest = d.by_ref().count();
        assert_eq!(rest + 1, 17);
        let counts = d.counts();
        assert_eq!((counts.inputs, counts.skipped, counts.errors), (10, 7, 0));
        assert_eq!(counts.other_shard, 0);
    }

    #[test]
    fn hidden_option_takes_hidden_files_and_dirs() {
        let (_dir, out) = walk(&InputOptions {
            hidden: true,
            ..Default::default()
        });
        assert_eq!(&out.inputs[..3], [".hidden.jpg", ".secret/s.jpg", "a.jpg"]);
        assert_eq!(out.inputs.len(), ALL_IMAGES.len() + 2);
        assert!(out.skipped_with(|r| *r == SkipReason::Hidden).is_empty());
    }

    #[test]
    fn ext_chooses_which_images_count_including_sniffed_ones() {
        let (_dir, out) = walk(&InputOptions {
            extensions: Some(vec![".PNG".into(), "gif".into()]),
            ..Default::default()
        });
        assert_eq!(
            out.inputs,
            ["b.PNG", "nested/c.gif", "nested/deeper/f.png", "noext_png"]
        );
        assert_eq!(
            out.skipped_with(|r| *r == SkipReason::ExtensionNotSelected),
            [
                "a.jpg",
                "copy_of_a.jpg",
                "fake.jpg",
                "link_to_a.jpg",
                "nested/deeper/d.webp",
                "nested/deeper/e.bmp",
                "nested/thumbs/t.jpg",
            ]
        );
        assert_eq!(
            out.skipped_with(|r| *r == SkipReason::NotImage),
            ["noext_text", "notes.txt"]
        );
    }

    #[test]
    fn ext_may_name_non_image_extensions() {
        let (_dir, out) = walk(&InputOptions {
            extensions: Some(vec!["txt".into()]),
            ..Default::default()
        });
        assert_eq!(out.inputs, ["notes.txt"]);
    }

    #[test]
    fn exclude_matches_path_relative_path_and_name() {
        let (_dir, out) = walk(&InputOptions {
            exclude: vec!["**/thumbs/**".into(), "*.gif".into(), "deeper/e.*".into()],
            ..Default::default()
        });
        assert_eq!(
            out.skipped_with(|r| *r == SkipReason::Excluded),
            ["nested/c.gif", "nested/thumbs/t.jpg"],
            "a pattern with / is matched from the walked root, not at any depth"
        );
        let (_dir, out) = walk(&InputOptions {
            exclude: vec!["nested/deeper/e.*".into(), "thumbs".into()],
            ..Default::default()
        });
        assert_eq!(
            out.skipped_with(|r| *r == SkipReason::Excluded),
            ["nested/deeper/e.bmp", "nested/thumbs"],
            "a matching directory is pruned as one entry"
        );
        assert!(!out.inputs.iter().any(|p| p.contains("thumbs")));
    }

    #[test]
    fn max_depth_limits_the_walk() {
        let (_dir, out) = walk(&InputOptions {
            max_depth: Some(1),
            ..Default::default()
        });
        assert_eq!(
            out.inputs,
            ["a.jpg", "b.PNG", "copy_of_a.jpg", "fake.jpg", "noext_png"]
        );
        let (_dir, out) = walk(&InputOptions {
            max_depth: Some(2),
            ..Default::default()
        });
        assert!(out.inputs.contains(&"nested/c.gif".to_string()));
        assert!(!out.inputs.contains(&"nested/deeper/d.webp".to_string()));
    }

    #[test]
    fn globs_expand_without_the_shell() {
        let dir = make_tree();
        let r = dir.path();
        let opts = InputOptions::default();
        let out = run(r, &[format!("{}/**/*.png", r.display())], None, &opts);
        assert_eq!(
            out.inputs,
            ["nested/deeper/f.png"],
            "globs are case-sensitive"
        );
        assert!(out.errors.is_empty(), "{:?}", out.errors);

        let out = run(r, &[format!("{}/*.jpg", r.display())], None, &opts);
        assert_eq!(out.inputs, ["a.jpg", "copy_of_a.jpg", "fake.jpg"]);
        assert_eq!(
            out.skipped,
            [
                (".hidden.jpg".to_string(), SkipReason::Hidden),
                ("link_to_a.jpg".to_string(), SkipReason::Duplicate),
            ]
        );

        let out = run(
            r,
            &[format!("{}/nested/*/?.{{webp,bmp}}", r.display())],
            None,
            &opts,
        );
        assert_eq!(out.inputs, ["nested/deeper/d.webp", "nested/deeper/e.bmp"]);
    }

    #[test]
    fn glob_matching_nothing_is_an_error_and_the_rest_goes_on() {
        let dir = make_tree();
        let r = dir.path();
        let args = [format!("{}/*.tiff", r.display()), arg(&r.join("a.jpg"))];
        let out = run(r, &args, None, &InputOptions::default());
        assert_eq!(out.inputs, ["a.jpg"]);
        assert_eq!(out.errors.len(), 1);
        assert!(
            out.errors[0].contains("*.tiff` matched no files"),
            "{}",
            out.errors[0]
        );
    }

    #[test]
    fn bad_glob_fails_up_front() {
        let dir = make_tree();
        let bad = format!("{}/[.jpg", dir.path().display());
        let err = discover(&[bad], None, &InputOptions::default()).err();
        assert!(matches!(err, Some(InputError::BadGlob { .. })), "{err:?}");
        let opts = InputOptions {
            exclude: vec!["{a,b".into()],
            ..Default::default()
        };
        let err = discover(&[arg(dir.path())], None, &opts).err();
        assert!(matches!(err, Some(InputError::BadGlob { .. })), "{err:?}");
    }

    #[test]
    fn named_files_are_always_taken_and_deduplicated() {
        let dir = make_tree();
        let r = dir.path();
        let args = [
            arg(&r.join("notes.txt")),
            arg(&r.join(".hidden.jpg")),
            arg(&r.join("a.jpg")),
            arg(&r.join("link_to_a.jpg")),
            arg(&r.join("a.jpg")),
            arg(&r.join("copy_of_a.jpg")),
            arg(&r.join("nope.jpg")),
        ];
        let out = run(r, &args, None, &InputOptions::default());
        assert_eq!(
            out.inputs,
            ["notes.txt", ".hidden.jpg", "a.jpg", "copy_of_a.jpg"]
        );
        assert_eq!(
            out.skipped_with(|r| *r == SkipReason::Duplicate),
            ["link_to_a.jpg", "a.jpg"]
        );
        assert_eq!(out.errors.len(), 1);
        assert!(
            out.errors[0].contains("nope.jpg: no such file"),
            "{}",
            out.errors[0]
        );
    }

    #[test]
    fn named_broken_symlink_is_an_error_naming_it() {
        let dir = make_tree();
        let out = run(
            dir.path(),
            &[arg(&dir.path().join("broken"))],
            None,
            &InputOptions::default(),
        );
        assert!(out.inputs.is_empty());
        assert_eq!(out.errors.len(), 1);
        assert!(
            out.errors[0].contains("broken: broken symlink"),
            "{}",
            out.errors[0]
        );
    }

    #[test]
    fn directory_named_twice_yields_each_file_once() {
        let dir = make_tree();
        let r = dir.path();
        let args = [arg(&r.join("nested/thumbs")), arg(r)];
        let out = run(r, &args, None, &InputOptions::default());
        let mut expected = vec!["nested/thumbs/t.jpg"];
        expected.extend(ALL_IMAGES.iter().filter(|p| !p.contains("thumbs")));
        assert_eq!(out.inputs, expected);
        assert_eq!(
            out.skipped_with(|r| *r == SkipReason::Duplicate),
            ["link_to_a.jpg", "nested/thumbs/t.jpg"]
        );
    }

    #[test]
    fn links_out_of_the_walked_directory_are_followed() {
        // nested/deeper/loop leads to the tree root, which is no ancestor of
        // nested/deeper: the root's files are reached through it. Going on, walkdir
        // re-enters nested/deeper (the walk's own root, whose files are already listed)
        // and stops at its link back to the root it came through.
        let dir = make_tree();
        let r = dir.path();
        let out = run(
            r,
            &[arg(&r.join("nested/deeper"))],
            None,
            &InputOptions::default(),
        );
        let l = "nested/deeper/loop/";
        let expected: Vec<String> = [
            "nested/deeper/d.webp",
            "nested/deeper/e.bmp",
            "nested/deeper/f.png",
        ]
        .iter()
        .map(|p| p.to_string())
        .chain(
            [
                "a.jpg",
                "b.PNG",
                "copy_of_a.jpg",
                "fake.jpg",
                "nested/c.gif",
                "nested/thumbs/t.jpg",
                "noext_png",
            ]
            .iter()
            .map(|p| format!("{l}{p}")),
        )
        .collect();
        assert_eq!(out.inputs, expected);
        let loops: Vec<_> = out
            .skipped
            .iter()
            .filter(|(_, r)| matches!(r, SkipReason::SymlinkLoop { .. }))
            .collect();
        assert_eq!(
            out.skipped_with(|r| *r == SkipReason::Duplicate),
            [
                format!("{l}link_to_a.jpg"),
                format!("{l}nested/deeper/d.webp"),
                format!("{l}nested/deeper/e.bmp"),
                format!("{l}nested/deeper/f.png"),
            ]
        );
        assert_eq!(
            loops,
            [&(
                format!("{l}nested/deeper/loop"),
                SkipReason::SymlinkLoop {
                    ancestor: r.join("nested/deeper/loop")
                }
            )]
        );
        assert!(out.errors.is_empty(), "{:?}", out.errors);
    }

    fn list_of(r: &Path, sep: &str) -> String {
        [
            arg(&r.join("a.jpg")),
            arg(&r.join("nested/thumbs")),
            arg(&r.join("notes.txt")),
            arg(&r.join("gone.png")),
            arg(&r.join("a.jpg")),
            // Never a glob: taken literally, so missing.
            format!("{}/*.jpg", r.display()),
        ]
        .join(sep)
            + sep
    }

    fn check_list_outcome(out: &Outcome) {
        assert_eq!(
            out.inputs,
            ["b.PNG", "a.jpg", "nested/thumbs/t.jpg", "notes.txt",],
            "arguments first, then the list in order"
        );
        assert_eq!(out.skipped_with(|r| *r == SkipReason::Duplicate), ["a.jpg"]);
        assert_eq!(out.errors.len(), 2, "{:?}", out.errors);
        assert!(out.errors[0].contains("gone.png"));
        assert!(out.errors[1].contains("*.jpg: no such file"));
    }

    #[test]
    fn files_from_newline_list() {
        let dir = make_tree();
        let r = dir.path();
        let list = r.join("list.txt");
        std::fs::write(&list, list_of(r, "\n")).unwrap();
        let out = run(
            r,
            &[arg(&r.join("b.PNG"))],
            Some(FilesFrom::Path(list)),
            &InputOptions::default(),
        );
        check_list_outcome(&out);
    }

    #[test]
    fn files_from_nul_list() {
        let dir = make_tree();
        let r = dir.path();
        let list = r.join("list.nul");
        std::fs::write(&list, list_of(r, "\0")).unwrap();
        let opts = InputOptions {
            null_separated: true,
            ..Default::default()
        };
        let out = run(
            r,
            &[arg(&r.join("b.PNG"))],
            Some(FilesFrom::from_arg(&list)),
            &opts,
        );
        check_list_outcome(&out);
    }

    #[test]
    fn missing_files_from_fails_up_front_naming_it() {
        let dir = make_tree();
        let list = dir.path().join("no-list.txt");
        let err = discover(&[], Some(FilesFrom::Path(list)), &InputOptions::default()).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("no-list.txt") && msg.contains("--files-from"),
            "{msg}"
        );
    }

    #[test]
    fn shards_partition_the_inputs() {
        let dir = make_tree();
        let r = dir.path();
        let full: BTreeSet<String> = ALL_IMAGES.iter().map(|s| s.to_string()).collect();
        for count in 1..=5 {
            let mut union = BTreeSet::new();
            let mut total = 0;
            for index in 1..=count {
                let opts = InputOptions {
                    shard: Some(Shard { index, count }),
                    ..Default::default()
                };
                let mut d = discover(&[arg(r)], None, &opts).unwrap();
                let mut mine = Vec::new();
                for event in d.by_ref() {
                    if let Event::Input(input) = event {
                        assert_eq!(Shard::of(&input.display, count), index);
                        mine.push(rel(r, &input.display));
                    }
                }
                assert_eq!(d.counts().other_shard, ALL_IMAGES.len() - mine.len());
                total += mine.len();
                union.extend(mine);
            }
            assert_eq!(union, full, "shards of {count} cover every input");
            assert_eq!(total, full.len(), "shards of {count} are disjoint");
        }
    }

    #[test]
    fn shard_assignment_is_stable() {
        // Pinned: a change here would split a running job differently from its start.
        assert_eq!(Shard::of("photos/cat.jpg", 4), 3);
        assert_eq!(Shard::of("photos/dog.png", 4), 1);
        assert_eq!(Shard::of("https://example.com/a.jpg", 3), 2);
    }
}

mod url {
    use super::*;
    use std::thread;
    use tiny_http::{Header, Response, Server};

    const BIG: usize = 4096;

    /// Serves `/img.png`, `/big.jpg` (BIG bytes), `/moved` (302 to /img.png), anything
    /// else 404, until the returned server is dropped.
    fn serve() -> (String, std::sync::Arc<Server>) {
        let server = std::sync::Arc::new(Server::http("127.0.0.1:0").unwrap());
        let base = format!("http://{}", server.server_addr().to_ip().unwrap());
        let s = server.clone();
        thread::spawn(move || {
            for request in s.incoming_requests() {
                let response = match request.url() {
                    "/img.png" => Response::from_data(PNG.to_vec()),
                    "/big.jpg" => Response::from_data(vec![0u8; BIG]),
                    "/moved" => Response::from_data(Vec::new())
                        .with_status_code(302)
                        .with_header(Header::from_bytes("Location", "/img.png").unwrap()),
                    _ => Response::from_data(b"not here".to_vec()).with_status_code(404),
                };
                let _ = request.respond(response);
            }
        });
        (base, server)
    }

    #[test]
    fn reads_an_image_url() {
        let (base, _server) = serve();
        let bytes = read_bytes(&Source::Url(format!("{base}/img.png")), 1 << 20).unwrap();
        assert_eq!(bytes, PNG);
    }

    #[test]
    fn follows_redirects() {
        let (base, _server) = serve();
        let bytes = read_bytes(&Source::Url(format!("{base}/moved")), 1 << 20).unwrap();
        assert_eq!(bytes, PNG);
    }

    #[test]
    fn not_found_names_url_and_status() {
        let (base, _server) = serve();
        let url = format!("{base}/nothing.jpg");
        let err = read_bytes(&Source::Url(url.clone()), 1 << 20).unwrap_err();
        assert!(
            matches!(err, InputError::HttpStatus { status: 404, .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&url) && msg.contains("HTTP 404"), "{msg}");
    }

    #[test]
    fn oversized_response_is_refused() {
        let (base, _server) = serve();
        let url = format!("{base}/big.jpg");
        let err = read_bytes(&Source::Url(url.clone()), BIG as u64 - 1).unwrap_err();
        assert!(matches!(err, InputError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains(&url));
        assert_eq!(
            read_bytes(&Source::Url(url), BIG as u64).unwrap().len(),
            BIG
        );
    }

    #[test]
    fn urls_are_inputs_deduplicated_and_read_back() {
        let (base, _server) = serve();
        let img = format!("{base}/img.png");
        let args = [img.clone(), format!("{base}/big.jpg"), img.clone()];
        let inputs: Vec<_> = discover(&args, None, &InputOptions::default())
            .unwrap()
            .filter_map(|e| match e {
                Event::Input(input) => Some(input),
                _ => None,
            })
            .collect();
        assert_eq!(inputs.len(), 2);
        assert_eq!(inputs[0].display, img);
        assert_eq!(inputs[0].source, Source::Url(img));
        assert_eq!(read_bytes(&inputs[0].source, 1 << 20).unwrap(), PNG);
    }

    #[test]
    fn file_paths_read_back_too() {
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join("x.png");
        std::fs::write(&path, PNG).unwrap();
        assert_eq!(read_bytes(&Source::File(path), 1 << 20).unwrap(), PNG);
    }
}

#[test]
fn glob_from_the_current_directory_displays_paths_without_dot_slash() {
    // Cargo runs integration tests in the package root, which holds Cargo.toml.
    let opts = InputOptions {
        extensions: Some(vec!["toml".into()]),
        ..Default::default()
    };
    let inputs: Vec<String> = discover(&["*.toml".to_string()], None, &opts)
        .unwrap()
        .filter_map(|e| match e {
            Event::Input(input) => Some(input.display),
            _ => None,
        })
        .collect();
    assert!(inputs.contains(&"Cargo.toml".to_string()), "{inputs:?}");
    assert!(inputs.iter().all(|p| !p.contains('/')), "{inputs:?}");
}
