#!/usr/bin/env bash
# Preference tuning (DPO) after the SFT example, offline: the instruction set's right answers are
# preferred over corrupted ones (examples/make_preferences.py), and held-out reward accuracy climbs
# well above chance. Needs a quickstart base and an SFT run on examples/data/instructions.jsonl;
# builds them if absent.
#   bash examples/dpo.sh [WORKDIR]
#
# Shrunk to run end to end in about 2.5 minutes on a shared 2-core CPU, corpus and tokenizer included (the
# figures in docs/commands/dpo.md come from exactly these settings): when it has to build the base itself it
# pretrains the quickstart model for PRETRAIN_STEPS=80 steps at seq_len 128 instead of quickstart.sh's 270 at
# 256 (the quickstart config's Muon on the hidden matrices, with this script's AdamW rate and decay), then
# runs SFT_STEPS=60 steps of SFT and DPO_STEPS=60 steps of DPO, both at seq_len 128 (every pair fits: --max-len 128
# cuts none). A base from `bash examples/quickstart.sh` is used as it is. On a free machine, raise them:
#   PRETRAIN_STEPS=250 SFT_STEPS=150 DPO_STEPS=120 bash examples/dpo.sh
set -euo pipefail
W=${1:-quickstart}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-80}
SFT_STEPS=${SFT_STEPS:-60}
DPO_STEPS=${DPO_STEPS:-60}
cd "$(dirname "$0")/.."

if [ ! -e "$W/runs/sft/checkpoints/latest" ]; then
  if [ ! -e "$W/runs/quickstart/checkpoints/latest" ]; then
    # quickstart.sh's data steps, then a shorter pretraining run of its model.
    [ -e "$W/data/py" ] || llmctl data download pystdlib --out "$W/data/py"
    [ -e "$W/tok/py.json" ] || llmctl tokenizer train --data "$W/data/py" --vocab-size 4096 --profile chat --out "$W/tok/py.json"
    [ -e "$W/tokens/py/meta.json" ] || llmctl tokenize --data "$W/data/py" --tokenizer "$W/tok/py.json" --out "$W/tokens/py" --num-proc 2
    llmctl pretrain -c examples/configs/quickstart.yaml --data "$W/tokens/py" --out "$W/runs/quickstart" --force \
      --steps "$PRETRAIN_STEPS" --data.seq_len=128 --optim.warmup_steps=10 --train.eval_every=40 \
      --optim.lr=6e-3 --optim.min_lr=6e-4 --optim.decay_fraction=0.3 --train.sample_every=0 --checkpoint.every=0
  fi
  llmctl data download ./examples/data/instructions.jsonl --out "$W/data/instr" --val-fraction 0.1 --test-fraction 0
  llmctl tokenize --mode sft --profile chat --data "$W/data/instr" --tokenizer "$W/tok/py.json" --out "$W/tokens/instr"
  llmctl sft -c examples/configs/sft.yaml --init "$W/runs/quickstart/checkpoints/latest" --data "$W/tokens/instr" \
    --out "$W/runs/sft" --steps "$SFT_STEPS" --data.seq_len=128 --optim.warmup_steps=10 --train.eval_every=30 \
    --train.sample_every=0 --checkpoint.every=0
fi

mkdir -p "$W/raw"
python examples/make_preferences.py examples/data/instructions.jsonl "$W/raw/prefs.jsonl"
llmctl data download "$W/raw/prefs.jsonl" --out "$W/data/prefs" --val-fraction 0.1 --test-fraction 0
llmctl tokenize --mode dpo --profile chat --data "$W/data/prefs" --tokenizer "$W/tok/py.json" --out "$W/tokens/prefs" --max-len 128
llmctl count "$W/tokens/prefs"
llmctl inspect "$W/tokens/prefs" --index 0 --no-interactive
llmctl dpo --init "$W/runs/sft/checkpoints/latest" --data "$W/tokens/prefs" --out "$W/runs/dpo" --steps "$DPO_STEPS" \
  --data.seq_len=128 --data.packing=true --train.micro_batch_size=8 --optim.lr=1e-4 --optim.min_lr=1e-5 \
  --optim.warmup_steps=5 --optim.weight_decay=0 --train.eval_every=20 --train.eval_batches=9 \
  --train.sample_every=0 --train.log_every=10 --checkpoint.every=0 --dpo.beta=0.1
llmctl generate "$W/runs/dpo/checkpoints/latest" --chat --prompt "What is 28 + 32?" -t 0
