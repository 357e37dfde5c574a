//! JPEG decoding with libjpeg-turbo's decoder, the one Pillow (and so transformers'
//! `load_image`) uses: the `mozjpeg` crate builds it (MozJPEG 4, whose decoder is
//! libjpeg-turbo's) from vendored C source, no system library. Same settings as Pillow's
//! `JpegDecode.c`: the accurate integer IDCT (`JDCT_ISLOW`, jidctint.c), fancy (triangle)
//! chroma upsampling (jdsample.c) and libjpeg's YCbCr tables (jdcolor.c), so the pixels are
//! Pillow 13's (libjpeg-turbo 3.2) exactly; `src/preprocess/parity.rs` checks that.
//!
//! One decoder for every JPEG, at full size or (`--jpeg-downscale`) at 1/2, 1/4 or 1/8
//! scale in the DCT domain (libjpeg's `scale_num / scale_denom`, jidctred.c): each 8x8
//! block of coefficients becomes 4x4, 2x2 or 1x1 pixels. The entropy decoding still reads
//! the whole file, but the inverse DCT, upsampling, colour conversion and the resize touch
//! up to 64 times fewer pixels. That result is close to, not equal to, a full decode
//! followed by the resize: the reduced inverse DCT drops the high frequencies a box filter
//! would, where Pillow's bicubic filter weighs them slightly differently. Keeping at least
//! twice the resize target in the reduced image leaves the final filter most of the work.
//!
//! Truncation is decided before this decoder runs ([`super::truncation`]): libjpeg's own
//! "premature end of data" warnings are not needed, and warnings are not printed (Pillow
//! does not print them either).

use std::panic::{catch_unwind, AssertUnwindSafe};

use image::metadata::Orientation;
use image::RgbImage;
use mozjpeg::{ColorSpace, Decompress, Marker};

/// Reduction factors, largest first.
const FACTORS: [u32; 3] = [8, 4, 2];

/// The largest factor in 8, 4, 2 that leaves the shorter side of a `width` x `height` JPEG at
/// least `2 * target` pixels once reduced (rounded up, as the decoder does), else 1.
pub(super) fn reduction(width: u32, height: u32, target: u32) -> u32 {
    let short = u64::from(width.min(height));
    let need = 2 * u64::from(target);
    FACTORS
        .into_iter()
        .find(|&f| short.div_ceil(u64::from(f)) >= need)
        .unwrap_or(1)
}

/// Why a JPEG gave no pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JpegError {
    /// libjpeg refused the file; its message.
    Decode(String),
    /// More than the pixel limit (checked from the header, before any pixel buffer).
    TooLarge { width: u32, height: u32 },
}

/// A decoded JPEG as stored (EXIF orientation not applied yet).
#[derive(Debug)]
pub(super) struct Jpeg {
    /// RGB pixels, reduced by `factor`.
    pub image: RgbImage,
    /// `(width, height)` of the stored picture at full size.
    pub full_size: (u32, u32),
    /// 1 (full size), 2, 4 or 8.
    pub factor: u32,
    /// From the first Exif APP1 segment, as Pillow's `exif_transpose` reads it.
    pub orientation: Orientation,
}

/// Decodes `bytes` to RGB: full size, or with `downscale_side = Some(side)` reduced by the
/// [`reduction`] for `side`. Files over `max_pixels` are refused from their header.
/// Greyscale is replicated and CMYK/YCCK converted as Pillow's `convert("RGB")` does.
pub(super) fn decode(
    bytes: &[u8],
    max_pixels: u64,
    downscale_side: Option<u32>,
) -> Result<Jpeg, JpegError> {
    // libjpeg reports a fatal error by calling `error_exit`, which the mozjpeg crate turns
    // into an unwind carrying the message (`resume_unwind`: no panic hook, nothing printed);
    // it stops here, and the decompressor is dropped (freed) on the way.
    match catch_unwind(AssertUnwindSafe(|| {
        decode_unguarded(bytes, max_pixels, downscale_side)
    })) {
        Ok(result) => result,
        Err(payload) => Err(JpegError::Decode(
            payload
                .downcast_ref::<String>()
                .map(|m| m.trim_start_matches("libjpeg fatal error: ").to_string())
                .or_else(|| payload.downcast_ref::<&str>().map(|m| m.to_string()))
                .unwrap_or_else(|| "libjpeg-turbo stopped on an error".to_string()),
        )),
    }
}

fn decode_unguarded(
    bytes: &[u8],
    max_pixels: u64,
    downscale_side: Option<u32>,
) -> Result<Jpeg, JpegError> {
    let io = |e: std::io::Error| JpegError::Decode(e.to_string());
    let mut decoder = Decompress::builder()
        .with_markers(&[Marker::APP(1)])
        .from_mem(bytes)
        .map_err(io)?;
    // libjpeg keeps dimensions in 32 bits (at most 65500 each), so these never saturate.
    let (w, h) = decoder.size();
    let width = u32::try_from(w).unwrap_or(u32::MAX);
    let height = u32::try_from(h).unwrap_or(u32::MAX);
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(JpegError::TooLarge { width, height });
    }
    let orientation = decoder
        .markers()
        .filter(|m| m.marker == Marker::APP(1))
        .find_map(|m| m.data.strip_prefix(b"Exif\0\0"))
        .map(|exif| Orientation::from_exif_chunk(exif).unwrap_or(Orientation::NoTransforms))
        .unwrap_or(Orientation::NoTransforms);
    let factor = downscale_side.map_or(1, |side| reduction(width, height, side));
    // `scale` takes the numerator of n/8.
    decoder.scale((8 / factor) as u8);
    // Pillow opens 1-component JPEGs as "L" and 4-component ones as "CMYK" (libjpeg turns
    // YCCK into CMYK), then converts; everything else comes out of libjpeg as RGB.
    let components = decoder.components().len();
    let (space, channels) = match components {
        1 => (ColorSpace::JCS_GRAYSCALE, 1),
        4 => (ColorSpace::JCS_CMYK, 4),
        _ => (ColorSpace::JCS_RGB, 3),
    };
    let mut started = decoder.to_colorspace(space).map_err(io)?;
    let (out_w, out_h) = (started.width(), started.height());
    let samples: Vec<u8> = started.read_scanlines().map_err(io)?;
    started.finish().map_err(io)?;
    if samples.len() != out_w * out_h * channels {
        return Err(JpegError::Decode(format!(
            "libjpeg-turbo gave {} samples for {out_w}x{out_h}x{channels}",
            samples.len()
        )));
    }
    let rgb: Vec<u8> = match channels {
        1 => samples.iter().flat_map(|&v| [v; 3]).collect(),
        4 => samples.chunks_exact(4).flat_map(cmyk_to_rgb).collect(),
        _ => samples,
    };
    let image = RgbImage::from_raw(out_w as u32, out_h as u32, rgb).ok_or_else(|| {
        JpegError::Decode(format!("{out_w}x{out_h} does not fit an image buffer"))
    })?;
    Ok(Jpeg {
        image,
        full_size: (width, height),
        factor,
        orientation,
    })
}

/// One pixel of libjpeg's CMYK output to RGB as Pillow does it. Pillow reads a CMYK JPEG
/// as Adobe-inverted (`CMYK;I`: c = 255 - sample) and `convert("RGB")` computes
/// `r = (255 - k) - MULDIV255(c, 255 - k)`
/// ([Convert.c `cmyk2rgb`](https://github.com/python-pillow/Pillow/blob/13.0.0/src/libImaging/Convert.c)).
/// In the samples `s` that is `s_k - round((255 - s_c) * s_k / 255)`, which equals
/// `round(s_c * s_k / 255)` because a product over 255 is never halfway between integers.
fn cmyk_to_rgb(s: &[u8]) -> [u8; 3] {
    [s[0], s[1], s[2]].map(|c| muldiv255(c, s[3]))
}

/// `a * b / 255`, rounded, as Pillow's `MULDIV255` computes it.
fn muldiv255(a: u8, b: u8) -> u8 {
    let t = u32::from(a) * u32::from(b) + 128;
    ((t + (t >> 8)) >> 8) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn factor_keeps_twice_the_target() {
        // 2000 / 8 = 250 < 448, 2000 / 4 = 500 >= 448.
        assert_eq!(reduction(3000, 2000, 224), 4);
        assert_eq!(reduction(2000, 3000, 224), 4);
        // Rounded up like the decoder's output: ceil(3577 / 8) = 448, 3576 / 8 = 447.
        assert_eq!(reduction(4000, 3577, 224), 8);
        assert_eq!(reduction(4000, 3576, 224), 4);
        assert_eq!(reduction(1000, 895, 224), 2);
        assert_eq!(reduction(1000, 894, 224), 1);
        assert_eq!(reduction(894, 5000, 224), 1);
        assert_eq!(reduction(640, 480, 224), 1);
        assert_eq!(reduction(224, 224, 224), 1);
        assert_eq!(reduction(1, 1, 224), 1);
        // Tiny fixture target 40: 80 pixels are enough.
        assert_eq!(reduction(3000, 2000, 40), 8);
        assert_eq!(reduction(65535, 65535, 224), 8);
    }

    #[test]
    fn muldiv255_is_exact_product_rounding() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let want = (f64::from(a) * f64::from(b) / 255.0).round() as u8;
                assert_eq!(muldiv255(a, b), want, "{a} {b}");
                // The form Pillow writes, on the inverted ink value.
                let (c, nk) = (255 - u32::from(a), u32::from(b));
                let t = c * nk + 128;
                assert_eq!(u32::from(want), nk - ((t + (t >> 8)) >> 8), "{a} {b}");
            }
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/images")
            .join(name);
        std::fs::read(path).unwrap()
    }

    #[test]
    fn reduced_sizes_round_up() {
        // chelsea.jpg is 224x149 (width x height); a side of 10 asks for the most reduction
        // that keeps 20 pixels.
        let bytes = fixture("chelsea.jpg");
        for (side, factor, size) in [(37, 2, (112, 75)), (18, 4, (56, 38)), (9, 8, (28, 19))] {
            let jpeg = decode(&bytes, u64::MAX, Some(side)).unwrap();
            assert_eq!(jpeg.factor, factor, "side {side}");
            assert_eq!(jpeg.image.dimensions(), size, "factor {factor}");
            assert_eq!(jpeg.full_size, (224, 149));
        }
        let full = decode(&bytes, u64::MAX, None).unwrap();
        assert_eq!((full.factor, full.image.dimensions()), (1, (224, 149)));
    }

    #[test]
    fn limits_and_garbage_are_errors_not_panics() {
        let bytes = fixture("chelsea.jpg");
        assert_eq!(
            decode(&bytes, 224 * 149 - 1, None).unwrap_err(),
            JpegError::TooLarge {
                width: 224,
                height: 149
            }
        );
        assert!(decode(&bytes, 224 * 149, None).is_ok());
        for bad in [
            &b"\xFF\xD8\xFF\xE0 not really"[..],
            b"",
            b"\xFF\xD8",
            b"text",
        ] {
            let err = decode(bad, u64::MAX, None).unwrap_err();
            assert!(
                matches!(&err, JpegError::Decode(m) if !m.is_empty()),
                "{err:?}"
            );
        }
        // Corrupt entropy-coded data: libjpeg warns and decodes what it can, as in Pillow.
        let mut corrupt = bytes.clone();
        let n = corrupt.len();
        for b in &mut corrupt[n / 2..n / 2 + 40] {
            *b = 0x5A;
        }
        assert!(decode(&corrupt, u64::MAX, None).is_ok());
    }

    #[test]
    fn exif_orientation_is_read() {
        let jpeg = decode(&fixture("coffee_exif6.jpg"), u64::MAX, None).unwrap();
        assert_eq!(jpeg.orientation, Orientation::Rotate90);
        let plain = decode(&fixture("coffee.jpg"), u64::MAX, None).unwrap();
        assert_eq!(plain.orientation, Orientation::NoTransforms);
    }
}
