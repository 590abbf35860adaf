#!/usr/bin/env bash
# The GPU figures of docs/cluster.md in one run, on one GPU node, with random weights (nothing downloaded):
#
#   bash benchmarks/gpu_cost.sh [LOG_DIR]
#
# 1. CLIP image encoding through the project's path (old, fp32, bf16 autocast, bf16 weights);
# 2. seconds per counterfactual at the paper settings, batch 32: the round trip on every image
#    against on the configured share, then the UNet compiled (each change's gain apart);
# 3. the embedded suite's CUDA path end to end, and its agreement with the CPU.
#
# Each step has its own time limit, so a slow one cannot hide the others; logs go to LOG_DIR
# (default logs/gpu_cost).  PYTHON picks the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
log_dir=${1:-logs/gpu_cost}
mkdir -p "$log_dir"
py=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

step() {  # step NAME SECONDS COMMAND...: run one measurement, keep going whatever it returns
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit} s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | grep -v 'it/s\]$' | tee "$log_dir/$name.log"
    echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$log_dir/device.log"
"$py" -c "import torch, diffusers, open_clip, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'diffusers', diffusers.__version__, 'open_clip', open_clip.__version__, 'transformers', transformers.__version__)" \
    2>&1 | tee -a "$log_dir/device.log"
step clip_encoding "${CLIP_LIMIT:-120}" "$py" benchmarks/clip_encoding.py --random-weights
step paper_gpu_hours "${UNET_LIMIT:-420}" "$py" benchmarks/paper_gpu_hours.py --random-weights \
    --batch-size 32 --batches 2 --compare --compile
step cuda_check "${CUDA_CHECK_LIMIT:-120}" "$py" benchmarks/cuda_check.py
