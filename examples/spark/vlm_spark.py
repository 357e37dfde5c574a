"""Label a list of images (paths or URLs) with vlm on Spark; results to Parquet or JSON Lines.

Each Python worker keeps one long-lived `vlm classify --files-from - --format jsonl`
process (see ../vlm_worker.py), so the model loads once per worker, and every partition
that worker runs is piped through it. A file vlm cannot label is a row with an `error`,
not a failed stage. Paths already in the output are skipped, so a re-run finishes an
interrupted job without doubling rows.

    SPARK_LOCAL_IP=127.0.0.1 python examples/spark/vlm_spark.py \
        --paths paths.txt --out labels.parquet --labels "cat,dog" --model ./my-model

See README.md beside this file for spark-submit on a cluster.
"""

import argparse
import atexit
import os
import sys

from pyspark.sql import SparkSession
from pyspark.sql import types as T

# Found beside this folder in local mode; on a cluster, ship it with --py-files.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from vlm_worker import COLUMNS, VlmProcess  # noqa: E402

SCHEMA = T.StructType([
    T.StructField("path", T.StringType(), False),
    T.StructField("label", T.StringType(), True),
    T.StructField("probability", T.DoubleType(), True),
    T.StructField("results", T.StringType(), True),
    T.StructField("error", T.StringType(), True),
])

# One per Python worker process; Spark reuses workers (spark.python.worker.reuse, on by
# default), so later partitions find the model already loaded.
_WORKER = None


def _worker(conf):
    global _WORKER
    if _WORKER is None:
        _WORKER = VlmProcess(conf["vlm"], conf["args"], env=conf["env"],
                             log_dir=conf["log_dir"])
        atexit.register(_WORKER.close)
    return _WORKER


def label_partition(conf):
    def run(paths):
        for row in _worker(conf).label(list(paths)):
            yield tuple(row[c] for c in COLUMNS)
    return run


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--paths", required=True, help="file with one image path or URL per line")
    p.add_argument("--out", required=True, help="output directory (Parquet or JSON Lines parts)")
    p.add_argument("--format", choices=["parquet", "json"], default="parquet")
    p.add_argument("--labels", required=True, help='comma-separated labels, e.g. "cat,dog"')
    p.add_argument("--model", help="vlm --model: a local checkpoint directory or alias")
    p.add_argument("--vlm", default=os.environ.get("VLM", "vlm"),
                   help="the vlm binary on the executors (default: $VLM or vlm on PATH)")
    p.add_argument("--threads", type=int, default=1,
                   help="vlm --threads per worker: the cores each Spark task may use")
    p.add_argument("--partitions", type=int, default=None)
    p.add_argument("--verbose", action="store_true",
                   help="pass --verbose to vlm (its notes go to --log-dir)")
    p.add_argument("--log-dir", default=None, help="where each vlm process writes its stderr")
    p.add_argument("--master", default=None, help="e.g. local[4]; spark-submit sets it otherwise")
    p.add_argument("vlm_args", nargs="*", help="more vlm classify flags, after --")
    return p.parse_args(argv)


def done_paths(spark, out, fmt):
    """Paths already in the output, with a result or an error."""
    try:
        existing = spark.read.schema(SCHEMA).format(fmt).load(out)
    except Exception:  # no output yet (Spark raises AnalysisException)
        return set()
    return {r.path for r in existing.select("path").distinct().collect()}


def main(argv=None):
    args = parse_args(argv)
    builder = SparkSession.builder.appName("vlm-label")
    if args.master:
        builder = builder.master(args.master)
    spark = builder.getOrCreate()
    with open(args.paths) as f:
        paths = list(dict.fromkeys(line.rstrip("\n") for line in f if line.strip()))
    done = done_paths(spark, args.out, args.format)
    todo = [p for p in paths if p not in done]
    print(f"vlm_spark: {len(paths)} paths, {len(paths) - len(todo)} already in {args.out}, "
          f"labelling {len(todo)}", file=sys.stderr)
    if todo:
        vlm_args = ["--labels", args.labels, "--threads", str(args.threads)]
        if args.model:
            vlm_args += ["--model", args.model]
        if args.verbose:
            vlm_args.append("--verbose")
        vlm_args += args.vlm_args
        conf = {
            "vlm": args.vlm,
            "args": vlm_args,
            # Executors must not reach for the model hub: ship a filled model dir instead.
            "env": {"HF_HUB_OFFLINE": "1"},
            "log_dir": args.log_dir,
        }
        sc = spark.sparkContext
        # The workers import these modules: ship them (on a cluster --py-files does too).
        import vlm_worker
        sc.addPyFile(os.path.abspath(vlm_worker.__file__))
        if __name__ != "__main__":
            sc.addPyFile(os.path.abspath(__file__))
        rdd = sc.parallelize(todo, args.partitions or sc.defaultParallelism)
        rows = rdd.mapPartitions(label_partition(conf))
        spark.createDataFrame(rows, SCHEMA).write.mode("append").format(args.format).save(args.out)
    spark.stop()


if __name__ == "__main__":
    main()
