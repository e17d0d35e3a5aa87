#!/bin/bash
# One-shot GPU check: the Fashion-MNIST preset end to end, the train-step benchmarks, the metric engine on CUDA.
#   benchmarks/gpu_check.sh [OUT_DIR]          (default: results/gpu_check)
# Environment: FMNIST_ROOT (the four IDX files; default Debian's path), PRESET_S (time limit for
# the preset, default 900 s), GPU_SLOTS (jobs sharing GPU 0, default 8: its slots in DISTDYN_GPU_IDS,
# docs/gpus.md "One box, N GPUs"). On a machine without
# network access, wheels in .whl/ (snakemake and what it needs) are installed to /tmp/site first.
set -u
OUT=${1:-${OUT:-results/gpu_check}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
command -v python >/dev/null || { mkdir -p /tmp/bin && ln -sf "$(command -v python3)" /tmp/bin/python && export PATH=/tmp/bin:$PATH; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm, snakemake; print('torch', torch.__version__, 'timm', timm.__version__, 'snakemake', snakemake.__version__)"
sed "s#root: /usr/share/datasets/fashion-mnist#root: ${FMNIST_ROOT:-/usr/share/datasets/fashion-mnist}#" presets/fashion_mnist.yaml > "$OUT/fashion_mnist.yaml"
stamp "preset start"
export DISTDYN_GPU_IDS=${DISTDYN_GPU_IDS:-$(yes 0 | head -n "${GPU_SLOTS:-8}" | paste -sd,)}
timeout -s INT "${PRESET_S:-900}" python3 -m snakemake --cores "$(nproc)" --resources gpu="${GPU_SLOTS:-8}" \
  --configfile "$OUT/fashion_mnist.yaml" -k > "$OUT/snakemake.log" 2>&1
echo "snakemake exit status $?"
stamp "preset end"
grep -E "steps \(" "$OUT/snakemake.log" | tail -1
cat results/metrics/accuracy_summary.csv 2>/dev/null
stamp "benchmark fashion"; python3 benchmarks/train_step.py --pair fashion 2>&1 | grep -v -i warn
stamp "benchmark cait"; python3 benchmarks/train_step.py --pair cait 2>&1 | grep -v -i warn
# seven students on one teacher (a distill_group job) against seven separate steps
stamp "benchmark fashion, 7 students"; python3 benchmarks/train_step.py --pair fashion --students 7 --repeat 2 2>&1 | grep -v -i warn
stamp "benchmark cait, 7 students"; python3 benchmarks/train_step.py --pair cait --students 7 --batch 128 --steps 10 --repeat 2 2>&1 | grep -v -i warn
stamp "metric engine on cuda"; python3 benchmarks/metrics.py --device cuda --repeat 2 2>&1 | grep -v -i warn
python3 -m pytest -q -p no:cacheprovider tests/test_metrics.py -k cuda 2>&1 | tail -2
stamp done
tar czf "$OUT/results.tgz" --exclude='results/activations' --exclude='*.pt' --exclude='results/.resume' \
  --exclude="$OUT" results 2>/dev/null
