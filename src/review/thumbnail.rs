//! Thumbnails: decoded through the same path as the model's input (format sniffed from
//! content, EXIF orientation applied, decompression-bomb limit, large JPEGs reduced in the
//! DCT domain), shrunk to a longest side of at most `side` pixels and encoded as JPEG.

use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::imageops;

use crate::preprocess::{decode_file_region, DecodeOptions, PreprocessError};

/// Longest side of a thumbnail, in pixels.
pub const DEFAULT_SIDE: u32 = 256;

/// JPEG quality: thumbnails of 256 px at 80 are about 10-20 KB, and look clean.
const QUALITY: u8 = 80;

/// Makes the JPEG thumbnail of the image file at `path`.
pub fn thumbnail(path: &Path, side: u32, max_pixels: u64) -> Result<Vec<u8>, PreprocessError> {
    // The DCT-domain reduction keeps the shorter side at least twice `jpeg_downscale`, so
    // asking for half the thumbnail side keeps at least `side` pixels on every side that
    // the thumbnail needs: a camera JPEG is decoded at 1/8 or 1/4 size, 16-64 times fewer
    // pixels, with no visible loss at 256 px.
    let options = DecodeOptions {
        max_pixels,
        jpeg_downscale: Some(side.div_ceil(2).max(1)),
        // A preview of what is there helps the reviewer; whether a cut file was labelled
        // at all was decided by the run that made the results.
        allow_truncated: true,
    };
    let decoded = decode_file_region(path, &options)?;
    let image = decoded.image();
    let (w, h) = image.dimensions();
    let (tw, th) = fit(w, h, side);
    let small = if (tw, th) == (w, h) {
        image.clone()
    } else {
        // An area average (every source pixel counts once), in integers: fine detail does
        // not alias, and it costs a fraction of a convolution filter; the DCT reduction has
        // already done most of the shrinking.
        imageops::thumbnail(image, tw, th)
    };
    let mut bytes = Vec::with_capacity(16 * 1024);
    JpegEncoder::new_with_quality(&mut bytes, QUALITY)
        .encode_image(&small)
        .map_err(|cause| PreprocessError::Decode {
            path: path.to_path_buf(),
            cause,
        })?;
    Ok(bytes)
}

/// The size of a `w`×`h` picture shrunk to a longest side of `side` (never enlarged, never
/// below one pixel).
pub fn fit(w: u32, h: u32, side: u32) -> (u32, u32) {
    let longest = w.max(h);
    if longest <= side || longest == 0 {
        return (w.max(1), h.max(1));
    }
    let scale = f64::from(side) / f64::from(longest);
    let shrink = |x: u32| ((f64::from(x) * scale).round() as u32).clamp(1, side);
    (shrink(w), shrink(h))
}

/// Standard base64 (RFC 4648, with padding), for `data:` URIs.
pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A `file:` URL for an absolute path: every byte outside the unreserved set and `/` is
/// percent-encoded, so names with spaces, `#`, `?`, quotes or non-ASCII letters stay one URL.
pub fn file_url(path: &Path) -> String {
    let text = path.to_string_lossy();
    let mut url = String::from("file://");
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            url.push(byte as char);
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url
}

/// Percent-encodes one path segment of a relative URL (see [`file_url`]).
pub fn url_segment(text: &str) -> String {
    let mut url = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            url.push(byte as char);
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_the_aspect_and_never_enlarges() {
        assert_eq!(fit(3000, 2000, 256), (256, 171));
        assert_eq!(fit(2000, 3000, 256), (171, 256));
        assert_eq!(fit(100, 50, 256), (100, 50));
        assert_eq!(fit(10000, 1, 256), (256, 1));
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }

    #[test]
    fn urls_encode_everything_but_plain_characters() {
        assert_eq!(
            file_url(Path::new("/tmp/a b/#1 \"é\".jpg")),
            "file:///tmp/a%20b/%231%20%22%C3%A9%22.jpg"
        );
        assert_eq!(url_segment("my report_files"), "my%20report_files");
    }

    #[test]
    fn thumbnails_are_upright_jpegs_at_most_side_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.png");
        image::RgbImage::from_pixel(600, 200, image::Rgb([200, 30, 30]))
            .save(&path)
            .unwrap();
        let bytes = thumbnail(&path, 256, u64::MAX).unwrap();
        let thumb = image::load_from_memory(&bytes).unwrap();
        assert_eq!(
            image::guess_format(&bytes).unwrap(),
            image::ImageFormat::Jpeg
        );
        assert_eq!((thumb.width(), thumb.height()), (256, 85));
        let err = thumbnail(&dir.path().join("missing.png"), 256, u64::MAX).unwrap_err();
        assert!(err.to_string().contains("missing.png"), "{err}");
    }

    #[test]
    fn thumbnails_apply_the_exif_orientation() {
        // coffee_exif6.jpg stores the 224x149 coffee photo rotated, with orientation 6.
        let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
        let upright = thumbnail(&images.join("coffee.jpg"), 256, u64::MAX).unwrap();
        let turned = thumbnail(&images.join("coffee_exif6.jpg"), 256, u64::MAX).unwrap();
        let (a, b) = (
            image::load_from_memory(&upright).unwrap().to_rgb8(),
            image::load_from_memory(&turned).unwrap().to_rgb8(),
        );
        assert_eq!(a.dimensions(), (224, 149));
        assert_eq!(b.dimensions(), a.dimensions());
        let diff: f64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| f64::from((i16::from(*x) - i16::from(*y)).abs()))
            .sum::<f64>()
            / a.as_raw().len() as f64;
        assert!(diff < 12.0, "mean difference {diff}");
        let err = thumbnail(&images.join("missing.png"), 256, u64::MAX).unwrap_err();
        assert!(err.to_string().contains("missing.png"), "{err}");
    }
}
