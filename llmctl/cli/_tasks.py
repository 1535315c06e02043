"""`llmctl data download hellaswag|arc-easy|...`: named evaluation task sets, written as items.jsonl for `eval`."""

from __future__ import annotations

from pathlib import Path

from llmctl.output import out, print_json


def download_task_command(
    name: str, out_dir: Path, *, cache_dir: Path | None, force: bool, as_json: bool
) -> None:
    """`llmctl data download hellaswag --out DIR`: fetch a named evaluation task and convert it."""
    from llmctl.cli._progress import TransferBars
    from llmctl.eval.sources import download_task

    with TransferBars() as bars:
        info, skipped = download_task(
            name, out_dir, force=force, cache_dir=str(cache_dir) if cache_dir else None, progress=bars
        )
    if as_json:
        print_json({"out": str(out_dir), "skipped": skipped, **info})
        return
    src = info["source"]
    status = "up to date, nothing to do" if skipped else f"written in {info['seconds']:.1f}s"
    out().print(f"{out_dir}: {status}", markup=False)
    out().print(
        f"{info['items']:,} {name} items ({src['split']} split) from {src['repo']}/{src['file']} @ {src['commit'][:12]}, "
        f"{(info.get('fewshot') or {}).get('items', 0):,} few-shot examples; "
        f"evaluate with: llmctl eval CHECKPOINT --task {out_dir}",
        markup=False,
    )
