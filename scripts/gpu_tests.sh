#!/usr/bin/env bash
# The test suite on a CUDA machine, in two timed runs: the gpu tier (tests marked `gpu`: every kernel at
# real shapes), then everything else (the small kernel cases run compiled there, not interpreted).
# Each run prints its wall time; the script exits non-zero if either run fails.
#
#   bash scripts/gpu_tests.sh 2>&1 | tee "$OUT/gpu_tests.log"
#
# Extra arguments go to both pytest runs (e.g. -x, or -k to narrow them).

cd "$(dirname "$0")/.." || exit 2
PY="${PYTHON:-python}"

"$PY" - <<'EOF' || exit 2
import os, sys
import torch
try:
    import triton
    triton_version = triton.__version__
except ImportError:
    triton_version = "not installed"
try:
    import fla
    fla_version = getattr(fla, "__version__", "?")
except Exception:
    fla_version = "not importable"
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, triton {triton_version}, fla {fla_version}, "
      f"{os.cpu_count()} CPUs")
if not torch.cuda.is_available():
    sys.exit("no CUDA device: the gpu tier would only skip (run plain `pytest tests` on a CPU machine)")
print(f"GPU: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}")
EOF

status=0
run() {
    local name=$1
    shift
    local start end rc
    start=$(date +%s)
    echo "=== $name: pytest $(printf "%q " "$@")(start $(date -u +%H:%M:%SZ))"
    # -v: one line per test as it ends, so a run cut short still says which tests failed
    "$PY" -m pytest -v -rfE -p no:cacheprovider "$@"
    rc=$?
    end=$(date +%s)
    echo "=== $name: exit $rc, wall $((end - start)) s"
    [ "$rc" -eq 0 ] || status=1
}

# The suite's time on a GPU machine is mostly Triton compiling each small kernel case: pytest-xdist (a dev
# extra) spreads it over JOBS processes (default: half the CPUs, at most 8; JOBS=0 runs serially).
jobs=${JOBS:-$(( $(nproc) / 2 > 8 ? 8 : $(nproc) / 2 ))}
par=()
if [ "$jobs" -gt 1 ] && "$PY" -c "import xdist" 2>/dev/null; then par=(-n "$jobs"); fi
# a machine without the package registry skips the embedded SmolLM2 tests instead of erroring (CI has it)
export THINKFAST_TEST_OFFLINE=${THINKFAST_TEST_OFFLINE:-1}

t0=$(date +%s)
run "gpu tier" -m gpu tests --durations=15 "${par[@]}" "$@"
run "rest of the suite" tests -m "not gpu" --durations=15 "${par[@]}" "$@"
echo "=== total wall $(($(date +%s) - t0)) s, exit $status"
exit "$status"
