//! Image decoding to upright 8-bit RGB, following `transformers.image_utils.load_image`
//! followed by the processor's `convert_to_rgb`.
//!
//! Python's pipeline is `exif_transpose` then `convert("RGB")` (which drops an alpha channel
//! without compositing), then `convert_to_rgb`, which paints white every pixel whose colour
//! equals a *colour-key* transparency that survived in `info["transparency"]` — PNG `tRNS`
//! on grey, RGB and simple palette images, and GIF transparent indices.
//!
//! JPEG goes through libjpeg-turbo's decoder ([`super::jpeg`]), Pillow's own, so its pixels
//! are Pillow's exactly. Known differences from Pillow 13, measured with a parity script:
//! - 16-bit samples are scaled to 8 bits (`v / 257`, rounded). Pillow clips 16-bit grey at 255,
//!   which turns most such images white, and keeps the high byte of 16-bit RGB (off by <= 1).
//! - A grey/RGB `tRNS` key is matched at full bit depth; Pillow compares the raw key with
//!   already-rescaled samples for 16-bit and sub-8-bit images, which rarely matches.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage, RgbaImage};

use super::budget::{self, Grant};
use super::config::PreprocessConfig;
use super::error::PreprocessError;
use super::jpeg;
use super::truncation::{self, partial_png, with_eoi, JpegTruncation};

/// Pillow refuses images above twice `Image.MAX_IMAGE_PIXELS` as decompression bombs; vlm
/// uses the same ceiling by default so it opens what Python opens.
pub const DEFAULT_MAX_PIXELS: u64 = 2 * 89_478_485;

/// The most scans a JPEG may have. Progressive files have about ten (a few dozen with
/// optimised scripts); libjpeg reads any number, only warning, and every scan passes over
/// the whole image's blocks, so thousands of scans cost minutes of CPU.
pub const MAX_JPEG_SCANS: usize = 500;

/// Limits and shortcuts applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Largest accepted `width * height`; larger images are refused before decoding.
    pub max_pixels: u64,
    /// `Some(side)`: decode a JPEG at 1/8, 1/4 or 1/2 scale in the DCT domain, the smallest
    /// that keeps its shorter side at least `2 * side` pixels, where `side` is the shorter
    /// side the resize step produces (see [`DecodeOptions::with_jpeg_downscale`]). Much
    /// faster for camera photos; the pixels differ slightly from a full decode. `None` (the
    /// default) decodes every image at full size.
    pub jpeg_downscale: Option<u32>,
    /// Decode files that stop before their end, filling in the missing part, as Pillow does
    /// with `ImageFile.LOAD_TRUNCATED_IMAGES = True`. `false` (the default, Pillow's too)
    /// refuses them with [`PreprocessError::Truncated`].
    pub allow_truncated: bool,
}

impl DecodeOptions {
    /// What of these options a cached encoding depends on, for the cache's fingerprint:
    /// `"; jpeg-downscale"` and `"; allow-truncated"` when set. Pixels of complete files do
    /// not change with the latter, but a cache hit skips decoding: an encoding of a
    /// truncated file stored with the flag must not answer for it without the flag.
    pub fn fingerprint(&self) -> String {
        let mut fingerprint = String::new();
        if self.jpeg_downscale.is_some() {
            fingerprint.push_str("; jpeg-downscale");
        }
        if self.allow_truncated {
            fingerprint.push_str("; allow-truncated");
        }
        fingerprint
    }
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
            jpeg_downscale: None,
            allow_truncated: false,
        }
    }
}

impl DecodeOptions {
    /// Options accepting at most `megapixels` million pixels.
    pub fn with_max_megapixels(megapixels: f64) -> Self {
        Self {
            max_pixels: (megapixels.max(0.0) * 1e6) as u64,
            ..Self::default()
        }
    }

    /// These options, accepting truncated files when `allow` is set (see
    /// [`DecodeOptions::allow_truncated`]).
    pub fn with_allow_truncated(self, allow: bool) -> Self {
        Self {
            allow_truncated: allow,
            ..self
        }
    }

    /// These options with JPEG DCT-domain downscaling sized for `preprocess`'s resize; no
    /// downscaling when it does not resize.
    pub fn with_jpeg_downscale(self, preprocess: &PreprocessConfig) -> Self {
        Self {
            jpeg_downscale: preprocess.resize_side(),
            ..self
        }
    }

    fn limits(&self) -> Limits {
        let mut limits = Limits::default();
        limits.max_alloc = Some(self.max_alloc() as u64);
        limits
    }

    /// Worst case is 16-bit RGBA (8 bytes a pixel) plus decoder scratch space.
    fn max_alloc(&self) -> usize {
        usize::try_from(self.max_memory()).unwrap_or(usize::MAX)
    }

    /// The bytes that all decodes in this process may hold at once (their buffers, worked
    /// out from each file's header before anything is allocated): what the pixel limit
    /// allows the image decoders, 8 bytes a pixel (16-bit RGBA) and 64 MiB of scratch
    /// space, about 1.4 GiB by default. Raising `max_pixels` raises it too.
    pub fn max_memory(&self) -> u64 {
        self.max_pixels.saturating_mul(8).saturating_add(64 << 20)
    }
}

/// Decodes a file with default limits: format sniffed from content, EXIF orientation applied,
/// first frame of animations, converted to 8-bit RGB.
pub fn decode_file(path: &Path) -> Result<RgbImage, PreprocessError> {
    decode_file_with(path, &DecodeOptions::default())
}

/// [`decode_file`] with explicit limits. With [`DecodeOptions::jpeg_downscale`] the image
/// may be smaller than the picture; [`decode_file_region`] says where the picture lies.
pub fn decode_file_with(path: &Path, options: &DecodeOptions) -> Result<RgbImage, PreprocessError> {
    decode_file_region(path, options).map(Decoded::into_image)
}

/// [`decode_file_with`], keeping the picture's full size and extent for
/// [`Preprocessor::preprocess_decoded`](super::Preprocessor::preprocess_decoded).
pub fn decode_file_region(
    path: &Path,
    options: &DecodeOptions,
) -> Result<Decoded, PreprocessError> {
    let bytes = std::fs::read(path).map_err(|source| PreprocessError::Read {
        path: path.to_path_buf(),
        cause: source,
    })?;
    decode_bytes_region(&bytes, path, options)
}

/// Decodes an in-memory file with default limits; `origin` names it in errors.
pub fn decode_bytes(bytes: &[u8], origin: &Path) -> Result<RgbImage, PreprocessError> {
    decode_bytes_with(bytes, origin, &DecodeOptions::default())
}

/// [`decode_bytes`] with explicit limits (see [`decode_file_with`]).
pub fn decode_bytes_with(
    bytes: &[u8],
    origin: &Path,
    options: &DecodeOptions,
) -> Result<RgbImage, PreprocessError> {
    decode_bytes_region(bytes, origin, options).map(Decoded::into_image)
}

/// [`decode_bytes_with`], keeping the picture's full size and extent (see
/// [`decode_file_region`]).
pub fn decode_bytes_region(
    bytes: &[u8],
    origin: &Path,
    options: &DecodeOptions,
) -> Result<Decoded, PreprocessError> {
    decode_held(bytes, origin, options).map(|(decoded, _)| decoded)
}

/// [`decode_bytes_region`], with the reservation of the decoded image's memory
/// ([`budget`]) held until the caller drops it: the caller still works on the image.
pub(super) fn decode_held(
    bytes: &[u8],
    origin: &Path,
    options: &DecodeOptions,
) -> Result<(Decoded, Grant), PreprocessError> {
    let decode_err = |source| match source {
        image::ImageError::Unsupported(source) => PreprocessError::Unsupported {
            path: origin.to_path_buf(),
            cause: source,
        },
        source => PreprocessError::Decode {
            path: origin.to_path_buf(),
            cause: source,
        },
    };
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(image::ImageError::IoError(e)))?;
    let Some(format) = reader.format() else {
        return Err(PreprocessError::UnknownFormat {
            path: origin.to_path_buf(),
        });
    };
    if format == ImageFormat::Jpeg {
        let walk = truncation::walk(bytes);
        let data = check_jpeg(bytes, &walk, origin, options)?;
        return decode_jpeg(
            data.as_deref().unwrap_or(bytes),
            walk.buffered,
            origin,
            options,
        );
    }
    check_complete(bytes, format, origin)?;
    decode_complete(bytes, format, origin, options)
}

/// Refuses a JPEG with too many scans, and one cut short unless `--allow-truncated` takes
/// it; an accepted cut file comes back as libjpeg decodes it, the well-formed part then an
/// end-of-image marker. Checked before any decoder reads the file, so the rule is the same
/// with and without --jpeg-downscale, and on a cache hit (see [`check_bytes`]).
fn check_jpeg(
    bytes: &[u8],
    walk: &truncation::JpegWalk,
    origin: &Path,
    options: &DecodeOptions,
) -> Result<Option<Vec<u8>>, PreprocessError> {
    if walk.scans > MAX_JPEG_SCANS {
        return Err(PreprocessError::TooManyScans {
            path: origin.to_path_buf(),
            scans: walk.scans,
            limit: MAX_JPEG_SCANS,
        });
    }
    let Some((cut, keep)) = &walk.truncation else {
        return Ok(None);
    };
    // Cut in the headers, there is no image to fill in.
    let can_fill = !matches!(cut, JpegTruncation::InSegment { .. });
    if !(options.allow_truncated && can_fill) {
        return Err(PreprocessError::Truncated {
            path: origin.to_path_buf(),
            detail: cut.to_string(),
            can_fill,
        });
    }
    Ok(Some(with_eoi(bytes, *keep)))
}

/// Refuses a file of another format that is cut short where its header says so (WebP's
/// RIFF length); other cuts show up while decoding.
fn check_complete(bytes: &[u8], format: ImageFormat, origin: &Path) -> Result<(), PreprocessError> {
    if format == ImageFormat::WebP {
        if let Some((got, declared)) = riff_shortfall(bytes) {
            return Err(PreprocessError::Truncated {
                path: origin.to_path_buf(),
                detail: format!(
                    "the file has {got} of the {declared} bytes its RIFF header declares, \
                     {} are missing",
                    declared - got
                ),
                can_fill: false,
            });
        }
    }
    Ok(())
}

/// The checks a decode makes of the file's structure before decoding it (truncation, too
/// many JPEG scans), without decoding: what a cached embedding of the same bytes must
/// pass too, so that a cache hit never answers for a file a decode would refuse.
pub fn check_bytes(
    bytes: &[u8],
    origin: &Path,
    options: &DecodeOptions,
) -> Result<(), PreprocessError> {
    match image::guess_format(bytes) {
        Ok(ImageFormat::Jpeg) => {
            check_jpeg(bytes, &truncation::walk(bytes), origin, options).map(|_| ())
        }
        Ok(format) => check_complete(bytes, format, origin),
        // Whatever it is, the decode that made the cached embedding read it.
        Err(_) => Ok(()),
    }
}

/// `(length, declared length)` of a RIFF file (WebP) shorter than its header says; the
/// WebP decoder only reports a corrupt bitstream.
fn riff_shortfall(bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.get(..4) != Some(b"RIFF") {
        return None;
    }
    let size = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let declared = u64::from(size) + 8;
    let got = bytes.len() as u64;
    (got < declared).then_some((got, declared))
}

/// [`decode_held`] for a file other than JPEG already sniffed as `format`.
fn decode_complete(
    bytes: &[u8],
    format: ImageFormat,
    origin: &Path,
    options: &DecodeOptions,
) -> Result<(Decoded, Grant), PreprocessError> {
    let decode_err = |source| match source {
        image::ImageError::Unsupported(source) => PreprocessError::Unsupported {
            path: origin.to_path_buf(),
            cause: source,
        },
        source => PreprocessError::Decode {
            path: origin.to_path_buf(),
            cause: source,
        },
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(options.limits());
    let mut decoder = reader.into_decoder().map_err(|err| {
        if ran_out(&err) {
            // Cut in the headers (or, for TIFF, its directory at the end): no rows to keep.
            PreprocessError::Truncated {
                path: origin.to_path_buf(),
                detail: format!("the {format:?} headers end early ({err})"),
                can_fill: false,
            }
        } else {
            decode_err(err)
        }
    })?;
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
    // The decoder's buffer, its RGB copy (unless it is RGB already) and the upright copy.
    let decoded_bytes = decoder.total_bytes();
    let rgb = pixels.saturating_mul(3);
    let converted = if decoder.color_type() == image::ColorType::Rgb8 {
        0
    } else {
        rgb
    };
    let need = decoded_bytes
        .saturating_add(converted)
        .saturating_add(jpeg::upright_bytes(rgb, orientation) - rgb);
    let mut grant = reserve(
        need,
        options,
        origin,
        (width, height),
        &format!("{format:?}"),
    )?;
    let image = match DynamicImage::from_decoder(decoder) {
        Ok(image) => image,
        Err(image::ImageError::Limits(_)) => {
            return Err(PreprocessError::TooLarge {
                path: origin.to_path_buf(),
                width,
                height,
                max_pixels: options.max_pixels,
            })
        }
        Err(err) if ran_out(&err) => {
            let partial = match format {
                ImageFormat::Png => partial_png(bytes, options.max_alloc()),
                _ => None,
            };
            match partial {
                Some((image, _, _)) if options.allow_truncated => image,
                Some((_, rows, height)) => {
                    return Err(PreprocessError::Truncated {
                        path: origin.to_path_buf(),
                        detail: format!(
                            "the image data ends after row {rows} of {height}, \
                             {} rows are missing",
                            height - rows
                        ),
                        can_fill: true,
                    })
                }
                None => {
                    return Err(PreprocessError::Truncated {
                        path: origin.to_path_buf(),
                        detail: format!("the {format:?} data ends early ({err})"),
                        can_fill: false,
                    })
                }
            }
        }
        Err(other) => return Err(decode_err(other)),
    };

    let key = color_key(format, bytes);
    let rgb = to_rgb(image, key);
    let mut upright = DynamicImage::ImageRgb8(rgb);
    upright.apply_orientation(orientation);
    let upright = upright.into_rgb8();
    grant.shrink_to(upright.as_raw().len() as u64);
    Ok((Decoded::from(upright), grant))
}

/// Reserves `need` bytes for decoding `origin` ([`budget`]), or says why not.
fn reserve(
    need: u64,
    options: &DecodeOptions,
    origin: &Path,
    (width, height): (u32, u32),
    kind: &str,
) -> Result<Grant, PreprocessError> {
    budget::reserve(need, options.max_memory()).ok_or_else(|| PreprocessError::TooMuchMemory {
        path: origin.to_path_buf(),
        width,
        height,
        kind: kind.to_string(),
        need,
        limit: options.max_memory(),
    })
}

/// Whether a decoder's error means that the data ran out rather than that it is wrong: an
/// unexpected end of file somewhere in the error's chain.
fn ran_out(err: &image::ImageError) -> bool {
    // ImageError's `source` skips the io::Error of its IoError variant.
    if let image::ImageError::IoError(io) = err {
        return io.kind() == std::io::ErrorKind::UnexpectedEof;
    }
    let mut cause = std::error::Error::source(err);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::UnexpectedEof {
                return true;
            }
        }
        if let Some(gif::DecodingError::UnexpectedEof) = e.downcast_ref::<gif::DecodingError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Decodes a JPEG (complete, or closed by [`with_eoi`]) with libjpeg-turbo, at full size or,
/// with [`DecodeOptions::jpeg_downscale`], reduced in the DCT domain; then applies its EXIF
/// orientation. No other decoder is tried: every JPEG gets Pillow's pixels or an error.
fn decode_jpeg(
    bytes: &[u8],
    buffered: bool,
    origin: &Path,
    options: &DecodeOptions,
) -> Result<(Decoded, Grant), PreprocessError> {
    use image::metadata::Orientation as O;
    let limits = jpeg::Limits {
        max_pixels: options.max_pixels,
        max_memory: options.max_memory(),
        downscale_side: options.jpeg_downscale,
        buffered,
    };
    let (decoded, mut grant) = jpeg::decode(bytes, limits).map_err(|err| match err {
        jpeg::JpegError::TooLarge { width, height } => PreprocessError::TooLarge {
            path: origin.to_path_buf(),
            width,
            height,
            max_pixels: options.max_pixels,
        },
        jpeg::JpegError::Memory {
            width,
            height,
            kind,
            need,
        } => PreprocessError::TooMuchMemory {
            path: origin.to_path_buf(),
            width,
            height,
            kind,
            need,
            limit: options.max_memory(),
        },
        jpeg::JpegError::Decode(message) => PreprocessError::Decode {
            path: origin.to_path_buf(),
            cause: image::ImageError::Decoding(image::error::DecodingError::new(
                image::error::ImageFormatHint::Exact(ImageFormat::Jpeg),
                message,
            )),
        },
    })?;
    let (width, height) = decoded.full_size;
    // The last reduced row and column may stand for fewer than `factor` pixels.
    let scale = f64::from(decoded.factor);
    let stored = Region {
        size: decoded.image.dimensions(),
        bounds: [
            0.0,
            0.0,
            f64::from(width) / scale,
            f64::from(height) / scale,
        ],
    };
    let orientation = decoded.orientation;
    let mut upright = DynamicImage::ImageRgb8(decoded.image);
    upright.apply_orientation(orientation);
    let turned = matches!(
        orientation,
        O::Rotate90 | O::Rotate270 | O::Rotate90FlipH | O::Rotate270FlipH
    );
    let image = upright.into_rgb8();
    grant.shrink_to(image.as_raw().len() as u64);
    let decoded = Decoded {
        image,
        full_size: if turned {
            (height, width)
        } else {
            (width, height)
        },
        bounds: stored.oriented(orientation).bounds,
    };
    Ok((decoded, grant))
}

/// A decoded, upright image and where the picture lies in it: a JPEG decoded at reduced size
/// ([`DecodeOptions::jpeg_downscale`]) is smaller than the picture, and its last row and
/// column may stand for only part of a reduced pixel.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    image: RgbImage,
    full_size: (u32, u32),
    bounds: [f64; 4],
}

impl Decoded {
    /// The decoded pixels.
    pub fn image(&self) -> &RgbImage {
        &self.image
    }

    /// The decoded pixels, owned.
    pub fn into_image(self) -> RgbImage {
        self.image
    }

    /// `(width, height)` of the upright picture at full resolution.
    pub fn full_size(&self) -> (u32, u32) {
        self.full_size
    }

    /// The picture's extent in [`Self::image`]'s pixels, `[x0, y0, x1, y1]`.
    pub fn bounds(&self) -> [f64; 4] {
        self.bounds
    }
}

impl From<RgbImage> for Decoded {
    /// An image that is the whole picture at full size.
    fn from(image: RgbImage) -> Self {
        let (w, h) = image.dimensions();
        Self {
            full_size: (w, h),
            bounds: [0.0, 0.0, f64::from(w), f64::from(h)],
            image,
        }
    }
}

/// A box within an image of `size`, carried through the image's EXIF transform.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Region {
    size: (u32, u32),
    bounds: [f64; 4],
}

impl Region {
    /// The same region after `apply_orientation(orientation)`.
    fn oriented(self, orientation: image::metadata::Orientation) -> Self {
        use image::metadata::Orientation as O;
        match orientation {
            O::NoTransforms => self,
            O::Rotate90 => self.rotate90(),
            O::Rotate180 => self.rotate90().rotate90(),
            O::Rotate270 => self.rotate90().rotate90().rotate90(),
            O::FlipHorizontal => self.fliph(),
            O::FlipVertical => self.rotate90().rotate90().fliph(),
            O::Rotate90FlipH => self.rotate90().fliph(),
            O::Rotate270FlipH => self.rotate90().rotate90().rotate90().fliph(),
        }
    }

    /// Clockwise: the point (x, y) goes to (height - y, x).
    fn rotate90(self) -> Self {
        let (w, h) = self.size;
        let [x0, y0, x1, y1] = self.bounds;
        let h = f64::from(h);
        Self {
            size: (self.size.1, w),
            bounds: [h - y1, x0, h - y0, x1],
        }
    }

    /// The point (x, y) goes to (width - x, y).
    fn fliph(self) -> Self {
        let w = f64::from(self.size.0);
        let [x0, y0, x1, y1] = self.bounds;
        Self {
            size: self.size,
            bounds: [w - x1, y0, w - x0, y1],
        }
    }
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

    fn parity_fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jpeg_parity")
            .join(name);
        std::fs::read(path).unwrap()
    }

    fn allowing() -> DecodeOptions {
        DecodeOptions::default().with_allow_truncated(true)
    }

    #[test]
    fn cut_jpegs_are_refused_unless_allowed_on_both_decoder_paths() {
        for name in [
            "chelsea_420_base.jpg",
            "chelsea_420_prog.jpg",
            "chelsea_444_prog.jpg",
        ] {
            let full = parity_fixture(name);
            let whole = decode_bytes(&full, Path::new(name)).unwrap();
            for cut in [
                full.len() / 3,
                full.len() / 2,
                full.len() - 40,
                full.len() - 2,
            ] {
                let bytes = &full[..cut];
                for options in [DecodeOptions::default(), downscaling(20)] {
                    let err = decode_bytes_with(bytes, Path::new("cut.jpg"), &options).unwrap_err();
                    let message = err.to_string();
                    assert!(
                        matches!(err, PreprocessError::Truncated { can_fill: true, .. })
                            && message.contains("cut.jpg")
                            && message.contains("scan")
                            && message.contains("--allow-truncated"),
                        "{name} cut at {cut}: {message}"
                    );
                    let allowed = options.with_allow_truncated(true);
                    let image = decode_bytes_region(bytes, Path::new("cut.jpg"), &allowed).unwrap();
                    assert_eq!(image.full_size(), whole.dimensions(), "{name} {cut}");
                }
            }
        }
    }

    #[test]
    fn a_jpeg_cut_in_its_headers_cannot_be_filled() {
        let full = parity_fixture("chelsea_420_base.jpg");
        let err = decode_bytes_with(&full[..200], Path::new("h.jpg"), &allowing()).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(
                err,
                PreprocessError::Truncated {
                    can_fill: false,
                    ..
                }
            ) && message.contains("in its headers")
                && !message.contains("pass --allow-truncated"),
            "{message}"
        );
    }

    #[test]
    fn a_cut_png_says_how_many_rows_it_has_and_keeps_them_when_allowed() {
        let data: Vec<u8> = (0..60 * 40 * 3).map(|i| (i * 7 % 251) as u8).collect();
        let full = png(&data, 60, 40, ExtendedColorType::Rgb8);
        let bytes = &full[..full.len() / 2];
        let err = decode_bytes(bytes, Path::new("cut.png")).unwrap_err();
        let message = err.to_string();
        let PreprocessError::Truncated { can_fill: true, .. } = err else {
            panic!("{message}");
        };
        assert!(
            message.contains("of 40") && message.contains("cut.png"),
            "{message}"
        );
        let image = decode_bytes_with(bytes, Path::new("cut.png"), &allowing()).unwrap();
        assert_eq!(image.dimensions(), (60, 40));
        // Rows read are the original's; the missing ones are black, as Pillow leaves them.
        assert_eq!(&image.as_raw()[..180], &data[..180]);
        assert!(image.as_raw()[image.as_raw().len() - 180..]
            .iter()
            .all(|&v| v == 0));
    }

    #[test]
    fn other_cut_formats_are_truncation_errors() {
        let image = RgbImage::from_fn(50, 40, |x, y| image::Rgb([x as u8 * 5, y as u8 * 6, 77]));
        let dynamic = DynamicImage::ImageRgb8(image);
        for format in [
            ImageFormat::Bmp,
            ImageFormat::Tiff,
            ImageFormat::WebP,
            ImageFormat::Gif,
        ] {
            let mut full = Cursor::new(Vec::new());
            dynamic.write_to(&mut full, format).unwrap();
            let full = full.into_inner();
            let bytes = &full[..full.len() * 2 / 3];
            for options in [DecodeOptions::default(), allowing()] {
                let err = decode_bytes_with(bytes, Path::new("cut.img"), &options).unwrap_err();
                assert!(
                    matches!(err, PreprocessError::Truncated { .. }),
                    "{format:?}: {err}"
                );
            }
        }
    }

    #[test]
    fn pixel_limit_is_enforced() {
        let bytes = png(&[0; 300], 10, 10, ExtendedColorType::Rgb8);
        let opts = DecodeOptions {
            max_pixels: 99,
            ..DecodeOptions::default()
        };
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
            &DecodeOptions {
                max_pixels: 100,
                ..DecodeOptions::default()
            }
        )
        .is_ok());
    }

    /// A `width` x `height` JPEG with a smooth gradient and, optionally, an EXIF orientation.
    fn jpeg(width: u32, height: u32, orientation: Option<u16>) -> Vec<u8> {
        let image = RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&image)
            .unwrap();
        match orientation {
            Some(orientation) => with_exif_orientation(&out, orientation),
            None => out,
        }
    }

    /// `jpeg` with an APP1 Exif segment right after SOI: big-endian TIFF, one IFD entry.
    fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff =
            b"Exif\0\0MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01".to_vec();
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0; 6]);
        let mut app1 = vec![0xFF, 0xE1];
        app1.extend_from_slice(&(tiff.len() as u16 + 2).to_be_bytes());
        app1.extend_from_slice(&tiff);
        [&jpeg[..2], &app1, &jpeg[2..]].concat()
    }

    fn downscaling(side: u32) -> DecodeOptions {
        DecodeOptions {
            jpeg_downscale: Some(side),
            ..DecodeOptions::default()
        }
    }

    #[test]
    fn jpeg_downscale_reduces_large_jpegs_only() {
        let bytes = jpeg(640, 480, None);
        let full = decode_bytes(&bytes, Path::new("a.jpg")).unwrap();
        assert_eq!(full.dimensions(), (640, 480));
        // 480 / 4 = 120 >= 2 * 40, 480 / 8 = 60 is not.
        let reduced = decode_bytes_with(&bytes, Path::new("a.jpg"), &downscaling(40)).unwrap();
        assert_eq!(reduced.dimensions(), (160, 120));
        // Too small to reduce at all: decoded as without the option, pixel for pixel.
        let same = decode_bytes_with(&bytes, Path::new("a.jpg"), &downscaling(241)).unwrap();
        assert_eq!(same, full);
        // Not a JPEG: untouched.
        let png = png(&[7; 300], 10, 10, ExtendedColorType::Rgb8);
        let opts = downscaling(1);
        assert_eq!(
            decode_bytes_with(&png, Path::new("a.png"), &opts).unwrap(),
            decode(&png)
        );
    }

    #[test]
    fn jpeg_downscale_applies_exif_orientation() {
        let bytes = jpeg(640, 480, Some(6));
        let full = decode_bytes(&bytes, Path::new("r.jpg")).unwrap();
        assert_eq!(full.dimensions(), (480, 640));
        let reduced = decode_bytes_with(&bytes, Path::new("r.jpg"), &downscaling(40)).unwrap();
        assert_eq!(reduced.dimensions(), (120, 160));
        // Rotated clockwise: the top-left pixel was the bottom-left one, red low, green high.
        let [r, g, _] = reduced.get_pixel(0, 0).0;
        assert!(r < 30 && g > 220, "{r} {g}");
    }

    #[test]
    fn jpeg_downscale_checks_the_pixel_limit_first() {
        let bytes = jpeg(640, 480, None);
        let opts = DecodeOptions {
            max_pixels: 640 * 480 - 1,
            jpeg_downscale: Some(40),
            allow_truncated: false,
        };
        let err = decode_bytes_with(&bytes, Path::new("big.jpg"), &opts).unwrap_err();
        assert!(
            matches!(
                err,
                PreprocessError::TooLarge {
                    width: 640,
                    height: 480,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("big.jpg"));
    }

    #[test]
    fn jpeg_downscale_with_the_defaults_config() {
        let opts = DecodeOptions::default().with_jpeg_downscale(&PreprocessConfig::default());
        assert_eq!(opts.jpeg_downscale, Some(224));
        assert_eq!(opts.max_pixels, DEFAULT_MAX_PIXELS);
    }

    #[test]
    fn regions_follow_the_exif_transforms() {
        use image::metadata::Orientation as O;
        // Pixels whose centres lie in the region are white; after the transform, a pixel is
        // white exactly when its centre lies in the transformed region.
        let region = Region {
            size: (7, 5),
            bounds: [1.0, 0.0, 4.5, 3.5],
        };
        let inside = |b: [f64; 4], x: u32, y: u32| {
            let (cx, cy) = (f64::from(x) + 0.5, f64::from(y) + 0.5);
            cx > b[0] && cx < b[2] && cy > b[1] && cy < b[3]
        };
        let marked = RgbImage::from_fn(7, 5, |x, y| {
            image::Rgb([if inside(region.bounds, x, y) { 255 } else { 0 }; 3])
        });
        for orientation in [
            O::NoTransforms,
            O::Rotate90,
            O::Rotate180,
            O::Rotate270,
            O::FlipHorizontal,
            O::FlipVertical,
            O::Rotate90FlipH,
            O::Rotate270FlipH,
        ] {
            let mut image = DynamicImage::ImageRgb8(marked.clone());
            image.apply_orientation(orientation);
            let image = image.into_rgb8();
            let turned = region.oriented(orientation);
            assert_eq!(turned.size, image.dimensions(), "{orientation:?}");
            for (x, y, px) in image.enumerate_pixels() {
                let white = px.0[0] == 255;
                assert_eq!(
                    white,
                    inside(turned.bounds, x, y),
                    "{orientation:?} {x} {y}"
                );
            }
        }
    }

    /// Stripes across both axes, so a misplaced region shows.
    fn striped_jpeg(width: u32, height: u32, orientation: u16) -> Vec<u8> {
        let image = RgbImage::from_fn(width, height, |x, y| {
            let wave = |v: u32, period: f64| (f64::from(v) * std::f64::consts::TAU / period).sin();
            let r = 128.0 + 100.0 * wave(x, 170.0);
            let g = 128.0 + 100.0 * wave(y, 130.0);
            let b = 128.0 + 60.0 * wave(x + y, 230.0);
            image::Rgb([r as u8, g as u8, b as u8])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&image)
            .unwrap();
        with_exif_orientation(&out, orientation)
    }

    #[test]
    fn reduced_jpegs_keep_the_full_size_geometry_in_every_orientation() {
        let p = crate::preprocess::Preprocessor::new(PreprocessConfig {
            size: crate::preprocess::ResizeTarget::ShortestEdge(40),
            crop_size: (40, 40),
            do_rescale: false,
            do_normalize: false,
            ..PreprocessConfig::default()
        });
        let mean_diff = |a: &[f32], b: &[f32]| {
            a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
        };
        // 1001 x 697 at 1/8: 126 x 88 pixels, the last column covering 1/8 of one.
        for orientation in 1..=8 {
            let bytes = striped_jpeg(1001, 697, orientation);
            let name = Path::new("s.jpg");
            let full = decode_bytes(&bytes, name).unwrap();
            let reduced = decode_bytes_region(&bytes, name, &downscaling(40)).unwrap();
            assert_eq!(reduced.full_size(), full.dimensions(), "{orientation}");
            let want = p.preprocess(&full).unwrap();
            let good = mean_diff(&want, &p.preprocess_decoded(&reduced).unwrap());
            let naive = mean_diff(&want, &p.preprocess(reduced.image()).unwrap());
            assert!(
                good < 1.5 && naive > 3.0 * good,
                "{orientation}: {good} vs {naive}"
            );
        }
    }
}
