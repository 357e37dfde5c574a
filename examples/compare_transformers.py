#!/usr/bin/env python3
"""Compare `vlm` with Hugging Face transformers and ONNX Runtime on CLIP ViT-B/32, CPU, f32.

Optional and by hand only: never run by `cargo test` or CI. Needs the pinned Python packages
of examples/compare_requirements.txt and a release build of vlm:

    cargo build --release
    python -m venv /tmp/cmp-venv && /tmp/cmp-venv/bin/pip install \\
        --extra-index-url https://download.pytorch.org/whl/cpu -r examples/compare_requirements.txt
    /tmp/cmp-venv/bin/python examples/compare_transformers.py            # defaults below
    /tmp/cmp-venv/bin/python examples/compare_transformers.py --images 4 --rounds 1 \\
        --min-seconds 0.5 --cold-runs 2 --text-prompts 128              # quick smoke run

Everything is made once in a work directory (default $TMPDIR/vlm-compare, `--work DIR`; never
inside the repository) and reused by later runs:

- a random-weight checkpoint with the exact openai/clip-vit-base-patch32 shapes (CLIPModel
  built from CLIPConfig() with seeded weights, 605 MB of safetensors), the real CLIP tokenizer
  copied from the test fixtures and a 224-pixel preprocessor_config.json; no model hub needed;
- `--images N` (64) camera-size 3000x2000 JPEGs (quality 90, smooth colour fields, shapes,
  texture and sensor noise, so each is about 1.7 MB as a photo would be) and one more for the
  cold start;
- the vision tower exported to ONNX (pixel_values -> image_embeds, dynamic batch).

What it measures, with the same thread count T (`--threads`, default: all cores) for every
system (torch.set_num_threads, ORT intra_op_num_threads, RAYON_NUM_THREADS and -j for vlm):

1. the f32 GEMM rate of the batch-32 MLP product of B/32, (1600x768) times a 3072x768 weight,
   in torch (F.linear, sampled before every tower measurement; the best sample is the
   reference for the FLOP bound, since a busy machine only ever slows it down), in ONNX
   Runtime's MLAS (once a round), and vlm's own (`gemm_gflops` of `vlm bench`);
2. the image tower's images/s at batch 1, 8 and 32 on random pixels (transformers
   get_image_features, ONNX Runtime on the exported tower, `vlm bench`), and the text tower's
   prompts/s over 1,000 prompts "a photo of a {label}." (transformers: tokenizer +
   get_text_features in batches of `--text-batch`; vlm: `vlm bench --text-prompts`, which
   makes its own prompts); `--rounds R` (2) rounds, the systems' order rotated each round,
   median per system reported;
3. end to end, each run a fresh process timed with os.wait4 (wall time, peak RSS, CPU time):
   (i) cold start, one 3000x2000 JPEG and two labels: a Python one-shot (import torch and
   transformers, load CLIPModel + CLIPProcessor, classify, print) against
   `vlm classify one.jpg --labels dog,cat`, median of `--cold-runs` (5) after one warm-up run
   each (so the checkpoint is in the page cache); (ii) the folder job over the N JPEGs: a
   Python loop as a transformers user writes it (PIL + CLIPProcessor + CLIPModel, batches of
   32) against `vlm classify DIR -b 32 --format jsonl -o out.jsonl`, and the same with
   `--jpeg-downscale` when the binary has it; one run each per round, median reported.

The FLOP bound: a B/32 image costs the FLOPs computed below from the model's shapes
(about 8.8 GFLOP, almost all of it matrix products), so the measured GEMM rate divided by it
is the most images/s a perfect implementation could reach on this machine; each system's
share of that bound is printed. Absolute figures on a shared machine swing by tens of percent
between runs: the ratios, taken back to back, are what to read.

Output: a table on stdout, a ready-to-paste Markdown table for BENCHMARKS.md, and every raw
figure in a JSON file (`--json-out`, default WORK/compare-results.json).

The load average is printed and saved with the figures: on a machine shared with other work,
2-thread OpenMP code (torch) loses much more than its share when the cores are oversubscribed
(a thread waiting at a barrier for one that is descheduled), worst at batch 1; use more
`--rounds` there.

Time, on 2 cores: the first run spends about 1.5 minutes making the checkpoint, the 65 JPEGs
and the ONNX export (reused afterwards); measuring with the defaults took 6.5 minutes without
`vlm bench` and `--jpeg-downscale` (2026-11-23, a busy machine), so expect 9 to 11 with them.
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
GEMM_SHAPE = (1600, 768, 3072)  # 32 images x 50 tokens, hidden 768 -> MLP 3072

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
    ap.add_argument("--text-prompts", type=int, default=1000, help="prompts for the text tower (default: %(default)s)")
    ap.add_argument("--text-batch", type=int, default=64, help="transformers text batch size (default: %(default)s)")
    ap.add_argument("--folder-batch", type=int, default=32, help="batch size of the folder job (default: %(default)s)")
    ap.add_argument("--cold-runs", type=int, default=5, help="timed cold-start runs per system (default: %(default)s)")
    ap.add_argument("--skip-onnx", action="store_true", help="leave ONNX Runtime out")
    ap.add_argument("--skip-e2e", action="store_true", help="leave the end-to-end jobs out")
    ap.add_argument("--json-out", type=Path, help="raw figures (default: WORK/compare-results.json)")
    args = ap.parse_args()
    args.work = args.work.resolve()
    if args.work == REPO or REPO in args.work.parents:
        ap.error(f"--work {args.work} is inside the repository; use a directory outside it")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.threads < 1 or args.images < 1 or args.rounds < 1 or args.cold_runs < 1:
        ap.error("--threads, --images, --rounds and --cold-runs must be at least 1")
    if args.vlm is None:
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        args.vlm = target / "release" / "vlm"
    if not args.vlm.is_file():
        ap.error(f"no vlm binary at {args.vlm}: run `cargo build --release` or pass --vlm PATH")
    args.json_out = args.json_out or args.work / "compare-results.json"
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


def build_checkpoint(ckpt: Path) -> None:
    """CLIPModel(CLIPConfig()) is exactly the B/32 architecture; only the token ids are set to
    the legacy ones openai/clip-vit-base-patch32 ships (end-of-text pooled at argmax)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    files = ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"]
    if all((ckpt / f).is_file() for f in files):
        log(f"checkpoint: reusing {ckpt}")
        return
    log(f"checkpoint: building random B/32 weights in {ckpt}")
    tmp = ckpt.with_name(ckpt.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.manual_seed(SEED)
    config = CLIPConfig(text_config={"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1})
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


def export_onnx(model, path: Path, log_path: Path) -> str:
    """Vision tower to ONNX with a dynamic batch axis. The dynamo exporter first; the
    TorchScript one if that fails. Returns which one worked."""
    import torch

    class VisionTower(torch.nn.Module):
        def __init__(self, clip):
            super().__init__()
            self.vision_model, self.visual_projection = clip.vision_model, clip.visual_projection

        def forward(self, pixel_values):
            return self.visual_projection(self.vision_model(pixel_values=pixel_values).pooler_output)

    tower = VisionTower(model).eval()
    example = (torch.randn(2, 3, 224, 224),)
    tmp = path.with_name(path.name + ".partial")
    errors = []
    with open(log_path, "w") as logf:
        try:
            from contextlib import redirect_stderr, redirect_stdout

            with redirect_stdout(logf), redirect_stderr(logf):
                torch.onnx.export(
                    tower, example, str(tmp), dynamo=True, external_data=False,
                    input_names=["pixel_values"], output_names=["image_embeds"],
                    dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch", min=1, max=4096)}},
                )
            tmp.rename(path)
            return "dynamo"
        except Exception as e:  # noqa: BLE001 - any failure falls back to the other exporter
            errors.append(f"dynamo: {type(e).__name__}: {e}")
            print(errors[-1], file=logf)
        try:
            torch.onnx.export(
                tower, example, str(tmp), dynamo=False, opset_version=17,
                input_names=["pixel_values"], output_names=["image_embeds"],
                dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
            )
            tmp.rename(path)
            return "torchscript"
        except Exception as e:  # noqa: BLE001
            errors.append(f"torchscript: {type(e).__name__}: {e}")
    raise SystemExit("ONNX export failed:\n" + "\n".join(errors))


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


def gemm_torch(min_seconds: float = 1.0) -> float:
    """Best rate of x @ W^T (F.linear, the layout nn.Linear multiplies in) over min_seconds."""
    import torch

    m, k, n = GEMM_SHAPE
    g = torch.Generator().manual_seed(0)
    a, w = torch.randn((m, k), generator=g), torch.randn((n, k), generator=g)
    torch.nn.functional.linear(a, w)
    best, spent = math.inf, 0.0
    while spent < min_seconds:
        t0 = time.perf_counter()
        torch.nn.functional.linear(a, w)
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return 2 * m * k * n / best / 1e9


def gemm_ort(threads: int, min_seconds: float = 1.0) -> float:
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = GEMM_SHAPE
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["y"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [weight])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
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


def measure_transformers(model, tok, prompts, args) -> dict:
    import torch

    out = {"image": {}, "text": None}
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for b in args.batch_sizes:
            x = torch.randn((b, 3, 224, 224), generator=g)
            out["image"][b] = timed(lambda: model.get_image_features(pixel_values=x), b, args.min_seconds)
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
        out["image"][b] = timed(lambda: sess.run(None, {"pixel_values": x}), b, args.min_seconds)
    return out


def vlm_has(args, argv: list[str], needle: str | None = None) -> bool:
    r = subprocess.run([str(args.vlm), *argv, "--help"], capture_output=True, text=True)
    return r.returncode == 0 and (needle is None or needle in r.stdout)


def measure_vlm_bench(args, ckpt: Path, env: dict) -> dict | None:
    cmd = [str(args.vlm), "bench", "--model", str(ckpt), "--json",
           "--batch-sizes", ",".join(map(str, args.batch_sizes)),
           "--text-prompts", str(args.text_prompts), "--threads", str(args.threads)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        log(f"vlm bench failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
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


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    load = os.getloadavg()
    env = thread_env(args.threads)
    os.environ.update({k: env[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    import torch
    import transformers
    from transformers import CLIPModel, CLIPTokenizer

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    runs = args.work / "runs"
    runs.mkdir(exist_ok=True)
    ckpt = args.work / "clip-b32-random"

    # --- setup -------------------------------------------------------------------------------
    build_checkpoint(ckpt)
    folder, cold = make_images(args.work, args.images)
    t0 = time.perf_counter()
    model = CLIPModel.from_pretrained(ckpt, dtype=torch.float32).eval()
    tf_load = time.perf_counter() - t0
    tok = CLIPTokenizer.from_pretrained(ckpt)
    assert tok.model_max_length == 77, tok.model_max_length
    flops = vision_flops(model.config.vision_config)
    log(f"vision tower: {flops['total'] / 1e9:.3f} GFLOP per image ({flops['tokens']} tokens, "
        f"{flops['layers']} layers x {flops['per_layer'] / 1e9:.3f} + patch embedding "
        f"{flops['patch_embedding'] / 1e9:.3f}); attention implementation "
        f"{model.config._attn_implementation}")
    prompts = make_prompts(ckpt / "tokenizer.json", args.text_prompts) if args.text_prompts else []
    if prompts:
        lengths = [len(ids) for ids in tok(prompts)["input_ids"]]
        log(f"text: {len(prompts)} prompts, e.g. {prompts[0]!r}, {prompts[1]!r}; "
            f"{statistics.mean(lengths):.1f} tokens on average, at most {max(lengths)}")

    has_bench = vlm_has(args, ["bench"])
    has_downscale = vlm_has(args, ["classify"], "--jpeg-downscale")
    if not has_bench:
        print("vlm bench not available", flush=True)
    if not has_downscale:
        print("vlm classify --jpeg-downscale not available", flush=True)

    # vlm loads the checkpoint and agrees with transformers on it (this also warms the page cache)
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

    sess = None
    export_how = None
    if not args.skip_onnx:
        import onnxruntime as ort

        onnx_path = args.work / "clip-b32-random-vision.onnx"
        if not onnx_path.is_file():
            log("onnx: exporting the vision tower")
            export_how = export_onnx(model, onnx_path, args.work / "onnx-export.log")
            log(f"onnx: exported with the {export_how} exporter, {onnx_path.stat().st_size / 1e6:.0f} MB")
        t0 = time.perf_counter()
        sess = ort.InferenceSession(str(onnx_path), ort_options(args.threads), providers=["CPUExecutionProvider"])
        ort_load = time.perf_counter() - t0
        x = torch.randn(3, 3, 224, 224)
        with torch.inference_mode():
            ref = model.get_image_features(pixel_values=x).pooler_output
        got = sess.run(None, {"pixel_values": x.numpy()})[0]
        log(f"onnx: session ready in {ort_load:.2f} s; max |ORT - torch| on a batch of 3: "
            f"{abs(got - ref.numpy()).max():.1e}")

    # --- towers, in rounds ---------------------------------------------------------------------
    systems = ["transformers"] + (["ort"] if sess else []) + (["vlm"] if has_bench else [])
    tower = {s: [] for s in systems}
    gemm = {"torch": [], "ort": []}
    for r in range(args.rounds):
        if sess:
            gemm["ort"].append(gemm_ort(args.threads))
            log(f"round {r + 1}/{args.rounds}: GEMM {GEMM_SHAPE[0]}x{GEMM_SHAPE[1]}x{GEMM_SHAPE[2]} "
                f"ORT {gemm['ort'][-1]:.1f} GFLOP/s")
        order = systems[r % len(systems):] + systems[: r % len(systems)]
        for s in order:
            # sampled before every system: the bound uses the best rate seen in the run
            gemm["torch"].append(gemm_torch())
            if s == "transformers":
                res = measure_transformers(model, tok, prompts, args)
            elif s == "ort":
                res = measure_ort(sess, args)
            else:
                res = measure_vlm_bench(args, ckpt, env)
            if res is None:
                continue
            tower[s].append(res)
            imgs = ", ".join(f"b{b} {v['per_second']:.2f}" for b, v in sorted(res["image"].items()))
            text = f"; text {res['text']['per_second']:.1f} prompts/s" if res.get("text") else ""
            log(f"round {r + 1}: {s:12s} images/s {imgs}{text} (torch GEMM just before: {gemm['torch'][-1]:.1f} "
                f"GFLOP/s; load average {os.getloadavg()[0]:.1f})")
            time.sleep(0.5)  # let the previous system's worker threads go idle

    # --- end to end ----------------------------------------------------------------------------
    e2e = {}
    if not args.skip_e2e:
        labels = ",".join(LABELS)
        py = sys.executable
        jobs_cold = {
            "python": [py, "-c", COLD_PY, str(ckpt), str(cold), str(args.threads), labels],
            "vlm": [str(args.vlm), "classify", str(cold), "--labels", labels, "--model", str(ckpt),
                    "-j", str(args.threads)],
        }
        cold_runs = {k: [] for k in jobs_cold}
        for k, cmd in jobs_cold.items():  # warm-up: page cache, Python bytecode caches
            run_measured(cmd, env, runs / f"cold-{k}.out", runs / f"cold-{k}.err")
        for i in range(args.cold_runs):
            for k, cmd in jobs_cold.items():
                res = run_measured(cmd, env, runs / f"cold-{k}.out", runs / f"cold-{k}.err")
                if res["exit"] != 0:
                    raise SystemExit(f"cold start {k} failed: {(runs / f'cold-{k}.err').read_text()[-2000:]}")
                cold_runs[k].append(res)
            log(f"cold start {i + 1}/{args.cold_runs}: " + ", ".join(
                f"{k} {v[-1]['wall_s']:.2f} s {v[-1]['peak_rss_mib']:.0f} MiB" for k, v in cold_runs.items()))
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
        gemm["torch"].append(gemm_torch())
    gemm_ref = max(gemm["torch"])  # the busy machine only ever slows the GEMM down
    bound = gemm_ref * 1e9 / flops["total"]
    vlm_raw = tower["vlm"][-1]["raw"] if tower.get("vlm") else {}
    vlm_gemm = median([t["raw"].get("gemm_gflops") for t in tower.get("vlm", [])
                       if isinstance(t["raw"].get("gemm_gflops"), (int, float))])

    def tower_median(system, batch=None):
        rows = tower.get(system) or []
        if batch is None:
            return median([row["text"]["per_second"] for row in rows if row.get("text")])
        return median([row["image"][batch]["per_second"] for row in rows if batch in row["image"]])

    def e2e_median(kind, system, field):
        return median([run[field] for run in e2e.get(kind, {}).get(system, [])])

    rows = []  # (metric, transformers, ort, vlm, higher_is_better, fmt)
    rows.append((f"f32 GEMM {GEMM_SHAPE[0]}x{GEMM_SHAPE[1]}x{GEMM_SHAPE[2]}, GFLOP/s (median)",
                 median(gemm["torch"]), median(gemm["ort"]), vlm_gemm, "{:.1f}"))
    for b in args.batch_sizes:
        rows.append((f"image tower, batch {b}, images/s", tower_median("transformers", b), tower_median("ort", b),
                     tower_median("vlm", b), "{:.2f}"))
    if prompts:
        rows.append((f"text tower, {len(prompts)} prompts, prompts/s", tower_median("transformers"), None,
                     tower_median("vlm"), "{:.1f}"))
    rows.append(("model load, s (lower is better)", tf_load, None,
                 vlm_raw.get("load_seconds") if isinstance(vlm_raw.get("load_seconds"), (int, float)) else None,
                 "{:.2f}"))
    if e2e:
        rows.append(("cold start, 1 JPEG, 2 labels: wall s (lower is better)", e2e_median("cold", "python", "wall_s"),
                     None, e2e_median("cold", "vlm", "wall_s"), "{:.2f}"))
        rows.append(("cold start: peak RSS MiB (lower is better)", e2e_median("cold", "python", "peak_rss_mib"),
                     None, e2e_median("cold", "vlm", "peak_rss_mib"), "{:.0f}"))
        for k, name in (("vlm", "vlm"), ("vlm_downscale", "vlm --jpeg-downscale")):
            if k not in e2e["folder"]:
                continue
            rows.append((f"{args.images} JPEGs 3000x2000 ({name}): wall s (lower is better)",
                         e2e_median("folder", "python", "wall_s"), None, e2e_median("folder", k, "wall_s"), "{:.2f}"))
            rows.append((f"{args.images} JPEGs ({name}): images/s", e2e_median("folder", "python", "images_per_second"),
                         None, e2e_median("folder", k, "images_per_second"), "{:.2f}"))
            rows.append((f"{args.images} JPEGs ({name}): peak RSS MiB (lower is better)",
                         e2e_median("folder", "python", "peak_rss_mib"), None,
                         e2e_median("folder", k, "peak_rss_mib"), "{:.0f}"))
            rows.append((f"{args.images} JPEGs ({name}): CPU s (lower is better)",
                         e2e_median("folder", "python", "cpu_s"), None, e2e_median("folder", k, "cpu_s"), "{:.1f}"))

    def cell(v, fmt):
        return "n/a" if v is None else fmt.format(v)

    def ratio(a, b):
        return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}"

    header = ["metric", "transformers", "ONNX Runtime", "vlm", "vlm / transformers", "vlm / ORT"]
    table = [[m, cell(t, f), cell(o, f), cell(v, f), ratio(v, t), ratio(v, o)] for m, t, o, v, f in rows]
    bound_header = ["batch", "bound images/s", "transformers", "ONNX Runtime", "vlm"]
    bound_rows = []
    for b in args.batch_sizes:
        shares = [tower_median(s, b) for s in ("transformers", "ort", "vlm")]
        bound_rows.append([str(b), f"{bound:.2f}"] + [("n/a" if s is None else f"{100 * s / bound:.0f}%") for s in shares])

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    import onnxruntime

    versions = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
                "onnxruntime": onnxruntime.__version__, "vlm": vlm_raw.get("version")}
    elapsed = time.perf_counter() - started

    def text_table(hdr, body):
        widths = [max(len(r[i]) for r in [hdr, *body]) for i in range(len(hdr))]
        fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        return "\n".join([fmt(hdr), "  ".join("-" * w for w in widths), *map(fmt, body)])

    def md_table(hdr, body):
        return "\n".join(["| " + " | ".join(hdr) + " |", "|" + " --- |" * len(hdr), *("| " + " | ".join(r) + " |" for r in body)])

    print()
    print(f"CPU {cpu}, {args.threads} threads; " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    print(f"medians over {args.rounds} round(s); cold start: median of {args.cold_runs}; total {elapsed / 60:.1f} min; "
          f"load average (1 min) {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end\n")
    print(text_table(header, table))
    print(f"\nFLOP bound: {flops['total'] / 1e9:.2f} GFLOP per image / {gemm_ref:.1f} GFLOP/s (best torch GEMM "
          f"of the run) = {bound:.2f} images/s; share of it reached:\n")
    print(text_table(bound_header, bound_rows))
    if any(v > bound for s in ("transformers", "ort", "vlm") for v in [tower_median(s, b) for b in args.batch_sizes] if v):
        print("(a share over 100%: the GEMM samples all fell in busier moments than that tower measurement)")
    print("\n--- Markdown for BENCHMARKS.md ---\n")
    print(f"{time.strftime('%Y-%m-%d')}, {cpu}, {args.threads} threads, "
          + ", ".join(f"{k} {v}" for k, v in versions.items() if v)
          + f"; random-weight checkpoint with the exact B/32 shapes; medians of {args.rounds} interleaved rounds; "
          f"load average {load[0]:.1f} at the start.\n")
    print(md_table(header, table))
    print(f"\nFLOP bound: {flops['total'] / 1e9:.2f} GFLOP per image at {gemm_ref:.1f} GFLOP/s (best torch f32 GEMM of the run) "
          f"= {bound:.2f} images/s.\n")
    print(md_table(bound_header, bound_rows))

    results = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpu": cpu, "threads": args.threads, "versions": versions,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "checkpoint": str(ckpt), "vision_flops": flops, "gemm_gflops": gemm, "vlm_gemm_gflops": vlm_gemm,
        "flop_bound_images_per_second": bound, "transformers_load_seconds": tf_load,
        "similarity_check": {"vlm": vlm_sims, "transformers": dict(zip(LABELS, tf_sims)), "max_diff": sim_diff},
        "onnx_exporter": export_how, "vlm_bench_available": has_bench, "vlm_jpeg_downscale_available": has_downscale,
        "towers": tower, "e2e": e2e, "table": {"header": header, "rows": table}, "bound_table": bound_rows,
        "elapsed_seconds": elapsed, "load_average_start": load, "load_average_end": os.getloadavg(),
    }
    args.json_out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"\nraw figures: {args.json_out}")


if __name__ == "__main__":
    main()
