"""`llmctl import`: a Hugging Face model as a llmctl checkpoint directory.

    llmctl import hf:HuggingFaceTB/SmolLM2-135M --out models/smollm2
    llmctl import hf:Qwen/Qwen2.5-0.5B@main --out models/qwen --json
    llmctl import path/to/hf_model_dir --out models/local --no-verify

The directory works wherever a checkpoint does: `generate`, `generate --chat`, `sft --init`,
`pretrain --init`, `export`, `flops estimate --model DIR`, `budget --model DIR`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmctl.output import log, out, print_json, table
from llmctl.units import fmt_bytes, fmt_count


def import_(
    source: Annotated[
        str, typer.Argument(help="hf:owner/name[@revision], or a local Hugging Face model directory.")
    ],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint directory to create.")],
    verify: Annotated[
        bool,
        typer.Option("--verify/--no-verify", help="Compare logits with transformers (needs it installed)."),
    ] = True,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace --out if it is a previous llmctl import, never any other folder."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Import a Hugging Face model (Llama, Qwen2, Mistral) as a llmctl checkpoint directory."""
    from llmctl.export.hf_import import import_model

    result = import_model(source, out_dir, verify=verify, force=force)
    if result.untrained_tokens:
        log(
            f"warning: untrained embedding rows for {', '.join(result.untrained_tokens)} (zero or identical to "
            "other special tokens): the model will not produce them until fine-tuning trains them; "
            "`llmctl sft --untrained-rows mean` starts them from the mean trained row"
        )
    if as_json:
        print_json(result)
        return
    rows = [[name, fmt_bytes(size)] for name, size in result.files.items()]
    out().print(table(result.out, ["file", "size"], rows))
    where = f"{result.repo}@{(result.commit or '')[:12]}" if result.repo else result.source
    parity = (
        f"max logit diff {result.max_logit_diff:.2e}"
        if result.max_logit_diff is not None
        else result.verify_note
    )
    out().print(
        f"from {where}: {result.architecture}, {fmt_count(result.n_params)} parameters, {result.dtype}, "
        f"vocab {result.vocab_size:,}, tied {'yes' if result.tied_embeddings else 'no'}, rope scaling {result.rope_scaling}, "
        f"BOS {'yes' if result.add_bos else 'no'}, stop ids {result.stop_ids}, "
        f"chat template {'yes' if result.chat_template else 'no'}; {parity}",
        markup=False,
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add `llmctl import`."""
    app.command("import", short_help="Import a Hugging Face model (Llama, Qwen2, Mistral).")(import_)
