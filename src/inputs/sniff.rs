//! Recognising image files by extension and by their first bytes.

use std::io::Read;
use std::path::Path;

/// Image formats the decoder supports, as recognised from a file's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// JPEG / JFIF / EXIF.
    Jpeg,
    /// PNG.
    Png,
    /// GIF87a or GIF89a.
    Gif,
    /// WebP (RIFF container).
    Webp,
    /// Windows bitmap.
    Bmp,
    /// TIFF, either byte order.
    Tiff,
}

impl ImageFormat {
    /// File extensions (lower case, no dot) used for this format.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            ImageFormat::Jpeg => &["jpg", "jpeg", "jpe", "jfif"],
            ImageFormat::Png => &["png"],
            ImageFormat::Gif => &["gif"],
            ImageFormat::Webp => &["webp"],
            ImageFormat::Bmp => &["bmp", "dib"],
            ImageFormat::Tiff => &["tif", "tiff"],
        }
    }
}

/// Every format, for building the default extension list.
const ALL: [ImageFormat; 6] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::Gif,
    ImageFormat::Webp,
    ImageFormat::Bmp,
    ImageFormat::Tiff,
];

/// The default image extensions (lower case, no dot): every extension of every format.
pub fn default_extensions() -> Vec<String> {
    ALL.iter()
        .flat_map(|f| f.extensions())
        .map(|e| e.to_string())
        .collect()
}

/// Whether `ext` (any case, no dot) is an extension of some supported image format.
pub fn is_known_image_extension(ext: &str) -> bool {
    ALL.iter()
        .any(|f| f.extensions().iter().any(|e| e.eq_ignore_ascii_case(ext)))
}

/// Bytes needed by [`sniff_bytes`]; the BMP check reads the DIB header size at 14..18.
pub const SNIFF_LEN: usize = 18;

/// The image format whose signature `head` (a file's first bytes) starts with, if any.
pub fn sniff_bytes(head: &[u8]) -> Option<ImageFormat> {
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        Some(ImageFormat::Gif)
    } else if head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP" {
        Some(ImageFormat::Webp)
    } else if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") {
        Some(ImageFormat::Tiff)
    } else if is_bmp(head) {
        Some(ImageFormat::Bmp)
    } else {
        None
    }
}

/// `BM` alone would take any text file starting with those letters, so the reserved
/// header bytes must be zero and the DIB header size one that real bitmaps use.
fn is_bmp(head: &[u8]) -> bool {
    if head.len() < SNIFF_LEN || !head.starts_with(b"BM") || head[6..10] != [0, 0, 0, 0] {
        return false;
    }
    let dib = u32::from_le_bytes([head[14], head[15], head[16], head[17]]);
    matches!(dib, 12 | 16 | 40 | 52 | 56 | 64 | 108 | 124)
}

/// Reads the first bytes of `path` and returns its image format, if it has a signature.
pub fn sniff_file(path: &Path) -> std::io::Result<Option<ImageFormat>> {
    let mut head = Vec::with_capacity(SNIFF_LEN);
    std::fs::File::open(path)?
        .take(SNIFF_LEN as u64)
        .read_to_end(&mut head)?;
    Ok(sniff_bytes(&head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bmp_header() -> Vec<u8> {
        let mut h = b"BM".to_vec();
        h.extend_from_slice(&70u32.to_le_bytes()); // file size
        h.extend_from_slice(&[0, 0, 0, 0]); // reserved
        h.extend_from_slice(&54u32.to_le_bytes()); // pixel offset
        h.extend_from_slice(&40u32.to_le_bytes()); // BITMAPINFOHEADER
        h
    }

    #[test]
    fn recognises_each_signature() {
        assert_eq!(
            sniff_bytes(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(
            sniff_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Some(ImageFormat::Png)
        );
        assert_eq!(sniff_bytes(b"GIF87a.."), Some(ImageFormat::Gif));
        assert_eq!(sniff_bytes(b"GIF89a.."), Some(ImageFormat::Gif));
        assert_eq!(
            sniff_bytes(b"RIFF\x10\0\0\0WEBPVP8 "),
            Some(ImageFormat::Webp)
        );
        assert_eq!(sniff_bytes(b"II*\0\x08\0\0\0"), Some(ImageFormat::Tiff));
        assert_eq!(sniff_bytes(b"MM\0*\0\0\0\x08"), Some(ImageFormat::Tiff));
        assert_eq!(sniff_bytes(&bmp_header()), Some(ImageFormat::Bmp));
    }

    #[test]
    fn rejects_lookalikes() {
        assert_eq!(sniff_bytes(b""), None);
        assert_eq!(sniff_bytes(b"hello world, plain text"), None);
        assert_eq!(sniff_bytes(b"RIFF\x10\0\0\0WAVEfmt "), None, "RIFF audio");
        assert_eq!(sniff_bytes(b"GIF90a"), None);
        assert_eq!(sniff_bytes(&[0xFF, 0xD8]), None, "truncated JPEG marker");
        assert_eq!(
            sniff_bytes(b"BMW owners club: notes"),
            None,
            "text starting BM"
        );
        let mut bad_dib = bmp_header();
        bad_dib[14] = 41;
        assert_eq!(sniff_bytes(&bad_dib), None);
    }

    #[test]
    fn known_extensions_ignore_case() {
        assert!(is_known_image_extension("JPG"));
        assert!(is_known_image_extension("tiff"));
        assert!(!is_known_image_extension("txt"));
        assert!(!is_known_image_extension(""));
        let defaults = default_extensions();
        assert!(defaults.iter().any(|e| e == "webp"));
        assert!(defaults.iter().all(|e| e == &e.to_ascii_lowercase()));
    }

    #[test]
    fn sniffs_files_shorter_than_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, [0xFF, 0xD8, 0xFF]).unwrap();
        assert_eq!(sniff_file(&short).unwrap(), Some(ImageFormat::Jpeg));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(sniff_file(&empty).unwrap(), None);
    }
}
