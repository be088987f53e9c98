#!/usr/bin/env bash
# One GPU check in one go (< 8 min on one H100/H200), ending in one summary table:
#   1. pytest -m cuda            bf16 autocast, bf16 grouped matmul, fused AdamW, resume, OOM -> oom
#   2. throughput, d_model 768 / 12 heads: DNA vs its measured-FLOPs dense match, eager and compiled;
#      useful MFU = 3 x measured forward FLOPs/token x tokens/s / the device's bf16 dense peak
#   3. a 4-trial smoke sweep of search_spaces/lm.yaml, 4 trials at once with resources.gpu=0.25
# Usage: bash bench/gpu.sh [OUT_DIR]   (PY=python to use another interpreter; default: .venv's, else python3)
# On a machine with torch but without dnasweep's other packages (the lent GPU machine's image has
# torch, not omegaconf): run `bash bench/gpu_wheels.sh` where pip works, carry .whl/ along, and this
# script installs its wheels first. Part 3 needs Ray, Optuna and MLflow (pip install -e '.[sweep]'):
# without them it is skipped, and the table says so.
# Each part runs under its own timeout, killed 10 s after it (100 + 80 + 140 + 150 s, + 40 s of kills,
# + ~30 s of checks and the table: 9 min at the very worst, ~6 min as measured parts go), and the
# table reports what finished, so one hung part cannot eat the whole budget. Nothing here needs network access.
set -u
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT=${1:-$(mktemp -d /tmp/dnasweep-gpu.XXXX)}
mkdir -p "$OUT"
echo "dnasweep GPU check -> $OUT (python: $PY)"
if ls .whl/*.whl >/dev/null 2>&1; then  # carried wheels (bench/gpu_wheels.sh): installed beside the image's packages
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/dnasweep-site \
    .whl/*.whl && export PYTHONPATH="/tmp/dnasweep-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # dnasweep from this checkout, installed or not
"$PY" -c "import dnasweep.config, dnasweep.model, dnasweep.train.loop" >"$OUT/preflight.txt" 2>&1 || {
  echo "dnasweep does not import with $PY: $(tail -n 1 "$OUT/preflight.txt")"
  echo "fix: pip install -e . with that python, or carry the missing wheels (bash bench/gpu_wheels.sh, then .whl/)"
  exit 3; }
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print(torch.cuda.get_device_name(0))" \
  || { echo "no CUDA device: nothing to check"; exit 2; }

# 1. CUDA tests (~1 min)
timeout -k 10 100 "$PY" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider >"$OUT/pytest.txt" 2>&1
echo "pytest -m cuda: exit $?" | tee "$OUT/pytest.rc"

# 2. Throughput at d_model 768, 12 heads, bf16 autocast (~2-3 min, compile included). The synthetic
#    pool (8 transformer blocks, top-2) and the LM base's pool mix, both against the dense match.
timeout -k 10 80 "$PY" bench/throughput.py --device cuda --bf16 --d-model 768 --heads 12 --batch 32 --seq 512 \
  --iters 10 --warmup 3 --no-masked --json "$OUT/throughput_synthetic.json" >"$OUT/throughput_synthetic.txt" 2>&1
echo "throughput synthetic: exit $?" >"$OUT/throughput.rc"
timeout -k 10 140 "$PY" bench/throughput.py --device cuda --bf16 --config search_spaces/lm.yaml --sizes 768 \
  --set model.n_heads=12 --set model.seq_len=512 --set train.batch_size=32 --iters 10 --warmup 3 --compile \
  --json "$OUT/throughput_lm.json" >"$OUT/throughput_lm.txt" 2>&1
echo "throughput lm base: exit $?" >>"$OUT/throughput.rc"

# 3. A 4-trial sweep, 4 trials sharing the GPU (~2 min). The smoke overlay's 60 steps; the dense
#    reference ladder is trained first, as in every sweep. (A sweep stops on SIGTERM the way it does on
#    Ctrl-C, saving its state: -k bounds that too.)
if "$PY" -c "import ray.tune, optuna, mlflow" >/dev/null 2>&1; then
  timeout -k 10 150 "$PY" -m dnasweep.cli run search_spaces/lm.yaml --smoke --no-analyze --name gpu-check \
    --root "$OUT/sweeps" budget.trials=4 budget.concurrent=4 resources.gpu=0.25 resources.cpu=2 \
    base.train.device=cuda >"$OUT/sweep.txt" 2>&1
  echo "sweep: exit $?" >"$OUT/sweep.rc"
else
  echo "sweep: skipped, Ray Tune, Optuna or MLflow does not import with $PY (pip install -e '.[sweep]')" \
    >"$OUT/sweep.rc"
fi

"$PY" bench/throughput.py --gpu-summary "$OUT"
