"""`llmctl flops estimate`: parameters and FLOPs of a model shape, per token, per batch and per run.

    llmctl flops estimate --model 124m --seq-len 1024 --batch-size 512 --gpu H100 --mfu 0.4
    llmctl flops estimate --model examples/configs/124m.yaml --tokens 2.5B --json
    llmctl flops estimate --dim 768 --layers 12 --heads 12 --vocab-size 50304 --seq-len 1024

Pure arithmetic (llmctl/plan/): no torch is imported.
"""

from __future__ import annotations

from typing import Any

import typer

from llmctl.cli._tables import flops_text, shape_line, text_table
from llmctl.output import out, print_json
from llmctl.plan.ranges import range_help
from llmctl.units import fmt_count, fmt_duration, fmt_flops


def _param_rows(r: Any) -> list[list[str]]:
    p, cfg = r.params, r.model

    def row(name: str, n: int, note: str) -> list[str]:
        return [name, f"{n:,}", fmt_count(n), f"{100 * n / p.total:.1f}%", note]

    head_note = "tied: shares the embedding" if cfg.tied_embeddings else "vocab x dim"
    return [
        row("embedding", p.embedding, "vocab x dim"),
        row(
            "attention",
            p.attention,
            f"{cfg.n_layers} x (wq, wk, wv, wo{' + biases' if cfg.qkv_bias else ''})",
        ),
        row("MLP", p.mlp, f"{cfg.n_layers} x {_mlp_name(cfg)} (w1, w3, w2)"),
        row(
            "norms",
            p.norms,
            f"{(4 if cfg.norm_placement == 'sandwich' else 2) * cfg.n_layers + 1} RMSNorm gains"
            + (f" + {cfg.n_layers} x q/k norms" if cfg.qk_norm != "none" else ""),
        ),
        row("output head", p.head, head_note),
        row("total", p.total, "a tied matrix counted once"),
        row("non-embedding", p.non_embedding, "total - embedding"),
        row("N (for 6N)", p.matmul, "matmul weights + output head, no norms/biases"),
    ]


def _mlp_name(cfg: Any) -> str:
    return "GeGLU" if cfg.activation == "gelu_tanh" else "SwiGLU"


def _attention_formula(cfg: Any, T: int) -> str:
    if cfg.sliding_window is None:
        return f"2 L H hd T = 2*{cfg.n_layers}*{cfg.n_heads}*{cfg.head_size}*{T}"
    from llmctl.plan.flops import attended_keys

    keys = attended_keys(cfg, T)
    return f"2 H hd K, K = keys over layers (window {cfg.sliding_window}) = 2*{cfg.n_heads}*{cfg.head_size}*{keys}"


def _component_rows(r: Any) -> list[list[str]]:
    fl, cfg = r.flops, r.model
    L, T = cfg.n_layers, r.seq_len
    formulas = {
        "qkv_projections": (
            "QKV projections",
            f"2 L d (H + 2 Hkv) hd = 2*{L}*{cfg.dim}*{cfg.n_heads + 2 * cfg.kv_heads}*{cfg.head_size}",
        ),
        "attention_scores": ("attention scores Q K^T", _attention_formula(cfg, T)),
        "attention_values": ("attention-weighted values", _attention_formula(cfg, T)),
        "output_projection": (
            "output projection",
            f"2 L H hd d = 2*{L}*{cfg.n_heads * cfg.head_size}*{cfg.dim}",
        ),
        "swiglu_mlp": (f"{_mlp_name(cfg)} MLP", f"3 x 2 L d f = 6*{L}*{cfg.dim}*{cfg.hidden_dim}"),
        "lm_head": ("LM head", f"2 d V = 2*{cfg.dim}*{cfg.vocab_size}"),
    }
    rows = []
    for key, value in fl.components().items():
        name, formula = formulas[key]
        rows.append([name, fmt_flops(value), f"{value:,}", f"{100 * value / fl.forward:.1f}%", formula])
    rows.append(
        ["forward total", fmt_flops(fl.forward), f"{fl.forward:,}", "100%", "sum; x3 for a training step"]
    )
    return rows


def _convention_rows(r: Any) -> list[list[str]]:
    fl = r.flops
    attn = fl.attention_palm // 3  # forward share of the 12LHQT term
    return [
        ["6N", fmt_flops(2 * fl.n), fmt_flops(4 * fl.n), fmt_flops(fl.six_n), "weights only, no attention"],
        [
            "PaLM 6N + 12LHQT",
            fmt_flops(2 * fl.n + attn),
            fmt_flops(4 * fl.n + 2 * attn),
            fmt_flops(fl.train_palm),
            "used for MFU (nanoGPT, torchtitan, llmctl pretrain)",
        ],
        [
            "exact (3 x forward)",
            fmt_flops(fl.forward),
            fmt_flops(fl.backward),
            fmt_flops(fl.train_exact),
            "each matmul once (FlopCounterMode's forward)",
        ],
    ]


def _run_rows(r: Any) -> list[list[str]]:
    rows = []
    fl = r.flops

    def timing(flops: float) -> list[str]:
        t = r.times(flops)
        return [
            fmt_duration(t["at_peak_s"]) if t["at_peak_s"] is not None else "n/a",
            fmt_duration(t["at_mfu_s"]) if t["at_mfu_s"] is not None else "n/a",
        ]

    if r.batch_size is not None:
        per_batch = fl.train_palm * r.tokens_per_batch
        rows.append(
            [
                f"per batch ({r.batch_size} x {r.seq_len})",
                fmt_count(r.tokens_per_batch),
                flops_text(per_batch),
                *timing(per_batch),
            ]
        )
    if r.tokens is not None:
        per_run = fl.train_palm * r.tokens
        rows.append(["per run", fmt_count(r.tokens), flops_text(per_run), *timing(per_run)])
    return rows


def render(r: Any) -> None:
    """Human tables for a FlopsReport."""
    console = out()
    fl = r.flops
    console.print(f"model {r.model_label}: {shape_line(r.model)}; seq_len {r.seq_len}", markup=False)
    console.print(
        text_table(
            "Parameters", ["component", "count", "", "share", "what"], _param_rows(r), numeric=(1, 2, 3)
        )
    )
    console.print(
        text_table(
            "Forward FLOPs per token (exact matmul count, 2mnk per matmul)",
            ["component", "FLOPs", "exact", "share", "formula"],
            _component_rows(r),
            numeric=(1, 2, 3),
            caption=(
                f"Attention counted over the full {r.seq_len} x {r.seq_len} score matrix"
                + (
                    f" ({r.seq_len} x {r.model.sliding_window} on the sliding-window layers)"
                    if r.model.sliding_window is not None
                    else ""
                )
                + ": causal masking not "
                f"subtracted (a causal kernel skips {fmt_flops(fl.causal_saving)} of the training FLOPs per token). "
                "Not matmuls, not counted: RMSNorm, RoPE, softmax, SiLU and the gate product, residual adds, "
                "embedding lookup."
            ),
        )
    )
    console.print(
        text_table(
            "Training FLOPs per token, three conventions",
            ["convention", "forward", "backward", "train step", "use"],
            _convention_rows(r),
            numeric=(1, 2, 3),
            caption=(
                f"N = {fl.n:,} ({fmt_count(fl.n)}): non-embedding matmul weights + output head. L H Q T = "
                f"{r.model.n_layers} layers x {r.model.n_heads} heads x {r.model.head_size} head_dim x {r.seq_len} "
                "tokens. PaLM and exact agree when every matmul is a weight or full attention; batch and run "
                "figures below use PaLM."
            ),
        )
    )
    hardware = None
    if r.gpu is not None:
        hardware = (
            f"{r.gpu.name} x {r.num_gpus}, {r.dtype} dense peak {fmt_flops(r.peak_flops, per_second=True)} "
            "per GPU (the datasheet's with-sparsity figure halved)"
        )
        if r.mfu:
            tps = r.peak_flops * r.num_gpus * r.mfu / fl.train_palm
            hardware += f"; at MFU {r.mfu:g}: {fmt_count(tps)} tokens/s"
    rows = _run_rows(r)
    if rows:
        console.print(
            text_table(
                "Training cost (PaLM convention)",
                ["", "tokens", "FLOPs", "time at peak", f"time at MFU {r.mfu:g}" if r.mfu else "time at MFU"],
                rows,
                caption=hardware,
                numeric=(1, 2, 3, 4),
            )
        )
    elif hardware:
        console.print(hardware, markup=False)


def estimate_command(
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        metavar="PRESET|YAML",
        help="Preset name (124m, llama3-8b, ...) or a config YAML with a model: section.",
    ),
    dim: int | None = typer.Option(None, "--dim", help="Model width. " + range_help("dim")),
    layers: int | None = typer.Option(None, "--layers", help="Transformer blocks. " + range_help("layers")),
    heads: int | None = typer.Option(None, "--heads", help="Query heads. " + range_help("heads")),
    kv_heads: int | None = typer.Option(
        None, "--kv-heads", help="Key/value heads (GQA); default: --heads. " + range_help("kv-heads")
    ),
    ffn_dim: int | None = typer.Option(
        None, "--ffn-dim", help="SwiGLU hidden size; default: the Llama rule. " + range_help("ffn-dim")
    ),
    vocab_size: int | None = typer.Option(
        None, "--vocab-size", help="Vocabulary size. " + range_help("vocab-size")
    ),
    tied: bool | None = typer.Option(None, "--tied/--untied", help="Tie the output head to the embedding."),
    seq_len: int | None = typer.Option(
        None,
        "--seq-len",
        help="Tokens per sequence. Default: the file's data.seq_len, else the model's max_seq_len (at most 8192). "
        + range_help("seq-len"),
    ),
    batch_size: int | None = typer.Option(
        None,
        "--batch-size",
        help="Sequences per optimizer step: adds per-batch figures. " + range_help("batch-size"),
    ),
    tokens: str | None = typer.Option(
        None, "--tokens", help="Training tokens (2.5B, 17e9): adds per-run figures. " + range_help("tokens")
    ),
    gpu: str | None = typer.Option(
        None, "--gpu", help="GPU for times (H100, A100-80GB, L4, ...; see budget --list-gpus)."
    ),
    num_gpus: int = typer.Option(1, "--num-gpus", help="GPUs sharing the work. " + range_help("num-gpus")),
    mfu: float | None = typer.Option(
        None,
        "--mfu",
        help="Model FLOPs utilisation for the realistic time, e.g. 0.4. Range: above 0, at most 1.",
    ),
    dtype: str = typer.Option(
        "auto", "--dtype", help="Peak to use: auto (bf16, or fp16 without bf16), fp32, tf32, bf16, fp16, fp8."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Parameters and FLOPs per token (6N, PaLM and exact), per batch and per run, and the time they take."""
    from llmctl.plan.estimate import estimate_flops

    fields = {
        "dim": dim,
        "n_layers": layers,
        "n_heads": heads,
        "n_kv_heads": kv_heads,
        "ffn_dim": ffn_dim,
        "vocab_size": vocab_size,
        "tied_embeddings": tied,
    }
    report = estimate_flops(
        model,
        fields,
        seq_len=seq_len,
        batch_size=batch_size,
        tokens=tokens,
        gpu=gpu,
        num_gpus=num_gpus,
        mfu=mfu,
        dtype=dtype,
    )
    if as_json:
        print_json(report.to_json())
        return
    render(report)


def register(app: typer.Typer) -> None:
    """Add the `flops` group (`flops estimate`) to the root app."""
    group = typer.Typer(
        help="FLOPs and parameter counts of a model shape.", no_args_is_help=True, rich_markup_mode=None
    )
    group.command("estimate")(estimate_command)
    app.add_typer(group, name="flops", short_help="FLOPs and parameter counts of a model shape.")
