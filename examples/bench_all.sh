#!/usr/bin/env bash
# The whole CPU comparison in one command: examples/compare_transformers.py for CLIP B/32 and
# L/14 shapes (random weights, built locally: no network), 2 threads, pinned to 2 CPUs after
# the setup, vlm f32 and bf16 against transformers f32 and bf16 autocast and ONNX Runtime f32
# and int8. Needs python3 with torch, transformers, pillow, numpy (and onnxruntime, onnx,
# onnxscript for the ONNX Runtime rows) and a vlm release binary; no cargo.
#
#   examples/bench_all.sh target/release/vlm /tmp/vlm-bench-all
#
# Writes WORKDIR/compare-results-{b32,l14}.{json,md} and WORKDIR/bench-all.md (both tables,
# after the CPU it ran on). PYTHON picks the interpreter (default python3), THREADS the thread
# count (default 2), CPUS the CPUs to pin to (default: THREADS CPUs on distinct physical
# cores, so two threads never share one core's SMT siblings; empty: no pinning). Checkpoints,
# JPEGs and ONNX exports are kept in WORKDIR and reused by a second run.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 VLM_BINARY WORKDIR" >&2
    exit 2
fi
vlm=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
work=$2
python=${PYTHON:-python3}
threads=${THREADS:-2}
cpus=${CPUS-auto}
here=$(cd "$(dirname "$0")" && pwd)
[ -x "$vlm" ] || { echo "no executable vlm at $1" >&2; exit 2; }
mkdir -p "$work"
started=$(date +%s)

cpu_line() {
    local model flags
    model=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')
    flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2-)
    local have=""
    for f in avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8; do
        if [[ " $flags " == *" $f "* ]]; then have+=" $f:yes"; else have+=" $f:no"; fi
    done
    echo "CPU: ${model:-unknown} ($(nproc) CPUs);$have"
}
cpu_line | tee "$work/cpu.txt"
"$vlm" --version | tee -a "$work/cpu.txt"

if [ "$cpus" = auto ]; then
    # The first CPU of each physical core, as many as threads.
    cpus=$("$python" - "$threads" <<'EOF'
import os, sys
want, chosen, cores = int(sys.argv[1]), [], set()
for cpu in sorted(os.sched_getaffinity(0)):
    topo = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
    try:
        core = tuple(open(topo + f).read().strip() for f in ("physical_package_id", "core_id"))
    except OSError:
        core = (cpu,)
    if core not in cores:
        cores.add(core)
        chosen.append(cpu)
print(",".join(map(str, chosen[:want])) if len(chosen) >= want else "")
EOF
)
fi
pin=()
if [ -n "$cpus" ]; then
    pin=(--pin-cpus "$cpus")
    echo "pinning the measurements to CPUs $cpus" | tee -a "$work/cpu.txt"
else
    echo "not pinned (fewer physical cores than threads, or CPUS empty)" | tee -a "$work/cpu.txt"
fi

# B/32: every row, the end-to-end jobs on 16 JPEGs, one round; cold starts (and the first run
# with no pack file) the median of 5.
"$python" "$here/compare_transformers.py" --vlm "$vlm" --work "$work" --shape b32 --threads "$threads" \
    "${pin[@]}" --rounds 1 --batch-sizes 1,8,32 --min-seconds 1 --min-reps 2 --text-prompts 1000 \
    --images 16 --folder-batch 16 --cold-runs 5 | tee "$work/b32.log"

# L/14: 18x the FLOPs per image; towers only, batch 1 and 8, one timed call after the warm-up.
"$python" "$here/compare_transformers.py" --vlm "$vlm" --work "$work" --shape l14 --threads "$threads" \
    "${pin[@]}" --rounds 1 --batch-sizes 1,8 --min-seconds 0 --min-reps 1 --text-prompts 256 \
    --skip-e2e | tee "$work/l14.log"

{
    echo "# vlm CPU comparison"
    echo
    cat "$work/cpu.txt"
    echo
    echo "## B/32"
    echo
    cat "$work/compare-results-b32.md"
    echo
    echo "## L/14"
    echo
    cat "$work/compare-results-l14.md"
    echo
    echo "Total $(( ($(date +%s) - started) / 60 )) min $(( ($(date +%s) - started) % 60 )) s."
} > "$work/bench-all.md"
echo "written: $work/bench-all.md, $work/compare-results-b32.{json,md}, $work/compare-results-l14.{json,md}"
