#!/usr/bin/env bash
# Preference tuning (DPO) after the SFT example, offline: the instruction set's right answers are
# preferred over corrupted ones (examples/make_preferences.py), and held-out reward accuracy climbs
# well above chance. Needs the quickstart base and the SFT run of README section 7; runs them if absent.
#   bash examples/dpo.sh [WORKDIR]
set -euo pipefail
W=${1:-quickstart}
cd "$(dirname "$0")/.."

if [ ! -e "$W/runs/sft/checkpoints/latest" ]; then
  [ -e "$W/runs/quickstart/checkpoints/latest" ] || bash examples/quickstart.sh "$W"
  llmctl data download ./examples/data/instructions.jsonl --out "$W/data/instr" --val-fraction 0.1 --test-fraction 0
  llmctl tokenize --mode sft --profile chat --data "$W/data/instr" --tokenizer "$W/tok/py.json" --out "$W/tokens/instr"
  llmctl sft -c examples/configs/sft.yaml --init "$W/runs/quickstart/checkpoints/latest" --data "$W/tokens/instr" \
    --out "$W/runs/sft" --steps 150
fi

mkdir -p "$W/raw"
python examples/make_preferences.py examples/data/instructions.jsonl "$W/raw/prefs.jsonl"
llmctl data download "$W/raw/prefs.jsonl" --out "$W/data/prefs" --val-fraction 0.1 --test-fraction 0
llmctl tokenize --mode dpo --profile chat --data "$W/data/prefs" --tokenizer "$W/tok/py.json" --out "$W/tokens/prefs" --max-len 256
llmctl count "$W/tokens/prefs"
llmctl inspect "$W/tokens/prefs" --index 0 --no-interactive
llmctl dpo --init "$W/runs/sft/checkpoints/latest" --data "$W/tokens/prefs" --out "$W/runs/dpo" --steps 120 \
  --data.seq_len=256 --data.packing=true --train.micro_batch_size=8 --optim.lr=1e-4 --optim.min_lr=1e-5 \
  --optim.warmup_steps=10 --optim.weight_decay=0 --train.eval_every=30 --train.eval_batches=10 \
  --train.sample_every=0 --train.log_every=10 --checkpoint.every=60 --dpo.beta=0.1
llmctl generate "$W/runs/dpo/checkpoints/latest" --chat --prompt "What is 28 + 32?" -t 0
