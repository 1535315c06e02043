"""Write a toy task with a checkable answer, 2-digit addition, for the offline GRPO walkthrough (docs/grpo.md).

    python examples/make_addition.py --out work/addition
    # work/addition/text.jsonl      {"text": "47 + 38 = 85"}                   pretraining text
    # work/addition/chat.jsonl      {"messages": [user "What is 47 + 38?", assistant "85"]}   SFT
    # work/addition/prompts.jsonl   {"prompt": "What is 47 + 38?", "answer": "85"}            GRPO
    # work/addition/test.jsonl      {"prompt": "What is 12 + 70?", "answer": "82"}            held out: eval

Every pair (a, b) of --digits-digit numbers (10 <= a, b <= 99 by default) is either held out (--test rows, never seen in training) or in the
training pool; text, chat and prompts are drawn from the pool. Rows depend only on --seed.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def question(a: int, b: int) -> str:
    """The user's turn."""
    return f"What is {a} + {b}?"


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make(
    out: Path, *, text: int, chat: int, prompts: int, test: int, seed: int, digits: int = 2
) -> dict[str, int]:
    """Write the four files; returns their row counts."""
    rng = random.Random(seed)
    low, high = (0 if digits == 1 else 10 ** (digits - 1)), 10**digits
    pairs = [(a, b) for a in range(low, high) for b in range(low, high)]
    rng.shuffle(pairs)
    held, pool = pairs[:test], pairs[test:]
    out.mkdir(parents=True, exist_ok=True)
    draw = [rng.choice(pool) for _ in range(text)]
    write_jsonl(out / "text.jsonl", [{"text": f"{a} + {b} = {a + b}"} for a, b in draw])
    draw = [rng.choice(pool) for _ in range(chat)]
    write_jsonl(
        out / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": question(a, b)},
                    {"role": "assistant", "content": str(a + b)},
                ]
            }
            for a, b in draw
        ],
    )
    draw = [rng.choice(pool) for _ in range(prompts)]
    write_jsonl(out / "prompts.jsonl", [{"prompt": question(a, b), "answer": str(a + b)} for a, b in draw])
    write_jsonl(out / "test.jsonl", [{"prompt": question(a, b), "answer": str(a + b)} for a, b in held])
    return {"text": text, "chat": chat, "prompts": prompts, "test": test}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder to write the four JSONL files into.")
    parser.add_argument("--text", type=int, default=20000, help="Pretraining lines.")
    parser.add_argument("--chat", type=int, default=4000, help="SFT conversations.")
    parser.add_argument("--prompts", type=int, default=2000, help="GRPO prompts.")
    parser.add_argument("--test", type=int, default=200, help="Held-out questions.")
    parser.add_argument("--digits", type=int, default=2, help="Digits of each operand.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = make(
        args.out,
        text=args.text,
        chat=args.chat,
        prompts=args.prompts,
        test=args.test,
        seed=args.seed,
        digits=args.digits,
    )
    print(json.dumps({"out": str(args.out), **counts}))


if __name__ == "__main__":
    main()
