//! Pack files: weights packed once, written to the cache and mapped by later loads. Results
//! from a mapped pack equal those of packing at load, bit for bit; a damaged, cut or stale
//! pack file is detected, rebuilt and never used.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use vlm::model::{LoadOptions, PackStatus, Precision};
use vlm::source::ModelFiles;
use vlm::Checkpoint;

use crate::common::{self, stderr};

struct Run {
    images: Vec<Vec<f32>>,
    texts: Vec<Vec<f32>>,
    status: PackStatus,
}

fn model_dir(name: &str) -> PathBuf {
    common::fixtures().join("models").join(name)
}

fn run(model: &Path, dtype: impl Into<Precision>, pack_dir: Option<&Path>) -> Run {
    let files = ModelFiles::from_dir(model).unwrap();
    let options = LoadOptions {
        pack_dir: pack_dir.map(Path::to_path_buf),
        ..Default::default()
    };
    let classifier = Checkpoint::load_with(&files, &Device::Cpu, dtype, &options).unwrap();
    let images = common::fixtures().join("images");
    let pixels: Vec<f32> = ["chelsea.png", "astronaut.png"]
        .iter()
        .flat_map(|name| classifier.load_pixels(&images.join(name)).unwrap())
        .collect();
    let size = classifier.model().image_size();
    let pixels = Tensor::from_vec(pixels, (2, 3, size, size), &Device::Cpu).unwrap();
    let images = classifier
        .model()
        .encode_images(&pixels)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let prompts = ["a photo of a cat.".to_string(), "a dog".to_string()];
    let texts = classifier
        .embed_prompts(&prompts)
        .unwrap()
        .embeddings
        .to_vec2::<f32>()
        .unwrap();
    Run {
        images,
        texts,
        status: classifier.model().pack_status().clone(),
    }
}

fn pack_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one pack file, no leftovers: {files:?}");
    files[0].clone()
}

fn assert_same(a: &Run, b: &Run) {
    assert_eq!(a.images, b.images, "image embeddings differ");
    assert_eq!(a.texts, b.texts, "text embeddings differ");
}

#[test]
fn a_mapped_pack_gives_the_same_embeddings_as_packing_at_load_in_every_family() {
    for name in [
        "tiny-quickgelu",
        "tiny-gelu-f16",
        "siglip",
        "openclip-quickgelu",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let model = model_dir(name);
        let plain = run(&model, DType::F32, None);
        assert_eq!(plain.status, PackStatus::Off);
        let first = run(&model, DType::F32, Some(dir.path()));
        assert!(
            matches!(first.status, PackStatus::Written(_)),
            "{name}: {:?}",
            first.status
        );
        let second = run(&model, DType::F32, Some(dir.path()));
        assert!(
            matches!(second.status, PackStatus::Loaded(_)),
            "{name}: {:?}",
            second.status
        );
        assert_same(&plain, &first);
        assert_same(&plain, &second);
        pack_file(dir.path());
    }
}

#[test]
fn a_bf16_pack_is_mapped_and_gives_the_same_embeddings() {
    let model = model_dir("tiny-quickgelu");
    let files = ModelFiles::from_dir(&model).unwrap();
    if Checkpoint::load_as(&files, &Device::Cpu, DType::BF16).is_err() {
        eprintln!("skipped: no bf16 kernels on this CPU");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plain = run(&model, DType::BF16, None);
    let first = run(&model, DType::BF16, Some(dir.path()));
    let second = run(&model, DType::BF16, Some(dir.path()));
    assert!(
        matches!(second.status, PackStatus::Loaded(_)),
        "{:?}",
        second.status
    );
    assert_same(&plain, &first);
    assert_same(&plain, &second);
    // f32 and bf16 packs of the same weights live side by side.
    run(&model, DType::F32, Some(dir.path()));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn an_int8_pack_is_mapped_and_gives_the_same_embeddings() {
    for name in ["tiny-quickgelu", "siglip"] {
        let model = model_dir(name);
        let dir = tempfile::tempdir().unwrap();
        let plain = run(&model, Precision::Int8, None);
        let first = run(&model, Precision::Int8, Some(dir.path()));
        let second = run(&model, Precision::Int8, Some(dir.path()));
        assert!(
            matches!(second.status, PackStatus::Loaded(_)),
            "{name}: {:?}",
            second.status
        );
        assert_same(&plain, &first);
        assert_same(&plain, &second);
        // The int8 pack is its own file: an f32 load beside it packs its own.
        let f32_run = run(&model, DType::F32, Some(dir.path()));
        assert!(
            matches!(f32_run.status, PackStatus::Written(_)),
            "{name}: {:?}",
            f32_run.status
        );
        assert_ne!(
            f32_run.images, plain.images,
            "{name}: int8 gave f32's result"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}

/// Damages the pack file with `damage`, then checks the next load refuses it for a reason
/// containing `why`, rebuilds it (the load after that maps it again) and still gives the
/// results of packing at load.
fn damaged_pack_is_rebuilt(damage: impl Fn(&Path), why: &str) {
    damaged_pack_of_is_rebuilt(DType::F32.into(), damage, why)
}

/// [`damaged_pack_is_rebuilt`] for a pack of `precision`.
fn damaged_pack_of_is_rebuilt(precision: Precision, damage: impl Fn(&Path), why: &str) {
    let dir = tempfile::tempdir().unwrap();
    let model = model_dir("tiny-quickgelu");
    let plain = run(&model, precision, None);
    run(&model, precision, Some(dir.path()));
    let path = pack_file(dir.path());
    damage(&path);
    let rebuilt = run(&model, precision, Some(dir.path()));
    match &rebuilt.status {
        PackStatus::Rebuilt { reason, .. } => assert!(reason.contains(why), "{reason}"),
        other => panic!("expected a rebuild ({why}), got {other:?}"),
    }
    assert_same(&plain, &rebuilt);
    let again = run(&model, precision, Some(dir.path()));
    assert!(
        matches!(again.status, PackStatus::Loaded(_)),
        "{:?}",
        again.status
    );
    assert_same(&plain, &again);
}

fn flip(path: &Path, at: impl Fn(usize) -> usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = at(bytes.len());
    bytes[i] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_flipped_byte_in_the_header_or_table_is_detected_and_the_pack_rebuilt() {
    // Inside the key, inside the table, and the magic.
    damaged_pack_is_rebuilt(|p| flip(p, |_| 40), "checksum");
    damaged_pack_is_rebuilt(|p| flip(p, |_| 200), "checksum");
    damaged_pack_is_rebuilt(|p| flip(p, |_| 0), "magic");
}

#[test]
fn a_flipped_byte_at_the_end_of_the_values_is_detected_and_the_pack_rebuilt() {
    // The last value of the last entry (the file ends at most 63 bytes of padding later).
    damaged_pack_is_rebuilt(
        |p| {
            let bytes = std::fs::read(p).unwrap();
            let last = bytes.iter().rposition(|&b| b != 0).unwrap();
            flip(p, |_| last)
        },
        "damaged",
    );
}

#[test]
fn a_cut_or_extended_pack_is_detected_and_rebuilt() {
    damaged_pack_is_rebuilt(
        |p| {
            let bytes = std::fs::read(p).unwrap();
            std::fs::write(p, &bytes[..bytes.len() * 2 / 3]).unwrap();
        },
        "cut short",
    );
    damaged_pack_is_rebuilt(|p| std::fs::write(p, b"VLMPACK\0").unwrap(), "shorter");
    damaged_pack_is_rebuilt(
        |p| {
            let mut bytes = std::fs::read(p).unwrap();
            bytes.extend_from_slice(&[0; 64]);
            std::fs::write(p, bytes).unwrap();
        },
        "extended",
    );
}

#[test]
fn a_pack_made_for_another_config_is_stale_and_rebuilt() {
    // The same weights file with a different config.json: the same pack file name, another key.
    let dir = tempfile::tempdir().unwrap();
    let model = tempfile::tempdir().unwrap();
    let source = model_dir("tiny-quickgelu");
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.path().join(entry.file_name())).unwrap();
    }
    run(model.path(), DType::F32, Some(dir.path()));
    let path = pack_file(dir.path());
    let config_path = model.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["vision_config"]["layer_norm_eps"] = serde_json::json!(1e-3);
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    let plain = run(model.path(), DType::F32, None);
    let rebuilt = run(model.path(), DType::F32, Some(dir.path()));
    match &rebuilt.status {
        PackStatus::Rebuilt { path: p, reason } => {
            assert_eq!(p, &path);
            assert!(reason.contains("stale"), "{reason}");
        }
        other => panic!("expected a rebuild, got {other:?}"),
    }
    assert_same(&plain, &rebuilt);
}

#[test]
fn an_unwritable_pack_directory_still_loads_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the directory should be.
    let blocked = dir.path().join("packs");
    std::fs::write(&blocked, b"").unwrap();
    let model = model_dir("tiny-quickgelu");
    let plain = run(&model, DType::F32, None);
    let got = run(&model, DType::F32, Some(&blocked));
    assert!(
        matches!(got.status, PackStatus::NotWritten { .. }),
        "{:?}",
        got.status
    );
    assert_same(&plain, &got);
}

#[test]
fn classify_keeps_packed_weights_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let packs = dir.path().join("packs");
    let classify = |extra: &[&str]| {
        let out = common::vlm()
            .args(["classify", "--labels", "cat,dog", "--verbose", "--model"])
            .arg(model_dir("tiny-quickgelu"))
            .arg(common::fixtures().join("images/chelsea.png"))
            .args(extra)
            .env("VLM_PACK_CACHE_DIR", &packs)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr(&out),
        )
    };
    let (_, err) = classify(&["--no-pack-cache"]);
    assert!(!err.contains("packed weights"), "{err}");
    assert!(!packs.exists());
    let (first, err) = classify(&[]);
    assert!(err.contains("packed weights written to"), "{err}");
    // The binary exits before the file is synced: what it leaves is the pack file or the
    // temporary a detached process is finishing, nothing else.
    let names: Vec<String> = std::fs::read_dir(&packs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.len() == 1 && (names[0].ends_with(".vlmpack") || names[0].ends_with(".sync")),
        "{names:?}"
    );
    // A run right after it waits for that process rather than packing again.
    let (second, err) = classify(&[]);
    assert!(err.contains("packed weights mapped from"), "{err}");
    assert_eq!(first, second);
    pack_file(&packs);
}

/// Rewrites the table of the pack file at `path` with `edit` and seals it again: the key
/// and checksums are no secret, so anyone who can write the directory can do this.
fn forge(path: &Path, edit: impl Fn(&mut serde_json::Value, &[u8])) {
    use sha2::{Digest, Sha256};
    let mut bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    let mut table: serde_json::Value =
        serde_json::from_slice(bytes[128..128 + len].trim_ascii_end()).unwrap();
    edit(&mut table, &bytes);
    let mut text = serde_json::to_vec(&table).unwrap();
    assert!(text.len() <= len, "the forged table fits the room");
    text.resize(len, b' ');
    bytes[128..128 + len].copy_from_slice(&text);
    let mut h = Sha256::new();
    h.update(&bytes[..64]);
    h.update(&text);
    let digest = h.finalize();
    bytes[64..96].copy_from_slice(&digest);
    std::fs::write(path, bytes).unwrap();
}

/// An entry's checksum as the pack table holds it: SHA-256 of its first and last 4 KiB.
fn edges(values: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(&values[..values.len().min(4096)]);
    h.update(&values[values.len().saturating_sub(4096)..]);
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_forged_pack_with_a_wrapped_dimension_is_refused_and_rebuilt() {
    // An f32 panel entry (n, k) holds len = panels * nr * k values. A k with
    // panels * nr * k' = len + 2^64 passes an unchecked length test, and the kernels then
    // read k' values a row: far past the mapping.
    damaged_pack_is_rebuilt(
        |p| {
            forge(p, |table, _| {
                let entry = table["entries"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .find(|e| {
                        let (len, k) = (e["len"].as_u64().unwrap(), e["dims"][1].as_u64());
                        e["kind"] == "packed-f32" && k.is_some_and(|k| (len / k).is_power_of_two())
                    })
                    .expect("a packed entry");
                let (len, k) = (
                    entry["len"].as_u64().unwrap(),
                    entry["dims"][1].as_u64().unwrap(),
                );
                let wrapped = k + (1u64 << (64 - (len / k).trailing_zeros()));
                assert_eq!(
                    (len / k).wrapping_mul(wrapped),
                    len,
                    "the product wraps to len"
                );
                entry["dims"][1] = wrapped.into();
            })
        },
        "does not fit",
    );
}

#[test]
fn a_forged_bias_or_table_length_is_refused_and_rebuilt() {
    // A bias entry claiming fewer values than the layer has outputs.
    damaged_pack_is_rebuilt(
        |p| {
            forge(p, |table, bytes| {
                let bias = table["entries"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .find(|e| e["name"].as_str().unwrap().ends_with("#bias"))
                    .unwrap();
                bias["dims"][0] = 1.into();
                bias["len"] = 1.into();
                let at = bias["offset"].as_u64().unwrap() as usize;
                bias["edges"] = edges(&bytes[at..at + 4]).into();
            })
        },
        "does not fit",
    );
    // A tensor whose length disagrees with its dimensions.
    damaged_pack_is_rebuilt(
        |p| {
            forge(p, |table, _| {
                let raw = table["entries"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .find(|e| e["kind"] == "raw" && e["len"].as_u64().unwrap() > 2)
                    .unwrap();
                raw["len"] = 1.into();
            })
        },
        "values for dimensions",
    );
}

#[cfg(target_os = "linux")]
#[test]
fn a_temporary_left_by_a_dead_writer_is_removed_and_a_live_ones_kept() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let model = model_dir("tiny-quickgelu");
    run(&model, DType::F32, Some(dir.path()));
    let pack = pack_file(dir.path());
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    let temporary = |name: &str, old: bool| {
        let path = pack.with_extension(format!("vlmpack.tmp.{name}"));
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(1 << 20).unwrap();
        if old {
            file.set_modified(two_hours_ago).unwrap();
        }
        (path, file)
    };
    // Killed mid-write: old and unlocked.
    let (dead, file) = temporary("4242.dead", true);
    drop(file);
    // Still being written by a live process: locked.
    let (live, file) = temporary("4243.live", true);
    // SAFETY: flock on a descriptor this File owns.
    assert_eq!(
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    // Just made, not locked yet.
    let (fresh, _fresh) = temporary("4244.fresh", false);
    let again = run(&model, DType::F32, Some(dir.path()));
    assert!(
        matches!(again.status, PackStatus::Loaded(_)),
        "{:?}",
        again.status
    );
    assert!(!dead.exists(), "a dead writer's temporary survived the run");
    assert!(
        live.exists() && fresh.exists(),
        "a live writer's temporary was removed"
    );
    drop(file);
}

#[test]
fn a_forged_int8_weight_or_scales_length_is_refused_and_rebuilt() {
    // An int8 weight claiming one more output than config.json implies: its panels still
    // hold enough values when the extra row falls in the last panel's padding.
    damaged_pack_of_is_rebuilt(
        Precision::Int8,
        |p| {
            forge(p, |table, _| {
                let entry = table["entries"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .find(|e| e["kind"] == "packed-i8")
                    .expect("an int8 entry");
                let n = entry["dims"][0].as_u64().unwrap();
                entry["dims"][0] = (n + 1).into();
            })
        },
        "config.json implies",
    );
    // Its scales and column sums cut to one value.
    damaged_pack_of_is_rebuilt(
        Precision::Int8,
        |p| {
            forge(p, |table, bytes| {
                let scales = table["entries"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .find(|e| e["name"].as_str().unwrap().ends_with(".scales"))
                    .expect("a scales entry");
                scales["dims"][0] = 1.into();
                scales["len"] = 1.into();
                let at = scales["offset"].as_u64().unwrap() as usize;
                scales["edges"] = edges(&bytes[at..at + 4]).into();
            })
        },
        "config.json implies",
    );
}
