//! Image decoding to upright 8-bit RGB, following `transformers.image_utils.load_image`
//! followed by the processor's `convert_to_rgb`.
//!
//! Python's pipeline is `exif_transpose` then `convert("RGB")` (which drops an alpha channel
//! without compositing), then `convert_to_rgb`, which paints white every pixel whose colour
//! equals a *colour-key* transparency that survived in `info["transparency"]` — PNG `tRNS`
//! on grey, RGB and simple palette images, and GIF transparent indices.
//!
//! Known differences from Pillow 13, measured with a parity script:
//! - JPEG is decoded by zune-jpeg, not libjpeg-turbo: chroma upsampling and IDCT rounding
//!   differ by up to 5 levels (mean 0.37) for 4:2:0 files, up to 3 (mean 0.01) for 4:4:4.
//!   CMYK JPEG conversion differs by at most 1.
//! - 16-bit samples are scaled to 8 bits (`v / 257`, rounded). Pillow clips 16-bit grey at 255,
//!   which turns most such images white, and keeps the high byte of 16-bit RGB (off by <= 1).
//! - A grey/RGB `tRNS` key is matched at full bit depth; Pillow compares the raw key with
//!   already-rescaled samples for 16-bit and sub-8-bit images, which rarely matches.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage, RgbaImage};

use super::PreprocessError;

/// Pillow refuses images above twice `Image.MAX_IMAGE_PIXELS` as decompression bombs; vlm
/// uses the same ceiling by default so it opens what Python opens.
pub const DEFAULT_MAX_PIXELS: u64 = 2 * 89_478_485;

/// Limits applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Largest accepted `width * height`; larger images are refused before decoding.
    pub max_pixels: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

impl DecodeOptions {
    /// Options accepting at most `megapixels` million pixels.
    pub fn with_max_megapixels(megapixels: f64) -> Self {
        Self {
            max_pixels: (megapixels.max(0.0) * 1e6) as u64,
        }
    }

    fn limits(&self) -> Limits {
        let mut limits = Limits::default();
        // Worst case is 16-bit RGBA (8 bytes a pixel) plus decoder scratch space.
        limits.max_alloc = Some(self.max_pixels.saturating_mul(8).saturating_add(64 << 20));
        limits
    }
}

/// Decodes a file with default limits: format sniffed from content, EXIF orientation applied,
/// first frame of animations, converted to 8-bit RGB.
pub fn decode_file(path: &Path) -> Result<RgbImage, PreprocessError> {
    decode_file_with(path, &DecodeOptions::default())
}

/// [`decode_file`] with explicit limits.
pub fn decode_file_with(path: &Path, options: &DecodeOptions) -> Result<RgbImage, PreprocessError> {
    let bytes = std::fs::read(path).map_err(|source| PreprocessError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    decode_bytes_with(&bytes, path, options)
}

/// Decodes an in-memory file with default limits; `origin` names it in errors.
pub fn decode_bytes(bytes: &[u8], origin: &Path) -> Result<RgbImage, PreprocessError> {
    decode_bytes_with(bytes, origin, &DecodeOptions::default())
}

/// [`decode_bytes`] with explicit limits.
pub fn decode_bytes_with(
    bytes: &[u8],
    origin: &Path,
    options: &DecodeOptions,
) -> Result<RgbImage, PreprocessError> {
    let decode_err = |source| match source {
        image::ImageError::Unsupported(source) => PreprocessError::Unsupported {
            path: origin.to_path_buf(),
            source,
        },
        source => PreprocessError::Decode {
            path: origin.to_path_buf(),
            source,
        },
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(image::ImageError::IoError(e)))?;
    let Some(format) = reader.format() else {
        return Err(PreprocessError::UnknownFormat {
            path: origin.to_path_buf(),
        });
    };
    reader.limits(options.limits());
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > options.max_pixels {
        return Err(PreprocessError::TooLarge {
            path: origin.to_path_buf(),
            width,
            height,
            max_pixels: options.max_pixels,
        });
    }
    if pixels == 0 {
        return Err(PreprocessError::EmptyFile {
            path: origin.to_path_buf(),
            width,
            height,
        });
    }
    // Pillow's exif_transpose ignores unreadable EXIF, so a broken tag is not fatal here either.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let image = DynamicImage::from_decoder(decoder).map_err(|source| match source {
        image::ImageError::Limits(_) => PreprocessError::TooLarge {
            path: origin.to_path_buf(),
            width,
            height,
            max_pixels: options.max_pixels,
        },
        other => decode_err(other),
    })?;

    let key = color_key(format, bytes);
    let rgb = to_rgb(image, key);
    let mut upright = DynamicImage::ImageRgb8(rgb);
    upright.apply_orientation(orientation);
    Ok(upright.into_rgb8())
}

/// How `convert_to_rgb` will whiten pixels after Pillow's `convert("RGB")`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColorKey {
    /// Pixels the decoder marked fully transparent: a grey/RGB `tRNS` key colour.
    AlphaZero,
    /// Pixels of this colour, and pixels outside the frame (fully transparent after decoding).
    Rgb([u8; 3]),
}

fn to_rgb(image: DynamicImage, key: Option<ColorKey>) -> RgbImage {
    let Some(key) = key else {
        // DynamicImage conversions drop alpha and scale 16-bit samples by 255/65535.
        return image.into_rgb8();
    };
    let rgba: RgbaImage = image.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
        let [r, g, b, a] = src.0;
        let white = match key {
            ColorKey::AlphaZero => a == 0,
            ColorKey::Rgb(k) => a == 0 || [r, g, b] == k,
        };
        dst.0 = if white { [255; 3] } else { [r, g, b] };
    }
    out
}

fn color_key(format: ImageFormat, bytes: &[u8]) -> Option<ColorKey> {
    match format {
        ImageFormat::Png => png_color_key(bytes),
        ImageFormat::Gif => gif_color_key(bytes),
        _ => None,
    }
}

/// Reads IHDR/PLTE/tRNS the way Pillow's PngImagePlugin does.
fn png_color_key(bytes: &[u8]) -> Option<ColorKey> {
    const SIGNATURE: usize = 8;
    let mut pos = SIGNATURE;
    let mut color_type = None;
    let mut palette: &[u8] = &[];
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().ok()?) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let data = bytes.get(pos + 8..(pos + 8).checked_add(len)?)?;
        match kind {
            b"IHDR" => color_type = data.get(9).copied(),
            b"PLTE" => palette = data,
            b"tRNS" => {
                return match color_type? {
                    // Grey or RGB: a single key colour, which the decoder turns into alpha 0.
                    0 | 2 => Some(ColorKey::AlphaZero),
                    3 => {
                        // Pillow keeps a palette key only when exactly one entry is fully
                        // transparent and the rest opaque; otherwise convert("RGB") drops it.
                        let zero = data.iter().position(|&a| a == 0)?;
                        let simple = data.iter().enumerate().all(|(i, &a)| a == 255 || i == zero);
                        let rgb = palette.get(zero * 3..zero * 3 + 3)?;
                        simple.then(|| ColorKey::Rgb([rgb[0], rgb[1], rgb[2]]))
                    }
                    _ => None,
                };
            }
            b"IDAT" | b"IEND" => return None,
            _ => {}
        }
        pos = pos + 12 + len;
    }
    None
}

/// Finds the first frame's transparent index (Graphic Control Extension) and its colour.
fn gif_color_key(bytes: &[u8]) -> Option<ColorKey> {
    let flags = *bytes.get(10)?;
    let mut pos = 13;
    let mut palette: &[u8] = &[];
    if flags & 0x80 != 0 {
        let len = 3 << ((flags & 7) + 1);
        palette = bytes.get(pos..pos + len)?;
        pos += len;
    }
    let mut transparent = None;
    loop {
        match *bytes.get(pos)? {
            0x21 => {
                let label = *bytes.get(pos + 1)?;
                pos += 2;
                if label == 0xF9 && *bytes.get(pos)? >= 4 {
                    let packed = *bytes.get(pos + 1)?;
                    transparent = (packed & 1 != 0).then_some(*bytes.get(pos + 4)?);
                }
                // Skip the extension's data sub-blocks.
                loop {
                    let n = *bytes.get(pos)? as usize;
                    pos += 1 + n;
                    if n == 0 {
                        break;
                    }
                }
            }
            0x2C => {
                let index = usize::from(transparent?);
                let local = *bytes.get(pos + 9)?;
                if local & 0x80 != 0 {
                    let len = 3 << ((local & 7) + 1);
                    palette = bytes.get(pos + 10..pos + 10 + len)?;
                }
                let rgb = palette.get(index * 3..index * 3 + 3)?;
                return Some(ColorKey::Rgb([rgb[0], rgb[1], rgb[2]]));
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::png::PngEncoder;
    use image::{ExtendedColorType, ImageEncoder};

    fn png(data: &[u8], w: u32, h: u32, color: ExtendedColorType) -> Vec<u8> {
        let mut out = Vec::new();
        PngEncoder::new(&mut out)
            .write_image(data, w, h, color)
            .unwrap();
        out
    }

    fn decode(bytes: &[u8]) -> RgbImage {
        decode_bytes(bytes, Path::new("test.png")).unwrap()
    }

    #[test]
    fn grey_is_replicated() {
        let img = decode(&png(&[0, 77, 255], 3, 1, ExtendedColorType::L8));
        assert_eq!(img.as_raw(), &[0, 0, 0, 77, 77, 77, 255, 255, 255]);
    }

    #[test]
    fn alpha_is_dropped_not_composited() {
        let data = [10, 20, 30, 0, 40, 50, 60, 128, 70, 80, 90, 255];
        let img = decode(&png(&data, 3, 1, ExtendedColorType::Rgba8));
        assert_eq!(img.as_raw(), &[10, 20, 30, 40, 50, 60, 70, 80, 90]);
        let img = decode(&png(&[9, 0, 200, 17], 2, 1, ExtendedColorType::La8));
        assert_eq!(img.as_raw(), &[9, 9, 9, 200, 200, 200]);
    }

    #[test]
    fn sixteen_bit_is_scaled_not_saturated() {
        // 1000 / 257 = 3.89 rounds to 4; saturating like Pillow would give 255.
        let data: Vec<u8> = [0u16, 257 * 100, 65535, 1000]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let img = decode(&png(&data, 4, 1, ExtendedColorType::L16));
        let firsts: Vec<u8> = img.pixels().map(|p| p.0[0]).collect();
        assert_eq!(firsts, [0, 100, 255, 4]);
    }

    /// Inserts a chunk right after IHDR (which always ends at byte 33).
    fn with_chunk(png: &[u8], kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
        chunk.extend_from_slice(kind);
        chunk.extend_from_slice(data);
        let crc = crc32(&chunk[4..]);
        chunk.extend_from_slice(&crc.to_be_bytes());
        let mut out = png[..33].to_vec();
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&png[33..]);
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn rgb_trns_key_becomes_white() {
        let base = png(&[1, 2, 3, 4, 5, 6], 2, 1, ExtendedColorType::Rgb8);
        let keyed = with_chunk(&base, b"tRNS", &[0, 1, 0, 2, 0, 3]);
        assert_eq!(decode(&keyed).as_raw(), &[255, 255, 255, 4, 5, 6]);
    }

    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        // The key parser ignores CRCs, so zeros do.
        [&(data.len() as u32).to_be_bytes()[..], kind, data, &[0; 4]].concat()
    }

    #[test]
    fn palette_key_only_for_a_single_fully_transparent_entry() {
        let ihdr = chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 3, 0, 0, 0]);
        let plte = chunk(b"PLTE", &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let with_trns = |trns: &[u8]| {
            [
                &b"\x89PNG\r\n\x1a\n"[..],
                &ihdr,
                &plte,
                &chunk(b"tRNS", trns),
            ]
            .concat()
        };
        assert_eq!(
            png_color_key(&with_trns(&[255, 0])),
            Some(ColorKey::Rgb([4, 5, 6]))
        );
        assert_eq!(
            png_color_key(&with_trns(&[0])),
            Some(ColorKey::Rgb([1, 2, 3]))
        );
        // Partial alpha or two transparent entries: Pillow drops the transparency.
        assert_eq!(png_color_key(&with_trns(&[255, 0, 128])), None);
        assert_eq!(png_color_key(&with_trns(&[0, 0])), None);
        assert_eq!(png_color_key(&with_trns(&[255, 255])), None);
    }

    #[test]
    fn gif_key_is_the_transparent_palette_colour() {
        let mut gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00".to_vec();
        gif.extend_from_slice(&[10, 20, 30, 40, 50, 60]);
        // Graphic Control Extension: transparency flag set, index 1.
        gif.extend_from_slice(&[0x21, 0xF9, 4, 1, 0, 0, 1, 0]);
        gif.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0]);
        assert_eq!(gif_color_key(&gif), Some(ColorKey::Rgb([40, 50, 60])));
        gif[22] = 0; // clear the transparency flag
        assert_eq!(gif_color_key(&gif), None);
    }

    #[test]
    fn exif_orientation_is_applied() {
        // 2x1 image, red then blue; orientation 6 = rotate 90 degrees clockwise.
        let base = png(&[255, 0, 0, 0, 0, 255], 2, 1, ExtendedColorType::Rgb8);
        let exif: Vec<u8> = [
            b"MM\x00\x2a\x00\x00\x00\x08".as_slice(),
            &[
                0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ]
        .concat();
        let rotated = decode(&with_chunk(&base, b"eXIf", &exif));
        assert_eq!(rotated.dimensions(), (1, 2));
        assert_eq!(rotated.as_raw(), &[255, 0, 0, 0, 0, 255]);
    }

    #[test]
    fn unknown_content_is_reported() {
        let err = decode_bytes(b"hello world, not an image", Path::new("notes.jpg")).unwrap_err();
        assert!(matches!(err, PreprocessError::UnknownFormat { .. }));
        assert!(err.to_string().contains("notes.jpg"));
    }

    #[test]
    fn recognised_but_disabled_format_is_unsupported() {
        // An ICO header: sniffed by the image crate, but vlm builds without its decoder.
        let ico = [
            0, 0, 1, 0, 1, 0, 16, 16, 0, 0, 1, 0, 32, 0, 0, 0, 0, 0, 22, 0, 0, 0,
        ];
        let err = decode_bytes(&ico, Path::new("icon.ico")).unwrap_err();
        assert!(matches!(err, PreprocessError::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("icon.ico"));
    }

    #[test]
    fn truncated_file_is_a_decode_error() {
        let full = png(&[7; 300], 10, 10, ExtendedColorType::Rgb8);
        let err = decode_bytes(&full[..60], Path::new("cut.png")).unwrap_err();
        assert!(err.to_string().contains("cut.png"), "{err}");
    }

    #[test]
    fn pixel_limit_is_enforced() {
        let bytes = png(&[0; 300], 10, 10, ExtendedColorType::Rgb8);
        let opts = DecodeOptions { max_pixels: 99 };
        let err = decode_bytes_with(&bytes, Path::new("big.png"), &opts).unwrap_err();
        assert!(matches!(
            err,
            PreprocessError::TooLarge {
                width: 10,
                height: 10,
                ..
            }
        ));
        assert!(decode_bytes_with(
            &bytes,
            Path::new("ok.png"),
            &DecodeOptions { max_pixels: 100 }
        )
        .is_ok());
    }
}
