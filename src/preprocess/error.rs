//! Why an image or a preprocessor config could not be turned into pixels.

use std::path::PathBuf;

/// Failures while reading configs, decoding images or preprocessing pixels.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("cannot read {}: {cause}; check that the path exists and is readable", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "{} is not a valid preprocessor config ({cause}); fix the JSON or re-download the checkpoint",
        path.display()
    )]
    ConfigJson {
        path: PathBuf,
        cause: serde_json::Error,
    },
    #[error(
        "{}: field `{field}` {reason}; fix or remove it (missing fields take CLIP's defaults)",
        path.display()
    )]
    ConfigField {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error(
        "{} is not an image vlm can read (PNG, JPEG, GIF, WebP, BMP, TIFF); check the file type",
        path.display()
    )]
    UnknownFormat { path: PathBuf },
    #[error(
        "{} uses an image feature vlm cannot decode ({cause}); convert it to PNG or JPEG",
        path.display()
    )]
    Unsupported {
        path: PathBuf,
        cause: image::error::UnsupportedError,
    },
    #[error(
        "cannot decode {}: {cause}; the file may be truncated or corrupt, try re-saving it as PNG or JPEG",
        path.display()
    )]
    Decode {
        path: PathBuf,
        cause: image::ImageError,
    },
    /// The file stops before its end (Pillow: "image file is truncated").
    #[error(
        "{} is truncated: {detail}; {}",
        path.display(),
        if *can_fill {
            "re-download or re-export it, or pass --allow-truncated to use it anyway with \
             the missing part filled in"
        } else {
            "re-download or re-export it (vlm can fill in the missing part of JPEG and \
             non-interlaced PNG files cut in their image data only)"
        }
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Where the data stops and what that leaves out.
        detail: String,
        /// Whether `--allow-truncated` would fill in the missing part.
        can_fill: bool,
    },
    #[error(
        "{} is {width}x{height} pixels, over the limit of {max_pixels} pixels; downscale the image or raise the limit",
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    /// Decoding would take more memory than decoders may hold at once (worked out from
    /// the header, before anything is allocated).
    #[error(
        "{} ({width}x{height}, {kind}) would take {} MiB to decode, over the {} MiB that image \
         decoding may use at once; if the image is genuine, raise --max-megapixels (the \
         memory limit grows with it) or re-save it smaller (or, for a JPEG, as baseline)",
        path.display(),
        need.div_ceil(1 << 20),
        limit >> 20
    )]
    TooMuchMemory {
        path: PathBuf,
        width: u32,
        height: u32,
        /// e.g. "progressive CMYK JPEG", "Png".
        kind: String,
        /// Bytes the decode would take.
        need: u64,
        /// Bytes all decodes may hold at once ([`DecodeOptions::max_memory`](super::DecodeOptions::max_memory)).
        limit: u64,
    },
    #[error(
        "{} has {scans} scans, more than the {limit} any real JPEG needs: the file is damaged \
         or made to waste CPU time; re-save it from the original",
        path.display()
    )]
    TooManyScans {
        path: PathBuf,
        scans: usize,
        limit: usize,
    },
    #[error("{} has no pixels ({width}x{height}); re-export the image", path.display())]
    EmptyFile {
        path: PathBuf,
        width: u32,
        height: u32,
    },
    #[error(
        "the preprocessing config gives this image a {}x{} output instead of {}x{}; \
         enable do_center_crop or resize to an exact size",
        got.1, got.0, expected.1, expected.0
    )]
    VariableOutputSize {
        /// `(height, width)` promised by [`PreprocessConfig::output_size`].
        expected: (u32, u32),
        /// `(height, width)` this image would get.
        got: (u32, u32),
    },
    #[error("cannot preprocess a {width}x{height} image: it has no pixels")]
    EmptyImage { width: u32, height: u32 },
    #[error(
        "a {width}x{height} image would be resized to {long} pixels along its long side, which \
         is too elongated to process; crop it to a less extreme aspect ratio first"
    )]
    TooElongated { width: u32, height: u32, long: u64 },
}
