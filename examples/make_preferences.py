"""Preference pairs from the instruction set: the right answer (chosen) against a corrupted one (rejected).

    python examples/make_preferences.py examples/data/instructions.jsonl prefs.jsonl

Each row of the input is a conversation whose last turn is the assistant's answer. The rejected answer
is wrong in the way a half-trained model is: a sum off by a few, an uppercase request left in lower
case, a list in the wrong order, a letter dropped from a spelling, a reversed word not reversed.
Rows are {"prompt": [turns before the answer], "chosen": "...", "rejected": "..."}, one JSON per line.
"""

from __future__ import annotations

import json
import random
import sys


def corrupt(answer: str, rng: random.Random) -> str:
    """A plausible wrong answer, never equal to `answer`."""
    if answer.isdigit():
        return str(int(answer) + rng.choice([-3, -2, -1, 1, 2, 3, 10]))
    if answer.isupper():
        return answer.lower()
    if ", " in answer:
        items = answer.split(", ")
        return ", ".join(reversed(items)) if len(set(items)) > 1 else answer + ", " + items[0]
    if "-" in answer and len(answer) > 3:
        letters = answer.split("-")
        del letters[rng.randrange(len(letters))]
        return "-".join(letters)
    words = answer.split()
    if len(words) > 3:
        return " ".join(words[: len(words) // 2])  # a description cut in half
    wrong = answer[::-1]
    return wrong if wrong != answer else answer + answer[-1]


def main(src: str, dst: str, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8") as fout:
        for line in fin:
            turns = json.loads(line)["messages"]
            answer = turns[-1]["content"]
            row = {"prompt": turns[:-1], "chosen": answer, "rejected": corrupt(answer, rng)}
            fout.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
