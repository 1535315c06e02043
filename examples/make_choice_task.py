"""Write a multiple-choice task from a raw dataset split: which line comes next in this file?

    python examples/make_choice_task.py --data quickstart/data/py --split validation --out quickstart/next_line.jsonl
    llmctl eval quickstart/runs/quickstart/checkpoints/latest --task quickstart/next_line.jsonl

Each item's context is four consecutive non-blank lines of a document (and their newlines); the
choices are the document's real next line and three lines drawn from other documents, in a seeded
random order. Lines shorter than 12 characters are not used as answers, so the task is about code, not
about closing brackets. Chance is 25%; a model that learned the corpus should do far better.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="Raw dataset directory (llmctl data download).")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--out", required=True)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from llmctl.raw.dataset import iter_batches

    docs = [
        [line for line in text.splitlines() if line.strip()]
        for batch in iter_batches(args.data, args.split)
        for text in batch
    ]
    docs = [d for d in docs if len(d) >= 6]
    rng = random.Random(args.seed)
    items = []
    while len(items) < args.items:
        d = rng.randrange(len(docs))
        lines = docs[d]
        at = rng.randrange(4, len(lines))
        answer = lines[at]
        if len(answer.strip()) < 12:
            continue
        others = []
        while len(others) < 3:
            o = rng.randrange(len(docs))
            line = rng.choice(docs[o])
            if o != d and len(line.strip()) >= 12 and line not in others:
                others.append(line)
        label = rng.randrange(4)
        context = "".join(line + "\n" for line in lines[at - 4 : at])
        items.append(
            {
                "context": context,
                "choices": [*others[:label], answer, *others[label:]],
                "label": label,
                "id": len(items),
            }
        )
    Path(args.out).write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    print(f"{len(items)} items from {len(docs)} documents of {args.data}/{args.split} -> {args.out}")


if __name__ == "__main__":
    main()
