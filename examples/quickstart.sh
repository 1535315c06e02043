#!/usr/bin/env bash
# The whole llmctl pipeline, offline, on the Python standard library's source (the `pystdlib` corpus).
# A few minutes on a quiet 2-core CPU, to a validation loss of 3.67 nats (docs/commands/pretrain.md has the run and its timings).
#   bash examples/quickstart.sh [WORKDIR]
set -euo pipefail
W=${1:-quickstart}
cd "$(dirname "$0")/.."

llmctl data download pystdlib --out "$W/data/py"
llmctl tokenizer train --data "$W/data/py" --vocab-size 4096 --profile chat --out "$W/tok/py.json"
llmctl tokenize --data "$W/data/py" --tokenizer "$W/tok/py.json" --out "$W/tokens/py" --num-proc 2
llmctl count "$W/tokens/py"
llmctl flops estimate --model examples/configs/quickstart.yaml
llmctl pretrain -c examples/configs/quickstart.yaml --data "$W/tokens/py" --out "$W/runs/quickstart"
llmctl generate "$W/runs/quickstart/checkpoints/latest" --prompt "def main(" --max-new-tokens 64 --seed 0
llmctl plot "$W/runs/quickstart"
