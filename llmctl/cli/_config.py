"""How `pretrain` and `sft` turn their flags into a Config: typed values, never text parsed twice.

    cfg = build_config(config, ["--optim.lr=3e-4"], flag_values(data="tokens/py", steps=None, out=None, resume=None))

Typer has already parsed `--data`, `--steps`, `--out`; their values go to `load_config` as a dict of typed
values. Only `--section.key=value` overrides are text, read once as YAML scalars (string fields keep the text).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def flag_values(
    data: str | list[str] | None,
    steps: int | None,
    out: Path | None,
    resume: str | None,
    *,
    epochs: bool = False,
) -> dict[str, Any]:
    """The plain flags as dotted keys with their typed values (they win over the same keys given as
    overrides). Nothing is turned back into text: `--out 2024-01-01` stays a name, `--data yes` a folder.

    `--data` may repeat, each `PATH[:WEIGHT]` (with `epochs`: also `PATH:epochs=N`): one plain path is
    data.path, anything else data.sources; the other key is cleared so a config file's data gives way."""
    values: dict[str, Any] = {}
    texts = [data] if isinstance(data, str) else list(data or [])
    if texts:
        from llmctl.data_sources import parse_sources, sft_specs

        specs = parse_sources(texts, allow_epochs=epochs)
        if epochs:
            sft_specs(specs)  # refuses weights before any checkpoint or data is read
        if len(specs) == 1 and specs[0].weight is None and specs[0].epochs is None:
            values["data.path"], values["data.sources"] = specs[0].path, []
        else:
            values["data.path"], values["data.sources"] = None, [s.as_dict() for s in specs]
    if steps is not None:
        values["train.steps"] = steps
    if out is not None:
        out = out.expanduser()
        values["train.out_dir"], values["train.name"] = str(out.parent), out.name
    if resume is not None:
        values["checkpoint.resume"] = resume
    return values


def build_config(config: Path | None, args: list[str], values: dict[str, Any]) -> Any:
    """The run's Config: the YAML file, then `--section.key=value` overrides (read as YAML scalars, text for
    string fields), then the typed flag values."""
    from llmctl.config import load_config, parse_overrides

    return load_config(config, {**parse_overrides(args, keep_text=True), **values})
