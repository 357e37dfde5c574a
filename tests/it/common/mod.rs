//! Shared by the integration tests: a small labelled domain, the tiny checkpoint, and a
//! memory cap for processes that decode hostile files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod near_duplicates;

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
        "VLM_NO_PACK_CACHE",
    ] {
        command.env_remove(var);
    }
    // Packed weights go to the build's scratch directory, never the user's cache.
    command.env(
        "VLM_PACK_CACHE_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("pack-cache"),
    );
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

/// The data-segment cap (heap and private writable mappings) of every process these tests
/// start. A correct run needs a few hundred MiB at most (the 100-megapixel JPEG liar decodes
/// about 300 MB); a bomb's canvas is 7.5 GB (50000x50000 RGB). Should the pixel limit ever
/// stop working, the allocation fails at once and the test with it, instead of the machine
/// running out of memory.
pub const DATA_LIMIT: u64 = 2 << 30;

/// Applies [`DATA_LIMIT`] to `command`'s process (Linux; elsewhere the tests run uncapped).
pub fn limit_memory(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: runs in the forked child before exec and calls only setrlimit, which is
        // async-signal-safe; nothing is allocated or locked.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: DATA_LIMIT as libc::rlim_t,
                    rlim_max: DATA_LIMIT as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_DATA, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// Marks the child process of [`in_capped_child`].
const CAPPED_CHILD: &str = "VLM_TEST_CAPPED_CHILD";

/// For tests that decode hostile files in the test process itself: on Linux, runs the test
/// `test` of module `module` (the caller's `module_path!()`) again in a child copy of this
/// test binary under [`DATA_LIMIT`] and returns true (the caller then returns); in that
/// child, or where no cap is available, returns false and the caller runs its body. A cap
/// on the test process itself would hold for every other test running beside it.
pub fn in_capped_child(module: &str, test: &str) -> bool {
    if cfg!(not(target_os = "linux")) || std::env::var_os(CAPPED_CHILD).is_some() {
        return false;
    }
    // libtest names a test by its path below the crate root.
    let name = match module.split_once("::") {
        Some((_, below)) => format!("{below}::{test}"),
        None => test.to_string(),
    };
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([name.as_str(), "--exact", "--test-threads=1", "--nocapture"])
        .env(CAPPED_CHILD, "1");
    limit_memory(&mut command);
    let output = command.output().unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && out.contains("test result: ok. 1 passed"),
        "{name} under a {} MiB data limit: {:?}\n{out}\n{}",
        DATA_LIMIT >> 20,
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    true
}

/// `vlm: peak memory (resident): 123.4 MiB` from a `--verbose` run, in MiB.
pub fn peak_mib(output: &std::process::Output) -> f64 {
    let err = stderr(output);
    let line = err
        .lines()
        .find(|l| l.contains("peak memory"))
        .unwrap_or_else(|| panic!("no peak memory line in {err}"));
    line.rsplit(": ")
        .next()
        .and_then(|v| v.trim_end_matches(" MiB").parse().ok())
        .unwrap_or_else(|| panic!("cannot read {line}"))
}

/// Database passwords made of every character that means something in a URL, each ending
/// in [`PASSWORD_TAIL`].
pub const URL_PASSWORDS: [&str; 11] = [
    "Pa/ss/Zq8w0rd",
    "Pa?ss?Zq8w0rd",
    "Pa#ss#Zq8w0rd",
    "Pa@ss@Zq8w0rd",
    "Pa:ss:Zq8w0rd",
    "Pa%ss%Zq8w0rd",
    "Pa&ss&Zq8w0rd",
    "Pa=ss=Zq8w0rd",
    "Pa ss Zq8w0rd",
    "Pässwörd€Zq8w0rd",
    "P/?#@:%&= äZq8w0rd€",
];

/// The tail every test password ends with: a leak of any part of a password after one of
/// its special characters shows it.
pub const PASSWORD_TAIL: &str = "Zq8w0rd";

/// `text` with every byte but ASCII letters and digits percent-encoded.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => char::from(b).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// Fails when `out` shows any of `secrets`, or [`PASSWORD_TAIL`], anywhere.
pub fn assert_hidden(out: &std::process::Output, secrets: &[&str], what: &str) {
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        for secret in secrets.iter().chain(&[PASSWORD_TAIL]) {
            assert!(
                !text.contains(secret),
                "{what}: the password {secret:?} was printed:\n{text}"
            );
        }
    }
}
