//! Files that stop before their end: finding out whether a JPEG stops before its
//! end-of-image marker, and reading the rows a cut PNG still has.
//!
//! libjpeg-turbo reading a whole file from memory ([`super::jpeg`]) only warns when the data
//! runs out, inserts an end-of-image marker and pads the cut scan with grey, so the decoder
//! does not say that a file is truncated. Pillow refuses such a file ("image file is
//! truncated") unless `LOAD_TRUNCATED_IMAGES` is set: its suspending data source runs dry
//! before the EOI marker, in a header segment or in a scan's entropy-coded data. This module
//! walks the marker structure (no Huffman decoding, one pass over the bytes) to find the same
//! condition, and how far the file got.

use std::fmt;
use std::io::Cursor;

use image::{DynamicImage, ImageBuffer};

/// Where a JPEG file stops short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JpegTruncation {
    /// The file ends in its headers (before the first scan's data), at byte `at`.
    InSegment {
        /// File length: where the data stops.
        at: usize,
    },
    /// The file ends in the entropy-coded data of a scan, or right after it, with no
    /// end-of-image marker.
    InScan {
        /// 1-based number of the scan that is cut.
        scan: usize,
        /// Entropy-coded bytes of that scan present in the file.
        present: usize,
        /// Whether the frame is progressive (later scans refine earlier ones, so a cut
        /// progressive file still has a coarse version of every row).
        progressive: bool,
        /// For a sequential file with restart markers: rows known complete, and the height.
        rows: Option<(u32, u32)>,
    },
    /// The file ends between segments after `scans` complete scans, with no end-of-image
    /// marker.
    AfterScan {
        /// Scans whose data is all present.
        scans: usize,
        /// Whether the frame is progressive.
        progressive: bool,
    },
}

impl fmt::Display for JpegTruncation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InSegment { at } => write!(
                f,
                "the file ends after {at} bytes, in its headers, before any image data"
            ),
            Self::InScan {
                scan,
                present,
                progressive,
                rows,
            } => {
                write!(
                    f,
                    "the file ends {present} bytes into the entropy-coded data of scan {scan} \
                     with no end-of-image marker, so the rest of that scan"
                )?;
                if *progressive {
                    write!(f, " and any later refinement scans are missing")?;
                } else {
                    write!(f, " is missing")?;
                }
                if let Some((done, height)) = rows {
                    write!(f, " (the image ends at row {done} of {height})")?;
                }
                Ok(())
            }
            Self::AfterScan { scans, progressive } => {
                write!(
                    f,
                    "the file ends after scan {scans} with no end-of-image marker"
                )?;
                if *progressive {
                    write!(f, "; any later refinement scans are missing")?;
                }
                Ok(())
            }
        }
    }
}

/// Frame facts the walk collects on the way.
#[derive(Debug, Default)]
struct Frame {
    progressive: bool,
    width: u32,
    height: u32,
    /// Components in the frame.
    components: usize,
    /// Largest vertical and horizontal sampling factors (MCU size is 8 times these).
    max_v: u32,
    max_h: u32,
    /// Restart interval in MCUs, 0 for none.
    restart: u32,
}

/// What one pass over a JPEG's marker structure finds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct JpegWalk {
    /// Where the file stops before its end-of-image marker, if it does, and the length of
    /// the well-formed prefix: `bytes[..keep]` followed by an EOI marker is what libjpeg
    /// decodes after its "premature end of JPEG file" warning (it inserts a fake EOI where
    /// the data runs out). `None` when the file is complete, or broken in a way the decoder
    /// reports itself.
    pub truncation: Option<(JpegTruncation, usize)>,
    /// Start-of-scan markers before the end.
    pub scans: usize,
    /// libjpeg keeps every coefficient of the image until the last scan: the frame is
    /// progressive, or its first scan holds fewer components than the frame (jdinput.c
    /// `initial_setup`: `has_multiple_scans`).
    pub buffered: bool,
}

/// `Some` when `bytes`, a JPEG file starting with SOI, stops before its EOI marker (see
/// [`JpegWalk::truncation`]).
#[cfg(test)]
pub(super) fn jpeg_truncation(bytes: &[u8]) -> Option<(JpegTruncation, usize)> {
    walk(bytes).truncation
}

/// Walks the marker structure of `bytes` (a JPEG file starting with SOI) as libjpeg reads
/// it, without decoding: segments, scans and their entropy-coded data, up to EOI.
pub(super) fn walk(bytes: &[u8]) -> JpegWalk {
    let mut walk = JpegWalk::default();
    if bytes.get(..2) != Some(&[0xFF, 0xD8]) {
        return walk;
    }
    let end = bytes.len();
    let mut frame = Frame::default();
    let mut pos = 2;
    loop {
        // A marker: 0xFF, any number of 0xFF fill bytes, then the marker byte. Like
        // libjpeg's `next_marker`, skip other bytes before it and stuffed FF 00 pairs
        // (libjpeg warns of "extraneous bytes before marker" and goes on), so that junk
        // between segments cannot hide a cut.
        let marker_start = loop {
            let Some(offset) = bytes[pos..].iter().position(|&b| b == 0xFF) else {
                walk.truncation = Some((after_data(end, walk.scans, &frame), end));
                return walk;
            };
            let start = pos + offset;
            pos = start;
            while bytes.get(pos + 1) == Some(&0xFF) {
                pos += 1;
            }
            match bytes.get(pos + 1) {
                None => {
                    walk.truncation = Some((after_data(end, walk.scans, &frame), start));
                    return walk;
                }
                Some(0x00) => pos += 2,
                Some(_) => break start,
            }
        };
        let marker = bytes[pos + 1];
        pos += 2;
        match marker {
            // The end, or a second start that libjpeg refuses.
            0xD9 | 0xD8 => return walk,
            // Standalone markers: no length.
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(len) = bytes.get(pos..pos + 2) else {
            walk.truncation = Some((after_data(end, walk.scans, &frame), marker_start));
            return walk;
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let Some(segment) = bytes.get(pos..pos + len) else {
            walk.truncation = Some((after_data(end, walk.scans, &frame), marker_start));
            return walk;
        };
        read_segment(marker, segment, &mut frame);
        pos += len;
        if marker == 0xDA {
            walk.scans += 1;
            if walk.scans == 1 {
                let in_scan = segment.get(2).map_or(0, |&n| usize::from(n));
                walk.buffered = frame.progressive || in_scan < frame.components;
            }
            // Entropy-coded data runs to the next marker that is neither a stuffed 0x00 nor
            // a restart marker.
            let start = pos;
            let mut restarts = 0u32;
            loop {
                let Some(offset) = bytes[pos..].iter().position(|&b| b == 0xFF) else {
                    let cut = in_scan(end - start, walk.scans, restarts, &frame);
                    walk.truncation = Some((cut, end));
                    return walk;
                };
                pos += offset;
                match bytes.get(pos + 1) {
                    // A last lone 0xFF is half a marker or a stuffed byte: drop it.
                    None => {
                        let cut = in_scan(end - start, walk.scans, restarts, &frame);
                        walk.truncation = Some((cut, pos));
                        return walk;
                    }
                    Some(0x00) => pos += 2,
                    Some(0xD0..=0xD7) => {
                        restarts += 1;
                        pos += 2;
                    }
                    // Fill bytes before a marker: the marker loop skips them.
                    Some(0xFF) => pos += 1,
                    Some(_) => break,
                }
            }
        }
    }
}

/// `bytes[..keep]` (see [`JpegWalk::truncation`]) closed with an EOI marker, so that a decoder
/// sees a complete structure whose last scan simply has too little data.
pub(super) fn with_eoi(bytes: &[u8], keep: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(keep + 2);
    out.extend_from_slice(&bytes[..keep.min(bytes.len())]);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// The file stops outside scan data after `scans` scans: all their data is there (a cut
/// segment after a scan holds tables for a later one).
fn after_data(at: usize, scans: usize, frame: &Frame) -> JpegTruncation {
    if scans == 0 {
        return JpegTruncation::InSegment { at };
    }
    JpegTruncation::AfterScan {
        scans,
        progressive: frame.progressive,
    }
}

fn in_scan(present: usize, scan: usize, restarts: u32, frame: &Frame) -> JpegTruncation {
    let rows =
        (!frame.progressive && scan == 1 && frame.restart > 0 && frame.width > 0).then(|| {
            let mcu_w = 8 * frame.max_h.max(1);
            let mcu_h = 8 * frame.max_v.max(1);
            let per_row = frame.width.div_ceil(mcu_w).max(1);
            let mcus = u64::from(restarts) * u64::from(frame.restart);
            let mcu_rows = mcus / u64::from(per_row);
            let done = (mcu_rows * u64::from(mcu_h)).min(u64::from(frame.height));
            (done as u32, frame.height)
        });
    JpegTruncation::InScan {
        scan,
        present,
        progressive: frame.progressive,
        rows,
    }
}

/// Picks what the walk needs out of a segment (`segment` starts at its length field).
fn read_segment(marker: u8, segment: &[u8], frame: &mut Frame) {
    match marker {
        // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
        0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
            frame.progressive = matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE);
            if segment.len() >= 8 {
                frame.height = u32::from(u16::from_be_bytes([segment[3], segment[4]]));
                frame.width = u32::from(u16::from_be_bytes([segment[5], segment[6]]));
                let count = usize::from(segment[7]);
                frame.components = count;
                for c in 0..count {
                    if let Some(&sampling) = segment.get(8 + 3 * c + 1) {
                        frame.max_h = frame.max_h.max(u32::from(sampling >> 4));
                        frame.max_v = frame.max_v.max(u32::from(sampling & 15));
                    }
                }
            }
        }
        0xDD if segment.len() >= 4 => {
            frame.restart = u32::from(u16::from_be_bytes([segment[2], segment[3]]));
        }
        _ => {}
    }
}

/// The rows of a PNG that stops in its image data, the missing rows black (zero), as Pillow
/// leaves them with `LOAD_TRUNCATED_IMAGES`; also how many rows were read, and the height.
/// `None` when the file is not a non-interlaced PNG whose image data merely ends early
/// (interlaced files spread every row over seven passes, so a cut leaves no complete row).
pub(super) fn partial_png(bytes: &[u8], max_bytes: usize) -> Option<(DynamicImage, u32, u32)> {
    let limits = png::Limits { bytes: max_bytes };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
    // As image's PNG decoder: palettes and low bit depths to 8-bit samples, tRNS to alpha.
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().ok()?;
    let (width, height) = (reader.info().width, reader.info().height);
    if reader.info().interlaced {
        return None;
    }
    let (color, depth) = reader.output_color_type();
    let line = reader.output_line_size(width)?;
    let mut data = vec![0u8; line.checked_mul(height as usize)?];
    let mut rows = 0u32;
    for dst in data.chunks_exact_mut(line) {
        match reader.next_row() {
            Ok(Some(row)) if row.data().len() == line => dst.copy_from_slice(row.data()),
            _ => break,
        }
        rows += 1;
    }
    if rows == height {
        // Nothing missing: the failure was something else.
        return None;
    }
    let image = match depth {
        png::BitDepth::Eight => eight_bit(color, width, height, data)?,
        png::BitDepth::Sixteen => {
            // PNG samples are big-endian.
            let samples: Vec<u16> = data
                .chunks_exact(2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .collect();
            sixteen_bit(color, width, height, samples)?
        }
        _ => return None,
    };
    Some((image, rows, height))
}

fn eight_bit(
    color: png::ColorType,
    width: u32,
    height: u32,
    data: Vec<u8>,
) -> Option<DynamicImage> {
    use png::ColorType as C;
    Some(match color {
        C::Grayscale => DynamicImage::ImageLuma8(ImageBuffer::from_raw(width, height, data)?),
        C::GrayscaleAlpha => DynamicImage::ImageLumaA8(ImageBuffer::from_raw(width, height, data)?),
        C::Rgb => DynamicImage::ImageRgb8(ImageBuffer::from_raw(width, height, data)?),
        C::Rgba => DynamicImage::ImageRgba8(ImageBuffer::from_raw(width, height, data)?),
        C::Indexed => return None,
    })
}

fn sixteen_bit(
    color: png::ColorType,
    width: u32,
    height: u32,
    data: Vec<u16>,
) -> Option<DynamicImage> {
    use png::ColorType as C;
    Some(match color {
        C::Grayscale => DynamicImage::ImageLuma16(ImageBuffer::from_raw(width, height, data)?),
        C::GrayscaleAlpha => {
            DynamicImage::ImageLumaA16(ImageBuffer::from_raw(width, height, data)?)
        }
        C::Rgb => DynamicImage::ImageRgb16(ImageBuffer::from_raw(width, height, data)?),
        C::Rgba => DynamicImage::ImageRgba16(ImageBuffer::from_raw(width, height, data)?),
        C::Indexed => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 13 % 256) as u8,
                ((x ^ y) % 256) as u8,
            ])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&image)
            .unwrap();
        out
    }

    /// Where the (only) scan's data starts.
    fn scan_start(bytes: &[u8]) -> usize {
        let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        sos + 2 + usize::from(u16::from_be_bytes([bytes[sos + 2], bytes[sos + 3]]))
    }

    #[test]
    fn complete_files_are_not_truncated() {
        let bytes = jpeg(40, 30);
        assert_eq!(jpeg_truncation(&bytes), None);
        // Trailing bytes after EOI are ignored, as by every decoder.
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(b"garbage");
        assert_eq!(jpeg_truncation(&trailing), None);
        // Not a JPEG at all: not this module's business.
        assert_eq!(jpeg_truncation(b"hello"), None);
    }

    #[test]
    fn every_cut_is_found() {
        let bytes = jpeg(40, 30);
        let start = scan_start(&bytes);
        for cut in 2..bytes.len() {
            let found = jpeg_truncation(&bytes[..cut]).map(|(found, _)| found);
            let Some(found) = found else {
                panic!("cut at {cut} of {} not found", bytes.len())
            };
            match found {
                JpegTruncation::InSegment { at, .. } => {
                    assert!(cut <= start, "{cut}: {found:?}");
                    assert_eq!(at, cut);
                }
                JpegTruncation::InScan { scan, present, .. } => {
                    assert!(cut >= start, "{cut}: {found:?}");
                    assert_eq!(scan, 1);
                    assert_eq!(present, cut - start, "{cut}");
                }
                JpegTruncation::AfterScan { .. } => panic!("{cut}: {found:?}"),
            }
        }
    }

    #[test]
    fn junk_between_segments_does_not_hide_a_cut() {
        let bytes = jpeg(40, 30);
        let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        // Junk libjpeg skips with a warning, and a stuffed FF 00 pair, before the scan.
        let mut junk = bytes[..sos].to_vec();
        junk.extend_from_slice(&[0x12, 0x34, 0x56, 0xFF, 0x00]);
        junk.extend_from_slice(&bytes[sos..]);
        let whole = walk(&junk);
        assert_eq!((whole.truncation, whole.scans), (None, 1));
        let cut = &junk[..junk.len() * 6 / 10];
        match jpeg_truncation(cut) {
            Some((JpegTruncation::InScan { scan: 1, .. }, keep)) => assert_eq!(keep, cut.len()),
            other => panic!("{other:?}"),
        }
        // Junk after a complete segment, then the end of the file: no EOI, a cut.
        let mut tail = junk[..sos + 5].to_vec();
        tail.extend_from_slice(b"junk");
        assert!(matches!(
            jpeg_truncation(&tail),
            Some((JpegTruncation::InSegment { .. }, _))
        ));
    }

    #[test]
    fn scans_are_counted_and_buffering_is_known() {
        use mozjpeg::ColorSpace;
        let claim = |space, progressive| {
            super::super::jpeg::tests::jpeg_claiming(space, progressive, (24, 16), (24, 16))
        };
        let baseline = walk(&claim(ColorSpace::JCS_RGB, false));
        assert_eq!((baseline.scans, baseline.buffered), (1, false));
        let progressive = walk(&claim(ColorSpace::JCS_RGB, true));
        assert!(
            progressive.scans > 5 && progressive.buffered,
            "{progressive:?}"
        );
        // A baseline frame whose first scan holds one of its three components.
        let mut bytes = vec![0xFF, 0xD8];
        bytes.extend_from_slice(&[0xFF, 0xC0, 0, 17, 8, 0, 8, 0, 8, 3]);
        bytes.extend_from_slice(&[1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0]);
        bytes.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 63, 0, 0x12, 0xFF, 0xD9]);
        let walked = walk(&bytes);
        assert_eq!(
            (walked.scans, walked.buffered, walked.truncation),
            (1, true, None)
        );
    }

    #[test]
    fn restart_markers_give_the_rows_done() {
        // A hand-made sequential frame 16 wide (two 8x8 MCUs a row), 32 high, restart every
        // MCU: four restart markers make two MCU rows, 16 pixel rows.
        let mut bytes = vec![0xFF, 0xD8];
        bytes.extend_from_slice(&[0xFF, 0xC0, 0, 11, 8, 0, 32, 0, 16, 1, 1, 0x11, 0]);
        bytes.extend_from_slice(&[0xFF, 0xDD, 0, 4, 0, 1]);
        bytes.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 63, 0]);
        for rst in 0..4u8 {
            bytes.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0 + rst]);
        }
        bytes.extend_from_slice(&[0x56]);
        let (found, keep) = jpeg_truncation(&bytes).unwrap();
        assert_eq!(keep, bytes.len());
        assert_eq!(
            found,
            JpegTruncation::InScan {
                scan: 1,
                present: 25,
                progressive: false,
                rows: Some((16, 32)),
            }
        );
        assert!(found.to_string().contains("row 16 of 32"), "{found}");
        bytes.extend_from_slice(&[0xFF, 0xD9]);
        assert_eq!(jpeg_truncation(&bytes), None);
    }
}
