"""`llmctl checkpoint migrate`: convert a checkpoint written by an older llmctl, once, explicitly.

    llmctl checkpoint migrate runs/py/checkpoints/step-000500
    llmctl checkpoint migrate runs/py --json          # every step-* directory of the run

Checkpoints before format version 2 stored their random generator states as a pickle (rng.pt);
unpickling can run code, so llmctl refuses to load one. This rewrites those states as plain data
(rng.safetensors + rng.json) and records a SHA-256 for every file. Convert only checkpoints you made
yourself: from then on llmctl trusts them.
"""

from __future__ import annotations

from pathlib import Path

import typer

checkpoint_app = typer.Typer(
    help="Maintain checkpoints (convert old ones).", no_args_is_help=True, rich_markup_mode=None
)


@checkpoint_app.command("migrate")
def migrate(
    path: Path = typer.Argument(
        ..., help="A step-* checkpoint directory, a checkpoints/ directory or a run directory."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Convert checkpoints made by an older llmctl (pickled rng.pt) to plain data, for checkpoints you made yourself."""
    from llmctl.engine.migrate import migrate_many
    from llmctl.output import log, out, print_json, table

    results = migrate_many(path)
    if json_out:
        print_json([r.__dict__ for r in results])
        return
    rows = [[r.path, "converted" if r.converted else "already current"] for r in results]
    out().print(table("checkpoint migrate", ["checkpoint", "result"], rows))
    if any(r.converted for r in results):
        log("rng.pt (a pickle, which can run code when loaded) was replaced by rng.safetensors + rng.json")


def register(app: typer.Typer) -> None:
    """Add `llmctl checkpoint`."""
    app.add_typer(checkpoint_app, name="checkpoint", short_help="Maintain checkpoints (convert old ones).")
