#!/usr/bin/env bash
# The GPU check, in one command, on a machine with a CUDA GPU (never in CI):
#   bash benchmarks/gpu_check.sh            # HF and vLLM (vLLM goes into its own environment)
#   bash benchmarks/gpu_check.sh --no-vllm  # HF only
# 1. builds .venv-gpu: the project's pins with the CUDA build of torch 2.13.0 (the default wheel), plus vllm 0.32.0,
#    which needs transformers < 5.20 and numpy < 2.4 (5.19.0 and 2.3.5 here instead of the
#    project's 5.23.0 and 2.4.6; the same set as envs/vllm.yaml);
# 2. runs the GPU tests (pytest -m gpu: bf16 sampling and scoring, vLLM against HF greedy answers,
#    a LoRA adapter served through vLLM);
# 3. runs the .test workflow on the GPU (device cuda, the RMs in bf16), with rollouts from HF
#    generate and, in a second results directory, from vLLM;
# 4. measures rollout tokens/s of HF generate against vLLM on that run's SFT policy, and RM
#    scoring throughput in bf16 (benchmarks/gpu_throughput.py);
# 5. routed rewards inside GRPO on the GPU (examples/route_rewards_in_grpo.py on that run's SFT
#    policy), with HF generation and, with vLLM, TRL's colocated vLLM generation (the .test
#    workflow of step 3 already trains its online methods with GRPO and RLOO on the GPU).
# Results: benchmarks/out/gpu_check/ (gpu_throughput.tsv, the configs, logs). Nothing is downloaded
# at run time; installing .venv-gpu needs the package index.
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_VLLM=1
[[ "${1:-}" == "--no-vllm" ]] && WITH_VLLM=0
OUT=benchmarks/out/gpu_check
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

VENV=.venv-gpu
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet torch==2.13.0
  "$VENV/bin/pip" install --quiet -e '.[workflow,test]'
  if [[ $WITH_VLLM == 1 ]]; then
    "$VENV/bin/pip" install --quiet vllm==0.32.0 transformers==5.19.0 numpy==2.3.5 torch==2.13.0
  fi
fi
PY="$VENV/bin/python"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name(0))"

echo "== GPU tests"
timeout 1200 "$PY" -m pytest -q -m gpu tests/test_models.py tests/test_backends.py 2>&1 | tee "$OUT/pytest_gpu.txt"

echo "== .test workflow on the GPU"
"$PY" - "$OUT" "$WITH_VLLM" <<'PYCODE'
import sys
from pathlib import Path

import pandas as pd
import yaml

out, with_vllm = Path(sys.argv[1]), sys.argv[2] == "1"
base = yaml.safe_load(Path(".test/config/config.yaml").read_text())
sheet = pd.read_csv(base["rm_pool"], sep="\t", dtype=str, keep_default_na=False)
sheet["dtype"] = "bfloat16"  # score in bf16 on the GPU
sheet.to_csv(out / "rm_pool_bf16.tsv", sep="\t", index=False)
for backend in ["hf"] + (["vllm"] if with_vllm else []):
    config = {**base, "run_name": f"gpu-check-{backend}", "results_dir": f".test/results-gpu-{backend}", "device": "cuda",
              "rm_pool": str(out / "rm_pool_bf16.tsv"), "rollout": {"backend": backend, "gpu_memory_utilization": 0.2}}  # up to 4 jobs at once
    (out / f"config_{backend}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
PYCODE
for backend in hf $([[ $WITH_VLLM == 1 ]] && echo vllm); do
  rm -rf ".test/results-gpu-$backend"
  start=$(date +%s)
  timeout -k 10 3600 "$VENV/bin/snakemake" --cores 4 --configfile "$OUT/config_$backend.yaml" > "$OUT/workflow_$backend.log" 2>&1 \
    && echo "workflow ($backend rollouts): finished in $(( $(date +%s) - start )) s" \
    || { echo "workflow ($backend rollouts): FAILED after $(( $(date +%s) - start )) s, see $OUT/workflow_$backend.log"; tail -30 "$OUT/workflow_$backend.log"; }
done

echo "== throughput"
R=.test/results-gpu-hf
timeout 1800 "$PY" benchmarks/gpu_throughput.py --policy "$R/models/sft" --rm "$R/rms/rm_a" --prompts "$R/data/rollout.jsonl" \
  --out "$OUT/gpu_throughput.tsv"

echo "== GRPO with routed rewards (HF generation, then TRL's colocated vLLM generation)"
for gen in hf $([[ $WITH_VLLM == 1 ]] && echo vllm); do
  timeout 1200 "$PY" examples/route_rewards_in_grpo.py --policy "$R/models/sft" $([[ $gen == vllm ]] && echo --vllm) \
    > "$OUT/grpo_$gen.log" 2>&1 && tail -3 "$OUT/grpo_$gen.log" || { echo "GRPO ($gen): FAILED, see $OUT/grpo_$gen.log"; tail -20 "$OUT/grpo_$gen.log"; }
done
