#!/usr/bin/env python3
"""Compare `vlm` with Hugging Face transformers and ONNX Runtime on CLIP ViT-B/32 or L/14, CPU,
f32, bf16 and int8.

Optional and by hand only: never run by `cargo test` or CI. Needs the Python packages of
examples/compare_requirements.txt (onnxruntime, onnx and onnxscript only for the ONNX Runtime
rows, which are left out with a note when missing) and a release build of vlm; no network:
the checkpoints are random weights built locally. `examples/bench_all.sh VLM WORKDIR` runs it
for both shapes as the benchmark is meant to be read.

    cargo build --release
    python -m venv /tmp/cmp-venv && /tmp/cmp-venv/bin/pip install \\
        --extra-index-url https://download.pytorch.org/whl/cpu -r examples/compare_requirements.txt
    /tmp/cmp-venv/bin/python examples/compare_transformers.py            # B/32, defaults below
    /tmp/cmp-venv/bin/python examples/compare_transformers.py --shape l14 --batch-sizes 1,8 --skip-e2e
    /tmp/cmp-venv/bin/python examples/compare_transformers.py --images 4 --rounds 1 \\
        --min-seconds 0.5 --cold-runs 2 --text-prompts 128              # quick smoke run

Everything is made once in a work directory (default $TMPDIR/vlm-compare, `--work DIR`; never
inside the repository) and reused by later runs:

- a random-weight checkpoint with the exact shapes of openai/clip-vit-base-patch32 (`--shape
  b32`, 605 MB of safetensors) or openai/clip-vit-large-patch14 (`--shape l14`: 24 layers of
  width 1024, patch 14, 224 px; text width 768; 1.7 GB), CLIPModel built from CLIPConfig with
  seeded weights, the real CLIP tokenizer copied from the test fixtures and a 224-pixel
  preprocessor_config.json;
- `--images N` (64) camera-size 3000x2000 JPEGs (quality 90, smooth colour fields, shapes,
  texture and sensor noise, so each is about 1.7 MB as a photo would be) and one more for the
  cold start;
- the vision tower exported to ONNX (pixel_values -> image_embeds, dynamic batch) with both
  exporters: TorchScript (opset 17, dynamo=False, what optimum and most users' exports use) and
  dynamo; each also through ORT's transformer optimizer (`optimize_model(model_type="clip")`:
  attention, layer-norm and GELU fusions); and each of those four graphs in int8 by dynamic
  quantisation (`onnxruntime.quantization.quantize_dynamic`, QInt8 weights). After pinning, every
  graph is timed once at every batch size and the fastest f32 and int8 graphs (geometric mean over
  the batch sizes) are the ONNX Runtime rows; the tables name the export each came from and list
  what every graph reached;
- vlm's pack files (WORK/vlm-packs, through VLM_PACK_CACHE_DIR).

What it measures, with the same thread count T (`--threads`, default: all cores) for every
system (torch.set_num_threads, ORT intra_op_num_threads, RAYON_NUM_THREADS and -j for vlm),
after pinning to `--pin-cpus` when given (the setup runs unpinned):

1. GEMM rates of the tower's MLP product (B/32: 1600x768 times a 3072x768 weight; L/14:
   2056x1024 times 4096x1024): torch F.linear in f32 and in bf16 (oneDNN, on AMX tiles where
   present), sampled before every tower measurement; the best sample of each is the reference
   for the f32 and bf16 FLOP bounds, since a busy machine only ever slows it down; ONNX
   Runtime's MLAS once a round; vlm's packed kernels (`vlm bench`);
2. the image tower's images/s at each `--batch-sizes` on random pixels and the text tower's
   prompts/s over `--text-prompts` prompts "a photo of a {label}.", for: transformers f32,
   transformers under torch.autocast("cpu", dtype=torch.bfloat16), ONNX Runtime f32 and int8
   dynamic, `vlm bench` f32, `--dtype bf16` (refused, and shown n/a, on a CPU without AMX
   or AVX512-BF16) and `--dtype int8`; `--rounds R` (2) rounds, the systems' order rotated each round, median
   per system reported, with each system's share of its bound (f32 and bf16 rows of the f32
   and bf16 bounds; int8 of the f32 bound, no int8 GEMM being measured);
3. end to end, each run a fresh process timed with os.wait4 (wall time, peak RSS, CPU time):
   (i) cold start, one 3000x2000 JPEG and two labels: a Python one-shot (import torch and
   transformers, load CLIPModel + CLIPProcessor, classify, print) against
   `vlm classify one.jpg --labels dog,cat` with its pack file warm and with --no-pack-cache,
   median of `--cold-runs` (5) after one warm-up run each (so the checkpoint is in the page
   cache), and vlm's first run (the pack file deleted before it: it packs and writes it);
   (ii) the folder job over the N JPEGs: a Python loop as a transformers user writes it (PIL +
   CLIPProcessor + CLIPModel, batches of 32) against `vlm classify DIR -b 32 --format jsonl
   -o out.jsonl`, with `--jpeg-downscale` and with `--dtype bf16`; one run each per round,
   median reported.

The FLOP bound: an image costs the FLOPs computed below from the model's shapes (B/32 about
8.8 GFLOP, L/14 about 162, almost all of it matrix products), so the measured GEMM rate divided
by it is the most images/s a perfect implementation could reach on this machine. Absolute
figures on a shared machine swing by tens of percent between runs: the ratios, taken back to
back, are what to read.

Output: the tables on stdout, the same as Markdown in WORK/compare-results-SHAPE.md, and every
raw figure in WORK/compare-results-SHAPE.json (`--json-out`). The CPU's model name and its
avx512_bf16 / amx flags are printed first and saved with the figures, as is the load average:
on a machine shared with other work, 2-thread OpenMP code (torch) loses much more than its
share when the cores are oversubscribed, worst at batch 1; use more `--rounds` there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOKENIZER_SOURCE = REPO / "tests/fixtures/models/tiny-quickgelu"
SEED = 32
IMAGE_SIZE = (3000, 2000)
JPEG_QUALITY = 90
LABELS = ["dog", "cat"]
TEMPLATE = "a photo of a {}."
# The architectures measured: the exact shapes of the OpenAI checkpoints, random weights.
# `gemm` is the MLP product of the vision tower at a batch of images (tokens x hidden ->
# intermediate), the shape whose rate sets the FLOP bound.
SHAPES = {
    "b32": {
        "repo": "openai/clip-vit-base-patch32",
        "dir": "clip-b32-random",
        "config": {},
        "gemm": (1600, 768, 3072),  # 32 images x 50 tokens, hidden 768 -> MLP 3072
    },
    "l14": {
        "repo": "openai/clip-vit-large-patch14",
        "dir": "clip-l14-random",
        "config": {
            "projection_dim": 768,
            "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                            "num_hidden_layers": 12},
            "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                              "num_hidden_layers": 24, "patch_size": 14, "image_size": 224},
        },
        "gemm": (2056, 1024, 4096),  # 8 images x 257 tokens, hidden 1024 -> MLP 4096
    },
}

# openai/clip-vit-base-patch32's preprocessor_config.json
PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}

# Starts one command (spawned with vfork, so the launcher's ~10 MB is all its peak RSS
# inherits) and writes its wall time and rusage as JSON to argv[1].
LAUNCHER = r"""
import json, os, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.posix_spawnp(cmd[0], cmd, os.environ)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(out, "w") as f:
    json.dump({"wall_s": wall, "peak_rss_mib": ru.ru_maxrss / 1024, "cpu_s": ru.ru_utime + ru.ru_stime,
               "exit": os.waitstatus_to_exitcode(status)}, f)
"""

# One-shot job, as a transformers user writes it (the model card's example).
COLD_PY = r"""
import sys
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

ckpt, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
labels = sys.argv[4].split(",")
model = CLIPModel.from_pretrained(ckpt).eval()
processor = CLIPProcessor.from_pretrained(ckpt)
inputs = processor(text=[f"a photo of a {l}." for l in labels], images=Image.open(path),
                   return_tensors="pt", padding=True)
with torch.inference_mode():
    probs = model(**inputs).logits_per_image.softmax(dim=-1)[0]
for label, p in sorted(zip(labels, probs.tolist()), key=lambda x: -x[1]):
    print(f"{100 * p:8.2f}%  {label}")
"""

# Folder job, the same way, in batches.
FOLDER_PY = r"""
import json, sys
from pathlib import Path
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

ckpt, folder, out, threads, batch = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
labels = sys.argv[6].split(",")
torch.set_num_threads(threads)
model = CLIPModel.from_pretrained(ckpt).eval()
processor = CLIPProcessor.from_pretrained(ckpt)
prompts = [f"a photo of a {l}." for l in labels]
paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
with open(out, "w") as f, torch.inference_mode():
    for i in range(0, len(paths), batch):
        chunk = paths[i:i + batch]
        images = [Image.open(p).convert("RGB") for p in chunk]
        inputs = processor(text=prompts, images=images, return_tensors="pt", padding=True)
        probs = model(**inputs).logits_per_image.softmax(dim=-1)
        for p, row in zip(chunk, probs.tolist()):
            results = sorted(({"label": l, "probability": q} for l, q in zip(labels, row)), key=lambda r: -r["probability"])
            f.write(json.dumps({"path": str(p), "results": results}) + "\n")
"""


# ----------------------------------------------------------------------------------------------
# setup
# ----------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vlm-compare",
                    help="work directory for the checkpoint, images and results (default: %(default)s)")
    ap.add_argument("--vlm", type=Path, help="vlm binary (default: $CARGO_TARGET_DIR or target/, release/vlm)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every system (default: %(default)s)")
    ap.add_argument("--images", type=int, default=64, help="JPEGs in the folder job (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of tower and folder measurements (default: %(default)s)")
    ap.add_argument("--batch-sizes", default="1,8,32", help="image tower batch sizes (default: %(default)s)")
    ap.add_argument("--min-seconds", type=float, default=4.0,
                    help="least timed seconds per tower measurement, after a warm-up call (default: %(default)s)")
    ap.add_argument("--min-reps", type=int, default=2,
                    help="least timed calls per tower measurement, after the warm-up call (default: %(default)s)")
    ap.add_argument("--text-prompts", type=int, default=1000, help="prompts for the text tower (default: %(default)s)")
    ap.add_argument("--text-batch", type=int, default=64, help="transformers text batch size (default: %(default)s)")
    ap.add_argument("--folder-batch", type=int, default=32, help="batch size of the folder job (default: %(default)s)")
    ap.add_argument("--cold-runs", type=int, default=5, help="timed cold-start runs per system (default: %(default)s)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="b32",
                    help="architecture: b32 (openai/clip-vit-base-patch32) or l14 (openai/clip-vit-large-patch14), "
                         "random weights either way (default: %(default)s)")
    ap.add_argument("--pin-cpus", help="after the setup, pin this process, its threads and every system it starts "
                                       "to these CPUs, e.g. 0,1 (Linux; default: no pinning)")
    ap.add_argument("--skip-bf16", action="store_true", help="leave the bf16 rows out (vlm bf16, transformers autocast)")
    ap.add_argument("--skip-int8", action="store_true", help="leave ONNX Runtime int8 (dynamic quantisation) out")
    ap.add_argument("--skip-onnx", action="store_true", help="leave ONNX Runtime out")
    ap.add_argument("--skip-e2e", action="store_true", help="leave the end-to-end jobs out")
    ap.add_argument("--json-out", type=Path, help="raw figures (default: WORK/compare-results.json)")
    caption = ap.add_argument_group("captions", "--caption runs only the caption row (examples/compare_captions.py): "
                                    "BLIP captioning, vlm's caption_bench example against transformers' generate")
    caption.add_argument("--caption", action="store_true", help="measure captions instead of the CLIP rows")
    caption.add_argument("--caption-shapes", default="base,large", help="BLIP shapes, base and/or large (default: %(default)s)")
    caption.add_argument("--caption-beams", default="1", help="beam counts to measure, e.g. 1,3 (default: %(default)s)")
    caption.add_argument("--caption-batch-sizes", default="1,8", help="images per generate call (default: %(default)s)")
    caption.add_argument("--caption-dtypes", default="f32",
                         help="vlm number types to time against transformers f32, e.g. f32,int8 (default: %(default)s)")
    caption.add_argument("--caption-new-tokens", type=int, default=20, help="max_new_tokens (default: %(default)s)")
    caption.add_argument("--caption-bench", type=Path,
                         help="caption_bench binary (default: target/release/examples/caption_bench)")
    args = ap.parse_args()
    args.work = args.work.resolve()
    if args.work == REPO or REPO in args.work.parents:
        ap.error(f"--work {args.work} is inside the repository; use a directory outside it")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.pin_cpus = sorted({int(c) for c in args.pin_cpus.split(",")}) if args.pin_cpus else None
    if min(args.threads, args.images, args.rounds, args.cold_runs, args.min_reps) < 1:
        ap.error("--threads, --images, --rounds, --cold-runs and --min-reps must be at least 1")
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if args.caption:
        args.caption_bench = args.caption_bench or target / "release/examples/caption_bench"
        if not args.caption_bench.is_file():
            ap.error(f"no caption_bench at {args.caption_bench}: run `cargo build --release --example caption_bench`")
        args.json_out = args.json_out or args.work / "compare-results-caption.json"
        return args
    if args.vlm is None:
        args.vlm = target / "release" / "vlm"
    if not args.vlm.is_file():
        ap.error(f"no vlm binary at {args.vlm}: run `cargo build --release` or pass --vlm PATH")
    args.json_out = args.json_out or args.work / f"compare-results-{args.shape}.json"
    return args


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[var] = str(threads)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_VERBOSITY"] = "error"
    return env


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build_checkpoint(ckpt: Path, shape: str = "b32") -> None:
    """CLIPModel(CLIPConfig()) is exactly the B/32 architecture, and L/14 sets the widths, depths
    and patch of openai/clip-vit-large-patch14; the token ids are the legacy ones both ship
    (end-of-text pooled at argmax)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    files = ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"]
    if all((ckpt / f).is_file() for f in files):
        log(f"checkpoint: reusing {ckpt}")
        return
    log(f"checkpoint: building random {shape} weights in {ckpt}")
    tmp = ckpt.with_name(ckpt.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.manual_seed(SEED)
    extra = SHAPES[shape]["config"]
    config = CLIPConfig(text_config={"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
                                     **extra.get("text_config", {})},
                        vision_config=extra.get("vision_config"),
                        **{k: v for k, v in extra.items() if k not in ("text_config", "vision_config")})
    model = CLIPModel(config).eval()
    model.save_pretrained(tmp, safe_serialization=True)
    # the real CLIP vocabulary and merges; model_max_length 77 is in tokenizer_config.json
    shutil.copy(TOKENIZER_SOURCE / "tokenizer.json", tmp / "tokenizer.json")
    shutil.copy(TOKENIZER_SOURCE / "tokenizer_config.json", tmp / "tokenizer_config.json")
    (tmp / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")
    shutil.rmtree(ckpt, ignore_errors=True)
    tmp.rename(ckpt)


def photo(path: Path, seed: int) -> None:
    """A photo-like JPEG: smooth colour field, blurred shapes with edges, mid-frequency texture
    and sensor noise, which together give the file size of a camera JPEG (~1.7 MB)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    w, h = IMAGE_SIZE
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(20, 235, (6, 9, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(base)
    for _ in range(12):
        x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(h // 20, h // 4))
        draw.ellipse([x - r, y - 0.7 * r, x + r, y + 0.7 * r], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    a = np.asarray(base.filter(ImageFilter.GaussianBlur(3)), dtype=np.float32)
    texture = Image.fromarray(rng.integers(0, 255, (h // 6, w // 6), dtype=np.uint8)).resize((w, h), Image.BILINEAR)
    a += (np.asarray(texture, dtype=np.float32)[..., None] - 127.5) * 0.25
    a += rng.standard_normal((h, w, 1), dtype=np.float32) * 5.0
    tmp = path.with_suffix(".partial")
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(tmp, "JPEG", quality=JPEG_QUALITY)
    tmp.rename(path)


def make_images(work: Path, n: int) -> tuple[Path, Path]:
    folder, cold = work / f"jpeg-{n}", work / "cold" / "one.jpg"
    folder.mkdir(parents=True, exist_ok=True)
    cold.parent.mkdir(parents=True, exist_ok=True)
    wanted = [folder / f"img_{i:04d}.jpg" for i in range(n)] + [cold]
    todo = [p for p in wanted if not p.is_file()]
    if todo:
        log(f"images: writing {len(todo)} {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} JPEGs (q{JPEG_QUALITY})")
    for k, p in enumerate(todo):
        photo(p, seed=10_000 if p == cold else int(p.stem.split("_")[1]))
        if (k + 1) % 16 == 0:
            log(f"images: {k + 1}/{len(todo)}")
    sizes = [p.stat().st_size for p in wanted]
    log(f"images: {n} + 1 JPEGs, mean {statistics.mean(sizes) / 1e6:.2f} MB")
    return folder, cold


def vision_flops(vc) -> dict:
    """Multiply-adds x 2 of one image through the vision tower (layer norms, softmax and
    activations are a fraction of a percent and left out)."""
    d, m, layers = vc.hidden_size, vc.intermediate_size, vc.num_hidden_layers
    patches = (vc.image_size // vc.patch_size) ** 2
    n = patches + 1  # class token
    patch_embed = 2 * patches * (vc.num_channels * vc.patch_size**2) * d
    attn_proj = 2 * n * d * (4 * d)  # q, k, v, out
    attn_scores = 2 * (2 * n * n * d)  # q k^T and softmax(.) v over all heads
    mlp = 2 * n * (2 * d * m)
    per_layer = attn_proj + attn_scores + mlp
    projection = 2 * d * vc.projection_dim
    total = patch_embed + layers * per_layer + projection
    return {"total": total, "patch_embedding": patch_embed, "per_layer": per_layer, "layers": layers,
            "attention_projections_per_layer": attn_proj, "attention_scores_per_layer": attn_scores,
            "mlp_per_layer": mlp, "projection": projection, "tokens": n}


def make_prompts(tokenizer_json: Path, n: int) -> list[str]:
    """n distinct labels from the CLIP vocabulary (whole words, a third of them two words)."""
    vocab = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]["vocab"]
    words = sorted((i, t[:-4]) for t, i in vocab.items()
                   if t.endswith("</w>") and t[:-4].isascii() and t[:-4].isalpha() and len(t) >= 8)
    words = [w for _, w in words[300:]]  # skip the commonest tokens
    if len(words) < 2 * n:
        raise SystemExit(f"--text-prompts {n} is more than this vocabulary offers")
    labels = [f"{words[i]} {words[n + i]}" if i % 3 == 0 else words[i] for i in range(n)]
    return [TEMPLATE.format(label) for label in labels]


class _VisionTower:
    """pixel_values -> image_embeds, the module every exporter sees."""

    @staticmethod
    def of(model):
        import torch

        class VisionTower(torch.nn.Module):
            def __init__(self, clip):
                super().__init__()
                self.vision_model, self.visual_projection = clip.vision_model, clip.visual_projection

            def forward(self, pixel_values):
                return self.visual_projection(self.vision_model(pixel_values=pixel_values).pooler_output)

        return VisionTower(model).eval()


# The ways the vision tower reaches ONNX Runtime: both exporters, each as exported and after
# ORT's transformer optimizer (attention, layer-norm and GELU fusions), each in f32 and after
# int8 dynamic quantisation. The fastest graph of each kind is the one measured.
EXPORTERS = ("torchscript", "dynamo")


def export_onnx(model, path: Path, how: str, log_path: Path) -> None:
    """Vision tower to ONNX with a dynamic batch axis: `how` is "torchscript" (opset 17,
    dynamo=False: what optimum and most users' exports use) or "dynamo"."""
    import torch
    from contextlib import redirect_stderr, redirect_stdout

    tower = _VisionTower.of(model)
    example = (torch.randn(2, 3, 224, 224),)
    tmp = path.with_name(path.name + ".partial")
    with open(log_path, "a") as logf, redirect_stdout(logf), redirect_stderr(logf):
        if how == "dynamo":
            torch.onnx.export(
                tower, example, str(tmp), dynamo=True, external_data=False,
                input_names=["pixel_values"], output_names=["image_embeds"],
                dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch", min=1, max=4096)}},
            )
        else:
            torch.onnx.export(
                tower, example, str(tmp), dynamo=False, opset_version=17,
                input_names=["pixel_values"], output_names=["image_embeds"],
                dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
            )
    tmp.rename(path)


def optimize_onnx(src: Path, dst: Path, vision, log_path: Path) -> None:
    """ORT's transformer optimizer with its CLIP fusions (as `python -m
    onnxruntime.transformers.optimizer --model_type clip` does)."""
    from contextlib import redirect_stderr, redirect_stdout

    from onnxruntime.transformers.optimizer import optimize_model

    tmp = dst.with_name(dst.name + ".partial")
    with open(log_path, "a") as logf, redirect_stdout(logf), redirect_stderr(logf):
        opt = optimize_model(str(src), model_type="clip", num_heads=vision.num_attention_heads,
                             hidden_size=vision.hidden_size, opt_level=0)
        logf.write(f"{dst.name}: fused operators {opt.get_fused_operator_statistics()}\n")
        opt.save_model_to_file(str(tmp))
    tmp.rename(dst)


def quantize_onnx(src: Path, dst: Path, log_path: Path) -> None:
    """int8 dynamic quantisation (QInt8 weights per tensor, u8 activations), ORT's default."""
    from contextlib import redirect_stderr, redirect_stdout

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from onnx import TensorProto

    tmp = dst.with_name(dst.name + ".partial")
    with open(log_path, "a") as logf, redirect_stdout(logf), redirect_stderr(logf):
        # The optimizer's fused operators (com.microsoft domain) leave some tensors without an
        # inferred type; they are all f32 here, which is what the quantiser is told.
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})
    tmp.rename(dst)


def onnx_variants(model, work: Path, stem: str, skip_int8: bool, notes: dict) -> dict:
    """Every graph that could be made: {"f32": {name: path}, "int8": {name: path}}, names
    like "torchscript", "dynamo + optimizer". Made once and kept in `work`."""
    log_path = work / "onnx-export.log"
    out = {"f32": {}, "int8": {}}
    for how in EXPORTERS:
        plain = work / f"{stem}-vision-{how}.onnx"
        if not plain.is_file():
            log(f"onnx: exporting the vision tower with the {how} exporter")
            try:
                export_onnx(model, plain, how, log_path)
            except Exception as e:  # noqa: BLE001 - the other exporter may still work
                notes[f"export {how}"] = f"{type(e).__name__}: {str(e)[:300]}"
                log(f"onnx: {how} export failed: {notes[f'export {how}']}")
                continue
        out["f32"][how] = plain
        opt = work / f"{stem}-vision-{how}-opt.onnx"
        if not opt.is_file():
            try:
                optimize_onnx(plain, opt, model.config.vision_config, log_path)
            except Exception as e:  # noqa: BLE001
                notes[f"optimize {how}"] = f"{type(e).__name__}: {str(e)[:300]}"
                log(f"onnx: optimizer on the {how} export failed: {notes[f'optimize {how}']}")
        if opt.is_file():
            out["f32"][f"{how} + optimizer"] = opt
    if not skip_int8:
        for name, f32_path in out["f32"].items():
            q = f32_path.with_name(f32_path.stem + "-int8-dynamic.onnx")
            if not q.is_file():
                log(f"onnx: int8 dynamic quantisation of the {name} graph")
                try:
                    quantize_onnx(f32_path, q, log_path)
                except Exception as e:  # noqa: BLE001
                    notes[f"quantize {name}"] = f"{type(e).__name__}: {str(e)[:300]}"
                    log(f"onnx: quantising the {name} graph failed: {notes[f'quantize {name}']}")
                    continue
            out["int8"][name] = q
    return out


def pick_fastest(ort, variants: dict, args, check) -> tuple:
    """Times every graph of one kind at every batch size (one short measurement each) and
    returns (name, session, {name: {batch: images/s}}) for the fastest by the geometric mean
    over the batch sizes; `check(session, name)` logs its accuracy."""
    import numpy as np

    rng = np.random.default_rng(1)
    trial = {}
    best = None
    for name, path in variants.items():
        try:
            sess = ort.InferenceSession(str(path), ort_options(args.threads), providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001
            log(f"onnx: {name}: no session: {type(e).__name__}: {str(e)[:200]}")
            continue
        check(sess, name)
        rates = {}
        for b in args.batch_sizes:
            x = rng.standard_normal((b, 3, 224, 224), dtype=np.float32)
            rates[b] = timed(lambda: sess.run(None, {"pixel_values": x}), b, max(0.5, args.min_seconds / 2),
                             1)["per_second"]
        score = math.exp(sum(math.log(r) for r in rates.values()) / len(rates))
        trial[name] = rates
        log(f"onnx: {name:36s} " + ", ".join(f"b{b} {r:.2f}" for b, r in rates.items())
            + f" images/s (geometric mean {score:.2f})")
        if best is None or score > best[0]:
            best = (score, name, sess)
    return (best[1], best[2], trial) if best else (None, None, trial)


# ----------------------------------------------------------------------------------------------
# measuring
# ----------------------------------------------------------------------------------------------


def timed(fn, items: int, min_seconds: float, min_reps: int = 2) -> dict:
    """One warm-up call, then calls until min_seconds and min_reps are both reached."""
    fn()
    times = []
    while sum(times) < min_seconds or len(times) < min_reps:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"per_second": items * len(times) / sum(times), "best_per_second": items / min(times),
            "calls": len(times), "seconds": sum(times)}


def gemm_torch(shape, dtype=None, min_seconds: float = 1.0) -> float:
    """Best rate of x @ W^T (F.linear, the layout nn.Linear multiplies in) over min_seconds, in
    f32 or (dtype torch.bfloat16) bf16: oneDNN on AMX tiles or AVX512-BF16 where the CPU has them."""
    import torch

    m, k, n = shape
    g = torch.Generator().manual_seed(0)
    a, w = torch.randn((m, k), generator=g), torch.randn((n, k), generator=g)
    if dtype is not None:
        a, w = a.to(dtype), w.to(dtype)
    torch.nn.functional.linear(a, w)
    best, spent = math.inf, 0.0
    while spent < min_seconds:
        t0 = time.perf_counter()
        torch.nn.functional.linear(a, w)
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return 2 * m * k * n / best / 1e9


def gemm_ort(shape, threads: int, min_seconds: float = 1.0) -> float | None:
    import numpy as np
    import onnxruntime as ort
    try:
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:  # onnx is optional when the models are exported already
        return None

    m, k, n = shape
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["y"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [weight])
    # IR 10 (onnx 1.16): older ONNX Runtime builds refuse the newest IR versions onnx writes.
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    sess = ort.InferenceSession(proto.SerializeToString(), ort_options(threads), providers=["CPUExecutionProvider"])
    a = rng.standard_normal((m, k), dtype=np.float32)
    sess.run(None, {"a": a})
    best, spent = math.inf, 0.0
    while spent < min_seconds:
        t0 = time.perf_counter()
        sess.run(None, {"a": a})
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return 2 * m * k * n / best / 1e9


def ort_options(threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


def measure_transformers(model, tok, prompts, args, bf16: bool = False) -> dict:
    """f32, or with bf16: under torch.autocast("cpu", dtype=torch.bfloat16), as a transformers
    user asks for bf16 on a CPU (the linear layers in bf16 through oneDNN, norms in f32)."""
    import contextlib

    import torch

    out = {"image": {}, "text": None}
    g = torch.Generator().manual_seed(0)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        for b in args.batch_sizes:
            x = torch.randn((b, 3, 224, 224), generator=g)
            out["image"][b] = timed(lambda: model.get_image_features(pixel_values=x), b, args.min_seconds,
                                    args.min_reps)
        if prompts:
            def text_pass(ps):
                for i in range(0, len(ps), args.text_batch):
                    enc = tok(ps[i:i + args.text_batch], padding=True, truncation=True, return_tensors="pt")
                    model.get_text_features(**enc)
            text_pass(prompts[: args.text_batch])  # warm-up
            t0 = time.perf_counter()
            text_pass(prompts)
            dt = time.perf_counter() - t0
            out["text"] = {"per_second": len(prompts) / dt, "seconds": dt}
    return out


def measure_ort(sess, args) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    out = {"image": {}}
    for b in args.batch_sizes:
        x = rng.standard_normal((b, 3, 224, 224), dtype=np.float32)
        out["image"][b] = timed(lambda: sess.run(None, {"pixel_values": x}), b, args.min_seconds, args.min_reps)
    return out


def vlm_has(args, argv: list[str], needle: str | None = None) -> bool:
    r = subprocess.run([str(args.vlm), *argv, "--help"], capture_output=True, text=True)
    return r.returncode == 0 and (needle is None or needle in r.stdout)


def measure_vlm_bench(args, ckpt: Path, env: dict, dtype: str = "f32") -> dict | None:
    seconds = max(0.5, min(3.0, args.min_seconds))
    cmd = [str(args.vlm), "bench", "--model", str(ckpt), "--json", "--dtype", dtype,
           "--batch-sizes", ",".join(map(str, args.batch_sizes)), "--seconds", str(seconds),
           "--text-prompts", str(args.text_prompts), "--threads", str(args.threads)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        log(f"vlm bench --dtype {dtype} failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
        return None
    raw = None
    for line in reversed(r.stdout.strip().splitlines()):
        try:
            candidate = json.loads(line)
        except ValueError:
            continue
        if isinstance(candidate, dict):
            raw = candidate
            break
    if raw is None:
        try:
            raw = json.loads(r.stdout)
        except ValueError:
            log(f"vlm bench printed no JSON object: {r.stdout[:300]!r}")
            return None
    out = {"raw": raw, "image": {}, "text": None}
    for entry in raw.get("image") or []:
        try:
            out["image"][int(entry["batch"])] = {"per_second": float(entry["images_per_second"])}
        except (KeyError, TypeError, ValueError):
            continue
    text = raw.get("text")
    if isinstance(text, dict) and isinstance(text.get("prompts_per_second"), (int, float)):
        out["text"] = {"per_second": float(text["prompts_per_second"])}
    return out


def run_measured(cmd: list[str], env: dict, stdout: Path, stderr: Path) -> dict:
    """Wall time, peak RSS and CPU time of one child process. The child is started by a small
    launcher process: a child forked straight from this one (which holds the model) would
    report this process's RSS as its own peak, since the kernel keeps the high-water mark
    of the memory image that exec replaced. The launcher reads the child's own rusage with
    os.wait4 (RUSAGE_CHILDREN would keep the maximum over every child)."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result, open(stdout, "wb") as fo, open(stderr, "wb") as fe:
        r = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, result.name, *cmd], stdout=fo, stderr=fe, env=env)
        if r.returncode != 0:
            raise SystemExit(f"launcher failed (exit {r.returncode}) for {cmd[:3]}: see {stderr}")
        return json.load(result)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------


def cpu_info() -> dict:
    """The CPU's model name and the flags that decide which kernels run (Linux /proc/cpuinfo)."""
    info = {"model": platform.processor() or platform.machine(), "flags": {}, "cpus": os.cpu_count()}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return info
    model = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("model name")), None)
    flags = set(next((l.split(":", 1)[1].split() for l in lines if l.startswith("flags")), []))
    info["model"] = model or info["model"]
    info["flags"] = {f: f in flags for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile",
                                             "amx_bf16", "amx_int8")}
    return info


def pin(cpus: list[int]) -> list[int]:
    """Pins every thread of this process (torch's OpenMP pool included) and every process it
    starts later to `cpus`. Returns the CPUs actually pinned to."""
    allowed = sorted(os.sched_getaffinity(0))
    cpus = [c for c in cpus if c in allowed] or allowed[: len(cpus)]
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass
    return sorted(os.sched_getaffinity(0))


def features(out):
    """transformers' get_image_features returns a tensor or, in newer releases, an output
    object with the projected features in pooler_output."""
    return out if hasattr(out, "shape") else out.pooler_output


def caption_main(args, env: dict, load: tuple, started: float) -> None:
    """The caption row: BLIP captions per second, vlm against transformers (compare_captions.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import compare_captions

    args.work.mkdir(parents=True, exist_ok=True)
    cpu = cpu_info()
    log(f"CPU: {cpu['model']}, {cpu['cpus']} logical CPUs; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    results = compare_captions.caption_rows(args, args.work, env, log)
    table = compare_captions.caption_table(results)
    end_load = os.getloadavg()
    header = (f"BLIP captions, {args.threads} threads, max_new_tokens {args.caption_new_tokens}; CPU {cpu['model']}; "
              f"load average {load[0]:.2f} at the start, {end_load[0]:.2f} at the end; "
              f"{time.perf_counter() - started:.0f} s")
    print(f"\n{header}\n\n{table}\n", flush=True)
    (args.work / "compare-results-caption.md").write_text(f"{header}\n\n{table}\n")
    args.json_out.write_text(json.dumps({"cpu": cpu, "load": [load, end_load], "results": results}, indent=2))


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    load = os.getloadavg()
    env = thread_env(args.threads)
    os.environ.update({k: env[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    if args.caption:
        return caption_main(args, env, load, started)
    import torch
    import transformers
    from transformers import CLIPModel, CLIPTokenizer

    torch.set_num_threads(args.threads)
    shape = SHAPES[args.shape]
    gemm_shape = shape["gemm"]
    args.work.mkdir(parents=True, exist_ok=True)
    runs = args.work / "runs" / args.shape
    runs.mkdir(parents=True, exist_ok=True)
    ckpt = args.work / shape["dir"]
    # vlm keeps its packed weights here rather than in the user's cache
    env["VLM_PACK_CACHE_DIR"] = str(args.work / "vlm-packs")
    env.pop("VLM_NO_PACK_CACHE", None)
    cpu = cpu_info()
    log(f"CPU: {cpu['model']}, {cpu['cpus']} logical CPUs; flags: "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu["flags"].items()))

    # --- setup -------------------------------------------------------------------------------
    build_checkpoint(ckpt, args.shape)
    folder, cold = make_images(args.work, args.images)
    t0 = time.perf_counter()
    model = CLIPModel.from_pretrained(ckpt, dtype=torch.float32).eval()
    tf_load = time.perf_counter() - t0
    tok = CLIPTokenizer.from_pretrained(ckpt)
    assert tok.model_max_length == 77, tok.model_max_length
    flops = vision_flops(model.config.vision_config)
    log(f"{args.shape} ({shape['repo']} shapes) vision tower: {flops['total'] / 1e9:.3f} GFLOP per image "
        f"({flops['tokens']} tokens, {flops['layers']} layers x {flops['per_layer'] / 1e9:.3f} + patch embedding "
        f"{flops['patch_embedding'] / 1e9:.3f}); attention implementation {model.config._attn_implementation}")
    prompts = make_prompts(ckpt / "tokenizer.json", args.text_prompts) if args.text_prompts else []
    if prompts:
        lengths = [len(ids) for ids in tok(prompts)["input_ids"]]
        log(f"text: {len(prompts)} prompts, e.g. {prompts[0]!r}, {prompts[1]!r}; "
            f"{statistics.mean(lengths):.1f} tokens on average, at most {max(lengths)}")

    has_bench = vlm_has(args, ["bench"])
    has_downscale = vlm_has(args, ["classify"], "--jpeg-downscale")
    has_pack = vlm_has(args, ["classify"], "--no-pack-cache")
    if not has_bench:
        print("vlm bench not available", flush=True)

    # vlm loads the checkpoint and agrees with transformers on it (this also warms the page
    # cache and writes vlm's pack file)
    check = run_measured([str(args.vlm), "classify", str(cold), "--labels", ",".join(LABELS), "--model", str(ckpt),
                          "--format", "json", "-j", str(args.threads)], env, runs / "check.out", runs / "check.err")
    if check["exit"] != 0:
        raise SystemExit(f"vlm could not classify with {ckpt}:\n{(runs / 'check.err').read_text()}")
    vlm_sims = {r["label"]: r["similarity"] for r in json.loads((runs / "check.out").read_text())[0]["results"]}
    from PIL import Image
    from transformers import CLIPProcessor

    proc = CLIPProcessor.from_pretrained(ckpt)
    with torch.inference_mode():
        inputs = proc(text=[TEMPLATE.format(l) for l in LABELS], images=Image.open(cold), return_tensors="pt", padding=True)
        out = model(**inputs)
        tf_sims = (out.image_embeds @ out.text_embeds.T)[0].tolist()
    sim_diff = max(abs(vlm_sims[l] - s) for l, s in zip(LABELS, tf_sims))
    log(f"check: vlm loads the checkpoint; cosine similarities vlm {[round(vlm_sims[l], 5) for l in LABELS]} "
        f"vs transformers {[round(s, 5) for s in tf_sims]} (max diff {sim_diff:.1e})")

    sessions = {}
    export_how = {}
    onnx_notes = {}
    ort_selection = {}
    ort = None
    variants = {"f32": {}, "int8": {}}
    if not args.skip_onnx:
        try:
            import onnxruntime as ort
        except ImportError as e:
            onnx_notes["ort"] = f"onnxruntime not importable: {e}"
            log(f"onnx: {onnx_notes['ort']}; ONNX Runtime rows left out")
        if ort is not None:
            variants = onnx_variants(model, args.work, shape["dir"], args.skip_int8, onnx_notes)
            if not variants["f32"]:
                onnx_notes["ort"] = "no exporter produced a graph (see onnx-export.log)"

    # bf16 in vlm needs AMX or AVX512-BF16; a refused run is reported as such
    # bf16 in vlm needs AMX or AVX512-BF16; a refused run is reported as such
    vlm_dtypes = ["f32"] + ([] if args.skip_bf16 else ["bf16"])
    if has_bench and not args.skip_int8 and vlm_has(args, ["bench"], "int8"):
        vlm_dtypes.append("int8")
    if not has_bench:
        vlm_dtypes = []

    if args.pin_cpus:
        pinned = pin(args.pin_cpus)
        log(f"pinned to CPUs {pinned} (this process, its threads and every system it starts)")
    else:
        pinned = None

    # ONNX Runtime at its best: every export measured briefly (pinned like the rounds), the
    # fastest f32 and int8 graphs kept for the rows
    if ort is not None:
        x3 = torch.randn(3, 3, 224, 224)
        with torch.inference_mode():
            ref3 = features(model.get_image_features(pixel_values=x3)).numpy()

        def check(sess, name):
            got = sess.run(None, {"pixel_values": x3.numpy()})[0]
            cos = (got * ref3).sum(-1) / (((got ** 2).sum(-1) ** 0.5) * ((ref3 ** 2).sum(-1) ** 0.5))
            log(f"onnx: {name}: max |ORT - torch| on a batch of 3 {abs(got - ref3).max():.1e}, cosine >= {cos.min():.5f}")

        for kind, key in (("f32", "ort"), ("int8", "ort_int8")):
            if not variants[kind]:
                continue
            log(f"onnx: choosing the fastest {kind} graph of {len(variants[kind])}")
            name, sess, trial = pick_fastest(ort, variants[kind], args, check)
            ort_selection[kind] = {"chosen": name, "images_per_second": trial}
            if sess is not None:
                sessions[key] = sess
                export_how[key] = name
                log(f"onnx: {kind} rows from the {name} graph")

    # --- towers, in rounds ---------------------------------------------------------------------
    systems = (["transformers"] + ([] if args.skip_bf16 else ["transformers_bf16"]) + list(sessions)
               + [("vlm" if d == "f32" else f"vlm_{d}") for d in vlm_dtypes])
    tower = {s: [] for s in systems}
    failed = {}
    gemm = {"torch": [], "torch_bf16": [], "ort": []}
    for r in range(args.rounds):
        if "ort" in sessions:
            rate = gemm_ort(gemm_shape, args.threads)
            if rate is not None:
                gemm["ort"].append(rate)
                log(f"round {r + 1}/{args.rounds}: GEMM {'x'.join(map(str, gemm_shape))} ORT {rate:.1f} GFLOP/s")
        order = systems[r % len(systems):] + systems[: r % len(systems)]
        for s in order:
            if s in failed:
                continue
            # sampled before every system: the bound uses the best rate seen in the run
            gemm["torch"].append(gemm_torch(gemm_shape))
            if not args.skip_bf16:
                gemm["torch_bf16"].append(gemm_torch(gemm_shape, torch.bfloat16))
            if s in ("transformers", "transformers_bf16"):
                res = measure_transformers(model, tok, prompts, args, bf16=s.endswith("bf16"))
            elif s in sessions:
                res = measure_ort(sessions[s], args)
            else:
                res = measure_vlm_bench(args, ckpt, env, s.removeprefix("vlm_") if s != "vlm" else "f32")
            if res is None:
                failed[s] = "failed; see the log above"
                continue
            tower[s].append(res)
            imgs = ", ".join(f"b{b} {v['per_second']:.2f}" for b, v in sorted(res["image"].items()))
            text = f"; text {res['text']['per_second']:.1f} prompts/s" if res.get("text") else ""
            log(f"round {r + 1}: {s:17s} images/s {imgs}{text} (torch GEMM just before: f32 {gemm['torch'][-1]:.1f}"
                + (f", bf16 {gemm['torch_bf16'][-1]:.1f}" if gemm["torch_bf16"] else "")
                + f" GFLOP/s; load average {os.getloadavg()[0]:.1f})")
            time.sleep(0.5)  # let the previous system's worker threads go idle

    # --- end to end ----------------------------------------------------------------------------
    e2e = {}
    if not args.skip_e2e:
        labels = ",".join(LABELS)
        py = sys.executable
        vlm_cold = [str(args.vlm), "classify", str(cold), "--labels", labels, "--model", str(ckpt),
                    "-j", str(args.threads)]
        jobs_cold = {"python": [py, "-c", COLD_PY, str(ckpt), str(cold), str(args.threads), labels], "vlm": vlm_cold}
        if has_pack:
            jobs_cold["vlm_no_pack_cache"] = [*vlm_cold, "--no-pack-cache"]
        cold_runs = {k: [] for k in jobs_cold}
        for k, cmd in jobs_cold.items():  # warm-up: page cache, Python bytecode caches, vlm's pack
            run_measured(cmd, env, runs / f"cold-{k}.out", runs / f"cold-{k}.err")
        for i in range(args.cold_runs):
            for k, cmd in jobs_cold.items():
                res = run_measured(cmd, env, runs / f"cold-{k}.out", runs / f"cold-{k}.err")
                if res["exit"] != 0:
                    raise SystemExit(f"cold start {k} failed: {(runs / f'cold-{k}.err').read_text()[-2000:]}")
                cold_runs[k].append(res)
            log(f"cold start {i + 1}/{args.cold_runs}: " + ", ".join(
                f"{k} {v[-1]['wall_s']:.2f} s {v[-1]['peak_rss_mib']:.0f} MiB" for k, v in cold_runs.items()))
        if has_pack:
            # the first run after a new checkpoint or vlm build: packs and writes the pack file
            packs = args.work / "vlm-packs"
            first = []
            for _ in range(args.cold_runs):  # the median of --cold-runs, as for the others
                shutil.rmtree(packs, ignore_errors=True)
                first.append(run_measured(vlm_cold, env, runs / "cold-first.out", runs / "cold-first.err"))
                # vlm exits before its pack file is synced (a detached process finishes it):
                # the next run starts once that is done, as every other run starts on an idle
                # machine, not beside a 600 MB write.
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and (
                        not any(packs.glob("*.vlmpack")) or any(packs.glob("*.sync"))):
                    time.sleep(0.05)
            cold_runs["vlm_first_run"] = first
            log("cold start, vlm first run (pack written): " + ", ".join(
                f"{r['wall_s']:.2f} s {r['peak_rss_mib']:.0f} MiB" for r in first))
            # the folder jobs below run with warm pack files, f32 and bf16 alike
            if tower.get("vlm_bf16"):
                run_measured([*vlm_cold, "--dtype", "bf16"], env, runs / "cold-first.out", runs / "cold-first.err")
        e2e["cold"] = cold_runs

        jobs_folder = {
            "python": [py, "-c", FOLDER_PY, str(ckpt), str(folder), str(runs / "folder-python.jsonl"),
                       str(args.threads), str(args.folder_batch), labels],
            "vlm": [str(args.vlm), "classify", str(folder), "--labels", labels, "--model", str(ckpt),
                    "-b", str(args.folder_batch), "-j", str(args.threads), "--format", "jsonl",
                    "-o", str(runs / "folder-vlm.jsonl")],
        }
        if has_downscale:
            jobs_folder["vlm_downscale"] = [*jobs_folder["vlm"][:-1], str(runs / "folder-vlm_downscale.jsonl"),
                                            "--jpeg-downscale"]
        if "vlm_bf16" in tower and tower["vlm_bf16"]:
            jobs_folder["vlm_bf16"] = [*jobs_folder["vlm"][:-1], str(runs / "folder-vlm_bf16.jsonl"),
                                       "--dtype", "bf16"]
        folder_runs = {k: [] for k in jobs_folder}
        for r in range(args.rounds):
            order = list(jobs_folder)
            order = order[r % len(order):] + order[: r % len(order)]
            for k in order:
                out_file = runs / f"folder-{k}.jsonl"
                out_file.unlink(missing_ok=True)
                res = run_measured(jobs_folder[k], env, runs / f"folder-{k}.out", runs / f"folder-{k}.err")
                lines = out_file.read_text().splitlines() if out_file.is_file() else []
                ok = sum(1 for line in lines if "error" not in json.loads(line))
                if res["exit"] != 0 or ok != args.images:
                    raise SystemExit(f"folder job {k}: exit {res['exit']}, {ok}/{args.images} labelled: "
                                     f"{(runs / f'folder-{k}.err').read_text()[-2000:]}")
                res["images_per_second"] = args.images / res["wall_s"]
                folder_runs[k].append(res)
                log(f"folder round {r + 1}: {k:13s} {res['wall_s']:.2f} s ({res['images_per_second']:.2f} images/s), "
                    f"peak RSS {res['peak_rss_mib']:.0f} MiB, CPU {res['cpu_s']:.1f} s")
        e2e["folder"] = folder_runs

    # --- summary -------------------------------------------------------------------------------
    if not gemm["torch"]:
        gemm["torch"].append(gemm_torch(gemm_shape))
    # the busy machine only ever slows the GEMM down: the best sample is the reference
    gemm_ref = max(gemm["torch"])
    gemm_ref_bf16 = max(gemm["torch_bf16"]) if gemm["torch_bf16"] else None
    bounds = {"f32": gemm_ref * 1e9 / flops["total"],
              "bf16": gemm_ref_bf16 * 1e9 / flops["total"] if gemm_ref_bf16 else None}
    names = {"transformers": ("transformers", "f32"), "transformers_bf16": ("transformers, bf16 autocast", "bf16"),
             "ort": (f"ONNX Runtime ({export_how.get('ort')} export)", "f32"),
             "ort_int8": (f"ONNX Runtime, int8 dynamic ({export_how.get('ort_int8')} export)", "int8"),
             "vlm": ("vlm", "f32"), "vlm_bf16": ("vlm --dtype bf16", "bf16"), "vlm_int8": ("vlm --dtype int8", "int8")}
    vlm_raw = {s: tower[s][-1]["raw"] for s in ("vlm", "vlm_bf16", "vlm_int8") if tower.get(s)}

    def raw_median(system, key):
        return median([t["raw"].get(key) for t in tower.get(system, [])
                       if isinstance(t["raw"].get(key), (int, float))])

    def tower_median(system, batch=None):
        rows = tower.get(system) or []
        if batch is None:
            return median([row["text"]["per_second"] for row in rows if row.get("text")])
        return median([row["image"][batch]["per_second"] for row in rows if batch in row["image"]])

    def e2e_median(kind, system, field):
        return median([run[field] for run in e2e.get(kind, {}).get(system, [])])

    def cell(v, fmt):
        return "n/a" if v is None else fmt.format(v)

    def ratio(a, b):
        return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}"

    # towers: one row per system, images/s per batch, prompts/s, share of its bound
    bound_of = {"f32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: no int8 GEMM measured; share of f32's
    tower_header = (["system", "dtype"] + [f"batch {b}, images/s" for b in args.batch_sizes]
                    + ([f"text, {len(prompts)} prompts/s"] if prompts else [])
                    + [f"batch {b}, share of bound" for b in args.batch_sizes])
    tower_rows = []
    for s in systems:
        name, dtype = names[s]
        bound = bounds[bound_of[dtype]]
        rates = [tower_median(s, b) for b in args.batch_sizes]
        row = [name if s not in failed else f"{name} ({failed[s]})", dtype] + [cell(v, "{:.2f}") for v in rates]
        if prompts:
            row.append(cell(tower_median(s), "{:.1f}"))
        row += ["n/a" if v is None or not bound else f"{100 * v / bound:.0f}%" + (" of f32" if dtype == "int8" else "")
                for v in rates]
        tower_rows.append(row)

    gemm_header = ["GEMM " + "x".join(map(str, gemm_shape)) + ", GFLOP/s", "f32", "bf16"]
    gemm_rows = [
        ["torch (F.linear; best sample = the bound)", cell(gemm_ref, "{:.1f}"), cell(gemm_ref_bf16, "{:.1f}")],
        ["torch, median of samples", cell(median(gemm["torch"]), "{:.1f}"), cell(median(gemm["torch_bf16"]), "{:.1f}")],
        ["ONNX Runtime MLAS (MatMul)", cell(median(gemm["ort"]), "{:.1f}"), "n/a"],
        ["vlm packed kernels (vlm bench, B/32 MLP shape)", cell(raw_median("vlm", "kernel_f32_gflops"), "{:.1f}"),
         cell(raw_median("vlm", "kernel_bf16_gflops"), "{:.1f}")],
        [f"vlm int8 kernel ({(vlm_raw.get('vlm') or {}).get('kernel_int8')}), GOP/s",
         cell(raw_median("vlm", "kernel_int8_gops"), "{:.1f}"), ""],
    ]

    # the targets, as ratios measured back to back
    target_rows = []
    for b in args.batch_sizes:
        tf, ort_, int8 = tower_median("transformers", b), tower_median("ort", b), tower_median("ort_int8", b)
        v, vb, vi = tower_median("vlm", b), tower_median("vlm_bf16", b), tower_median("vlm_int8", b)
        target_rows.append([f"batch {b}", ratio(v, tf), ratio(v, ort_), ratio(vb, tf), ratio(vb, int8), ratio(vb, v),
                            ratio(vi, int8), ratio(vi, v), ratio(vi, vb)])
    if prompts:
        v, vb, vi = tower_median("vlm"), tower_median("vlm_bf16"), tower_median("vlm_int8")
        target_rows.append(["text", ratio(v, tower_median("transformers")), "n/a",
                            ratio(vb, tower_median("transformers")), "n/a", ratio(vb, v), "n/a", ratio(vi, v),
                            ratio(vi, vb)])
    target_header = ["", "vlm f32 / transformers f32", "vlm f32 / ORT f32", "vlm bf16 / transformers f32",
                     "vlm bf16 / ORT int8", "vlm bf16 / vlm f32", "vlm int8 / ORT int8", "vlm int8 / vlm f32",
                     "vlm int8 / vlm bf16"]

    e2e_header = ["metric", "transformers", "vlm", "vlm / transformers"]
    e2e_rows = [["model load in the bench process, s", cell(tf_load, "{:.2f}"),
                 cell(raw_median("vlm", "load_seconds"), "{:.2f}"), ratio(raw_median("vlm", "load_seconds"), tf_load)]]
    if e2e:
        for k, name in (("vlm", "vlm (pack cache warm)"), ("vlm_no_pack_cache", "vlm --no-pack-cache"),
                        ("vlm_first_run", "vlm first run (packs, writes the pack)")):
            if not e2e["cold"].get(k):
                continue
            t, v = e2e_median("cold", "python", "wall_s"), e2e_median("cold", k, "wall_s")
            e2e_rows.append([f"cold start, 1 JPEG + 2 labels, wall s: {name}", cell(t, "{:.2f}"), cell(v, "{:.2f}"),
                             ratio(v, t)])
            t, v = e2e_median("cold", "python", "peak_rss_mib"), e2e_median("cold", k, "peak_rss_mib")
            e2e_rows.append([f"cold start, peak RSS MiB: {name}", cell(t, "{:.0f}"), cell(v, "{:.0f}"), ratio(v, t)])
        for k, name in (("vlm", "vlm"), ("vlm_downscale", "vlm --jpeg-downscale"), ("vlm_bf16", "vlm --dtype bf16")):
            if k not in e2e["folder"]:
                continue
            t, v = e2e_median("folder", "python", "images_per_second"), e2e_median("folder", k, "images_per_second")
            e2e_rows.append([f"{args.images} JPEGs 3000x2000, images/s: {name}", cell(t, "{:.2f}"), cell(v, "{:.2f}"),
                             ratio(v, t)])
            t, v = e2e_median("folder", "python", "peak_rss_mib"), e2e_median("folder", k, "peak_rss_mib")
            e2e_rows.append([f"{args.images} JPEGs, peak RSS MiB: {name}", cell(t, "{:.0f}"), cell(v, "{:.0f}"),
                             ratio(v, t)])

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__, "vlm": next(iter(vlm_raw.values()), {}).get("version")}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    elapsed = time.perf_counter() - started

    def text_table(hdr, body):
        widths = [max(len(r[i]) for r in [hdr, *body]) for i in range(len(hdr))]
        fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        return "\n".join([fmt(hdr), "  ".join("-" * w for w in widths), *map(fmt, body)])

    def md_table(hdr, body):
        return "\n".join(["| " + " | ".join(hdr) + " |", "|" + " --- |" * len(hdr),
                          *("| " + " | ".join(r) + " |" for r in body)])

    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu["flags"].items())
    pin_note = f"pinned to CPUs {pinned}" if pinned else "not pinned"
    heading = (f"{time.strftime('%Y-%m-%d')}, {args.shape} ({shape['repo']} shapes, random weights), CPU {cpu['model']} "
               f"({flags}), {args.threads} threads, {pin_note}; " + ", ".join(f"{k} {v}" for k, v in versions.items() if v)
               + f"; medians of {args.rounds} interleaved round(s); load average {load[0]:.1f} at the start, "
               f"{os.getloadavg()[0]:.1f} at the end; {elapsed / 60:.1f} min.")
    selection_note = "".join(
        f"\nONNX Runtime {kind} graphs tried (images/s at batch " + "/".join(map(str, args.batch_sizes)) + "): "
        + "; ".join(f"{name} " + " / ".join(f"{r:.2f}" for r in rates.values())
                    for name, rates in sel["images_per_second"].items())
        + f"; kept: {sel['chosen']}." for kind, sel in ort_selection.items())
    bound_note = selection_note.lstrip("\n") + ("\n" if selection_note else "") + (
        f"Bounds: {flops['total'] / 1e9:.2f} GFLOP per image at the best torch GEMM of the run: f32 "
                  f"{gemm_ref:.1f} GFLOP/s = {bounds['f32']:.2f} images/s"
                  + (f"; bf16 {gemm_ref_bf16:.1f} GFLOP/s = {bounds['bf16']:.2f} images/s" if bounds["bf16"] else "")
                  + ". int8 rows are shown against the f32 bound (no int8 GEMM is measured).")
    notes = "".join(f"\n- {k}: {v}" for k, v in {**onnx_notes, **failed}.items())
    sections = [("image and text towers", tower_header, tower_rows), ("GEMM rates", gemm_header, gemm_rows),
                ("ratios (the issue's targets)", target_header, target_rows), ("end to end", e2e_header, e2e_rows)]
    print()
    print(heading)
    for title, hdr, body in sections:
        print(f"\n{title}:\n")
        print(text_table(hdr, body))
    print(f"\n{bound_note}{notes}")
    markdown = "\n\n".join([heading] + [md_table(h, b) for _, h, b in sections] + [bound_note + notes]) + "\n"
    md_out = args.json_out.with_suffix(".md")
    md_out.write_text(markdown)
    print(f"\n--- Markdown for BENCHMARKS.md (also in {md_out}) ---\n")
    print(markdown)

    results = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "shape": args.shape, "cpu": cpu, "threads": args.threads,
        "pinned_cpus": pinned, "versions": versions,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "checkpoint": str(ckpt), "vision_flops": flops, "gemm_shape": gemm_shape, "gemm_gflops": gemm,
        "flop_bound_images_per_second": bounds, "transformers_load_seconds": tf_load,
        "similarity_check": {"vlm": vlm_sims, "transformers": dict(zip(LABELS, tf_sims)), "max_diff": sim_diff},
        "onnx_exporter": export_how, "onnx_selection": ort_selection, "onnx_notes": onnx_notes, "failed": failed, "vlm_bench_available": has_bench,
        "towers": tower, "e2e": e2e,
        "tables": {title: {"header": h, "rows": b} for title, h, b in sections},
        "elapsed_seconds": elapsed, "load_average_start": load, "load_average_end": os.getloadavg(),
    }
    args.json_out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"\nraw figures: {args.json_out}")


if __name__ == "__main__":
    main()
