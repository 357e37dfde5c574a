#!/usr/bin/env python3
"""What int8 costs in accuracy: top-1 of `vlm --dtype f32` against `--dtype int8`, and of ONNX
Runtime f32 against its int8 dynamic quantisation of the same towers, on a generated
evaluation domain, for every family's fixture checkpoint (and any other checkpoint given).

Optional and by hand only (never in CI). Needs the Python packages of
tests/fixtures/requirements-families.txt plus onnxruntime, onnx (examples/compare_requirements.txt)
and a release build of vlm:

    cargo build --release
    python examples/int8_accuracy.py --work /tmp/vlm-int8-accuracy \\
        [--extra /tmp/vlm-compare/clip-b32-random]   # more checkpoints (Hugging Face CLIP layout)

The domain is the tests' one, larger: 64x64 pictures of a filled square or disc of one of seven
colours on a grey background with noise (`--per-class` each, default 40), labelled by colour,
prompts "a photo of a {colour}.". The checkpoints are random weights, so accuracy itself is near
chance and says nothing; what matters is how often int8 keeps f32's top-1 label (agreement) and
the cosine of the image and text embeddings to f32's (vlm's from `vlm embed`), beside how close
the classes' prompts are to each other in f32. vlm's figures come from `vlm classify --format json`
(its f32 equals transformers / open_clip at parity, tests/it/parity.rs); ONNX Runtime's from the
image and text towers exported with the TorchScript exporter (opset 17) and quantised with
`quantize_dynamic` (QInt8 weights), both towers in int8 as vlm's are.

Writes WORK/int8-accuracy.{md,json} and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests/fixtures/models"
# (fixture, family as the reference loads it)
MODELS = [("tiny-quickgelu", "clip"), ("tiny-gelu-f16", "clip"), ("siglip", "siglip"), ("siglip2", "siglip"),
          ("metaclip2", "metaclip2"), ("openclip-quickgelu", "open_clip"), ("openclip-squash", "open_clip")]
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40),
           "purple": (140, 50, 170), "orange": (240, 140, 30), "cyan": (40, 200, 210)}
TEMPLATE = "a photo of a {}."


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def draw_domain(root: Path, per_class: int, seed: int = 7) -> list[tuple[Path, str]]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    items = []
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = root / name / f"{i:03d}.png"
            items.append((path, name))
            if path.is_file():
                continue
            grey = int(rng.integers(60, 180))
            size = int(rng.integers(14, 36))
            cx, cy = (int(rng.integers(size // 2, 64 - size // 2)) for _ in range(2))
            yy, xx = np.mgrid[0:64, 0:64]
            if rng.integers(2):
                inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= (size // 2) ** 2
            else:
                inside = (abs(xx - cx) <= size // 2) & (abs(yy - cy) <= size // 2)
            img = np.where(inside[..., None], np.array(colour), grey).astype(np.int16)
            img += rng.integers(-10, 11, img.shape)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    return items


def vlm_top1(vlm: Path, model: Path, root: Path, dtype: str) -> dict[str, str]:
    cmd = [str(vlm), "classify", str(root), "--model", str(model), "--labels", ",".join(COLOURS),
           "--template", TEMPLATE, "--format", "json", "--dtype", dtype, "--no-pack-cache"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr[-1000:]}")
    return {str(Path(row["path"]).resolve()): row["results"][0]["label"] for row in json.loads(r.stdout)}


def vlm_embeddings(vlm: Path, model: Path, root: Path, dtype: str, out: Path) -> dict:
    """`vlm embed` of every image in `root` (normalised rows), by resolved path."""
    import numpy as np

    npy = out / f"vlm-{dtype}.npy"
    cmd = [str(vlm), "embed", str(root), "--model", str(model), "--output", str(npy), "--dtype", dtype,
           "--no-pack-cache", "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr[-1000:]}")
    paths = npy.with_suffix(".paths.txt").read_text(encoding="utf-8").splitlines()
    return dict(zip((str(Path(p).resolve()) for p in paths), np.load(npy)))


def vlm_text(vlm: Path, model: Path, prompts: list[str], dtype: str, out: Path):
    """`vlm embed --text` of `prompts` (normalised rows, in order)."""
    import numpy as np

    npy = out / f"vlm-text-{dtype}.npy"
    cmd = [str(vlm), "embed", "--text-file", str(out / "prompts.txt"), "--model", str(model), "--output", str(npy),
           "--dtype", dtype, "--no-pack-cache", "--quiet"]
    (out / "prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr[-1000:]}")
    return np.load(npy)


class Towers:
    """The reference implementation's image and text towers of one checkpoint, with its
    preprocessing and tokenisation, as torch modules ONNX can export."""

    def __init__(self, path: Path, family: str):
        import torch

        self.family = family
        if family == "open_clip":
            import open_clip

            model, _, self.preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}")
            tok = open_clip.get_tokenizer(f"local-dir:{path}")
            model = model.eval()
            self.tokenize = lambda text: tok([text])
            image, text = model.encode_image, model.encode_text
        else:
            from transformers import AutoTokenizer, CLIPModel, MetaClip2Model, SiglipModel
            from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
            from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

            cls = {"clip": CLIPModel, "siglip": SiglipModel, "metaclip2": MetaClip2Model}[family]
            model = cls.from_pretrained(path, dtype=torch.float32).eval()
            proc = (SiglipImageProcessorPil if family == "siglip" else CLIPImageProcessorPil).from_pretrained(path)
            self.preprocess = lambda img: proc(images=img, return_tensors="pt")["pixel_values"][0]
            tok = AutoTokenizer.from_pretrained(path)
            if family == "siglip":
                context = model.config.text_config.max_position_embeddings
                self.tokenize = lambda text: torch.tensor(
                    [tok(text, padding="max_length", max_length=context, truncation=True)["input_ids"]])
            else:
                self.tokenize = lambda text: torch.tensor([tok(text, truncation=True, max_length=77)["input_ids"]])
            image = lambda pixel_values: model.get_image_features(pixel_values=pixel_values).pooler_output  # noqa: E731
            text = lambda input_ids: model.get_text_features(input_ids=input_ids).pooler_output  # noqa: E731

        class Wrap(torch.nn.Module):
            def __init__(self, fn, owner):
                super().__init__()
                self.owner, self.fn = owner, fn

            def forward(self, x):
                return self.fn(x)

        self.image, self.text = Wrap(image, model).eval(), Wrap(text, model).eval()


def export_pair(towers: Towers, pixels, ids, out: Path) -> dict[str, Path]:
    """Both towers to ONNX (TorchScript exporter, opset 17) and their int8 dynamic
    quantisation; {"image": f32 path, "image_int8": ..., "text": ..., "text_int8": ...}."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    paths = {}
    for name, module, example, axes in (
        ("image", towers.image, pixels[:2], {0: "batch"}),
        ("text", towers.text, ids, {0: "batch", 1: "seq"} if towers.family in ("clip", "metaclip2") else {0: "batch"}),
    ):
        f32 = out / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(f32), dynamo=False, opset_version=17, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": axes, "y": {0: "batch"}})
        q = out / f"{name}-int8.onnx"
        quantize_dynamic(str(f32), str(q), weight_type=QuantType.QInt8)
        paths[name], paths[f"{name}_int8"] = f32, q
    return paths


def ort_embeddings(paths: dict[str, Path], pixels, prompt_ids) -> dict:
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    out = {}
    for kind in ("", "_int8"):
        image = ort.InferenceSession(str(paths["image" + kind]), so, providers=["CPUExecutionProvider"])
        text = ort.InferenceSession(str(paths["text" + kind]), so, providers=["CPUExecutionProvider"])
        img = np.concatenate([image.run(None, {"x": pixels[i:i + 32].numpy()})[0] for i in range(0, len(pixels), 32)])
        txt = np.concatenate([text.run(None, {"x": ids.numpy()})[0] for ids in prompt_ids])
        out["f32" if not kind else "int8"] = (img, txt)
    return out


def normalise(a):
    import numpy as np

    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def evaluate(name: str, path: Path, family: str, items, root: Path, vlm: Path, work: Path) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    labels = list(COLOURS)
    truth = [label for _, label in items]
    res = {"model": name, "family": family, "images": len(items)}
    # vlm
    top = {dtype: vlm_top1(vlm, path, root, dtype) for dtype in ("f32", "int8")}
    vf = [top["f32"][str(p.resolve())] for p, _ in items]
    vi = [top["int8"][str(p.resolve())] for p, _ in items]
    res["vlm"] = {"f32_top1": accuracy(vf, truth), "int8_top1": accuracy(vi, truth), "agreement": accuracy(vi, vf)}
    out = work / "onnx" / name
    out.mkdir(parents=True, exist_ok=True)
    emb = {dtype: vlm_embeddings(vlm, path, root, dtype, out) for dtype in ("f32", "int8")}
    keys = [str(p.resolve()) for p, _ in items]
    vcos = (np.stack([emb["int8"][k] for k in keys]) * np.stack([emb["f32"][k] for k in keys])).sum(-1)
    res["vlm"].update(image_cosine_min=float(vcos.min()), image_cosine_mean=float(vcos.mean()))
    prompts = [TEMPLATE.format(label) for label in labels]
    text = {dtype: vlm_text(vlm, path, prompts, dtype, out) for dtype in ("f32", "int8")}
    res["vlm"]["text_cosine_min"] = float((text["int8"] * text["f32"]).sum(-1).min())
    # How far apart the classes' prompts are: with random weights they nearly coincide, and
    # an image's top-1 can swap on a smaller error than this gap.
    res["prompt_cosine_max"] = float((text["f32"] @ text["f32"].T)[~np.eye(len(labels), dtype=bool)].max())
    # ONNX Runtime
    towers = Towers(path, family)
    # no_grad, not inference_mode: the exporter cannot trace tensors made in inference mode.
    with torch.no_grad():
        pixels = torch.stack([towers.preprocess(Image.open(p).convert("RGB")) for p, _ in items])
        prompt_ids = [towers.tokenize(TEMPLATE.format(label)) for label in labels]
        ref_img = towers.image(pixels).numpy()
    try:
        emb = ort_embeddings(export_pair(towers, pixels, prompt_ids[0], out), pixels, prompt_ids)
    except Exception as e:  # noqa: BLE001 - reported, the vlm figures still stand
        res["ort"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        log(f"{name}: ONNX Runtime left out: {res['ort']['error']}")
        return res
    preds = {}
    for kind, (img, txt) in emb.items():
        sims = normalise(img) @ normalise(txt).T
        preds[kind] = [labels[i] for i in sims.argmax(-1)]
    cos = (normalise(emb["int8"][0]) * normalise(ref_img)).sum(-1)
    tcos = (normalise(emb["int8"][1]) * normalise(emb["f32"][1])).sum(-1)
    res["ort"] = {"f32_top1": accuracy(preds["f32"], truth), "int8_top1": accuracy(preds["int8"], truth),
                  "agreement": accuracy(preds["int8"], preds["f32"]), "image_cosine_min": float(cos.min()),
                  "image_cosine_mean": float(cos.mean()),
                  "text_cosine_min": float(tcos.min())}
    return res


def accuracy(pred, truth) -> float:
    return sum(p == t for p, t in zip(pred, truth)) / len(truth)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vlm-int8-accuracy")
    ap.add_argument("--vlm", type=Path, default=Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release/vlm")
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--extra", type=Path, action="append", default=[],
                    help="another checkpoint directory in the Hugging Face CLIP layout (repeatable)")
    args = ap.parse_args()
    if not args.vlm.is_file():
        ap.error(f"no vlm binary at {args.vlm}: run `cargo build --release` or pass --vlm")
    root = args.work / "domain"
    items = draw_domain(root, args.per_class)
    rows = []
    for name, family in [*MODELS, *((p.name, "clip") for p in args.extra)]:
        path = FIXTURES / name if (FIXTURES / name).is_dir() else next(p for p in args.extra if p.name == name)
        log(f"{name}: evaluating")
        rows.append(evaluate(name, path, family, items, root, args.vlm, args.work))
        log(json.dumps(rows[-1]))

    def cosines(d):
        return f"{d['image_cosine_min']:.4f} / {d['image_cosine_mean']:.4f}" if "image_cosine_min" in d else "n/a"

    def text_cosine(d):
        return f"{d['text_cosine_min']:.5f}" if "text_cosine_min" in d else "n/a"

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    header = ["checkpoint (family)", "vlm f32 top-1", "vlm int8 top-1", "vlm int8 = f32",
              "vlm int8 image cosine (min / mean)", "vlm int8 text cosine (min)", "ORT f32 top-1",
              "ORT int8 top-1", "ORT int8 = f32", "ORT int8 image cosine (min / mean)", "ORT int8 text cosine (min)",
              "closest two prompts (f32 cosine)"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        o = r.get("ort", {})
        lines.append("| " + " | ".join([f"{r['model']} ({r['family']})", pct(r["vlm"]["f32_top1"]),
                                        pct(r["vlm"]["int8_top1"]), pct(r["vlm"]["agreement"]), cosines(r["vlm"]),
                                        text_cosine(r["vlm"]), pct(o.get("f32_top1")), pct(o.get("int8_top1")),
                                        pct(o.get("agreement")), cosines(o), text_cosine(o),
                                        f"{r['prompt_cosine_max']:.5f}"]) + " |")
    table = "\n".join(lines)
    print(f"{len(items)} images, {len(COLOURS)} classes\n\n{table}")
    (args.work / "int8-accuracy.md").write_text(table + "\n")
    (args.work / "int8-accuracy.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
