#!/usr/bin/env bash
# The LLM track in bf16 on a lent GPU (benchmarks/gpu_llm_bf16.py; prepared, not yet measured). Budget: < 8 min on
# one H100 (the script's own estimate: θ_o ≈ 750 steps and θ_r ≈ 680 steps of a 90 M-parameter Llama, 4 methods ×
# 150 steps, 6 evaluations of 48 items per split).
#
# The device image has torch, transformers, accelerate and peft, but not pydantic or rouge-score. Prepare wheels here
# once (pure-Python except pydantic-core; versions as in the project's environment):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 nltk==3.10.4
#   python3 -m pip wheel --no-deps -w .whl rouge-score==0.1.2   # PyPI has only its sdist: build the wheel here
# then call the device tool with: command "bash benchmarks/gpu_llm_bf16.sh", carry [".whl"], timeout_s 540.
# Extra arguments go to the Python script (e.g. --compare-fp32, which about doubles the time).
set -euo pipefail
export PYTHONPATH="$PWD/src"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
export PYTHONUNBUFFERED=1
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu_llm_bf16.log" || true
python3 benchmarks/gpu_llm_bf16.py --out "$OUT" "$@" 2>&1 | tee -a "$OUT/gpu_llm_bf16.log"
