"""`llmctl budget`: what a GPU budget buys (model size, tokens, shape), or what a training run costs.

    llmctl budget --gpu L4 --hours 24 --tokens-per-param 100        forward: hours -> N, D, a shape, memory
    llmctl budget --model 124m --tokens 2.5B --gpu A100-80GB         inverse: model + tokens -> GPU-hours
    llmctl budget --params 170M --tokens-per-param 100 --gpu L4 --json
    llmctl budget --model models/smollm2 --gpu L4 --seq-len 2048 --micro-batch 8    fine-tuning an import: memory
                                                                                    per method, time per 1M tokens
    llmctl budget --list-gpus

Pure arithmetic (llmctl/plan/): no torch is imported.
"""

from __future__ import annotations

from typing import Any

import typer

from llmctl.cli._tables import flops_text, sci, shape_line, text_table
from llmctl.errors import LlmctlError
from llmctl.output import out, print_json
from llmctl.plan.lora import PLAN_RANK
from llmctl.plan.ranges import range_help
from llmctl.units import fmt_bytes, fmt_count, fmt_duration, fmt_flops


def _tflops(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}".rstrip("0").rstrip(".")


def list_gpus(as_json: bool) -> None:
    """The GPU table: dense peaks, memory, power."""
    from llmctl.plan.hardware import GPUS

    if as_json:
        print_json(
            [
                {
                    "name": g.name,
                    "description": g.description,
                    "aliases": list(g.aliases),
                    "tflops_dense": {
                        "fp32": g.fp32,
                        "tf32": g.tf32,
                        "bf16": g.bf16,
                        "fp16": g.fp16,
                        "fp8": g.fp8,
                    },
                    "memory_gib": g.memory_gib,
                    "tdp_w": g.tdp_w,
                    "source": g.source,
                }
                for g in GPUS
            ]
        )
        return
    rows = [
        [
            g.name,
            _tflops(g.fp32),
            _tflops(g.tf32),
            _tflops(g.bf16),
            _tflops(g.fp16),
            _tflops(g.fp8),
            f"{g.memory_gib:g} GiB",
            f"{g.tdp_w:g} W",
            ", ".join(g.aliases),
        ]
        for g in GPUS
    ]
    out().print(
        text_table(
            "GPUs (dense peak TFLOP/s)",
            ["--gpu", "fp32", "tf32", "bf16", "fp16", "fp8", "memory", "TDP", "also accepted"],
            rows,
            numeric=(1, 2, 3, 4, 5, 6, 7),
            caption="Dense tensor-core figures: the datasheets' with-sparsity (starred) figures halved. "
            "fp32 is plain FP32 (no TF32). - : no tensor-core path for that type. Sources in llmctl/plan/hardware.py.",
        )
    )


def _budget_rows(p: Any) -> list[list[str]]:
    rows = [
        ["GPU", f"{p.gpu.name} ({p.gpu.description}) x {p.num_gpus}"],
        ["peak", f"{p.dtype} {fmt_flops(p.peak_flops, per_second=True)} dense per GPU"],
        ["MFU", f"{p.mfu:g}"],
    ]
    if p.mode == "forward":
        rows += [
            ["time", f"{p.hours:g} h ({fmt_duration(p.hours * 3600)})"],
            ["compute C", f"{flops_text(p.compute_flops)} = peak x GPUs x {p.hours:g} h x 3600 s x MFU"],
            ["tokens per parameter r", f"{p.tokens_per_param:g}"],
            ["compute-optimal N", f"{fmt_count(p.optimal_params)} = sqrt(C / (6 r))"],
            ["compute-optimal D", f"{fmt_count(p.optimal_tokens)} tokens = r N"],
        ]
    return rows


def _model_rows(p: Any) -> list[list[str]]:
    rows = [
        ["model", p.model_label],
        ["shape", shape_line(p.model)],
        [
            "parameters",
            f"{p.params.total:,} total ({fmt_count(p.params.total)}); "
            f"N for 6N {p.params.matmul:,} ({fmt_count(p.params.matmul)})",
        ],
        ["seq_len", f"{p.seq_len}"],
        ["FLOPs per token", f"{fmt_flops(p.flops.train_palm)} (PaLM 6N + 12LHQT, training)"],
    ]
    if p.mode == "finetune":
        return rows
    rows.append(
        [
            "training tokens D",
            f"{fmt_count(p.tokens)} ({p.tokens_per_param:.3g} per parameter of N = {fmt_count(p.n)})",
        ]
    )
    if p.budget_tokens_for_shape is not None:
        rows.append(
            [
                "tokens the budget buys",
                f"{fmt_count(p.budget_tokens_for_shape)} for this shape (C / FLOPs per token)",
            ]
        )
    return rows


def _cost_rows(p: Any) -> list[list[str]]:
    return [
        [
            c.convention,
            flops_text(c.flops),
            f"{c.gpu_hours_at_peak:,.1f}",
            f"{c.gpu_hours_at_mfu:,.1f}",
            fmt_duration(c.wall_hours_at_mfu * 3600),
        ]
        for c in p.costs
    ]


def _state_rows(m: Any) -> list[list[str]]:
    """Full fine-tuning: every weight trained."""
    n = m.params
    mixed = m.master_bytes > 0
    rows = [
        [
            "weights",
            fmt_bytes(m.weights_bytes),
            f"{m.weights_bytes // n} B/param"
            + (f" ({m.dtype} copies autocast makes)" if mixed else " (fp32)"),
        ],
    ]
    if mixed:
        rows.append(
            [
                "fp32 master weights",
                fmt_bytes(m.master_bytes),
                "4 B/param (the parameters the optimizer updates)",
            ]
        )
    rows += [
        ["gradients", fmt_bytes(m.grads_bytes), "4 B/param (fp32)"],
        ["AdamW moments", fmt_bytes(m.optimizer_bytes), "8 B/param (two fp32 moments)"]
        if m.optim != "muon"
        else [
            "Muon + AdamW states",
            fmt_bytes(m.optimizer_bytes),
            f"4 B x {m.muon_params:,} hidden-matrix params (one momentum), 8 B x the rest (two moments)",
        ],
        ["model states", fmt_bytes(m.states_bytes), f"{m.bytes_per_param} B/param x {n:,} parameters"],
    ]
    return rows


def _adapter_state_rows(m: Any, cfg: Any, trained: int) -> list[list[str]]:
    """LoRA and QLoRA: a frozen base, adapters and what training them holds."""
    from llmctl.plan.lora import frozen_base_bytes
    from llmctl.plan.memory import MIXED

    frozen_n = m.params - trained
    _, quantized = frozen_base_bytes(cfg, "nf4" if m.method == "qlora" else None)
    if m.method == "qlora":
        frozen_how = (
            f"NF4: {quantized:,} block-projection weights at 4 bits, an 8-bit absmax per 64 and an fp32 "
            f"constant per 256 absmax ({(m.frozen_bytes - 4 * (frozen_n - quantized)) / quantized:.3f} B each); "
            f"the other {frozen_n - quantized:,} in fp32"
        )
        copies_how = "one block's weights dequantized at a time"
    else:
        frozen_how = f"4 B x {frozen_n:,} parameters (the engine keeps parameters in fp32)"
        copies_how = "every block's and the head's, kept until their backward"
    if m.dtype in MIXED:
        copies_how = f"{m.dtype} copies of the frozen weights ({copies_how}) and of the adapters"
    elif m.method == "qlora":
        copies_how = "one block's weights dequantized to fp32 at a time"
    else:
        copies_how = "fp32 concatenated q|k|v and w1|w3 weights the matmuls keep for backward"
    ckpt = m.states(checkpointing=True) - m.states_bytes + m.weights_bytes
    optim = (
        ["Muon momentum", fmt_bytes(m.optimizer_bytes), "4 B/param (one fp32 buffer per adapter matrix)"]
        if m.optim == "muon"
        else ["AdamW moments", fmt_bytes(m.optimizer_bytes), "8 B/param (two fp32 moments)"]
    )
    return [
        ["frozen base", fmt_bytes(m.frozen_bytes), frozen_how],
        ["weight copies", fmt_bytes(m.weights_bytes), f"{copies_how}; {fmt_bytes(ckpt)} with checkpointing"],
        ["adapters", fmt_bytes(m.master_bytes), f"4 B x {trained:,} trained parameters (fp32)"],
        ["adapter gradients", fmt_bytes(m.grads_bytes), "4 B/param (fp32)"],
        optim,
        [
            "model states",
            fmt_bytes(m.states_bytes),
            f"{fmt_bytes(m.states(checkpointing=True))} with checkpointing",
        ],
    ]


def _memory_rows(m: Any, micro_batch: int | None, states: list[list[str]] | None = None) -> list[list[str]]:
    rows = _state_rows(m) if states is None else states
    rows += [
        [
            "activations / sequence",
            fmt_bytes(m.activation_bytes_per_seq),
            f"{m.seq_len} tokens, no checkpointing",
        ],
        [
            "  with checkpointing",
            fmt_bytes(m.activation_bytes_per_seq_ckpt),
            "block inputs + one block recomputed",
        ],
        [
            "GPU memory",
            fmt_bytes(m.device_bytes),
            f"{fmt_bytes(m.usable_bytes)} usable (1 GiB CUDA context, 5% fragmentation)",
        ],
        [
            "largest micro-batch",
            f"{m.max_micro_batch}",
            f"{m.max_micro_batch_ckpt} with activation checkpointing",
        ],
    ]
    if micro_batch is not None:
        rows.append(
            [
                f"micro-batch {micro_batch}",
                fmt_bytes(m.total_bytes(micro_batch)),
                f"states + {micro_batch} x activations; "
                f"{fmt_bytes(m.total_bytes(micro_batch, checkpointing=True))} with checkpointing",
            ]
        )
    return rows


def _memory_table(
    m: Any, micro_batch: int | None, verdict: str, what: str = "", states: list[list[str]] | None = None
) -> Any:
    """The per-GPU memory breakdown of one training set-up, with its verdict as caption."""
    from llmctl.plan.memory import MIXED

    shortcut = (
        f" A 2-bytes-per-parameter x 4 shortcut ({fmt_bytes(8 * m.params)}) misses the fp32 copies and the "
        "activations."
        if states is None
        else ""
    )
    optim = "Muon + AdamW" if m.optim == "muon" else "AdamW"
    return text_table(
        f"Memory per GPU{what} ({m.dtype}{' mixed precision' if m.dtype in MIXED else ''}, "
        f"{optim}, seq_len {m.seq_len})",
        ["", "bytes", "how"],
        _memory_rows(m, micro_batch, states),
        numeric=(1,),
        caption=(
            f"verdict: {verdict}. Activations assume SDPA/flash attention (no seq_len^2 term).{shortcut}"
        ),
    )


def _method_rows(p: Any) -> list[list[str]]:
    return [
        [
            f"{r.name} ({r.flags})" if r.flags else r.name,
            f"{fmt_count(r.trainable_params)} of {fmt_count(p.params.total)}",
            fmt_bytes(r.memory.states_bytes),
            f"{r.memory.max_micro_batch} ({r.memory.max_micro_batch_ckpt} with checkpointing)",
            fmt_duration(p.seconds_per_million(r)),
            f"{p.seconds_per_million(r) * p.num_gpus / 3600:,.3f}",
        ]
        for r in p.methods
    ]


def render_finetune(p: Any) -> None:
    """Human tables for a FinetunePlan: a model with weights, fine-tuned."""
    console = out()
    console.print(text_table("Hardware", ["", ""], _budget_rows(p)))
    console.print(text_table("Model", ["", ""], _model_rows(p)))
    console.print(
        text_table(
            f"Fine-tuning on {p.num_gpus} {p.gpu.name} (seq_len {p.seq_len}, MFU {p.mfu:g})",
            [
                "method",
                "trained",
                "states",
                "largest micro-batch",
                "per 1M tokens",
                "GPU-hours / 1M",
            ],
            _method_rows(p),
            numeric=(2, 4, 5),
            caption="states: weights (a frozen base and its copies), gradients and optimizer states per GPU; "
            f"time: wall clock at the MFU on {p.num_gpus} GPU{'s' if p.num_gpus > 1 else ''}, LoRA and QLoRA "
            "without the frozen weights' gradients (4N + 6 x adapters instead of 6N). No 8-bit AdamW row: "
            "the engine has none. Each method's memory and verdict follow.",
        )
    )
    for r in p.methods:
        states = None if r.lora is None else _adapter_state_rows(r.memory, p.model, r.trainable_params)
        label = {"lora": "LoRA", "qlora": "QLoRA"}.get(r.name, r.name)
        what = f", {label} rank {r.lora.rank}" if r.lora is not None else f", {r.name} fine-tuning"
        console.print(_memory_table(r.memory, p.micro_batch, p.verdict(r), what, states))
    console.print(
        "A model with weights is planned for fine-tuning; to plan a training run of a given length give "
        "--tokens (e.g. --tokens 2B), or --tokens-per-param 20 for Chinchilla's compute-optimal count.",
        markup=False,
    )


def render(p: Any) -> None:
    """Human tables for a BudgetPlan."""
    console = out()
    if p.mode == "forward":
        console.print(text_table("Budget", ["", ""], _budget_rows(p)))
        rows = [
            [
                r.label,
                fmt_flops(r.peak_flops_per_gpu, per_second=True),
                f"{r.utilisation:g}",
                flops_text(r.flops),
                fmt_count(r.params),
                fmt_count(r.tokens),
            ]
            for r in p.peaks
        ]
        headline = p.peaks[0]
        console.print(
            text_table(
                f"The same {p.hours:g} h counted three ways (r = {p.tokens_per_param:g})",
                ["peak counted", "peak per GPU", "utilisation", "FLOPs", "N", "D"],
                rows,
                numeric=(1, 2, 3, 4, 5),
                caption=(
                    f"note: a back-of-envelope with the datasheet's headline figure at full use gets "
                    f"{sci(headline.flops)} FLOPs -> N {fmt_count(headline.params)}, D {fmt_count(headline.tokens)}; "
                    f"the dense peak at MFU {p.mfu:g} gives {sci(p.compute_flops)} FLOPs -> "
                    f"N {fmt_count(p.optimal_params)}, D {fmt_count(p.optimal_tokens)}."
                ),
            )
        )
    else:
        console.print(text_table("Hardware", ["", ""], _budget_rows(p)))
    console.print(text_table("Model", ["", ""], _model_rows(p)))
    console.print(
        text_table(
            "Training cost",
            [
                "convention",
                "FLOPs",
                "GPU-hours at peak",
                f"GPU-hours at MFU {p.mfu:g}",
                f"wall time on {p.num_gpus} GPU{'s' if p.num_gpus > 1 else ''}",
            ],
            _cost_rows(p),
            numeric=(1, 2, 3, 4),
            caption="6ND counts weights only; PaLM adds attention (12 x layers x heads x head_dim x seq_len per token) "
            "and is what llmctl's live MFU uses.",
        )
    )
    console.print(_memory_table(p.memory, p.micro_batch, p.memory_verdict))
    console.print(
        f"Chinchilla fit (Hoffmann et al. 2022, approach 3: E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28), the "
        f"paper's fit for its data and tokenizer, not a prediction for yours: L(N={fmt_count(p.params.total)} total, "
        f"D={fmt_count(p.tokens)}) = {p.loss:.2f} nats/token",
        markup=False,
    )


def budget_command(
    gpu: str | None = typer.Option(
        None, "--gpu", help="GPU name (L4, H100, A100-80GB, ...; see --list-gpus)."
    ),
    num_gpus: int = typer.Option(1, "--num-gpus", help="GPUs working together. " + range_help("num-gpus")),
    hours: float | None = typer.Option(
        None, "--hours", help="Forward mode: wall-clock hours of the budget. " + range_help("hours")
    ),
    mfu: float = typer.Option(
        0.4,
        "--mfu",
        help="Model FLOPs utilisation to plan with (0.3-0.5 is typical). Range: above 0, at most 1.",
    ),
    tokens_per_param: float | None = typer.Option(
        None,
        "--tokens-per-param",
        help="Training tokens per parameter (default 20, Chinchilla). " + range_help("tokens-per-param"),
    ),
    dtype: str = typer.Option(
        "auto", "--dtype", help="auto (bf16, or fp16 without bf16), bf16, fp16, fp32, tf32, fp8."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        metavar="PRESET|YAML|DIR",
        help="Inverse mode: preset name, config YAML, or a checkpoint / Hugging Face model directory "
        "(an imported or trained model: without --tokens, memory per fine-tuning method and time per 1M tokens).",
    ),
    params: str | None = typer.Option(
        None,
        "--params",
        help="Inverse mode: parameter count (170M) instead of a model. " + range_help("params"),
    ),
    tokens: str | None = typer.Option(
        None, "--tokens", help="Inverse mode: training tokens (2.5B, 17e9). " + range_help("tokens")
    ),
    seq_len: int | None = typer.Option(
        None,
        "--seq-len",
        help="Sequence length for attention FLOPs and memory (default 1024, or the model's). "
        + range_help("seq-len"),
    ),
    vocab_size: int = typer.Option(
        32768, "--vocab-size", help="Vocabulary of a suggested shape. " + range_help("vocab-size")
    ),
    optim: str = typer.Option(
        "adamw",
        "--optim",
        help="Optimizer whose state to count: adamw (8 B/param) or muon (4 B/param on hidden matrices).",
    ),
    micro_batch: int | None = typer.Option(
        None,
        "--micro-batch",
        help="Sequences per forward pass to judge memory at (train.micro_batch_size); default: report the "
        "largest that fits. " + range_help("micro-batch"),
    ),
    gpus: bool = typer.Option(False, "--list-gpus", help="List the GPU table and exit."),
    data: list[str] = typer.Option(
        [],
        "--data",
        metavar="PATH[:WEIGHT]",
        help="Token directories of a mixture (repeatable): show the epochs of each the plan's tokens take.",
    ),
    lora_rank: int | None = typer.Option(
        None,
        "--lora.rank",
        help=f"Plan LoRA and QLoRA rows at this adapter rank (default {PLAN_RANK}); with a preset, plans "
        "fine-tuning its weights.",
    ),
    lora_alpha: float = typer.Option(16.0, "--lora.alpha", help="Adapter scale (does not change memory)."),
    lora_dropout: float = typer.Option(
        0.0, "--lora.dropout", help="Adapter input dropout: adds the dropped inputs and masks to activations."
    ),
    lora_targets: list[str] = typer.Option(
        [],
        "--lora.targets",
        help="Projections with adapters: attention, mlp, all-linear (default) or names (wq,wv or q_proj,...).",
    ),
    lora_quantize: str | None = typer.Option(
        None, "--lora.quantize", help="nf4: the QLoRA row is the one your flags choose."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Plan a training run: what a GPU budget buys (--hours), or what a model and token count cost (--model/--params)."""
    if gpus:
        list_gpus(as_json)
        return
    if data and gpu is None:
        # Data only: how many passes over each source --tokens takes.
        from llmctl.cli._mix import mix_plan, render_mix
        from llmctl.units import parse_count

        if tokens is None:
            raise LlmctlError(
                "--data without --gpu needs --tokens",
                "e.g. llmctl budget --tokens 2B --data A:0.7 --data B:0.3",
            )
        doc = mix_plan(data, parse_count(tokens, "--tokens"))
        print_json(doc) if as_json else render_mix(doc)
        return
    if gpu is None:
        from llmctl.plan.hardware import GPUS

        raise LlmctlError(
            "--gpu is required", f"e.g. --gpu L4; known GPUs: {', '.join(g.name for g in GPUS)}"
        )
    from llmctl.plan.budget import plan_budget
    from llmctl.plan.lora import LoraSpec

    asked = lora_rank is not None or lora_targets or lora_quantize is not None
    lora = (
        LoraSpec(
            rank=PLAN_RANK if lora_rank is None else lora_rank,
            alpha=lora_alpha,
            targets=tuple(lora_targets) or ("all-linear",),
            dropout=lora_dropout,
            quantize=lora_quantize,
        )
        if asked or lora_dropout or lora_alpha != 16.0
        else None
    )
    plan = plan_budget(
        gpu=gpu,
        num_gpus=num_gpus,
        hours=hours,
        mfu=mfu,
        tokens_per_param=tokens_per_param,
        dtype=dtype,
        model=model,
        params=params,
        tokens=tokens,
        seq_len=seq_len,
        vocab_size=vocab_size,
        optim=optim,
        micro_batch=micro_batch,
        lora=lora,
    )
    if plan.mode == "finetune":
        if data:
            raise LlmctlError(
                "--data needs a token count to share out, and --model DIR without --tokens plans fine-tuning",
                "add --tokens (e.g. --tokens 200M)",
            )
        print_json(plan.to_json()) if as_json else render_finetune(plan)
        return
    doc = None
    if data:
        from llmctl.cli._mix import mix_plan, render_mix

        doc = mix_plan(data, plan.tokens)
    if as_json:
        print_json(
            plan.to_json() | ({"data_mix": doc["data_mix"], "warnings": doc["warnings"]} if doc else {})
        )
        return
    render(plan)
    if doc:
        render_mix(doc)


def register(app: typer.Typer) -> None:
    """Add `budget` to the root app."""
    app.command("budget", short_help="Plan a run: what a GPU budget buys, or what a model costs.")(
        budget_command
    )
