#!/usr/bin/env bash
# Everything a short GPU session checks, in one command: the triton backend's tests on CUDA tensors (real
# compiles, no interpreter), then the forward benchmark against SDPA and FlexAttention.
#
#   bash benchmarks/gpu_session.sh [TEST_SECONDS] [BENCH_BUDGET] [extra gpu_attention.py arguments...]
#
# BWD_BUDGET (seconds, default 0: skipped) runs the training-step benchmark (gpu_backward.py) afterwards.
#
# TEST_SECONDS=0 skips the tests. Logs and the markdown table go to $OUT (default: the current directory).
# Wheels the machine lacks (lark) may lie in .whl/; they are installed first, then einattn itself (editable).
set -u
OUT=${OUT:-.}
TESTS=${1:-150}
BUDGET=${2:-240}
shift 2 2>/dev/null || shift $#
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
PY=${PYTHON:-python3}

if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl || exit 1
fi
$PY -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"

if [ "$TESTS" != 0 ]; then
    # each failure is written to failures.log as it happens: a run cut off by the timeout still says why
    EINATTN_FAILURE_LOG="$OUT/failures.log" timeout "$TESTS" $PY -m pytest -q -n 8 -p no:cacheprovider --maxfail=20 \
        tests/test_triton_runtime_bounds.py tests/test_review_s19_triton.py tests/test_triton.py \
        tests/test_triton_module.py tests/test_triton_backward.py "tests/test_torch_backend.py::test_cuda_equals_cpu" \
        2>&1 | tee "$OUT/pytest.log" | tail -60
    [ -s "$OUT/failures.log" ] && head -c 6000 "$OUT/failures.log"
fi
timeout $((BUDGET + 90)) $PY benchmarks/gpu_attention.py --budget "$BUDGET" --out "$OUT/gpu_attention.md" "$@" \
    2>&1 | tee "$OUT/bench.log" | grep -v "^  warn" | tail -120
BWD=${BWD_BUDGET:-0}
if [ "$BWD" != 0 ]; then
    timeout $((BWD + 90)) $PY benchmarks/gpu_backward.py --budget "$BWD" --out "$OUT/gpu_backward.md" \
        2>&1 | tee "$OUT/bwd.log" | tail -60
fi
