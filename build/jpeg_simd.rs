//! The NASM rule, as the build script applies it (and as the tests check it without a
//! build): whether the JPEG decoder that mozjpeg-sys just built has its SIMD code, and what
//! the build does when it has not.
//!
//! mozjpeg-sys assembles libjpeg-turbo's x86 SIMD with `nasm`; without it, it quietly
//! builds plain C (decoding about 1.5x slower) and its own warning is hidden, as cargo
//! hides every dependency's. So vlm's build script reads the outcome (the `WITH_SIMD`
//! define in the `jconfig.h` that mozjpeg-sys generated) instead of guessing from PATH: a
//! decoder built without NASM stays built that way until mozjpeg-sys is rebuilt.

/// Set to 1 to let a release build go on without NASM, with the slower decoder, on purpose.
/// Packaging scripts never set it.
pub const ALLOW_ENV: &str = "VLM_ALLOW_NO_NASM";

/// What the build does about the JPEG decoder it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The decoder has its SIMD code: nothing to say.
    Simd,
    /// Go on, and show this warning.
    Warn(String),
    /// Stop the build with this message.
    Fail(String),
}

/// Whether a `jconfig.h` written by mozjpeg-sys enables SIMD; `None` when the text is not
/// such a file (a mozjpeg-sys that no longer writes one, or writes it differently).
pub fn simd_enabled(jconfig_h: &str) -> Option<bool> {
    let mut seen_config = false;
    for line in jconfig_h.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["#define", "WITH_SIMD", value, ..] => return Some(*value != "0"),
            ["#define", "JPEG_LIB_VERSION", ..] | ["#define", "BITS_IN_JSAMPLE", ..] => {
                seen_config = true
            }
            _ => {}
        }
    }
    seen_config.then_some(false)
}

/// The rule. `target_arch` is cargo's `CARGO_CFG_TARGET_ARCH`; `simd` what
/// [`simd_enabled`] found (`None`: unknown); `release` whether cargo's `PROFILE` is
/// `release` (every profile that inherits from it: `cargo install`, `--release`, the wheel
/// and archive builds); `allowed` whether [`ALLOW_ENV`] is set to 1.
///
/// On x86 a decoder without SIMD means NASM was missing: a release build stops, naming the
/// package to install, so no wheel or archive carries the slow decoder by accident; any
/// other build goes on with a warning. Elsewhere (ARM's SIMD needs no NASM) a decoder
/// without SIMD only warns.
pub fn decide(target_arch: &str, simd: Option<bool>, release: bool, allowed: bool) -> Decision {
    let x86 = matches!(target_arch, "x86_64" | "x86");
    match simd {
        Some(true) => Decision::Simd,
        Some(false) if !x86 => Decision::Warn(format!(
            "the JPEG decoder (libjpeg-turbo, through mozjpeg-sys) was built without SIMD for \
             {target_arch}: JPEG decoding runs in plain C, about 1.5x slower"
        )),
        Some(false) => {
            let what = "NASM was not found (`nasm` on PATH), so the JPEG decoder \
                        (libjpeg-turbo, through mozjpeg-sys) was built without its x86 SIMD \
                        code and decodes JPEGs about 1.5x slower";
            let install = "install the `nasm` package (Debian/Ubuntu: apt-get install nasm; \
                           Fedora: dnf install nasm; macOS: brew install nasm; Windows: \
                           winget install NASM.NASM), then run `cargo clean -p mozjpeg-sys` \
                           and build again";
            if release && !allowed {
                Decision::Fail(format!(
                    "{what}. A release build (cargo install, --release, the wheel and the \
                     archive) refuses that: {install}; or set {ALLOW_ENV}=1 to build the \
                     slower decoder on purpose"
                ))
            } else {
                Decision::Warn(format!("{what}; to fix it, {install}"))
            }
        }
        None => {
            let what = "cannot tell whether the JPEG decoder was built with SIMD: no jconfig.h \
                        with WITH_SIMD in mozjpeg-sys's output (DEP_JPEG_INCLUDE); vlm's \
                        build.rs needs updating for this mozjpeg-sys";
            if release && !allowed && x86 {
                Decision::Fail(format!(
                    "{what}; or set {ALLOW_ENV}=1 to build without the check"
                ))
            } else {
                Decision::Warn(what.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITH: &str =
        "#define JPEG_LIB_VERSION 62\n#define BITS_IN_JSAMPLE 8\n#define WITH_SIMD 1\n";
    const WITHOUT: &str = "#define JPEG_LIB_VERSION 62\n#define BITS_IN_JSAMPLE 8\n";

    #[test]
    fn reads_the_simd_define_of_jconfig_h() {
        assert_eq!(simd_enabled(WITH), Some(true));
        assert_eq!(simd_enabled(WITHOUT), Some(false));
        assert_eq!(simd_enabled("#define WITH_SIMD 0\n"), Some(false));
        assert_eq!(simd_enabled("not a config header"), None);
    }

    #[test]
    fn release_build_without_nasm_fails_naming_the_package() {
        for arch in ["x86_64", "x86"] {
            let Decision::Fail(msg) = decide(arch, simd_enabled(WITHOUT), true, false) else {
                panic!("a release build without SIMD on {arch} must fail");
            };
            assert!(msg.contains("apt-get install nasm"), "{msg}");
            assert!(msg.contains("brew install nasm"), "{msg}");
            assert!(msg.contains(ALLOW_ENV), "{msg}");
        }
    }

    #[test]
    fn plain_build_without_nasm_warns_and_goes_on() {
        let Decision::Warn(msg) = decide("x86_64", Some(false), false, false) else {
            panic!("a debug build without SIMD must only warn");
        };
        assert!(msg.contains("apt-get install nasm"), "{msg}");
        assert!(msg.contains("cargo clean -p mozjpeg-sys"), "{msg}");
    }

    #[test]
    fn release_build_goes_on_when_allowed_or_when_simd_is_there() {
        assert!(matches!(
            decide("x86_64", Some(false), true, true),
            Decision::Warn(_)
        ));
        assert_eq!(decide("x86_64", Some(true), true, false), Decision::Simd);
        assert_eq!(decide("aarch64", Some(true), true, false), Decision::Simd);
    }

    #[test]
    fn other_architectures_never_ask_for_nasm() {
        let Decision::Warn(msg) = decide("aarch64", Some(false), true, false) else {
            panic!("no NASM rule off x86");
        };
        assert!(!msg.contains("nasm"), "{msg}");
    }

    #[test]
    fn unknown_outcome_fails_a_release_build_on_x86() {
        assert!(matches!(
            decide("x86_64", None, true, false),
            Decision::Fail(_)
        ));
        assert!(matches!(
            decide("x86_64", None, false, false),
            Decision::Warn(_)
        ));
    }
}
