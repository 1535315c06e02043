"""`llmctl config show`: every config key with its type, default, the value a run would use, and its doc.

    llmctl config show
    llmctl config show -c examples/configs/124m.yaml --section optim --optim.lr=3e-4
    llmctl config show --model=tiny --json | jq '.keys[] | select(.changed)'

The config is resolved exactly as `pretrain`, `sft` and `dpo` resolve it (defaults < YAML file < dotted
overrides, through `load_config`), so a misspelt key or an impossible value fails here the same way.
Never imports torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any

import typer

config_app = typer.Typer(
    help="Show the configuration a training run would use.", no_args_is_help=True, rich_markup_mode=None
)


def _text(value: Any) -> str:
    """A value as it would be typed in YAML or an override: null, true, 3e-4, [a, b]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


_OWN_OPTIONS = ("config", "section", "json")


def _check_options(args: list[str]) -> None:
    """A misspelt option of this command (`--sectoin`) would otherwise read as a config override and be
    answered with a config section: name the option meant instead."""
    from llmctl.errors import LlmctlError

    for arg in args:
        name = arg[2:].partition("=")[0] if arg.startswith("--") else ""
        if not name or "." in name:
            continue
        close = difflib.get_close_matches(name, _OWN_OPTIONS, n=1, cutoff=0.7)
        if close:
            raise LlmctlError(f"unknown option '--{name}'", f"did you mean '--{close[0]}'?")


def _render(keys: list[Any], docs: dict[str, str]) -> None:
    from rich.markup import escape

    from llmctl.cli._tables import text_table
    from llmctl.output import out

    changed = [k.key for k in keys if k.changed]
    for section, doc in docs.items():
        # Escaped: `list[str]`, `[a, b]` and `llmctl[wandb]` are text, not Rich markup.
        rows = [
            [escape(cell) for cell in (k.key, k.type, _text(k.default), _text(k.value), k.doc)]
            for k in keys
            if k.section == section
        ]
        title = escape(f"{section}: {doc}")
        out().print(text_table(title, ["key", "type", "default", "value", "doc"], rows))
    summary = f"{len(keys)} keys; {len(changed)} differ from the default"
    out().print(summary + (f": {', '.join(changed)}" if changed else ""), markup=False, soft_wrap=True)


@config_app.command(
    "show",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    short_help="Every config key: type, default, value and doc.",
    options_metavar="[OPTIONS] [--SECTION.KEY=VALUE]...",
    help="Every config key with its type, default, the value a run would use and a one-line doc. The config "
    "resolves as in pretrain, sft and dpo: defaults < -c FILE < overrides such as --optim.lr=3e-4.",
)
def show_command(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "-c", "--config", help="YAML config (see examples/configs/)."),
    section: list[str] = typer.Option(
        [], "--section", "-s", metavar="NAME", help="Only this section (repeatable): model, optim, train, ..."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    from llmctl.cli._config import build_config
    from llmctl.config_keys import check_sections, describe, section_doc, sections
    from llmctl.output import print_json

    _check_options(list(ctx.args))
    cfg = build_config(config, list(ctx.args), {})
    keys = describe(cfg, section)
    classes = sections(type(cfg))
    docs = {name: section_doc(classes[name]) for name in check_sections(type(cfg), section)}
    if as_json:
        print_json(
            {
                "config_file": str(config) if config is not None else None,
                "overrides": list(ctx.args),
                "sections": docs,
                "keys": [{**dataclasses.asdict(k), "changed": k.changed} for k in keys],
            }
        )
        return
    _render(keys, docs)


def register(app: typer.Typer) -> None:
    """Add `llmctl config show`."""
    app.add_typer(config_app, name="config", short_help="Show every config key: type, default, value, doc.")
