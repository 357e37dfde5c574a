//! JPEG decoding at 1/2, 1/4 or 1/8 scale in the DCT domain (jpeg-decoder's reduced inverse
//! DCT: each 8x8 block of coefficients becomes 4x4, 2x2 or 1x1 pixels), for images that the
//! resize step would shrink far below that anyway. The entropy decoding still reads the whole
//! file, but the inverse DCT, upsampling, colour conversion and the resize touch up to 64
//! times fewer pixels.
//!
//! The result is close to, not equal to, a full decode followed by the resize: the reduced
//! inverse DCT drops the high frequencies a box filter would, where Pillow's bicubic filter
//! weighs them slightly differently. Keeping at least twice the resize target in the reduced
//! image leaves the final filter most of the work.

use std::io::Cursor;

use image::RgbImage;
use jpeg_decoder::{CodingProcess, Decoder, PixelFormat};

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

/// Decodes `bytes` reduced by `factor` (1, 2, 4 or 8) into RGB, as the normal decoder would
/// convert it (greyscale replicated, CMYK and YCCK through the same formula). `None` when
/// jpeg-decoder refuses the file or anything about the result is unexpected: the caller then
/// decodes it the normal way.
pub(super) fn decode_reduced(bytes: &[u8], factor: u32, max_bytes: usize) -> Option<RgbImage> {
    let mut decoder = Decoder::new(Cursor::new(bytes));
    decoder.set_max_decoding_buffer_size(max_bytes);
    // jpeg-decoder validates the frame header here (1, 3 or 4 components, supported
    // precision and subsampling), which `info` relies on.
    decoder.read_info().ok()?;
    let info = decoder.info()?;
    // Lossless JPEGs have no DCT to reduce.
    if info.coding_process == CodingProcess::Lossless || info.pixel_format == PixelFormat::L16 {
        return None;
    }
    let width = u32::from(info.width).div_ceil(factor);
    let height = u32::from(info.height).div_ceil(factor);
    let requested = (u16::try_from(width).ok()?, u16::try_from(height).ok()?);
    let got = decoder.scale(requested.0, requested.1).ok()?;
    if got != requested {
        return None;
    }
    let data = decoder.decode().ok()?;
    let pixels = width as usize * height as usize;
    let rgb: Vec<u8> = match info.pixel_format {
        PixelFormat::L8 if data.len() == pixels => data.iter().flat_map(|&v| [v; 3]).collect(),
        PixelFormat::RGB24 if data.len() == 3 * pixels => data,
        PixelFormat::CMYK32 if data.len() == 4 * pixels => data
            .chunks_exact(4)
            .flat_map(|p| {
                let k = 255 - p[3];
                [0, 1, 2].map(|c| blinn(255 - p[c], k))
            })
            .collect(),
        _ => return None,
    };
    RgbImage::from_raw(width, height, rgb)
}

/// `a * b / 255`, rounded: zune-jpeg's CMYK to RGB step. jpeg-decoder hands out inverted
/// Adobe CMYK (and the YCCK result in the same convention), so the caller inverts first and
/// both paths agree.
fn blinn(a: u8, b: u8) -> u8 {
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
    fn blinn_is_exact_product_rounding() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let want = (f64::from(a) * f64::from(b) / 255.0).round() as u8;
                assert_eq!(blinn(a, b), want, "{a} {b}");
            }
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/images")
            .join(name);
        std::fs::read(path).unwrap()
    }

    /// At factor 1 the only differences from the normal decoder are the two codecs' IDCT
    /// and upsampling rounding, so colour handling must agree.
    #[test]
    fn full_scale_agrees_with_the_normal_decoder() {
        for name in [
            "chelsea.jpg",
            "chelsea_cmyk.jpg",
            "rocket.jpg",
            "coffee.jpg",
        ] {
            let bytes = fixture(name);
            let ours = decode_reduced(&bytes, 1, usize::MAX).unwrap();
            let theirs = image::load_from_memory(&bytes).unwrap().into_rgb8();
            assert_eq!(ours.dimensions(), theirs.dimensions(), "{name}");
            let diffs: Vec<u8> = ours
                .as_raw()
                .iter()
                .zip(theirs.as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .collect();
            let max = diffs.iter().copied().max().unwrap();
            let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
            assert!(max <= 8 && mean < 1.0, "{name}: max {max}, mean {mean}");
        }
    }

    #[test]
    fn reduced_sizes_round_up() {
        // chelsea.jpg is 224x149 (width x height).
        let bytes = fixture("chelsea.jpg");
        for (factor, size) in [(2, (112, 75)), (4, (56, 38)), (8, (28, 19))] {
            let image = decode_reduced(&bytes, factor, usize::MAX).unwrap();
            assert_eq!(image.dimensions(), size, "factor {factor}");
        }
    }

    #[test]
    fn buffer_limit_and_garbage_give_none() {
        let bytes = fixture("chelsea.jpg");
        assert!(decode_reduced(&bytes, 2, 100).is_none());
        assert!(decode_reduced(b"\xFF\xD8\xFF\xE0 not really", 2, usize::MAX).is_none());
        // jpeg-decoder stops at a cut scan, where zune-jpeg pads: the caller falls back to it.
        assert!(decode_reduced(&bytes[..bytes.len() / 3], 8, usize::MAX).is_none());
    }
}
