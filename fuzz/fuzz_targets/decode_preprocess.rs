//! Arbitrary bytes as an image file: decode with a small pixel cap, then preprocess with
//! the tiny fixture's config; then again with JPEG DCT-domain downscaling (side 1, so any
//! JPEG of 16 pixels or more is reduced). Any outcome but a panic (or runaway memory) is fine.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vlm::preprocess::{
    decode_bytes_region, decode_bytes_with, DecodeOptions, PreprocessConfig, Preprocessor,
};

const CONFIG: &str =
    include_str!("../../tests/fixtures/models/tiny-quickgelu/preprocessor_config.json");

fn preprocessor() -> &'static Preprocessor {
    static P: OnceLock<Preprocessor> = OnceLock::new();
    P.get_or_init(|| {
        let config = PreprocessConfig::from_json_str(CONFIG, Path::new("preprocessor_config.json"))
            .expect("fixture config parses");
        Preprocessor::new(config)
    })
}

fn check(pixels: &[f32]) {
    let (h, w) = preprocessor().output_size();
    assert_eq!(pixels.len(), 3 * h as usize * w as usize);
    assert!(pixels.iter().all(|v| v.is_finite()));
}

fuzz_target!(|data: &[u8]| {
    let options = DecodeOptions::with_max_megapixels(4.0);
    let p = preprocessor();
    if let Ok(image) = decode_bytes_with(data, Path::new("fuzz.img"), &options) {
        if let Ok(pixels) = p.preprocess(&image) {
            check(&pixels);
        }
    }
    let reduced = DecodeOptions {
        jpeg_downscale: Some(1),
        ..options
    };
    if let Ok(decoded) = decode_bytes_region(data, Path::new("fuzz.img"), &reduced) {
        if let Ok(pixels) = p.preprocess_decoded(&decoded) {
            check(&pixels);
        }
    }
});
