//! What this build of vlm is: version, git commit, cargo features, target, and whether the
//! JPEG decoder was built with its SIMD code. Recorded by build.rs; read by `vlm --version`
//! and `vlm doctor`.

use std::sync::OnceLock;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/build_info.rs"));
}

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit this build was made from (12 hex digits), when built from a git checkout of
/// vlm; `None` for a build from a package (crates.io, an sdist).
pub fn git_commit() -> Option<&'static str> {
    generated::GIT_COMMIT
}

/// The cargo features this build was made with, sorted (`postgres`, `milvus`, `cuda`, ...).
pub fn features() -> &'static [&'static str] {
    generated::FEATURES
}

/// The target triple this build runs on, e.g. `x86_64-unknown-linux-gnu`.
pub fn target() -> &'static str {
    generated::TARGET
}

/// Cargo's profile family: `release` (also the wheel and archive builds) or `debug`.
pub fn profile() -> &'static str {
    generated::PROFILE
}

/// Whether libjpeg-turbo's SIMD code was built into the JPEG decoder: `Some(false)` means
/// plain C (on x86, NASM was missing at build time), `None` that the build could not tell.
pub fn jpeg_simd() -> Option<bool> {
    generated::JPEG_SIMD
}

/// One line on the JPEG decoder's SIMD code, as `--version` and `doctor` print it.
pub fn jpeg_decoder() -> &'static str {
    match jpeg_simd() {
        Some(true) => "libjpeg-turbo with SIMD",
        Some(false) if cfg!(any(target_arch = "x86_64", target_arch = "x86")) => {
            "libjpeg-turbo without SIMD (built without NASM: JPEG decoding about 1.5x slower)"
        }
        Some(false) => "libjpeg-turbo without SIMD (plain C: JPEG decoding about 1.5x slower)",
        None => "libjpeg-turbo (SIMD unknown: the build could not tell)",
    }
}

/// The text of `vlm --version`: version and commit, then features, target and JPEG decoder
/// on lines of their own.
pub fn long_version() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let commit = git_commit().map_or(String::new(), |c| format!(" (commit {c})"));
        let features = if features().is_empty() {
            "none".to_string()
        } else {
            features().join(", ")
        };
        format!(
            "{VERSION}{commit}\nfeatures: {features}\ntarget: {} ({})\nJPEG decoder: {}",
            target(),
            profile(),
            jpeg_decoder()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_the_ones_this_crate_was_compiled_with() {
        assert_eq!(features().contains(&"postgres"), cfg!(feature = "postgres"));
        assert_eq!(features().contains(&"milvus"), cfg!(feature = "milvus"));
        assert!(!features().contains(&"default"));
    }

    #[test]
    fn long_version_starts_with_the_version_and_names_the_decoder() {
        let text = long_version();
        assert!(text.starts_with(VERSION), "{text}");
        assert!(text.contains("\nJPEG decoder: libjpeg-turbo"), "{text}");
        assert!(text.contains("\nfeatures: "), "{text}");
    }
}
