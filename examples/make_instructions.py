"""Write a small synthetic instruction set as JSONL with a `messages` column, for SFT walkthroughs offline.

    python examples/make_instructions.py --out examples/data/instructions.jsonl --rows 600
    llmctl data download ./examples/data/instructions.jsonl --out data/instr

Tasks are ones a tiny model can learn from a few hundred rows and that are checked at a glance:
reversing, uppercasing and spelling words, adding and subtracting small numbers, sorting a few words,
and summarising a standard-library function by the first line of its docstring (the words come from
the standard library's docstrings, the offline pretraining corpus of the README). Rows depend only
on --seed and the Python version whose docstrings are read; the shipped file was made with 3.11.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

# Modules whose public functions' docstrings supply the words and the summaries.
MODULES = [
    "json",
    "os.path",
    "shutil",
    "textwrap",
    "string",
    "math",
    "random",
    "statistics",
    "itertools",
    "functools",
    "base64",
    "glob",
    "fnmatch",
    "heapq",
    "bisect",
    "zlib",
    "difflib",
    "calendar",
]

SYSTEM = "You are a concise assistant. Answer with the result only."

Row = dict[str, list[dict[str, str]]]


def stdlib_summaries() -> list[tuple[str, str]]:
    """(qualified name, first docstring line) of public functions of MODULES, sorted by name."""
    found = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name, obj in inspect.getmembers(module, inspect.isroutine):
            doc = inspect.getdoc(obj) or ""
            first = doc.strip().split("\n\n")[0].replace("\n", " ").strip()
            # Skip private names, signature-only first lines and long or dangling sentences.
            if (
                name.startswith("_")
                or not first
                or len(first) > 120
                or first.endswith(":")
                or "(" in first[: len(name) + 1]
            ):
                continue
            found.append((f"{module_name}.{name}", first))
    return sorted(set(found))


def stdlib_words(summaries: list[tuple[str, str]]) -> list[str]:
    """Lower-case alphabetic words of 4 to 9 letters from the summaries, sorted, without repeats."""
    words = {w.lower() for _, text in summaries for w in re.findall(r"[A-Za-z]+", text)}
    return sorted(w for w in words if 4 <= len(w) <= 9)


def _reverse(rng: random.Random, words: list[str]) -> tuple[str, str]:
    word = rng.choice(words)
    return rng.choice(["Reverse the word: {w}", "Spell {w} backwards.", "Write {w} in reverse."]).format(
        w=word
    ), word[::-1]


def _upper(rng: random.Random, words: list[str]) -> tuple[str, str]:
    phrase = " ".join(rng.sample(words, rng.randint(1, 3)))
    return rng.choice(["Uppercase: {p}", "Write in capital letters: {p}"]).format(p=phrase), phrase.upper()


def _spell(rng: random.Random, words: list[str]) -> tuple[str, str]:
    word = rng.choice(words)
    return f"Spell the word {word} letter by letter.", "-".join(word)


def _count(rng: random.Random, words: list[str]) -> tuple[str, str]:
    word = rng.choice(words)
    return f"How many letters are in the word {word}?", str(len(word))


def _add(rng: random.Random, words: list[str]) -> tuple[str, str]:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    return rng.choice(["Add {a} and {b}.", "What is {a} + {b}?", "Compute {a} plus {b}."]).format(
        a=a, b=b
    ), str(a + b)


def _subtract(rng: random.Random, words: list[str]) -> tuple[str, str]:
    a = rng.randint(10, 99)
    b = rng.randint(0, a)
    return f"What is {a} - {b}?", str(a - b)


def _sort(rng: random.Random, words: list[str]) -> tuple[str, str]:
    chosen = rng.sample(words, rng.randint(3, 4))
    return f"Sort these words alphabetically: {', '.join(chosen)}", ", ".join(sorted(chosen))


TASKS: list[Callable[[random.Random, list[str]], tuple[str, str]]] = [
    _reverse,
    _upper,
    _spell,
    _count,
    _add,
    _subtract,
    _sort,
]


def make_rows(count: int, seed: int) -> list[Row]:
    """`count` conversations: one user turn and one assistant reply each, a quarter with a system turn."""
    rng = random.Random(seed)
    summaries = stdlib_summaries()
    words = stdlib_words(summaries)
    rows: list[Row] = []
    for i in range(count):
        if i % 8 == 7:
            name, first = rng.choice(summaries)
            prompt, reply = f"What does the Python function {name} do?", first
        else:
            prompt, reply = rng.choice(TASKS)(rng, words)
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
        if rng.random() < 0.25:
            messages.insert(0, {"role": "system", "content": SYSTEM})
        rows.append({"messages": messages})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("examples/data/instructions.jsonl"))
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = make_rows(args.rows, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(args.out)
    print(f"wrote {len(rows)} conversations to {args.out}")


if __name__ == "__main__":
    main()
