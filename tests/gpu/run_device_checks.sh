#!/usr/bin/env bash
# The device checks of the performance issue in one go, on a machine with a CUDA GPU (about 8 minutes):
#   1. tests/gpu/gpu_trial.py  one study trial on CUDA, the step on CUDA against the CPU;
#   2. tests/gpu/bench_gpu.py  the three quoted figures: % of matmul peak at d = 512 f32, ms/step at
#      N = 1024 d = 10, trials/s of K batched trials against K = 1;
#   3. the two CPU benches (--quick) on the same machine, for the side-by-side tables.
# Every part has its own time limit, so one that hangs leaves the others their time; the figures come first.
# Usage: tests/gpu/run_device_checks.sh [python]   (default: .venv/bin/python, else python3)
set -u
cd "$(dirname "$0")/../.."
PY=${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
part() {  # part SECONDS SCRIPT [ARGS...]
    local limit=$1; shift
    echo "=== $* (limit ${limit} s)"
    timeout "$limit" "$PY" "$@"
    local rc=$?
    [ $rc -eq 0 ] || { echo "=== $1 exited with $rc"; status=1; }
}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print(torch.cuda.get_device_name())" \
    || exit 1
part 240 tests/gpu/bench_gpu.py
part 150 tests/gpu/gpu_trial.py
part 60 tests/bench/bench_depth.py --quick --wait 0
part 90 tests/bench/bench_core.py --quick --wait 0
exit $status
