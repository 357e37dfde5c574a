//! Shared by the integration tests that need a small labelled domain.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The classes of [`draw_domain`], by the colour of their shape.
pub const COLOURS: [(&str, [u8; 3]); 4] = [
    ("red", [220, 40, 40]),
    ("green", [40, 200, 60]),
    ("blue", [40, 70, 220]),
    ("yellow", [230, 210, 40]),
];

/// A tiny deterministic generator (xorshift64*), so the pictures are the same everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next() % u64::from(n)) as u32
    }
}

/// Draws `per_class` 64x64 PNGs for each class of [`COLOURS`] (or the first `classes` of
/// them) into `dir/<colour>/NN.png`: a filled square or disc of the class colour, of random
/// size and place, on a random grey background with noise. The class is plain in the
/// pixels; nothing else is. Returns the class folders in order.
pub fn draw_domain(dir: &Path, classes: usize, per_class: usize, seed: u64) -> Vec<PathBuf> {
    let mut rng = Rng::new(seed);
    let mut folders = Vec::new();
    for (name, colour) in COLOURS.iter().take(classes) {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).expect("create class folder");
        for i in 0..per_class {
            let grey = 60 + rng.below(120) as u8;
            let size = 14 + rng.below(22);
            let (cx, cy) = (
                size / 2 + rng.below(64 - size),
                size / 2 + rng.below(64 - size),
            );
            let disc = rng.below(2) == 0;
            let mut image = image::RgbImage::new(64, 64);
            for (x, y, pixel) in image.enumerate_pixels_mut() {
                let (dx, dy) = (x as i64 - cx as i64, y as i64 - cy as i64);
                let half = i64::from(size / 2);
                let inside = if disc {
                    dx * dx + dy * dy <= half * half
                } else {
                    dx.abs() <= half && dy.abs() <= half
                };
                let noise = rng.below(21) as i16 - 10;
                let base = if inside { *colour } else { [grey; 3] };
                *pixel = image::Rgb(base.map(|c| (i16::from(c) + noise).clamp(0, 255) as u8));
            }
            image
                .save(folder.join(format!("{i:02}.png")))
                .expect("write test image");
        }
        folders.push(folder);
    }
    folders
}

/// The tiny random-weight checkpoint used by tests that need a model but not parity.
pub fn tiny_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-quickgelu")
}

/// The one `vlm` command builder of the tests: the built binary with every variable vlm
/// reads removed, so a developer's settings never leak into a test, and the hub offline.
pub fn vlm() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_vlm"));
    for var in [
        "VLM_MODEL",
        "VLM_CACHE_DIR",
        "VLM_HUB_TIMEOUT",
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "RAYON_NUM_THREADS",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
        "PGPASSFILE",
    ] {
        command.env_remove(var);
    }
    // Never reach for a real hub from the tests.
    command.env("HF_HUB_OFFLINE", "1");
    command
}

/// A finished command's stderr, as text.
pub fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The committed fixtures folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}
