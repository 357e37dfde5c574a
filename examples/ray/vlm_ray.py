"""Label a list of images (paths or URLs) with vlm on Ray Data; results to Parquet or JSON.

`map_batches` runs a pool of actors; each actor holds one long-lived
`vlm classify --files-from - --format jsonl` process (see ../vlm_worker.py), so the model
loads once per actor, and every batch the actor gets is piped through it. A file vlm
cannot label is a row with an `error`. Paths already in the output are skipped.

    python examples/ray/vlm_ray.py --paths paths.txt --out labels/ --labels "cat,dog" \
        --model ./my-model --actors 4
"""

import argparse
import os
import sys

import pandas
import ray

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
# Workers a local Ray starts inherit this, so they can import the actor's module and the
# helper; on a cluster, ship both with runtime_env={"working_dir": ...} instead.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [HERE, os.path.join(HERE, ".."), *filter(None, [os.environ.get("PYTHONPATH")])])
from vlm_worker import COLUMNS, VlmProcess  # noqa: E402


class Labeller:
    """One Ray actor: one vlm process, alive as long as the actor."""

    def __init__(self, vlm, args, env, log_dir):
        self.worker = VlmProcess(vlm, args, env=env, log_dir=log_dir)

    def __call__(self, batch):
        rows = self.worker.label([str(p) for p in batch["path"]])
        return pandas.DataFrame(rows, columns=list(COLUMNS))

    def __del__(self):
        self.worker.close()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--paths", required=True, help="file with one image path or URL per line")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--format", choices=["parquet", "json"], default="parquet")
    p.add_argument("--labels", required=True)
    p.add_argument("--model")
    p.add_argument("--vlm", default=os.environ.get("VLM", "vlm"))
    p.add_argument("--actors", type=int, default=2, help="vlm processes (one per actor)")
    p.add_argument("--threads", type=int, default=1, help="vlm --threads (and CPUs) per actor")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--blocks", type=int, default=None, help="input blocks (partitions)")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--log-dir", default=None)
    p.add_argument("vlm_args", nargs="*", help="more vlm classify flags, after --")
    return p.parse_args(argv)


def done_paths(out, fmt):
    if not os.path.isdir(out) or not os.listdir(out):
        return set()
    read = ray.data.read_parquet if fmt == "parquet" else ray.data.read_json
    return {r["path"] for r in read(out).select_columns(["path"]).take_all()}


def main(argv=None):
    args = parse_args(argv)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    with open(args.paths) as f:
        paths = list(dict.fromkeys(line.rstrip("\n") for line in f if line.strip()))
    done = done_paths(args.out, args.format)
    todo = [p for p in paths if p not in done]
    print(f"vlm_ray: {len(paths)} paths, {len(paths) - len(todo)} already in {args.out}, "
          f"labelling {len(todo)}", file=sys.stderr)
    if todo:
        vlm_args = ["--labels", args.labels, "--threads", str(args.threads)]
        if args.model:
            vlm_args += ["--model", args.model]
        if args.verbose:
            vlm_args.append("--verbose")
        vlm_args += args.vlm_args
        ds = ray.data.from_items([{"path": p} for p in todo],
                                 override_num_blocks=args.blocks or args.actors)
        labelled = ds.map_batches(
            Labeller,
            fn_constructor_kwargs={"vlm": args.vlm, "args": vlm_args,
                                   "env": {"HF_HUB_OFFLINE": "1"}, "log_dir": args.log_dir},
            concurrency=args.actors,
            num_cpus=args.threads,
            batch_size=args.batch_size,
            batch_format="pandas",
        )
        if args.format == "parquet":
            labelled.write_parquet(args.out)
        else:
            labelled.write_json(args.out)


if __name__ == "__main__":
    main()
