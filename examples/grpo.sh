#!/usr/bin/env bash
# Reinforcement learning with a verifiable reward (GRPO), offline, on a toy task: 2-digit addition as a chat.
# A tiny model is pretrained on "a + b = c" lines, SFT'd on "What is a + b?" -> "c" conversations, evaluated
# on 200 held-out questions (pass@1 at temperature 0: greedy exact match), trained with GRPO and the `number`
# reward on training-pool prompts, and evaluated again. docs/grpo.md shows the outputs of exactly this script.
#   bash examples/grpo.sh [WORKDIR]
#
# The defaults are sized for a busy 2-core CPU (about 25 minutes there); raise the steps on a free machine:
#   PRETRAIN_STEPS=2000 SFT_STEPS=400 GRPO_STEPS=200 bash examples/grpo.sh
set -euo pipefail
W=${1:-grpo-addition}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-300}
SFT_STEPS=${SFT_STEPS:-60}
GRPO_STEPS=${GRPO_STEPS:-40}
cd "$(dirname "$0")/.."
QUIET=(--train.device=cpu --telemetry.tensorboard=false --checkpoint.every=0 --train.sample_every=0)

python examples/make_addition.py --out "$W/add" --seed 0
llmctl data download "$W/add/text.jsonl" --out "$W/data/text" --val-fraction 0.02 --test-fraction 0
llmctl data download "$W/add/chat.jsonl" --out "$W/data/chat" --val-fraction 0.02 --test-fraction 0
llmctl tokenizer train --data "$W/data/text" --vocab-size 300 --profile chat --out "$W/tok.json"
llmctl tokenize --data "$W/data/text" --tokenizer "$W/tok.json" --out "$W/tokens/text"
llmctl tokenize --mode sft --profile chat --data "$W/data/chat" --tokenizer "$W/tok.json" --out "$W/tokens/chat"

llmctl pretrain --data "$W/tokens/text" --out "$W/runs/base" --steps "$PRETRAIN_STEPS" "${QUIET[@]}" \
  --model.dim=128 --model.n_layers=4 --model.n_heads=4 --model.n_kv_heads=4 --model.ffn_dim=384 \
  --model.max_seq_len=128 --data.seq_len=128 --train.micro_batch_size=16 --optim.lr=3e-3 --optim.warmup_steps=30 \
  --train.eval_every=100 --train.log_every=50
llmctl sft --init "$W/runs/base/checkpoints/latest" --data "$W/tokens/chat" --out "$W/runs/sft" --steps "$SFT_STEPS" \
  "${QUIET[@]}" --data.seq_len=64 --train.micro_batch_size=16 --optim.lr=1e-3 --optim.warmup_steps=5 \
  --train.eval_every=0 --train.log_every=20

llmctl eval "$W/runs/sft/checkpoints/latest" --task "$W/add/test.jsonl" --max-new-tokens 8 --device cpu
llmctl grpo --init "$W/runs/sft/checkpoints/latest" --data "$W/add/prompts.jsonl" --out "$W/runs/grpo" \
  --steps "$GRPO_STEPS" --reward number --grpo.num_generations=8 --grpo.prompts_per_step=8 --grpo.max_new_tokens=6 \
  --train.micro_batch_size=32 --optim.lr=3e-4 --optim.warmup_steps=0 --optim.schedule=constant \
  --train.device=cpu --telemetry.tensorboard=false --checkpoint.every=0 --train.sample_every=10 --train.log_every=5
llmctl eval "$W/runs/sft/checkpoints/latest" "$W/runs/grpo/checkpoints/latest" --task "$W/add/test.jsonl" \
  --max-new-tokens 8 --device cpu
