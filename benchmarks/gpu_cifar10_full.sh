#!/usr/bin/env bash
# Full-scale CIFAR-10 random 10 % on a lent GPU (issue 13 item 7; prepared, not yet run): ResNet-18 on all 50,000
# training images, src/unlearnkit/configs/cifar10_full_resnet18.yaml, one seed.
#
#   bash benchmarks/gpu_cifar10_full.sh [cheap|ft|all] [extra --set overrides...]
#
# Groups (θ_o and θ_r are trained by the first call and cached in runs/, which survives between calls while the
# machine is warm; a fresh machine retrains them):
#   cheap  θ_r + GA, boundary shrink / expanding, SSD, LFSSD, analytic head, SCRUB, bad teacher, UNSIR
#          (estimate on one H100: ≈ 5–6 min: JPEG decode ≈ 0.5 min, θ_o + θ_r 2 × 20 epochs at ≈ 5–6 s, ≈ 1 min of
#          methods and evaluations)
#   ft     FT, RL, ℓ1-sparse, prune+FT, SalUn, SalUn-soft, EU-k, CF-k, LAF, Fisher (≈ 10 min more: ten methods of
#          5–20 epochs on D_r, and per-sample Fisher over 45,000 images)
#   all    both (≈ 16 min: more than one call's 10-minute limit; use two calls)
# With a 15-minute device budget: run `cheap`; `ft` needs a second lease.
#
# The device image has torch but not pydantic (and maybe not torchvision). Prepare wheels here once, as for
# benchmarks/gpu_llm_bf16.sh (pydantic, pydantic-core, annotated-types, typing-inspection into .whl/), plus a
# torchvision wheel matching the device's torch if it lacks one. Data: the CIFAR-10 zips from
# ../shared/data/cifar10 travel only as carried ignored paths, and both with the tree exceed the 64 MiB limit, so
# use two calls (ignored paths already on the machine stay while it is warm):
#   echo /.gpu_data/ >> .git/info/exclude
#   mkdir -p .gpu_data/train .gpu_data/test
#   cp ../shared/data/cifar10/cifar10-jpg-train.zip .gpu_data/train/
#   cp ../shared/data/cifar10/cifar10-jpg-test.zip .gpu_data/test/
#   call 1: command "true", carry [".gpu_data/train"]
#   call 2: command "bash benchmarks/gpu_cifar10_full.sh cheap", carry [".gpu_data/test", ".whl"], timeout_s 540
# Outputs: $OUT/gpu_cifar10_full.{log,md} (the run's report.md) and the run folder's results.jsonl.
set -euo pipefail
GROUP="${1:-cheap}"
shift || true
case "$GROUP" in
  cheap) METHODS="[retrain, grad_ascent, boundary_shrink, boundary_expanding, ssd, lfssd, analytic_head, scrub, bad_teacher, unsir]" ;;
  ft)    METHODS="[retrain, finetune, random_label, l1_sparse, prune_ft, salun, salun_soft, eu_k, cf_k, laf, fisher_forgetting]" ;;
  all)   METHODS="" ;;
  *) echo "unknown group '$GROUP' (cheap, ft or all)" >&2; exit 2 ;;
esac
export PYTHONPATH="$PWD/src"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
python3 -c "import torchvision" 2>/dev/null || { echo "torchvision is missing: add a wheel matching the device's torch to .whl/" >&2; exit 3; }
ROOT="${CIFAR_ROOT:-.gpu_data/cifar10}"
mkdir -p "$ROOT"
for f in .gpu_data/train/cifar10-jpg-train.zip .gpu_data/test/cifar10-jpg-test.zip; do
  if [ -f "$f" ] && [ ! -e "$ROOT/$(basename "$f")" ]; then ln -s "$PWD/$f" "$ROOT/$(basename "$f")"; fi
done
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu_cifar10_full.log" || true
SETS=(--set "data.root=$ROOT" --set engine.threads=8)
if [ -n "$METHODS" ]; then SETS+=(--set "methods=$METHODS"); fi
start=$(date +%s)
python3 -m unlearnkit run src/unlearnkit/configs/cifar10_full_resnet18.yaml "${SETS[@]}" "$@" 2>&1 | tee -a "$OUT/gpu_cifar10_full.log"
echo "wall $(( $(date +%s) - start )) s (group $GROUP)" | tee -a "$OUT/gpu_cifar10_full.log"
run=$(ls -td runs/cifar10_full_resnet18-* | head -1)
cp "$run/report.md" "$OUT/gpu_cifar10_full_${GROUP}.md" 2>/dev/null || true
cp "$run/results.jsonl" "$OUT/gpu_cifar10_full_${GROUP}.jsonl" 2>/dev/null || true
