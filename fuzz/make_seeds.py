#!/usr/bin/env python3
"""Writes small seed inputs for the fuzz targets into fuzz/seeds/ (standard library only).

checkpoint: a micro CLIP (hidden size 4, one layer per tower) whose config.json and
model.safetensors match, framed as the target expects: u16 LE config length, config, blob.
labels: a few label lists and template files.
"""
import json
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEEDS = HERE / "seeds"


def safetensors(tensors, dtype_of=lambda name: "F32"):
    header, data = {}, b""
    for name, shape in tensors.items():
        count = 1
        for d in shape:
            count *= d
        dtype = dtype_of(name)
        if dtype == "F16":
            raw = struct.pack(f"<{count}e", *[(i % 7) / 10 for i in range(count)])
        else:
            raw = struct.pack(f"<{count}f", *[(i % 7) / 10 for i in range(count)])
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + data


def tower(prefix, hidden, inter):
    t = {}
    t[f"{prefix}.encoder.layers.0.layer_norm1.weight"] = [hidden]
    t[f"{prefix}.encoder.layers.0.layer_norm1.bias"] = [hidden]
    t[f"{prefix}.encoder.layers.0.layer_norm2.weight"] = [hidden]
    t[f"{prefix}.encoder.layers.0.layer_norm2.bias"] = [hidden]
    t[f"{prefix}.encoder.layers.0.mlp.fc1.weight"] = [inter, hidden]
    t[f"{prefix}.encoder.layers.0.mlp.fc1.bias"] = [inter]
    t[f"{prefix}.encoder.layers.0.mlp.fc2.weight"] = [hidden, inter]
    t[f"{prefix}.encoder.layers.0.mlp.fc2.bias"] = [hidden]
    for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
        t[f"{prefix}.encoder.layers.0.self_attn.{p}.weight"] = [hidden, hidden]
        t[f"{prefix}.encoder.layers.0.self_attn.{p}.bias"] = [hidden]
    return t


def micro_checkpoint():
    config = {
        "model_type": "clip",
        "projection_dim": 2,
        "text_config": {"hidden_size": 4, "intermediate_size": 4, "num_hidden_layers": 1,
                        "num_attention_heads": 1, "max_position_embeddings": 4, "vocab_size": 8,
                        "eos_token_id": 2, "pad_token_id": 1},
        "vision_config": {"hidden_size": 4, "intermediate_size": 4, "num_hidden_layers": 1,
                          "num_attention_heads": 1, "image_size": 4, "patch_size": 2},
    }
    t = {"logit_scale": []}
    t["text_model.embeddings.token_embedding.weight"] = [8, 4]
    t["text_model.embeddings.position_embedding.weight"] = [4, 4]
    t.update(tower("text_model", 4, 4))
    t["text_model.final_layer_norm.weight"] = [4]
    t["text_model.final_layer_norm.bias"] = [4]
    t["text_projection.weight"] = [2, 4]
    t["vision_model.embeddings.class_embedding"] = [4]
    t["vision_model.embeddings.patch_embedding.weight"] = [4, 3, 2, 2]
    t["vision_model.embeddings.position_embedding.weight"] = [5, 4]
    t["vision_model.pre_layrnorm.weight"] = [4]
    t["vision_model.pre_layrnorm.bias"] = [4]
    t.update(tower("vision_model", 4, 4))
    t["vision_model.post_layernorm.weight"] = [4]
    t["vision_model.post_layernorm.bias"] = [4]
    t["visual_projection.weight"] = [2, 4]
    text = json.dumps(config, separators=(",", ":")).encode()
    f32 = safetensors(t)
    f16 = safetensors(t, lambda name: "F16" if "mlp" in name else "F32")
    frame = lambda blob: struct.pack("<H", len(text)) + text + blob
    return {"micro_f32": frame(f32), "micro_f16": frame(f16), "config_only": frame(b"")}


def main():
    out = SEEDS / "checkpoint"
    out.mkdir(parents=True, exist_ok=True)
    for name, data in micro_checkpoint().items():
        (out / name).write_bytes(data)
    out = SEEDS / "labels"
    out.mkdir(parents=True, exist_ok=True)
    seeds = {
        "plain": "a photo of a {}.\ncat, dog, hot dog",
        "synonyms": "{}\ncat|kitten, dog|puppy",
        "file": "# comment\na photo of a {}.\n\nart of {}\n",
        "unicode": "\u0635\u0648\u0631\u0629 {}\n\U0001F431, \u05db\u05dc\u05d1, \"quoted, label\"",
        "bad": "no placeholder\ncat,,cat, |",
    }
    for name, text in seeds.items():
        (out / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
