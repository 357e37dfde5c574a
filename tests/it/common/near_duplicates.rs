//! The near-duplicate test set: distinct pictures, some of them with copies made the ways
//! photos get copied (resized, recompressed, slightly cropped, brightness-shifted), written
//! to a folder with the truth of which files are copies of which.
//!
//! The distinct pictures are the five photographs of `tests/fixtures/images/` and drawn
//! scenes: a two-colour gradient sky over a ground of another colour, with a few shapes
//! (discs, boxes, bars) and fine noise, all placed by a seeded generator, so no two scenes
//! share their layout and every run makes the same files.

use std::path::{Path, PathBuf};

use image::{imageops, DynamicImage, RgbImage};

use super::Rng;

/// One file of the set and the group it belongs to (its original's number).
#[derive(Debug, Clone)]
pub struct Sample {
    pub path: PathBuf,
    pub group: usize,
    /// How it was made: "original", "resized", "recompressed", "cropped", "brighter",
    /// "darker".
    pub kind: &'static str,
}

/// Uniform in `lo..hi`.
fn uniform(rng: &mut Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * (rng.below(1 << 20) as f32 / (1u32 << 20) as f32)
}

fn colour(rng: &mut Rng) -> [f32; 3] {
    [0, 1, 2].map(|_| uniform(rng, 0.0, 255.0))
}

/// The backdrop of a scene: sky colours, ground colour, horizon height and tilt.
type Backdrop = ([f32; 3], [f32; 3], [f32; 3], f32, f32);

fn backdrop(rng: &mut Rng) -> Backdrop {
    (
        colour(rng),
        colour(rng),
        colour(rng),
        uniform(rng, 0.3, 0.75),
        uniform(rng, -0.3, 0.3),
    )
}

/// A drawn scene of `w` x `h` on `backdrop`, with shapes of its own.
fn scene(rng: &mut Rng, w: u32, h: u32, backdrop: Backdrop) -> RgbImage {
    let (sky_top, sky_bottom, ground, horizon, tilt) = backdrop;
    let horizon = horizon * h as f32;
    let shapes: Vec<(u32, [f32; 3], [f32; 4])> = (0..3 + rng.below(4))
        .map(|_| {
            let kind = rng.below(3);
            let c = colour(rng);
            let (cx, cy) = (uniform(rng, 0.0, w as f32), uniform(rng, 0.0, h as f32));
            let (rx, ry) = (
                uniform(rng, 0.05, 0.3) * w as f32,
                uniform(rng, 0.05, 0.3) * h as f32,
            );
            (kind, c, [cx, cy, rx, ry])
        })
        .collect();
    let mut image = RgbImage::new(w, h);
    for (x, y, pixel) in image.enumerate_pixels_mut() {
        let (fx, fy) = (x as f32, y as f32);
        let line = horizon + tilt * (fx - w as f32 / 2.0);
        let mut c = if fy < line {
            let t = fy / line.max(1.0);
            [0, 1, 2].map(|i| sky_top[i] * (1.0 - t) + sky_bottom[i] * t)
        } else {
            ground
        };
        for (kind, sc, [cx, cy, rx, ry]) in &shapes {
            let (dx, dy) = ((fx - cx) / rx, (fy - cy) / ry);
            let inside = match kind {
                0 => dx * dx + dy * dy <= 1.0,
                1 => dx.abs() <= 1.0 && dy.abs() <= 1.0,
                _ => dx.abs() <= 1.0 && dy.abs() <= 0.25,
            };
            if inside {
                c = *sc;
            }
        }
        let noise = rng.below(17) as f32 - 8.0;
        *pixel = image::Rgb(c.map(|v| (v + noise).clamp(0.0, 255.0) as u8));
    }
    image
}

fn save_jpeg(image: &RgbImage, path: &Path, quality: u8) {
    let file = std::fs::File::create(path).expect("create test image");
    let mut writer = std::io::BufWriter::new(file);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut writer, quality)
        .encode_image(image)
        .expect("encode test image");
}

/// A copy of `image` made one of the ways photos are copied; returns how.
fn copy(rng: &mut Rng, image: &RgbImage, path_stem: &Path) -> (PathBuf, &'static str) {
    let (w, h) = image.dimensions();
    match rng.below(5) {
        0 => {
            let scale = uniform(rng, 0.4, 0.8);
            let small = imageops::resize(
                image,
                ((w as f32 * scale) as u32).max(8),
                ((h as f32 * scale) as u32).max(8),
                imageops::FilterType::Triangle,
            );
            let path = path_stem.with_extension("png");
            small.save(&path).expect("write test image");
            (path, "resized")
        }
        1 => {
            let path = path_stem.with_extension("jpg");
            save_jpeg(image, &path, 30 + rng.below(40) as u8);
            (path, "recompressed")
        }
        2 => {
            // Up to 8% off each of two sides: what a straightening or a re-framing takes.
            let (left, top) = (
                (uniform(rng, 0.0, 0.08) * w as f32) as u32,
                (uniform(rng, 0.0, 0.08) * h as f32) as u32,
            );
            let (right, bottom) = (
                (uniform(rng, 0.0, 0.08) * w as f32) as u32,
                (uniform(rng, 0.0, 0.08) * h as f32) as u32,
            );
            let cropped =
                imageops::crop_imm(image, left, top, w - left - right, h - top - bottom).to_image();
            let path = path_stem.with_extension("jpg");
            save_jpeg(&cropped, &path, 90);
            (path, "cropped")
        }
        k => {
            let shift = uniform(rng, 15.0, 30.0) * if k == 3 { 1.0 } else { -1.0 };
            let shifted = RgbImage::from_fn(w, h, |x, y| {
                image::Rgb(
                    image
                        .get_pixel(x, y)
                        .0
                        .map(|v| (f32::from(v) + shift).clamp(0.0, 255.0) as u8),
                )
            });
            let path = path_stem.with_extension("jpg");
            save_jpeg(&shifted, &path, 92);
            (path, if k == 3 { "brighter" } else { "darker" })
        }
    }
}

/// Writes `scenes` drawn scenes and the five fixture photographs into `dir` (flat, names
/// that do not give the groups away), and copies of about half of them (one to three
/// each). Returns every file with its group, originals first.
pub fn write_set(dir: &Path, scenes: usize, seed: u64) -> Vec<Sample> {
    std::fs::create_dir_all(dir).expect("create the near-duplicate folder");
    let mut rng = Rng::new(seed);
    let mut originals: Vec<RgbImage> = ["chelsea", "astronaut", "coffee", "rocket", "camera_gray"]
        .iter()
        .map(|name| {
            let path = super::fixtures().join(format!("images/{name}.png"));
            image::open(&path)
                .map(DynamicImage::into_rgb8)
                .expect("read a fixture photo")
        })
        .collect();
    while originals.len() < 5 + scenes {
        let (w, h) = if rng.below(3) == 0 {
            (120, 160)
        } else {
            (160, 120)
        };
        let place = backdrop(&mut rng);
        originals.push(scene(&mut rng, w, h, place));
        // One scene in five has a sibling: the same place with other things in it, a
        // different photo that a threshold set too low would take for a copy.
        if rng.below(5) == 0 && originals.len() < 5 + scenes {
            originals.push(scene(&mut rng, w, h, place));
        }
    }
    let mut samples = Vec::new();
    let mut copies = Vec::new();
    for (group, image) in originals.iter().enumerate() {
        let path = dir.join(format!(
            "img-{:04}.png",
            rng.below(10_000) * 1000 + group as u32
        ));
        image.save(&path).expect("write test image");
        samples.push(Sample {
            path,
            group,
            kind: "original",
        });
        if rng.below(2) == 0 {
            for _ in 0..1 + rng.below(3) {
                let stem = dir.join(format!(
                    "img-{:04}",
                    rng.below(10_000) * 1000 + 500 + copies.len() as u32
                ));
                let (path, kind) = copy(&mut rng, image, &stem);
                copies.push(Sample { path, group, kind });
            }
        }
    }
    samples.extend(copies);
    samples
}
