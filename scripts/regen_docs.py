"""Keep the quickstart's figures in README and docs/ equal to one quickstart run.

    bash examples/quickstart.sh                                   # writes quickstart/runs/quickstart
    python scripts/regen_docs.py quickstart/runs/quickstart       # rewrite the marked figures from its summary.json
    python scripts/regen_docs.py quickstart/runs/quickstart --check   # exit 1, naming each figure that disagrees

A figure in prose is marked where it stands, with the summary value it shows and its format:

    a validation loss of <!-- quickstart:val_loss:.2f -->3.70<!-- /quickstart --> nats

Keys: val_loss, val_ppl, val_acc, val_bpb (the run's final evaluation), steps, train_loss. The format is Python's
format spec (`.3f`, `.1%`, `d`). A console block of the run's own log is marked on the line before its fence,
`<!-- quickstart:log -->`: its `final eval (step N): loss X | ppl Y` line must be the run's (outputs are never
rewritten, only checked: paste the new run's output there by hand). The comments do not show on a rendered page.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = re.compile(r"<!-- quickstart:(\w+):([^ ]*) -->(.*?)<!-- /quickstart -->")
LOG_MARK = "<!-- quickstart:log -->"
FINAL_EVAL = re.compile(r"final eval \(step (\d+)\): loss ([0-9.]+) \| ppl ([0-9.]+)")


def run_values(run: Path) -> dict[str, float]:
    """The figures a page may show, from RUN/summary.json (written when a run ends)."""
    path = run / "summary.json"
    try:
        summary = json.loads(path.read_text())
        final = summary["final_eval"]
        return {
            "val_loss": float(final["loss"]),
            "val_ppl": float(final["perplexity"]),
            "val_acc": float(final["accuracy"]),
            "val_bpb": float(final["bpb"]),
            "steps": int(summary["steps"]),
            "train_loss": float(summary["final_loss"]),
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"error: {path} is not a finished run's summary ({exc})") from exc


def pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _marked(text: str, values: dict[str, float], where: str) -> tuple[str, list[str]]:
    """The text with every marked figure set from `values`, and one line per figure that differed."""
    problems: list[str] = []

    def replace(match: re.Match[str]) -> str:
        key, spec, shown = match.groups()
        if key not in values:
            problems.append(f"{where}: unknown figure '{key}' (known: {', '.join(values)})")
            return match.group(0)
        want = format(values[key], spec)
        if shown != want:
            problems.append(f"{where}: {key} shows {shown}, the run has {want}")
        return f"<!-- quickstart:{key}:{spec} -->{want}<!-- /quickstart -->"

    return MARK.sub(replace, text), problems


def _logs(text: str, values: dict[str, float], where: str) -> list[str]:
    """One line per marked log block whose final-eval line is not the run's (or that has none)."""
    problems: list[str] = []
    for block in text.split(LOG_MARK)[1:]:
        body = block.split("```", 2)[1] if block.count("```") >= 2 else ""
        found = FINAL_EVAL.search(body)
        want = f"step {values['steps']}: loss {values['val_loss']:.4f} | ppl {values['val_ppl']:.2f}"
        if found is None:
            problems.append(f"{where}: a block marked {LOG_MARK} has no 'final eval' line")
            continue
        shown = f"step {found.group(1)}: loss {found.group(2)} | ppl {found.group(3)}"
        if shown != want:
            problems.append(
                f"{where}: the log shows final eval ({shown}), the run has ({want}); paste its output"
            )
    return problems


def regenerate(run: Path, root: Path, check: bool) -> list[str]:
    """Rewrite (or with `check`, only compare) every marked figure; the disagreements found."""
    values = run_values(run)
    problems: list[str] = []
    for page in pages(root):
        text = page.read_text()
        where = str(page.relative_to(root))
        new, differed = _marked(text, values, where)
        problems += differed + _logs(text, values, where)
        if not check and new != text:
            page.write_text(new)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("run", type=Path, help="the quickstart's run folder (quickstart/runs/quickstart)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a figure disagrees")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout holding README.md and docs/")
    args = parser.parse_args(argv)
    problems = regenerate(args.run, args.root, args.check)
    for line in problems:
        print(line, file=sys.stderr)
    if args.check:
        print(
            "docs agree with the run" if not problems else f"{len(problems)} figure(s) disagree",
            file=sys.stderr,
        )
        return 1 if problems else 0
    # Prose figures were rewritten; a pasted log, a log without its line or an unknown key need a person.
    left = [p for p in problems if "paste its output" in p or "no 'final eval'" in p or "unknown figure" in p]
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
