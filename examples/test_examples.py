"""Runs the Spark and Ray examples in local mode on 200 generated images (4 broken).

Checks: every path exactly once in the output, broken files as error rows, the model
loaded once per worker (counted from vlm --verbose), and a re-run labels only new paths.

    VLM=target/debug/vlm .venv-scale/bin/python examples/test_examples.py [spark|ray]

Run by .ci/test-deps; needs pyspark, ray[data], pandas, pyarrow, pillow and Java 17.
"""

import glob
import json
import os
import random
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODEL = os.path.join(ROOT, "tests", "fixtures", "models", "tiny-quickgelu")
VLM = os.path.abspath(os.environ.get("VLM", os.path.join(ROOT, "target", "debug", "vlm")))


def make_images(dir, good=196, broken=4):
    from PIL import Image
    rng = random.Random(15)
    paths = []
    for i in range(good):
        colour = (220, 40, 40) if i % 2 else (40, 200, 60)
        image = Image.new("RGB", (32, 32), (rng.randrange(60, 180),) * 3)
        x, y = rng.randrange(0, 16), rng.randrange(0, 16)
        image.paste(colour, (x, y, x + 14, y + 14))
        path = os.path.join(dir, f"img{i:03}.png")
        image.save(path)
        paths.append(path)
    for i in range(broken):
        path = os.path.join(dir, f"broken{i}.png")
        with open(path, "w") as f:
            f.write("not a picture")
        paths.append(path)
    return paths


def check(rows, paths, broken, logs, max_workers):
    seen = [r["path"] for r in rows]
    assert sorted(seen) == sorted(paths), (
        f"{len(seen)} rows for {len(paths)} paths; {len(set(seen))} distinct")
    for r in rows:
        if r["path"] in broken:
            assert r["error"] and r["label"] is None, r
        else:
            assert r["error"] is None and r["label"] in ("red", "green"), r
            assert len(json.loads(r["results"])) == 2, r
    loads = [sum("loaded model" in line for line in open(log)) for log in logs]
    # One vlm process per worker, each loading the model exactly once, for 4 partitions.
    assert loads and all(n == 1 for n in loads), f"model loads per vlm process: {loads}"
    assert len(loads) <= max_workers, f"{len(loads)} vlm processes for {max_workers} workers"
    return len(loads)


def read_json_rows(out):
    rows = []
    for part in glob.glob(os.path.join(out, "*.json")):
        with open(part) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    for r in rows:
        for c in ("label", "probability", "results", "error"):
            r.setdefault(c, None)
    return rows


def test_spark(tmp, paths, broken, list_file):
    sys.path.insert(0, os.path.join(HERE, "spark"))
    import vlm_spark
    out, logs = os.path.join(tmp, "spark-out"), os.path.join(tmp, "spark-logs")
    os.makedirs(logs)
    argv = ["--paths", list_file, "--out", out, "--format", "json", "--labels", "red,green",
            "--model", MODEL, "--vlm", VLM, "--partitions", "4", "--master", "local[2]",
            "--verbose", "--log-dir", logs]
    vlm_spark.main(argv)
    rows = read_json_rows(out)
    n = check(rows, paths, broken, glob.glob(os.path.join(logs, "*.log")), max_workers=2)
    # A re-run labels nothing and adds no row.
    shutil.rmtree(logs)
    os.makedirs(logs)
    vlm_spark.main(argv)
    assert len(read_json_rows(out)) == len(paths)
    assert not glob.glob(os.path.join(logs, "*.log")), "a re-run started vlm"
    print(f"spark: {len(rows)} rows, {len(broken)} error rows, {n} vlm processes, "
          "re-run added nothing")


def test_ray(tmp, paths, broken, list_file):
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    sys.path.insert(0, os.path.join(HERE, "ray"))
    import vlm_ray  # before ray.init: sets PYTHONPATH for the workers
    out, logs = os.path.join(tmp, "ray-out"), os.path.join(tmp, "ray-logs")
    os.makedirs(logs)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=os.path.join(tmp, "ray-tmp"))
    try:
        argv = ["--paths", list_file, "--out", out, "--format", "json", "--labels",
                "red,green", "--model", MODEL, "--vlm", VLM, "--actors", "2", "--blocks", "4",
                "--batch-size", "25", "--verbose", "--log-dir", logs]
        vlm_ray.main(argv)
        rows = read_json_rows(out)
        n = check(rows, paths, broken, glob.glob(os.path.join(logs, "*.log")), max_workers=2)
        vlm_ray.main(argv)
        assert len(read_json_rows(out)) == len(paths)
    finally:
        ray.shutdown()
    print(f"ray: {len(rows)} rows, {len(broken)} error rows, {n} vlm processes, "
          "re-run added nothing")


def main():
    which = sys.argv[1:] or ["spark", "ray"]
    assert os.access(VLM, os.X_OK), f"no vlm binary at {VLM}; cargo build first or set VLM"
    tmp = tempfile.mkdtemp(prefix="vlm-examples-")
    try:
        images = os.path.join(tmp, "images")
        os.makedirs(images)
        paths = make_images(images)
        broken = {p for p in paths if "broken" in p}
        list_file = os.path.join(tmp, "paths.txt")
        with open(list_file, "w") as f:
            f.writelines(p + "\n" for p in paths)
        for name in which:
            {"spark": test_spark, "ray": test_ray}[name](tmp, paths, broken, list_file)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
