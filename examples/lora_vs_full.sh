#!/usr/bin/env bash
# "It learns": LoRA against full SFT at equal steps, on a model that went through export and import.
# A quickstart model pretrained by llmctl is exported to Hugging Face format and imported back (as a Hub
# model would be), then fine-tuned on the instruction set (examples/make_instructions.py) twice, SFT_STEPS
# each: every weight trained (examples/configs/sft.yaml), and LoRA rank 16 on all projections (base
# frozen, a higher learning rate as LoRA needs). Prints the imported model's validation loss and both runs'.
#   bash examples/lora_vs_full.sh [WORKDIR]
#
# Builds what is missing: a base from `bash examples/quickstart.sh` is used as it is; otherwise the
# quickstart model pretrains PRETRAIN_STEPS=80 steps at seq_len 128, as examples/dpo.sh does (about
# 2-3 minutes on a 2-core CPU). SEED=0 fixes both SFT runs. docs/lora.md has the figures of one run.
#   PRETRAIN_STEPS=250 SFT_STEPS=150 bash examples/lora_vs_full.sh
set -euo pipefail
W=${1:-quickstart}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-80}
SFT_STEPS=${SFT_STEPS:-60}
SEED=${SEED:-0}
cd "$(dirname "$0")/.."

if [ ! -e "$W/runs/quickstart/checkpoints/latest" ]; then
  [ -e "$W/data/py" ] || llmctl data download pystdlib --out "$W/data/py"
  [ -e "$W/tok/py.json" ] || llmctl tokenizer train --data "$W/data/py" --vocab-size 4096 --profile chat --out "$W/tok/py.json"
  [ -e "$W/tokens/py/meta.json" ] || llmctl tokenize --data "$W/data/py" --tokenizer "$W/tok/py.json" --out "$W/tokens/py" --num-proc 2
  llmctl pretrain -c examples/configs/quickstart.yaml --data "$W/tokens/py" --out "$W/runs/quickstart" --force \
    --steps "$PRETRAIN_STEPS" --data.seq_len=128 --optim.warmup_steps=10 --train.eval_every=40 \
    --optim.lr=6e-3 --optim.min_lr=6e-4 --optim.decay_fraction=0.3 --train.sample_every=0 --checkpoint.every=0
fi

# Out to a Hugging Face folder and back: the imported checkpoint is what LoRA users start from.
llmctl export "$W/runs/quickstart/checkpoints/latest" --format hf --out "$W/exports/quickstart-hf" --force
rm -rf "$W/imported/quickstart"
llmctl import "$W/exports/quickstart-hf" --out "$W/imported/quickstart"

[ -e "$W/data/instr" ] || llmctl data download ./examples/data/instructions.jsonl --out "$W/data/instr" --val-fraction 0.1 --test-fraction 0
# The imported model's own tokenizer and chat template (the export wrote both into the HF folder).
rm -rf "$W/tokens/instr-imported"
llmctl tokenize --mode sft --template model --data "$W/data/instr" --tokenizer "$W/imported/quickstart/tokenizer.json" \
  --out "$W/tokens/instr-imported"

common=(-c examples/configs/sft.yaml --init "$W/imported/quickstart" --data "$W/tokens/instr-imported"
  --data.seq_len=128 --optim.warmup_steps=10 --train.sample_every=0 --checkpoint.every=0 --train.log_every=20
  --train.seed="$SEED" --force)
# The imported model's validation loss before tuning: one LoRA step at a learning rate of 1e-12 leaves the
# adapters at zero (B starts at 0), so its evaluation is the base's.
llmctl sft "${common[@]}" --out "$W/runs/sft-before" --steps 1 --train.eval_every=1 --lora.rank=16 \
  --optim.lr=1e-12 --optim.min_lr=0 --optim.warmup_steps=0 > /dev/null
llmctl sft "${common[@]}" --out "$W/runs/sft-full" --steps "$SFT_STEPS" --train.eval_every=$((SFT_STEPS / 2))
llmctl sft "${common[@]}" --out "$W/runs/sft-lora" --steps "$SFT_STEPS" --train.eval_every=$((SFT_STEPS / 2)) \
  --lora.rank=16 --lora.alpha=32 --optim.lr=2e-3 --optim.min_lr=2e-4

python - "$W" "$SFT_STEPS" "$SEED" <<'EOF'
import json
import sys
from pathlib import Path

w, steps, seed = Path(sys.argv[1]), sys.argv[2], sys.argv[3]


def last_eval(run: str) -> float:
    records = [json.loads(x) for x in (w / "runs" / run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("kind") == "eval"][-1]["loss"]


print(f"validation loss on the instructions (assistant tokens), seed {seed}:")
print(f"  imported model, untuned       {last_eval('sft-before'):.4f}")
print(f"  full SFT, {steps} steps          {last_eval('sft-full'):.4f}")
print(f"  LoRA r=16 SFT, {steps} steps     {last_eval('sft-lora'):.4f}")
EOF
