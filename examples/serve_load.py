"""Load run of `vlm serve` on this machine, against `vlm classify` started once per request.

Starts `vlm serve` on 127.0.0.1 and a free port, sends POST /v1/classify requests (one image
as a data: URI and a few labels each) from N client threads at a time, and reports
requests/s and p50/p99 latency per concurrency; then runs `vlm classify FILE --labels ...`
as one process per request at the same concurrencies (what an app without the server
would do). Bounded: at most --requests requests and --seconds seconds per row, whichever
ends first; loopback only. Standard library only.

    cargo build --release
    python3 examples/serve_load.py --vlm target/release/vlm \
        --model tests/fixtures/models/tiny-quickgelu --images tests/fixtures/images

Prints a Markdown table (BENCHMARKS.md has one) and, with --json FILE, the numbers.
"""

import argparse
import base64
import http.client
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

LABELS = "cat,dog,person,rocket,coffee"


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def images_in(folder, limit):
    files = sorted(p for p in Path(folder).iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file())
    if not files:
        sys.exit(f"serve_load: no .jpg/.png images in {folder}")
    return files[:limit]


class Server:
    """`vlm serve` on 127.0.0.1:0; the address is read from its log."""

    def __init__(self, vlm, model, extra):
        self.process = subprocess.Popen(
            [vlm, "serve", "--model", model, "--host", "127.0.0.1", "--port", "0", *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        self.host, self.port = None, None
        deadline = time.monotonic() + 120
        for line in self.process.stderr:
            found = re.search(r" on http://(127\.0\.0\.1):(\d+)", line)
            if found:
                self.host, self.port = found.group(1), int(found.group(2))
                break
            if time.monotonic() > deadline:
                break
        if self.port is None:
            self.process.kill()
            sys.exit("serve_load: vlm serve did not start")
        # Keep draining its log so that it never blocks on a full pipe.
        threading.Thread(target=self.process.stderr.read, daemon=True).start()

    def batches(self):
        """(images encoded, encoder calls) so far, from /metrics."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        values = dict(line.rsplit(" ", 1) for line in text.splitlines()
                      if line.startswith(("vlm_batch_size_sum ", "vlm_batch_size_count ")))
        return float(values["vlm_batch_size_sum"]), float(values["vlm_batch_size_count"])

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


def timed_rows(concurrency, requests, seconds, one_request):
    """Runs `one_request(i)` from `concurrency` threads until `requests` are done or
    `seconds` have passed; returns (latencies, errors, wall seconds)."""
    lock = threading.Lock()
    latencies, errors = [], []
    counter = iter(range(requests))
    deadline = time.monotonic() + seconds

    def worker():
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            started = time.monotonic()
            try:
                one_request(i)
                elapsed = time.monotonic() - started
                with lock:
                    latencies.append(elapsed)
            except Exception as error:  # noqa: BLE001 - counted and shown
                with lock:
                    errors.append(str(error)[:200])

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.monotonic() - started


def percentile(values, q):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def row(kind, concurrency, latencies, errors, wall):
    return {
        "kind": kind,
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": wall,
        "per_second": len(latencies) / wall if wall > 0 else float("nan"),
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vlm", default="target/release/vlm")
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", default="tests/fixtures/images")
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--requests", type=int, default=500,
                        help="most requests per server row")
    parser.add_argument("--cli-requests", type=int, default=24,
                        help="most `vlm classify` processes per row")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="most seconds per row")
    parser.add_argument("--serve-args", default="",
                        help="extra flags for vlm serve, e.g. \"--max-wait-ms 2\"")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    files = images_in(args.images, 16)
    bodies = [json.dumps({"image": "data:image/jpeg;base64,"
                          + base64.b64encode(f.read_bytes()).decode(),
                          "name": f.name, "labels": LABELS}).encode() for f in files]

    rows = []
    server = Server(args.vlm, args.model, args.serve_args.split())
    local = threading.local()
    try:
        def classify(i):
            # One keep-alive connection per client thread, as an app's HTTP pool keeps.
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(server.host, server.port,
                                                               timeout=120)
            conn.request("POST", "/v1/classify", body=bodies[i % len(bodies)],
                         headers={"Content-Type": "application/json"})
            reply = conn.getresponse()
            body = reply.read()
            if reply.status != 200:
                local.conn = None
                conn.close()
                raise RuntimeError(f"{reply.status}: {body[:200]!r}")
            json.loads(body)

        classify(0)  # the label set's prompts are embedded once, before timing
        for c in levels:
            local = threading.local()
            images_before, calls_before = server.batches()
            rows.append(row("vlm serve", c, *timed_rows(c, args.requests, args.seconds,
                                                         classify)))
            images, calls = server.batches()
            rows[-1]["mean_batch"] = (images - images_before) / max(1.0, calls - calls_before)
            print(json.dumps(rows[-1]), file=sys.stderr)
    finally:
        server.stop()

    def per_process(i):
        f = files[i % len(files)]
        done = subprocess.run(
            [args.vlm, "classify", str(f), "--labels", LABELS, "--model", args.model,
             "--format", "json", "--quiet"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=300, check=False)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode(errors="replace")[:200])
        json.loads(done.stdout)

    for c in levels:
        rows.append(row("vlm classify per request", c,
                        *timed_rows(c, args.cli_requests, args.seconds, per_process)))
        print(json.dumps(rows[-1]), file=sys.stderr)

    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs; model {args.model}; "
          f"{len(files)} images from {args.images}")
    print()
    print("| client | concurrency | requests | errors | requests/s | p50 ms | p99 ms "
          "| images per encoder call |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        batch = f"{r['mean_batch']:.1f}" if "mean_batch" in r else "1 (one process each)"
        print(f"| {r['kind']} | {r['concurrency']} | {r['requests']} | {r['errors']} | "
              f"{r['per_second']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {batch} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
