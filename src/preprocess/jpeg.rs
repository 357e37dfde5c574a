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

use super::budget::{self, Grant};

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
    /// Decoding would take more than the decoders' memory limit (worked out from the
    /// header, before any buffer).
    Memory {
        width: u32,
        height: u32,
        /// e.g. "progressive CMYK".
        kind: String,
        need: u64,
    },
}

/// The bytes a libjpeg block of coefficients takes (64 `JCOEF`s of 2 bytes).
const BLOCK_BYTES: u64 = 128;

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

/// How a JPEG is decoded and what it may take.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Largest `width * height`.
    pub max_pixels: u64,
    /// Bytes that every decode in the process may hold at once ([`budget`]).
    pub max_memory: u64,
    /// `Some(side)`: reduce by the [`reduction`] for `side`.
    pub downscale_side: Option<u32>,
    /// libjpeg keeps the whole image's coefficients until the last scan: the file is
    /// progressive, or its first scan holds only some of the components (see
    /// `super::truncation::JpegWalk::buffered`).
    pub buffered: bool,
}

/// Decodes `bytes` to RGB: full size, or reduced (see [`Limits::downscale_side`]). Files
/// over `max_pixels`, or whose decoding would take more than `max_memory` (coefficient
/// buffers, samples, the RGB image), are refused from their header; the memory is reserved
/// from [`budget`] before libjpeg allocates it, and the returned grant covers the RGB image
/// until it is dropped. Greyscale is replicated and CMYK/YCCK converted as Pillow's
/// `convert("RGB")` does.
pub(super) fn decode(bytes: &[u8], limits: Limits) -> Result<(Jpeg, Grant), JpegError> {
    // libjpeg reports a fatal error by calling `error_exit`, which the mozjpeg crate turns
    // into an unwind carrying the message (`resume_unwind`: no panic hook, nothing printed);
    // it stops here, and the decompressor (and the reservation) is dropped on the way.
    match catch_unwind(AssertUnwindSafe(|| decode_unguarded(bytes, limits))) {
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

fn decode_unguarded(bytes: &[u8], limits: Limits) -> Result<(Jpeg, Grant), JpegError> {
    let Limits {
        max_pixels,
        max_memory,
        downscale_side,
        buffered,
    } = limits;
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
    let need = memory_needed(
        &decoder,
        (width, height),
        factor,
        channels,
        buffered,
        orientation,
    );
    let Some(mut grant) = budget::reserve(need, max_memory) else {
        let colour = match components {
            1 => "greyscale",
            4 => "CMYK",
            _ => "colour",
        };
        let mode = if buffered { "progressive" } else { "baseline" };
        return Err(JpegError::Memory {
            width,
            height,
            kind: format!("{mode} {colour} JPEG"),
            need,
        });
    };
    // For a buffered file this reads every scan into the coefficient buffers.
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
    // The decompressor's buffers are gone: what is left is the image, and the copy that
    // turning it upright makes.
    grant.shrink_to(upright_bytes(image.as_raw().len() as u64, orientation));
    Ok((
        Jpeg {
            image,
            full_size: (width, height),
            factor,
            orientation,
        },
        grant,
    ))
}

/// The bytes an RGB image of `rgb` bytes holds while it is turned upright: twice as many
/// when its orientation needs a copy.
pub(super) fn upright_bytes(rgb: u64, orientation: Orientation) -> u64 {
    if orientation == Orientation::NoTransforms {
        rgb
    } else {
        2 * rgb
    }
}

/// What decoding the JPEG whose header `decoder` has read takes, in bytes, at most: the
/// whole-image coefficient buffers when `buffered` (each component's blocks, padded to its
/// sampling factors as jdcoefct.c allocates them), libjpeg's row buffers, the samples
/// read out, the RGB copy of other than 3 channels, and the copy turning it upright.
fn memory_needed(
    decoder: &Decompress<&[u8]>,
    (width, height): (u32, u32),
    factor: u32,
    channels: usize,
    buffered: bool,
    orientation: Orientation,
) -> u64 {
    let mut need = 0u64;
    for c in decoder.components() {
        let (h, v) = (
            u64::try_from(c.h_samp_factor).unwrap_or(1).max(1),
            u64::try_from(c.v_samp_factor).unwrap_or(1).max(1),
        );
        let (across, down) = (u64::from(c.width_in_blocks), u64::from(c.height_in_blocks));
        if buffered {
            need = need.saturating_add(
                across.next_multiple_of(h) * down.next_multiple_of(v) * BLOCK_BYTES,
            );
        }
        // An MCU row with its context rows above and below, for fancy upsampling.
        need = need.saturating_add(across * 8 * v * 8 * 3);
    }
    let pixels = u64::from(width).div_ceil(u64::from(factor))
        * u64::from(height).div_ceil(u64::from(factor));
    let samples = pixels * channels as u64;
    // Greyscale and CMYK are converted into a second buffer; RGB samples are the image.
    let converted = if channels == 3 { 0 } else { pixels * 3 };
    let turned = upright_bytes(pixels * 3, orientation) - pixels * 3;
    need.saturating_add(samples + converted + turned)
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
pub(super) mod tests {
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

    /// [`decode`] without a memory limit.
    fn decode_with(bytes: &[u8], max_pixels: u64, side: Option<u32>) -> Result<Jpeg, JpegError> {
        let limits = Limits {
            max_pixels,
            max_memory: u64::MAX,
            downscale_side: side,
            buffered: super::super::truncation::walk(bytes).buffered,
        };
        decode(bytes, limits).map(|(jpeg, _)| jpeg)
    }

    /// A `width` x `height` JPEG of `space` (RGB, greyscale or CMYK samples), progressive
    /// or baseline, whose frame header then claims `claimed` (width, height).
    pub(crate) fn jpeg_claiming(
        space: ColorSpace,
        progressive: bool,
        (width, height): (usize, usize),
        claimed: (u16, u16),
    ) -> Vec<u8> {
        let channels = mozjpeg::ColorSpaceExt::num_components(&space);
        let mut compress = mozjpeg::Compress::new(space);
        // libjpeg's own defaults (MozJPEG's make every file progressive).
        compress.set_fastest_defaults();
        compress.set_size(width, height);
        compress.set_quality(80.0);
        if progressive {
            compress.set_progressive_mode();
        }
        let mut started = compress.start_compress(Vec::new()).unwrap();
        let samples: Vec<u8> = (0..width * height * channels)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        started.write_scanlines(&samples).unwrap();
        let mut bytes = started.finish().unwrap();
        let sof = bytes
            .windows(2)
            .position(|w| w[0] == 0xFF && matches!(w[1], 0xC0..=0xC2))
            .unwrap();
        bytes[sof + 5..sof + 7].copy_from_slice(&claimed.1.to_be_bytes());
        bytes[sof + 7..sof + 9].copy_from_slice(&claimed.0.to_be_bytes());
        bytes
    }

    #[test]
    fn memory_is_worked_out_from_the_header_and_refused_over_the_limit() {
        let side = 11_000u64;
        let pixels = side * side;
        let blocks = (side / 8) * (side / 8);
        let cmyk = jpeg_claiming(ColorSpace::JCS_CMYK, true, (16, 16), (11_000, 11_000));
        let walk = super::super::truncation::walk(&cmyk);
        assert!(walk.buffered && walk.truncation.is_none());
        let limits = Limits {
            max_pixels: u64::MAX,
            max_memory: 1 << 30,
            downscale_side: None,
            buffered: true,
        };
        match decode(&cmyk, limits) {
            Err(JpegError::Memory {
                width, need, kind, ..
            }) => {
                assert_eq!(width, 11_000);
                assert_eq!(kind, "progressive CMYK JPEG");
                // 4 components of 1375 x 1375 blocks of 128 bytes, 4 sample bytes and
                // 3 RGB bytes a pixel, and a few MB of row buffers.
                let least = 4 * blocks * 128 + 7 * pixels;
                assert!(
                    need >= least && need < least + (16 << 20),
                    "{need} vs {least}"
                );
            }
            other => panic!("{other:?}"),
        }
        // The same frame as a baseline greyscale file keeps no coefficients: 1 sample byte
        // and 3 RGB bytes a pixel.
        let grey = jpeg_claiming(ColorSpace::JCS_GRAYSCALE, false, (16, 16), (11_000, 11_000));
        assert!(!super::super::truncation::walk(&grey).buffered);
        let tight = Limits {
            buffered: false,
            max_memory: 4 * pixels,
            ..limits
        };
        match decode(&grey, tight) {
            Err(JpegError::Memory { need, .. }) => {
                assert!(need > 4 * pixels && need < 4 * pixels + (4 << 20), "{need}");
            }
            other => panic!("{other:?}"),
        }
        // A small file decodes, and its reservation covers what it keeps.
        let small = jpeg_claiming(ColorSpace::JCS_RGB, true, (40, 30), (40, 30));
        let (jpeg, grant) = decode(
            &small,
            Limits {
                max_memory: 1 << 20,
                ..limits
            },
        )
        .unwrap();
        assert_eq!(jpeg.image.dimensions(), (40, 30));
        assert_eq!(grant.bytes(), 40 * 30 * 3);
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
            let jpeg = decode_with(&bytes, u64::MAX, Some(side)).unwrap();
            assert_eq!(jpeg.factor, factor, "side {side}");
            assert_eq!(jpeg.image.dimensions(), size, "factor {factor}");
            assert_eq!(jpeg.full_size, (224, 149));
        }
        let full = decode_with(&bytes, u64::MAX, None).unwrap();
        assert_eq!((full.factor, full.image.dimensions()), (1, (224, 149)));
    }

    #[test]
    fn limits_and_garbage_are_errors_not_panics() {
        let bytes = fixture("chelsea.jpg");
        assert_eq!(
            decode_with(&bytes, 224 * 149 - 1, None).unwrap_err(),
            JpegError::TooLarge {
                width: 224,
                height: 149
            }
        );
        assert!(decode_with(&bytes, 224 * 149, None).is_ok());
        for bad in [
            &b"\xFF\xD8\xFF\xE0 not really"[..],
            b"",
            b"\xFF\xD8",
            b"text",
        ] {
            let err = decode_with(bad, u64::MAX, None).unwrap_err();
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
        assert!(decode_with(&corrupt, u64::MAX, None).is_ok());
    }

    #[test]
    fn exif_orientation_is_read() {
        let jpeg = decode_with(&fixture("coffee_exif6.jpg"), u64::MAX, None).unwrap();
        assert_eq!(jpeg.orientation, Orientation::Rotate90);
        let plain = decode_with(&fixture("coffee.jpg"), u64::MAX, None).unwrap();
        assert_eq!(plain.orientation, Orientation::NoTransforms);
    }
}
