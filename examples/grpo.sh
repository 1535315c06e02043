#!/usr/bin/env bash
# Reinforcement learning with a verifiable reward (GRPO), offline, on a toy task: addition as a chat.
# A tiny model is pretrained on "a + b = c" lines, SFT'd (briefly: it is left half-trained) on
# "What is a + b?" -> "c" conversations, evaluated on held-out questions (pass@1 at temperature 0: greedy
# exact match), trained with GRPO and the `number` reward on prompts from the training pool, and evaluated
# again. docs/grpo.md shows the outputs of exactly this script (seed 0).
#   bash examples/grpo.sh [WORKDIR]
#
# DIGITS=1 (the default) adds one-digit numbers: 20 of the 100 questions are held out, and the whole script
# takes about a minute on a free 2-core CPU. DIGITS=2 holds out 200 of 8,100 questions; docs/grpo.md reports
# what the tiny model reached there with the step counts below raised (PRETRAIN_STEPS=1500 SFT_STEPS=300
# GRPO_STEPS=100 MODEL=small).
set -euo pipefail
W=${1:-grpo-addition}
DIGITS=${DIGITS:-1}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-150}
SFT_STEPS=${SFT_STEPS:-40}
GRPO_STEPS=${GRPO_STEPS:-300}
cd "$(dirname "$0")/.."
QUIET=(--train.device=cpu --telemetry.tensorboard=false --checkpoint.every=0 --train.sample_every=0)
if [ "${MODEL:-tiny}" = small ]; then
  SHAPE=(--model.dim=128 --model.n_layers=4 --model.n_heads=4 --model.n_kv_heads=4 --model.ffn_dim=384)
else
  SHAPE=(--model.dim=64 --model.n_layers=2 --model.n_heads=4 --model.n_kv_heads=2 --model.ffn_dim=128)
fi
if [ "$DIGITS" = 1 ]; then SIZES=(--text 3000 --chat 1500 --prompts 500 --test 20); else SIZES=(); fi

python examples/make_addition.py --out "$W/add" --digits "$DIGITS" --seed 0 "${SIZES[@]}"
llmctl data download "$W/add/text.jsonl" --out "$W/data/text" --val-fraction 0.02 --test-fraction 0
llmctl data download "$W/add/chat.jsonl" --out "$W/data/chat" --val-fraction 0.02 --test-fraction 0
llmctl tokenizer train --data "$W/data/text" --vocab-size 300 --profile chat --out "$W/tok.json"
llmctl tokenize --data "$W/data/text" --tokenizer "$W/tok.json" --out "$W/tokens/text"
llmctl tokenize --mode sft --profile chat --data "$W/data/chat" --tokenizer "$W/tok.json" --out "$W/tokens/chat"

llmctl pretrain --data "$W/tokens/text" --out "$W/runs/base" --steps "$PRETRAIN_STEPS" "${QUIET[@]}" "${SHAPE[@]}" \
  --model.max_seq_len=128 --data.seq_len=64 --train.micro_batch_size=8 --optim.lr=3e-3 --optim.warmup_steps=5 \
  --train.eval_every=50 --train.log_every=50
llmctl sft --init "$W/runs/base/checkpoints/latest" --data "$W/tokens/chat" --out "$W/runs/sft" --steps "$SFT_STEPS" \
  "${QUIET[@]}" --data.seq_len=32 --train.micro_batch_size=16 --optim.lr=2e-3 --optim.warmup_steps=5 \
  --train.eval_every=0 --train.log_every=20

llmctl eval "$W/runs/sft/checkpoints/latest" --task "$W/add/test.jsonl" --max-new-tokens 6 --device cpu
llmctl grpo --init "$W/runs/sft/checkpoints/latest" --data "$W/add/prompts.jsonl" --out "$W/runs/grpo" \
  --steps "$GRPO_STEPS" --reward number --grpo.num_generations=8 --grpo.prompts_per_step=8 --grpo.max_new_tokens=4 \
  --train.micro_batch_size=32 --optim.lr=3e-4 --optim.warmup_steps=0 --optim.schedule=constant \
  --train.device=cpu --telemetry.tensorboard=false --checkpoint.every=0 --train.sample_every=100 --train.log_every=50
llmctl eval "$W/runs/sft/checkpoints/latest" "$W/runs/grpo/checkpoints/latest" --task "$W/add/test.jsonl" \
  --max-new-tokens 6 --device cpu
