"""The `llmctl` root command: one Typer app, one module per command under llmctl/cli/.

    llmctl --help
    llmctl flops estimate --model 124m --seq-len 1024

Each command module imports only light libraries at the top; torch and friends load inside the
functions that need them, so `llmctl --help` starts in a fraction of a second.
"""

from __future__ import annotations

import errno
import os
import sys
import typing
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from llmctl import __version__
from llmctl.cli._coerce import plain_coercion_everywhere
from llmctl.errors import EXIT_INTERRUPTED, LlmctlError

if TYPE_CHECKING:
    import click


def _report(error: LlmctlError) -> None:
    sys.stderr.write(f"error: {error.message}\n")
    if error.hint:
        sys.stderr.write(f"hint: {error.hint}\n")


# Metavars in --help: what to type, not Python type names (`<list[str]>`, `{source}`).
_TYPE_METAVARS: dict[Any, str] = {int: "N", float: "NUMBER", str: "TEXT"}
# Text options that take a count or a size (they accept 32K, 256M): say so.
_NAME_METAVARS = {
    "vocab_size": "N",
    "max_rows": "N",
    "tokens": "N",
    "params": "N",
    "max_bytes": "BYTES",
    "eval_max_bytes": "BYTES",
    "shard_size": "BYTES",
    "data": "DIR",
    "init": "CHECKPOINT",
    "resume": "auto|CHECKPOINT",
    "gpu": "NAME",
    "device": "DEVICE",
}


def _metavar(param: Any) -> str | None:
    """PATH, N, NUMBER, TEXT, [a|b] or the argument's name in capitals; None: leave it to Typer."""
    desc = getattr(param, "type_descriptor", None)
    if desc is None or getattr(param, "is_flag", False) or getattr(param, "is_bool_flag", False):
        return None
    if desc.is_choice:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in desc.choices or ()) + "]"
    if param.param_type_name == "argument":
        return (param.name or "value").removesuffix("_path").upper()
    if desc.is_path or desc.is_file:
        return "PATH"
    annotation = desc.annotation
    if typing.get_origin(annotation) is list:
        annotation = typing.get_args(annotation)[0]
    if annotation is str and param.name in _NAME_METAVARS:
        return _NAME_METAVARS[param.name]
    return _TYPE_METAVARS.get(annotation)


def _plain_help(command: Any) -> None:
    """Give every parameter of `command` (and its subcommands) a metavar a person reads, and drop the
    `\\[` escapes Rich markup needed: --help is plain text (rich_markup_mode=None)."""
    for param in getattr(command, "params", []):
        if getattr(param, "help", None):
            param.help = param.help.replace("\\[", "[")
        if param.metavar is None:
            param.metavar = _metavar(param)
        if param.param_type_name == "argument" and param.metavar is not None:
            # Typer writes arguments as `{name}` in the usage line and adds `<type>` after the name: show the
            # click convention instead, NAME when required and [NAME] when not.
            usage = (param.metavar if param.required else f"[{param.metavar}]") + (
                "..." if param.nargs != 1 else ""
            )
            param._usage_display_name = lambda usage=usage: usage
            param.display_type_rich = lambda ctx: None
    if getattr(command, "help", None):
        command.help = command.help.replace("\\[", "[")
    for sub in getattr(command, "commands", {}).values():
        _plain_help(sub)


class LlmctlGroup(TyperGroup):
    """Root group: turns LlmctlError into `error:`/`hint:` lines and its exit code (2, 3 or 4), an uncaught
    OSError into the same with exit 4, and Ctrl-C into exit 130; no traceback (LLMCTL_DEBUG=1 shows it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_help(self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        # --help lists commands in pipeline order (_COMMANDS), groups included, not in registration order.
        order = {name: i for i, name in enumerate(_COMMANDS)}
        return sorted(super().list_commands(ctx), key=lambda name: order.get(name, len(order)))

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Before any value is converted: plain values without pydantic (llmctl.cli._coerce).
        plain_coercion_everywhere(self, ctx)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LlmctlError as exc:
            if os.environ.get("LLMCTL_DEBUG"):
                raise
            # Typer's standalone mode draws ClickExceptions in its own Rich panel (and recent Typer vendors
            # click, so it would not even catch ours): print our two lines here and exit with our code.
            _report(exc)
            raise typer.Exit(exc.exit_code) from exc
        except OSError as exc:
            # A broken pipe (`llmctl ... | head`) is click's to handle quietly; any other OSError that no
            # command turned into an LlmctlIOError is still a fault, not a bug: error + hint, exit 4.
            if os.environ.get("LLMCTL_DEBUG") or exc.errno == errno.EPIPE:
                raise
            from llmctl.files import io_error

            error = io_error(exc, exc.filename or "a file", action="access")
            _report(error)
            raise typer.Exit(error.exit_code) from exc
        except KeyboardInterrupt as exc:
            if os.environ.get("LLMCTL_DEBUG"):
                raise
            sys.stderr.write("interrupted\n")
            raise typer.Exit(EXIT_INTERRUPTED) from exc


app = typer.Typer(
    cls=LlmctlGroup,
    name="llmctl",
    help="From raw text to a trained, instruction- and preference-tuned language model: data, tokenizer, shards, pretraining, SFT, DPO, evaluation, Hugging Face import and export, and cost planning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain click help: Rich help panels cost ~0.15 s of imports and rendering per `--help` (0.34 s vs
    # 0.19 s here), and the start-up target is 0.3 s. Results stay Rich tables.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """From raw text to a trained small language model."""


# The commands in the order users meet them (docs/ARCHITECTURE.md): --help lists them so. Each module
# imports only light libraries at its top; `register` adds its command (or group) to the app.
from llmctl.cli import (  # noqa: E402 - the app above must exist before the commands attach to it
    budget,
    checkpoint,
    config,
    count,
    data,
    dpo,
    eval,
    export,
    flops,
    generate,
    grpo,
    import_,
    inspect,
    plot,
    pretrain,
    sft,
    tokenize,
    tokenizer,
)

_MODULES = [
    data,
    tokenizer,
    tokenize,
    count,
    inspect,
    config,
    pretrain,
    sft,
    dpo,
    grpo,
    generate,
    eval,
    import_,
    export,
    checkpoint,
    plot,
    flops,
    budget,
]
_COMMANDS: list[str] = [
    "data",
    "tokenizer",
    "tokenize",
    "count",
    "inspect",
    "config",
    "pretrain",
    "sft",
    "dpo",
    "grpo",
    "generate",
    "eval",
    "import",
    "export",
    "checkpoint",
    "plot",
    "flops",
    "budget",
]
for _module in _MODULES:
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="llmctl")
