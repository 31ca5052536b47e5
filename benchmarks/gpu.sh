#!/usr/bin/env bash
# negkit on one CUDA GPU in one command: the CUDA tests (tests/cuda: tiled losses, bf16, samplers, the NCCL
# gather), then the loss benchmark on CUDA against plain torch and open_clip (and the other peers where
# installed). Planned to finish in well under 10 minutes on one H200. Everything it writes goes under $OUT
# (default benchmarks/results/gpu): environment.txt, cuda_tests.txt, losses_<device>.{json,md}, losses_log.txt.
#
#   OUT=/tmp/out benchmarks/gpu.sh                          # on a machine with a GPU
#   OUT=/tmp/dry benchmarks/gpu.sh --device cpu --quick     # dry run of the same Python parts on a CPU
#
# negkit is imported from src/ (PYTHONPATH), nothing is installed. Peers missing on the GPU machine
# (open_clip_torch, pytorch-metric-learning: pure-Python wheels) can travel in .whl/ (git-ignored), fetched with
#   pip download --no-deps -d .whl open_clip_torch==3.3.0 pytorch-metric-learning==2.9.0
# and are installed into /tmp/negkit-site first. A peer that is still missing is a recorded error in its row.
# Exit status: 0 when the tests passed and the benchmark ran; 1 otherwise (the results written so far stay).
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
QUICK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --quick) QUICK=1; shift ;;
        *) echo "usage: OUT=DIR benchmarks/gpu.sh [--device cuda|cpu] [--quick]" >&2; exit 2 ;;
    esac
done
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/negkit-site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/negkit-site"
fi
status=0
{
    date -u
    nvidia-smi || true
    "$PY" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    for peer in open_clip pytorch_metric_learning sentence_transformers hypothesis; do
        "$PY" -c "import importlib.util as u; print('$peer', 'found' if u.find_spec('$peer') else 'MISSING')"
    done
} > "$OUT/environment.txt" 2>&1

# 1. The CUDA tests (selected by their marker; NEGKIT_TEST_DEVICE=cpu runs them on the CPU for the dry run).
# tests/conftest.py needs hypothesis; without it the conftest files are left out (the marker is then unregistered).
confcut=()
"$PY" -c "import hypothesis" 2> /dev/null || confcut=(--noconftest)
NEGKIT_TEST_DEVICE="$DEVICE" timeout 240 "$PY" -m pytest -m cuda tests/cuda -p no:randomly -p no:cacheprovider \
    "${confcut[@]}" 2>&1 | tee "$OUT/cuda_tests.txt" || status=1

# 2. The loss benchmark: probe (matmul, exp, HBM copy) then every method at each B, all cells in one process
# (one CUDA initialisation; the allocator's peak is reset per cell).
if [ "$QUICK" = 1 ]; then
    sizes=(--quick --sizes 64 --huge "" --busy "")
else
    sizes=(--sizes 4096,16384,65536 --huge 262144 --busy "" --repeats 5)
fi
timeout 420 "$PY" benchmarks/run.py losses --device "$DEVICE" "${sizes[@]}" --one-process --idle-wait 0 \
    --threads 8 --timeout 120 --out "$OUT" --stem "losses_$DEVICE" 2>&1 | tee "$OUT/losses_log.txt" || status=1
test -s "$OUT/losses_$DEVICE.md" || status=1
echo "gpu.sh: exit status $status; results in $OUT"
exit $status
