use super::*;

const DARKTABLE: &str = include_str!("../../tests/fixtures/xmp/darktable.jpg.xmp");
const DIGIKAM: &str = include_str!("../../tests/fixtures/xmp/digikam.jpg.xmp");
const LIGHTROOM: &str = include_str!("../../tests/fixtures/xmp/lightroom.xmp");
const BARE: &str = include_str!("../../tests/fixtures/xmp/bare-rdf.xmp");

fn labels(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn merged(existing: Option<&str>, names: &[&str]) -> Merged {
    let labels = labels(names);
    merge(
        existing,
        Tags {
            labels: Some(&labels),
            description: None,
        },
        &XmpOptions::default(),
    )
    .unwrap()
}

/// The items of each property, as the parser reads them back.
fn items(text: &str, prop: Prop) -> Vec<String> {
    let bom = if text.starts_with('\u{feff}') { 3 } else { 0 };
    parse(&text[bom..])
        .unwrap()
        .find(prop)
        .map(|f| f.items.iter().map(|i| i.text.clone()).collect())
        .unwrap_or_default()
}

#[test]
fn a_new_sidecar_holds_every_form_and_a_rerun_changes_nothing() {
    let first = merged(None, &["cat", "dog"]);
    assert_eq!(items(&first.text, Prop::Subject), ["cat", "dog"]);
    assert_eq!(
        items(&first.text, Prop::Hierarchical),
        ["vlm|cat", "vlm|dog"]
    );
    assert_eq!(items(&first.text, Prop::TagsList), ["vlm/cat", "vlm/dog"]);
    assert!(first.text.starts_with("<?xpacket begin=\"\u{feff}\""));
    assert!(
        first.text.contains("<dc:subject>\n    <rdf:Bag>"),
        "{}",
        first.text
    );
    assert_eq!(first.added, ["cat", "dog"]);
    let second = merged(Some(&first.text), &["cat", "dog"]);
    assert_eq!(second.text, first.text);
    assert!(second.added.is_empty() && second.removed.is_empty());
}

#[test]
fn vlms_earlier_labels_are_replaced_and_the_users_kept() {
    let first = merged(Some(DIGIKAM), &["cat", "Alice"]);
    let second = merged(Some(&first.text), &["dog"]);
    assert_eq!(second.removed, ["cat", "Alice"]);
    assert_eq!(second.added, ["dog"]);
    // "Alice" is also the leaf of the user's People|Alice, so it stays a keyword.
    assert_eq!(items(&second.text, Prop::Subject), ["Alice", "dog"]);
    assert_eq!(
        items(&second.text, Prop::Hierarchical),
        ["People|Alice", "vlm|dog"]
    );
    assert_eq!(
        items(&second.text, Prop::TagsList),
        ["People/Alice", "vlm/dog"]
    );
    // No labels at all takes vlm's out and gives back the user's file byte for byte.
    let cleared = merged(Some(&second.text), &[]);
    assert_eq!(cleared.text, DIGIKAM);
}

#[test]
fn everything_but_the_changed_properties_is_kept_byte_for_byte() {
    for (name, original) in [
        ("darktable", DARKTABLE),
        ("digikam", DIGIKAM),
        ("lightroom", LIGHTROOM),
    ] {
        let out = merged(Some(original), &["cat"]).text;
        // Every line of the original that is not inside a property vlm writes is still
        // there, in order.
        let mut rest = out.as_str();
        let mut inside = false;
        for line in original.lines() {
            let t = line.trim();
            if [
                "<dc:subject>",
                "<lr:hierarchicalSubject>",
                "<digiKam:TagsList>",
            ]
            .contains(&t)
            {
                inside = true;
            }
            if !inside {
                let at = rest
                    .find(line)
                    .unwrap_or_else(|| panic!("{name}: lost {line:?} in\n{out}"));
                rest = &rest[at + line.len()..];
            }
            if [
                "</dc:subject>",
                "</lr:hierarchicalSubject>",
                "</digiKam:TagsList>",
            ]
            .contains(&t)
            {
                inside = false;
            }
        }
        assert!(out.contains("vlm|cat"), "{name}");
    }
}

#[test]
fn the_common_shapes_are_merged() {
    // darktable: rdf:Seq arrays, attributes for simple properties; the Seq is kept.
    let out = merged(Some(DARKTABLE), &["cat"]).text;
    assert_eq!(items(&out, Prop::Subject), ["holiday", "cat"]);
    assert_eq!(items(&out, Prop::Hierarchical), ["places|beach", "vlm|cat"]);
    assert_eq!(items(&out, Prop::TagsList), ["vlm/cat"]);
    assert!(out.contains("   <dc:subject>\n    <rdf:Seq>\n     <rdf:li>holiday</rdf:li>\n     <rdf:li>cat</rdf:li>\n    </rdf:Seq>\n   </dc:subject>"), "{out}");
    assert!(
        out.contains("xmlns:digiKam=\"http://www.digikam.org/ns/1.0/\""),
        "{out}"
    );
    // Lightroom: two descriptions; the properties go where dc and lr are bound already.
    let out = merged(Some(LIGHTROOM), &["cat"]).text;
    assert_eq!(items(&out, Prop::Subject), ["beach", "places", "cat"]);
    assert_eq!(out.matches("xmlns:dc=").count(), 1, "{out}");
    let second = out.find("xmlns:dc=").unwrap();
    assert!(out.find("digiKam:TagsList").unwrap() > second, "{out}");
    // An empty description with attributes only, no wrapper, dc bound to another prefix.
    let out = merged(Some(BARE), &["cat"]).text;
    assert!(out.contains("<purl:subject>"), "{out}");
    assert!(!out.contains("xmlns:dc="), "{out}");
    assert_eq!(items(&out, Prop::Subject), ["cat"]);
    assert_eq!(items(&out, Prop::TagsList), ["vlm/cat"]);
    assert!(out.contains("xmp:Label=\"Red\""));
    assert!(out.contains("</rdf:Description>\n</rdf:RDF>"), "{out}");
    assert_eq!(merged(Some(&out), &["cat"]).text, out);
    assert_eq!(merged(Some(&out), &[]).text.matches("subject").count(), 0);
}

#[test]
fn a_caption_sets_the_default_language_only() {
    let labels = labels(&["cat"]);
    let tags = Tags {
        labels: Some(&labels),
        description: Some("A cat <on> a \"mat\" & more"),
    };
    let out = merge(Some(DIGIKAM), tags, &XmpOptions::default()).unwrap();
    assert!(out.description);
    let found = parse(&out.text[3..]).unwrap();
    let description = &found.find(Prop::Description).unwrap().items;
    assert_eq!(description[0].text, "A cat <on> a \"mat\" & more");
    assert_eq!(description[0].lang.as_deref(), Some("x-default"));
    assert_eq!(description[1].text, "Alice am See");
    let again = merge(Some(&out.text), tags, &XmpOptions::default()).unwrap();
    assert_eq!(again.text, out.text);
    assert!(!again.description);
}

#[test]
fn a_caption_run_keeps_every_keyword_and_replaces_only_its_description() {
    let with_labels = merged(Some(DIGIKAM), &["cat", "dog"]).text;
    let caption = |text| Tags {
        labels: None,
        description: Some(text),
    };
    let out = merge(Some(&with_labels), caption("a cat"), &XmpOptions::default()).unwrap();
    assert!(out.added.is_empty() && out.removed.is_empty());
    for prop in [Prop::Subject, Prop::Hierarchical, Prop::TagsList] {
        assert_eq!(
            items(&out.text, prop),
            items(&with_labels, prop),
            "{prop:?}"
        );
    }
    assert_eq!(items(&out.text, Prop::Subject), ["Alice", "cat", "dog"]);
    assert_eq!(
        items(&out.text, Prop::Description),
        ["a cat", "Alice am See"]
    );
    // Only the description's lines changed.
    let outside = |text: &str| {
        let (head, rest) = text.split_once("<dc:description>").unwrap();
        let (_, tail) = rest.split_once("</dc:description>").unwrap();
        format!("{head}{tail}")
    };
    assert_eq!(outside(&out.text), outside(&with_labels));
    // A later caption replaces vlm's earlier one; the same caption changes nothing.
    let later = merge(Some(&out.text), caption("a dog"), &XmpOptions::default()).unwrap();
    assert_eq!(
        items(&later.text, Prop::Description),
        ["a dog", "Alice am See"]
    );
    let same = merge(Some(&later.text), caption("a dog"), &XmpOptions::default()).unwrap();
    assert_eq!(same.text, later.text);
    assert!(!same.description);
    // Labels written after a caption keep it.
    assert_eq!(
        items(
            &merged(Some(&later.text), &["bird"]).text,
            Prop::Description
        ),
        ["a dog", "Alice am See"]
    );
}

#[test]
fn hostile_labels_are_escaped_and_read_back_exactly() {
    let hostile = [
        "<script>&amp;</script>",
        "a \"quoted\" 'label'",
        "café 日本",
        "\u{202e}gnp.exe",
        "]]>",
    ];
    let out = merged(None, &hostile).text;
    assert!(!out.contains("<script>"));
    assert_eq!(items(&out, Prop::Subject), hostile);
    assert_eq!(merged(Some(&out), &hostile).text, out);
}

#[test]
fn the_root_is_configurable_and_separators_in_labels_make_no_levels() {
    let options = XmpOptions::new(Naming::Appended, "auto | vlm").unwrap();
    let labels = labels(&["AC/DC", "cat|kitten"]);
    let tags = Tags {
        labels: Some(&labels),
        description: None,
    };
    let out = merge(None, tags, &options).unwrap().text;
    assert_eq!(
        items(&out, Prop::Hierarchical),
        ["auto|vlm|AC/DC", "auto|vlm|cat/kitten"]
    );
    assert_eq!(
        items(&out, Prop::TagsList),
        ["auto/vlm/AC|DC", "auto/vlm/cat|kitten"]
    );
    assert_eq!(merge(Some(&out), tags, &options).unwrap().text, out);
    for bad in ["", "a||b", "a/b"] {
        assert!(XmpOptions::new(Naming::Appended, bad).is_err(), "{bad:?}");
    }
}

#[test]
fn files_that_are_not_xmp_are_refused_and_left_alone() {
    let labels = labels(&["cat"]);
    let tags = Tags {
        labels: Some(&labels),
        description: None,
    };
    let options = XmpOptions::default();
    for (text, want) in [
        ("<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><rdf:RDF>", "never closed"),
        ("<a><b></a>", "near byte"),
        ("<html><body/></html>", "no rdf:RDF"),
        ("<rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\"><rdf:Description><dc:subject xmlns:dc=\"http://purl.org/dc/elements/1.1/\">flat</dc:subject></rdf:Description></rdf:RDF>", "structured"),
    ] {
        let err = merge(Some(text), tags, &options).unwrap_err().at(Path::new("p.xmp"));
        let message = err.to_string();
        assert!(message.contains(want) && message.contains("p.xmp"), "{text}: {message}");
    }
}

#[test]
fn sidecars_are_named_as_the_photo_tools_expect() {
    let image = Path::new("dir/IMG_1.CR2");
    assert_eq!(
        sidecar_path(image, Naming::Appended),
        Path::new("dir/IMG_1.CR2.xmp")
    );
    assert_eq!(
        sidecar_path(image, Naming::Basename),
        Path::new("dir/IMG_1.xmp")
    );
}

#[test]
fn the_writer_creates_updates_and_reports_shared_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let jpg = dir.path().join("a.jpg");
    let raw = dir.path().join("a.cr2");
    std::fs::write(&jpg, b"not read").unwrap();
    let options = XmpOptions::new(Naming::Basename, "vlm").unwrap();
    let cat = labels(&["cat"]);
    let tags = Tags {
        labels: Some(&cat),
        description: None,
    };
    let mut dry = SidecarWriter::new(options.clone(), true);
    let planned = dry.write(&jpg, tags).unwrap();
    assert_eq!(planned.change, Change::Created);
    assert_eq!(
        planned.to_string(),
        format!(
            "would create {}: +\"cat\"",
            dir.path().join("a.xmp").display()
        )
    );
    assert!(!dir.path().join("a.xmp").exists());
    let mut writer = SidecarWriter::new(options, false);
    assert_eq!(writer.write(&jpg, tags).unwrap().change, Change::Created);
    let again = writer.write(&raw, tags).unwrap();
    assert_eq!(again.change, Change::Unchanged);
    assert_eq!(again.shared_with.as_deref(), Some(jpg.as_path()));
    assert_eq!(std::fs::read(&jpg).unwrap(), b"not read");
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // Nothing to write and no sidecar: none is made.
    let none = writer
        .write(&dir.path().join("b.jpg"), Tags::default())
        .unwrap();
    assert_eq!(none.change, Change::Unchanged);
    assert!(!dir.path().join("b.xmp").exists());
}
