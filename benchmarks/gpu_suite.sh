#!/usr/bin/env bash
# The EBM benchmark suite on a GPU machine, in parts that each fit a 10-minute command limit.
#
#   bash benchmarks/gpu_suite.sh PART [extra bench_ebm options]
#
# PART: quick (tiny sizes, checks the whole path, ~2-3 min), langevin-paper, langevin-small,
# rest (cost check, training, generation), all (everything in one process, no time limit),
# merge (joins the three part files into ebm_gpu.json/.md), precision (benchmarks/bench_precision.py: f32 against
# the bf16 compute policy, Langevin step and CD iteration at the paper size, to precision_gpu.{json,md}).
# Needs only jax (with its CUDA plugin), flax, optax, orbax, chex and h5py; runs the PyTorch peer when
# `import torch` finds CUDA (NO_PEER=1 turns it off). Results go to benchmarks/results/ebm_gpu*.{json,md}
# and, with the log and nvidia-smi's view of the card, to $OUT when that is set.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
RESULTS=benchmarks/results
OUT_DIR="${OUT:-$RESULTS}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# JAX and torch share the GPU in one process: allocate on demand instead of JAX taking 75% up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

part="${1:-quick}"
shift || true
case "$part" in
  quick)          args=(--quick) ;;
  langevin-paper) args=(--sections langevin --sizes paper) ;;
  langevin-small) args=(--sections langevin --sizes small) ;;
  rest)           args=(--sections cost train generation) ;;
  all)            args=() ;;
  precision)      exec "$PYTHON" -m benchmarks.bench_precision --out-dir "$OUT_DIR" "$@" ;;
  merge)
    exec "$PYTHON" -m benchmarks.bench_ebm --merge "$RESULTS/ebm_gpu_langevin_paper.json" \
      "$RESULTS/ebm_gpu_langevin_small.json" "$RESULTS/ebm_gpu_cost-train-generation.json" ;;
  *) echo "unknown part '$part' (quick, langevin-paper, langevin-small, rest, all, merge, precision)" >&2; exit 2 ;;
esac

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
  --format=csv > "$OUT_DIR/nvidia_smi_$part.csv" 2>&1 || true
"$PYTHON" -c "import jax; d = jax.devices(); print('jax', jax.__version__, d); assert d[0].platform == 'gpu', 'no GPU'"

peer=()
if [ -z "${NO_PEER:-}" ] && "$PYTHON" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  peer=(--peer torch)
else
  echo "PyTorch peer not run (NO_PEER set, or torch with CUDA not importable)"
fi

start=$(date +%s)
"$PYTHON" -m benchmarks.bench_ebm "${args[@]}" "${peer[@]}" "$@" 2>&1 | tee "$OUT_DIR/ebm_gpu_${part}_log.txt"
echo "part $part took $(( $(date +%s) - start )) s"
if [ "$OUT_DIR" != "$RESULTS" ]; then
  cp "$RESULTS"/ebm_gpu*.json "$RESULTS"/ebm_gpu*.md "$OUT_DIR"/
fi
