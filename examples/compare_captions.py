"""The caption row of compare_transformers.py (`--caption`): vlm's BLIP captioning against
transformers' `generate`, same checkpoint, same pixels, same settings, same run.

For each shape (`base`: Salesforce/blip-image-captioning-base, ViT-B/16 at 384 px; `large`:
blip-image-captioning-large, ViT-L/16) it builds a random-weight BlipForConditionalGeneration
with the exact shapes (once, under WORK/blip-SHAPE-random), writes random preprocessed pixels
for 8 images, then times, batch by batch (`--batch-sizes`, default 1 and 8), a whole caption:
the vision transformer and generation with `max_new_tokens` (20) and `num_beams` (1), both at
the same thread count. transformers runs `model.generate(pixel_values=...)` under
torch.inference_mode; vlm runs examples/caption_bench.rs (release build). Reported: captions/s,
generated tokens/s, the ratio, and whether every generated id is identical. `--caption-dtypes
f32,int8` times vlm in each number type against the same transformers f32 figures.

The weights are scaled as the test fixtures' are (make_blip_fixtures.py): with transformers'
own tiny init every logit is nearly tied and which token wins is decided by rounding, in any
two implementations; scaled, each choice stands clear and the ids can be compared.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import time
from pathlib import Path

SHAPES = {
    "base": {"vision": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)},
    "large": {"vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16)},
}
TEXT = dict(vocab_size=30524, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            max_position_embeddings=512, bos_token_id=30522, sep_token_id=102, pad_token_id=0, eos_token_id=2)
PREPROCESSOR = {
    "do_normalize": True, "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "BlipImageProcessor", "image_std": [0.26862954, 0.26130258, 0.27577711],
    "processor_class": "BlipProcessor", "resample": 3, "rescale_factor": 0.00392156862745098,
    "size": {"height": 384, "width": 384},
}
IMAGES = 8


def build(work: Path, shape: str, log) -> Path:
    """A random-weight checkpoint of `shape` and a pixels file, made once."""
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BlipConfig, BlipForConditionalGeneration

    ckpt = work / f"blip-{shape}-random"
    if (ckpt / "pixels.safetensors").is_file():
        return ckpt
    log(f"building a random BLIP-{shape} checkpoint in {ckpt}")
    ckpt.mkdir(parents=True, exist_ok=True)
    vision = dict(SHAPES[shape]["vision"], image_size=384, patch_size=16)
    config = {"architectures": ["BlipForConditionalGeneration"], "model_type": "blip",
              "text_config": dict(TEXT, encoder_hidden_size=vision["hidden_size"]), "vision_config": vision}
    model = BlipForConditionalGeneration(BlipConfig(text_config=config["text_config"], vision_config=vision)).eval()
    g = torch.Generator().manual_seed(22)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if ("LayerNorm" in name or "layer_norm" in name or "layernorm" in name) and p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
            elif "embedding" in name and p.ndim == 4:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            elif "word_embeddings" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.35)
            elif "embedding" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 if name.endswith("predictions.bias") else 0.05))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if ".cls.predictions.decoder." not in k}
    save_file(state, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    (ckpt / "config.json").write_text(json.dumps(config, indent=2))
    (ckpt / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2))
    # A WordPiece vocabulary of the released size (its tokens are placeholders: only ids are compared).
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}
    while len(vocab) < 30522:
        vocab[f"w{len(vocab)}"] = len(vocab)
    vocab["[DEC]"], vocab["[ENC]"] = 30522, 30523
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS]:0 $A:0 [SEP]:0",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"])
    tok.save(str(ckpt / "tokenizer.json"))
    pixels = torch.rand((IMAGES, 3, 384, 384), generator=g) * 4.0 - 2.0
    save_file({"pixel_values": pixels.contiguous()}, str(ckpt / "pixels.safetensors"))
    return ckpt


def measure_transformers(ckpt: Path, batches: list[int], new_tokens: int, beams: int, min_seconds: float,
                         threads: int) -> list[dict]:
    import torch
    from safetensors.torch import load_file
    from transformers import BlipForConditionalGeneration

    torch.set_num_threads(threads)
    model = BlipForConditionalGeneration.from_pretrained(ckpt).eval()
    pixels = load_file(str(ckpt / "pixels.safetensors"))["pixel_values"]
    rows = []
    for batch in batches:
        px = pixels[:batch]

        def run():
            with torch.inference_mode():
                return model.generate(pixel_values=px, max_new_tokens=new_tokens, num_beams=beams)

        first = run()
        times, clock = [], time.perf_counter()
        while len(times) < 2 or time.perf_counter() - clock < min_seconds:
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        seconds = statistics.median(times)
        sequences = [trim(s.tolist(), TEXT["sep_token_id"]) for s in first]
        tokens = sum(len(s) - 1 for s in sequences)
        rows.append({"batch": batch, "seconds_per_batch": seconds, "captions_per_s": batch / seconds,
                     "tokens_per_s": tokens / seconds, "runs": len(times), "sequences": sequences})
    return rows


def trim(seq: list[int], eos: int) -> list[int]:
    for i in range(1, len(seq)):
        if seq[i] == eos:
            return seq[: i + 1]
    return seq


def measure_vlm(bench: Path, ckpt: Path, batches: list[int], new_tokens: int, beams: int, min_seconds: float,
                env: dict, dtype: str = "f32") -> dict:
    out = subprocess.run([str(bench), str(ckpt), str(ckpt / "pixels.safetensors"), "--batch-sizes",
                          ",".join(map(str, batches)), "--max-new-tokens", str(new_tokens), "--beams", str(beams),
                          "--min-seconds", str(min_seconds), "--dtype", dtype],
                         env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def caption_rows(args, work: Path, env: dict, log) -> dict:
    """Runs the caption comparison for every shape in `args.caption_shapes`; returns the figures."""
    bench = args.caption_bench or (Path(os.environ.get("CARGO_TARGET_DIR", "target")) / "release/examples/caption_bench")
    if not bench.is_file():
        raise SystemExit(f"{bench} is missing: cargo build --release --example caption_bench")
    batches = [int(b) for b in args.caption_batch_sizes.split(",")]
    results = {}
    for shape in args.caption_shapes.split(","):
        ckpt = build(work, shape, log)
        for beams in [int(b) for b in args.caption_beams.split(",")]:
            log(f"BLIP-{shape}, {beams} beam(s): transformers")
            hf = measure_transformers(ckpt, batches, args.caption_new_tokens, beams, args.min_seconds, args.threads)
            for dtype in args.caption_dtypes.split(","):
                log(f"BLIP-{shape}, {beams} beam(s): vlm {dtype}")
                ours = measure_vlm(bench, ckpt, batches, args.caption_new_tokens, beams, args.min_seconds, env,
                                   dtype)
                for h, v in zip(hf, ours["rows"]):
                    v["identical"] = h["sequences"] == v["sequences"]
                    v["same_sequences"] = sum(a == b for a, b in zip(h["sequences"], v["sequences"]))
                    v["speedup"] = h["seconds_per_batch"] / v["seconds_per_batch"]
                results[f"{shape}/beams{beams}/{dtype}"] = {"transformers": hf, "vlm": ours}
    return results


def caption_table(results: dict) -> str:
    lines = ["| BLIP | beams | batch | transformers f32 captions/s | tokens/s | vlm dtype | vlm captions/s | tokens/s "
             "| vlm / transformers | identical ids |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        shape, beams, dtype = key.split("/")
        for h, v in zip(r["transformers"], r["vlm"]["rows"]):
            same = "yes" if v["identical"] else f"NO ({v['same_sequences']} of {len(h['sequences'])})"
            lines.append(f"| {shape} | {beams.removeprefix('beams')} | {h['batch']} | {h['captions_per_s']:.3f} | "
                         f"{h['tokens_per_s']:.2f} | {dtype} | {v['captions_per_s']:.3f} | {v['tokens_per_s']:.2f} | "
                         f"{v['speedup']:.2f}x | {same} |")
    return "\n".join(lines)
