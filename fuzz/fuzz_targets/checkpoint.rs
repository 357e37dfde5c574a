//! Arbitrary bytes as a checkpoint: a 2-byte little-endian length, that many bytes of
//! `config.json`, and the rest as `model.safetensors`. The config is parsed; when it is
//! valid and small, the weights are loaded through `ClipModel::load` from a temp file.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use candle_core::Device;
use libfuzzer_sys::fuzz_target;
use vlm::model::config::ClipConfig;
use vlm::model::ClipModel;

fn dir() -> &'static tempfile::TempDir {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| tempfile::tempdir().expect("temp dir"))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let len = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
    let (json, blob) = data[2..].split_at(len);
    let json = String::from_utf8_lossy(json);
    let Ok(config) = ClipConfig::from_json_str(&json, Path::new("config.json")) else {
        return;
    };
    // Loading only ever reads tensors the file holds, but a huge layer count would make
    // a slow loop of failed look-ups; keep each run fast.
    if config.text.num_hidden_layers > 64 || config.vision.num_hidden_layers > 64 {
        return;
    }
    let weights = dir().path().join("model.safetensors");
    std::fs::write(&weights, blob).expect("write temp weights");
    if let Ok(model) = ClipModel::load(&config, &weights, &Device::Cpu) {
        let ids = vec![vec![0u32, 1, 2]];
        let _ = model.encode_text(&ids);
    }
});
