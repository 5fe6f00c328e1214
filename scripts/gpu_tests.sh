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
    "$PY" -m pytest -q -p no:cacheprovider "$@"
    rc=$?
    end=$(date +%s)
    echo "=== $name: exit $rc, wall $((end - start)) s"
    [ "$rc" -eq 0 ] || status=1
}

t0=$(date +%s)
run "gpu tier" -m gpu tests --durations=15 "$@"
run "rest of the suite" tests -m "not gpu" --durations=15 "$@"
echo "=== total wall $(($(date +%s) - t0)) s, exit $status"
exit "$status"
