//! Property tests: decoding, preprocessing, label parsing and config parsing never panic
//! on arbitrary input, and valid input gives well-formed output.

use std::path::Path;

use image::{ImageEncoder, RgbImage};
use proptest::prelude::*;
use serde_json::Value;
use vlm::labels::{parse_list, PromptSet, Template, Templates};
use vlm::model::config::ClipConfig;
use vlm::preprocess::{decode_bytes_with, DecodeOptions, PreprocessConfig, Preprocessor, Resample};

const TINY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/models/tiny-quickgelu"
);

fn tiny_config() -> PreprocessConfig {
    PreprocessConfig::from_file(&Path::new(TINY).join("preprocessor_config.json")).unwrap()
}

fn small_cap() -> DecodeOptions {
    DecodeOptions::with_max_megapixels(1.0)
}

fn png(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

/// A small image with seeded pseudo-random pixels (cheaper to shrink than raw pixel vectors).
fn image_strategy(max: u32) -> impl Strategy<Value = RgbImage> {
    (1..=max, 1..=max, any::<u64>()).prop_map(|(w, h, seed)| {
        let mut state = seed | 1;
        RgbImage::from_fn(w, h, |_, _| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let b = state.to_le_bytes();
            image::Rgb([b[0], b[1], b[2]])
        })
    })
}

fn resample_strategy() -> impl Strategy<Value = Resample> {
    (0i64..6).prop_map(|code| Resample::from_pil(code).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let p = Preprocessor::new(tiny_config());
        if let Ok(image) = decode_bytes_with(&bytes, Path::new("random.bin"), &small_cap()) {
            let _ = p.preprocess(&image);
        }
    }

    #[test]
    fn random_bytes_behind_a_signature_never_panic(
        signature in prop::sample::select(vec![
            &b"\x89PNG\r\n\x1a\n"[..], b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\0", b"MM\0*",
            b"RIFF\0\0\0\0WEBPVP8 ", b"RIFF\0\0\0\0WEBPVP8L", b"RIFF\0\0\0\0WEBPVP8X",
        ]),
        rest in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let bytes = [signature, &rest].concat();
        let p = Preprocessor::new(tiny_config());
        if let Ok(image) = decode_bytes_with(&bytes, Path::new("random.img"), &small_cap()) {
            let _ = p.preprocess(&image);
        }
    }

    #[test]
    fn mutated_png_never_panics(
        image in image_strategy(24),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = png(&image);
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        bytes.truncate(8 + cut.index(bytes.len() - 7));
        let p = Preprocessor::new(tiny_config());
        if let Ok(image) = decode_bytes_with(&bytes, Path::new("mutated.png"), &small_cap()) {
            let _ = p.preprocess(&image);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn valid_images_preprocess_to_finite_normalised_values(
        image in image_strategy(300),
        resample in resample_strategy(),
        through_png in any::<bool>(),
    ) {
        let config = PreprocessConfig { resample, ..tiny_config() };
        let p = Preprocessor::new(config.clone());
        let image = if through_png {
            decode_bytes_with(&png(&image), Path::new("valid.png"), &small_cap()).unwrap()
        } else {
            image
        };
        let pixels = p.preprocess(&image).unwrap();
        let (h, w) = p.output_size();
        let plane = h as usize * w as usize;
        prop_assert_eq!(pixels.len(), 3 * plane);
        for (c, channel) in pixels.chunks_exact(plane).enumerate() {
            let mean = config.image_mean[c] as f32;
            let std = config.image_std[c] as f32;
            let (lo, hi) = ((0.0 - mean) / std, (1.0 - mean) / std);
            for &v in channel {
                prop_assert!(v.is_finite());
                prop_assert!(v >= lo - 1e-5 && v <= hi + 1e-5, "{} outside [{}, {}]", v, lo, hi);
            }
        }
    }
}

fn label_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{0,12}",
        "[ ,|\"'\t]{0,4}[a-z]{0,4}[ ,|]{0,2}",
        "\\PC{0,10}",
        Just("🐱|猫".to_string()),
        Just("كلب".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn label_lists_parse_or_fail_cleanly(
        labels in proptest::collection::vec(label_strategy(), 0..12),
        template in prop_oneof![Just("a photo of a {}.".to_string()), "\\PC{0,8}"],
    ) {
        let joined = labels.join(",");
        let Ok(parsed) = parse_list(&joined) else { return Ok(()); };
        prop_assert!(parsed.iter().all(|l| !l.is_empty() && l.trim() == l));
        for (i, label) in parsed.iter().enumerate() {
            prop_assert!(!parsed[..i].contains(label));
        }
        let templates = match Template::new(&template) {
            Ok(t) => Templates::single(t),
            Err(_) => Templates::single(Template::default()),
        };
        if let Ok(set) = PromptSet::new(&parsed, &templates) {
            prop_assert_eq!(set.classes.len(), parsed.len());
            prop_assert_eq!(set.ranges.iter().map(|r| r.len()).sum::<usize>(), set.prompts.len());
            for (class, label) in set.classes.iter().zip(&parsed) {
                prop_assert_eq!(&class.synonyms.concat(), &label.split('|').map(str::trim).collect::<String>());
                prop_assert_eq!(&class.name, &class.synonyms[0]);
            }
        }
    }
}

/// The tiny checkpoint's config.json as a JSON tree.
fn tiny_clip_config() -> Value {
    serde_json::from_str(&std::fs::read_to_string(Path::new(TINY).join("config.json")).unwrap())
        .unwrap()
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..5).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
        prop::sample::select(vec!["clip", "quick_gelu", "gelu", "siglip", ""])
            .prop_map(Value::from),
        Just(serde_json::json!({})),
        Just(serde_json::json!([1, 2])),
    ]
}

/// Replaces, removes or retypes the value at a random key path of `root`.
fn mutate(root: &mut Value, path: &[prop::sample::Index], leaf: Value, remove: bool) {
    let mut node = root;
    for (depth, at) in path.iter().enumerate() {
        if !node.is_object() {
            *node = leaf;
            return;
        }
        let map = node.as_object_mut().unwrap();
        if map.is_empty() {
            map.insert("x".into(), leaf);
            return;
        }
        let key = map.keys().nth(at.index(map.len())).unwrap().clone();
        if depth + 1 == path.len() || !map[&key].is_object() {
            if remove {
                map.remove(&key);
            } else {
                map.insert(key, leaf);
            }
            return;
        }
        node = map.get_mut(&key).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_configs_never_panic(
        edits in proptest::collection::vec(
            (proptest::collection::vec(any::<prop::sample::Index>(), 1..3), json_leaf(), any::<bool>()),
            1..5,
        ),
    ) {
        let mut config = tiny_clip_config();
        for (path, leaf, remove) in edits {
            mutate(&mut config, &path, leaf, remove);
        }
        let text = config.to_string();
        if let Ok(parsed) = ClipConfig::from_json_str(&text, Path::new("config.json")) {
            prop_assert!(parsed.vision.image_size % parsed.vision.patch_size == 0);
            prop_assert!(parsed.text.hidden_size % parsed.text.num_attention_heads == 0);
        }
    }

    #[test]
    fn arbitrary_text_as_config_never_panics(text in "\\PC{0,64}") {
        let _ = ClipConfig::from_json_str(&text, Path::new("config.json"));
    }
}
