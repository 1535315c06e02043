"""`llmctl export`: a checkpoint as a Hugging Face transformers directory or one GGUF file.

    llmctl export runs/sft/checkpoints/latest --format hf --out exports/sft-hf
    llmctl export runs/tiny/checkpoints/step-000500 --out exports/tiny --dtype bfloat16 --json
    llmctl export runs/sft/checkpoints/latest --format gguf --out exports/sft.gguf --dtype q8_0

The directory loads with `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`
(chat template included), serves with vLLM, converts to GGUF with llama.cpp and uploads to the Hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from llmctl.output import log, out, print_json, table
from llmctl.units import fmt_bytes, fmt_count


def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory (e.g. RUN/checkpoints/latest).")],
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Directory to create (hf), or FILE.gguf (gguf).")
    ],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="hf (transformers directory), gguf (one llama.cpp/Ollama file) or peft (a LoRA run's adapters).",
        ),
    ] = "hf",
    dtype: Annotated[
        str,
        typer.Option(
            help="hf: auto (the checkpoint's), float32, bfloat16, float16; gguf: float16 "
            "(default), float32, q8_0, q5_1, q5_0, q4_1, q4_0."
        ),
    ] = "auto",
    tokenizer: Annotated[
        Path | None, typer.Option(help="Tokenizer file; default: the copy stored in the checkpoint.")
    ] = None,
    chat_profile: Annotated[
        str | None,
        typer.Option(
            help="Chat profile for the chat template; default: `chat` when the tokenizer has its tokens."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace --out if it is a previous llmctl export, never any other folder (gguf: only a GGUF file).",
        ),
    ] = False,
    merge: Annotated[
        bool, typer.Option("--merge", help="LoRA checkpoints: fold the adapters into the base weights.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Export a checkpoint to Hugging Face format (config, safetensors, tokenizer, chat template)."""
    from llmctl.errors import LlmctlError
    from llmctl.export.hf import export_hf

    if fmt == "gguf":
        _export_gguf(checkpoint, out_dir, "float16" if dtype == "auto" else dtype, force, merge, as_json)
        return
    if fmt == "peft":
        _export_peft(checkpoint, out_dir, force, as_json)
        return
    if fmt != "hf":
        raise LlmctlError(f"unknown export format '{fmt}'", "use --format hf, gguf or peft")
    result = export_hf(
        checkpoint,
        out_dir,
        dtype=dtype,
        tokenizer=tokenizer,
        chat_profile=chat_profile,
        force=force,
        merge=merge,
    )
    if as_json:
        print_json(result)
        return
    _print_files(
        result,
        f"from {result.checkpoint}: {fmt_count(result.n_params)} parameters, {result.dtype}, vocab {result.vocab_size:,}, "
        f"chat template: {'yes' if result.chat_template else 'no'}, eos ids {result.eos_token_ids}",
    )


def _export_peft(checkpoint: Path, out_dir: Path, force: bool, as_json: bool) -> None:
    from llmctl.export.peft import export_peft

    result = export_peft(checkpoint, out_dir, force=force)
    if as_json:
        print_json(result)
        return
    _print_files(
        result,
        f"from {result.checkpoint}: {fmt_count(result.n_adapter_params)} adapter parameters, rank {result.rank}, "
        f"alpha {result.alpha:g}, on {' '.join(result.target_modules)}",
    )


def _print_files(result: Any, summary: str) -> None:
    """The files an export wrote with their sizes, then one line on what they hold."""
    rows = [[name, fmt_bytes(size)] for name, size in result.files.items()]
    out().print(table(result.out, ["file", "size"], rows))
    out().print(summary, markup=False, highlight=False)


def _export_gguf(
    checkpoint: Path, out_file: Path, dtype: str, force: bool, merge: bool, as_json: bool
) -> None:
    from llmctl.export.gguf import export_gguf

    result = export_gguf(checkpoint, out_file, dtype=dtype, force=force, merge=merge)
    for warning in result.warnings:
        log(f"warning: {warning}")
    if as_json:
        print_json(result)
        return
    out().print(
        f"{result.out}: {fmt_bytes(result.bytes)}, {result.architecture}, {result.n_tensors} tensors, {result.dtype}, "
        f"pre-tokenizer {result.pre_tokenizer}, bos {result.bos_id}, eos {result.eos_id}, eot {result.eot_id}, "
        f"add BOS {'yes' if result.add_bos else 'no'}, chat template {'yes' if result.chat_template else 'no'}; "
        f"read back and checked ({len(result.keys)} keys, max |error| {result.max_abs_error:.2g})",
        markup=False,
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add `llmctl export`."""
    app.command("export", short_help="Export a checkpoint to Hugging Face format or GGUF.")(export)
