#!/usr/bin/env bash
# The local provider on a GPU machine: training throughput and multi-adapter serving.
#
#   FTQ_BENCH_MODEL=/models/Qwen2.5-0.5B-Instruct bench/gpu.sh
#
# 1. Training tokens/s for a 0.5-1B model, full and LoRA, on 1 process and on N processes
#    (N = FTQ_BENCH_PROCESSES, default: every visible GPU) both as DDP (model replicated) and
#    as FSDP (model sharded), against a plain transformers/peft loop on the same data in the
#    same run (bench/train.py; ratios, not absolute figures, are what compare across
#    machines). With one GPU there is nothing to shard: only the single-process row runs.
# 2. vLLM serving throughput with 1, 8 and 32 LoRA adapters loaded at runtime through ftq's
#    adapter loader, against the base model alone (bench/serve_adapters.py; needs `vllm`).
#
# It refuses to run without an NVIDIA GPU, a CUDA build of torch, or the model, and says which.
# Results: the tables on stdout, JSON under ${OUT:-var/bench-gpu}/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-var/bench-gpu}

fail() { echo "bench/gpu.sh: $*" >&2; exit "${2:-2}"; }

command -v nvidia-smi >/dev/null 2>&1 || fail "no nvidia-smi: this benchmark needs an NVIDIA GPU machine"
nvidia-smi -L >/dev/null 2>&1 || fail "nvidia-smi sees no GPU: this benchmark needs an NVIDIA GPU"
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
  || fail "torch in $PY has no CUDA: install the CUDA build of torch==2.13.0 (pip install \".[train]\" on a GPU image)" 3
MODEL=${FTQ_BENCH_MODEL:-}
[ -n "$MODEL" ] && [ -f "$MODEL/config.json" ] \
  || fail "set FTQ_BENCH_MODEL to a local 0.5-1B chat model directory (config.json, weights, tokenizer); nothing is downloaded" 4

GPUS=$(nvidia-smi -L | wc -l)
N=${FTQ_BENCH_PROCESSES:-$GPUS}
PROCESSES=1
[ "$N" -gt 1 ] && PROCESSES="1,$N"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpus.txt"

# A chat dataset of 2,048 examples of mixed length (64-512 tokens): what packing is for.
"$PY" - "$OUT/train.jsonl" <<'PYEOF'
import json, random, sys
random.seed(0)
words = "the model learns to answer questions about queues jobs adapters tokens and checkpoints".split()
with open(sys.argv[1], "w") as out:
    for i in range(2048):
        question = " ".join(random.choices(words, k=random.randint(8, 40)))
        answer = " ".join(random.choices(words, k=random.randint(40, 400)))
        out.write(json.dumps({"messages": [
            {"role": "user", "content": f"Question {i}: {question}?"},
            {"role": "assistant", "content": answer},
        ]}) + "\n")
PYEOF

echo "== training: ftq vs a plain transformers loop (processes: $PROCESSES; DDP and FSDP on $N)"
"$PY" bench/train.py --device cuda --base "$MODEL" --data "$OUT/train.jsonl" \
  --methods full,lora --processes "$PROCESSES" --strategies ddp,fsdp --epochs 1 \
  --batch-size 16 --max-seq-len 1024 --threads 4 --repeats 1 --json-out "$OUT/train.json"

echo "== serving: vLLM with 1, 8 and 32 runtime-loaded adapters"
"$PY" -c 'import vllm' 2>/dev/null \
  || fail "vllm is not installed in $PY (pip install vllm on the GPU image); training figures are in $OUT/train.json" 5
"$PY" bench/serve_adapters.py --model "$MODEL" --adapters 1,8,32 --json-out "$OUT/serve.json"
