#!/usr/bin/env bash
# The SIGUSR1 demo of docs/commands/checkpoint.md: a 60-step run of the quickstart config gets SIGUSR1 once step 30 is
# logged, saves a checkpoint and exits 0; the same command with --resume auto then finishes it.
#   bash examples/sigusr1_demo.sh [WORKDIR]      (after examples/quickstart.sh, which wrote WORKDIR/tokens/py)
set -euo pipefail
W=${1:-quickstart}
cd "$(dirname "$0")/.."
RUN=(llmctl pretrain -c examples/configs/quickstart.yaml --data "$W/tokens/py" --out "$W/runs/demo" --steps 60)
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

rm -rf "$W/runs/demo"
echo "\$ ${RUN[*]} &"
"${RUN[@]}" 2> >(tee "$LOG" >&2) &
PID=$!
until grep -q '^\[Iter 30\]' "$LOG"; do
  kill -0 "$PID" 2>/dev/null || { echo "the run ended before step 30" >&2; exit 1; }
  sleep 0.2
done
echo "\$ kill -USR1 %1"
kill -USR1 "$PID"
status=0
wait "$PID" || status=$?
echo "\$ echo \$?"
echo "$status"
echo "\$ ${RUN[*]} --resume auto"
"${RUN[@]}" --resume auto
