"""Rendering helpers shared by several commands: plain-text tables and number formats (`flops estimate`,
`budget`), token views with the SFT/DPO mask styled (`inspect`, `inspect` of pair shards), and the final
result of a training run (`pretrain`, `sft`, `dpo`: `render_run`).

    out().print(text_table(rows))            # a fixed-width table in a Rich Text
    render_tokens(view, max_tokens=200, plain=False)
"""

from __future__ import annotations

from typing import Any

from llmctl.units import fmt_flops


def text_table(
    title: str | None,
    columns: list[str],
    rows: list[list[str]],
    caption: str | None = None,
    numeric: tuple[int, ...] = (),
) -> Any:
    """A Rich table whose `numeric` columns are right-aligned and the rest, words, left-aligned."""
    from rich.table import Table

    t = Table(
        title=title, caption=caption, title_justify="left", caption_justify="left", show_header=any(columns)
    )
    for i, name in enumerate(columns):
        t.add_column(name, justify="right" if i in numeric else "left", overflow="fold")
    for row in rows:
        t.add_row(*row)
    return t


def sci(x: float) -> str:
    """2.09e19: the notation back-of-envelope notes use, next to the prefixed form."""
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.2e}".replace("e+", "e")


def flops_text(x: float) -> str:
    """`20.9 EFLOPs (2.09e19)`."""
    return f"{fmt_flops(x)} ({sci(x)})"


def shape_line(cfg: Any) -> str:
    """One line describing a ModelConfig's shape."""
    kv = f"{cfg.kv_heads} KV heads" if cfg.kv_heads != cfg.n_heads else "MHA"
    return (
        f"dim {cfg.dim}, {cfg.n_layers} layers, {cfg.n_heads} heads of {cfg.head_size} ({kv}), "
        f"{'GeGLU' if getattr(cfg, 'activation', 'silu') == 'gelu_tanh' else 'SwiGLU'} {cfg.hidden_dim}, vocab {cfg.vocab_size:,}, {'tied' if cfg.tied_embeddings else 'untied'} head"
        + (", qkv bias" if cfg.qkv_bias else "")
        + (f", window {cfg.sliding_window}" if getattr(cfg, "sliding_window", None) else "")
    )


PLAIN_SEP = "\u00a6"


STYLES = {
    "plain": ("on grey23", "on dodger_blue3"),
    "trained": ("black on green3", "black on dark_sea_green2"),
    "masked": ("grey70 on grey19", "grey70 on grey30"),
}


def _shown(piece: str) -> str:
    return piece.replace("\n", "\u21b5\n").replace("\t", "\u2192\t")


def render_tokens(view: Any, max_tokens: int, plain: bool) -> Any:
    """A Rich Text of the document with token boundaries (and the SFT mask) made visible."""
    from rich.text import Text

    text = Text()
    n = len(view.ids) if max_tokens <= 0 else min(max_tokens, len(view.ids))
    masked_run = False
    for k in range(n):
        trained = view.mask is None or view.mask[k] == 1
        piece = _shown(view.pieces[k])
        if plain:
            if view.mask is not None and not trained and not masked_run:
                text.append("\u27e6")
            if view.mask is not None and trained and masked_run:
                text.append("\u27e7")
            masked_run = view.mask is not None and not trained
            text.append(piece + (PLAIN_SEP if k < n - 1 else ""))
        else:
            kind = "plain" if view.mask is None else ("trained" if trained else "masked")
            text.append(piece, style=STYLES[kind][k % 2])
    if plain and masked_run:
        text.append("\u27e7")
    if n < len(view.ids):
        text.append(f"\n\u2026 {len(view.ids) - n:,} more tokens (--max-tokens 0 shows all)", style="italic")
    return text


def render_run(
    command: str,
    run: Any,
    as_json: bool,
    *,
    rows: list[list[Any]],
    fields: dict[str, Any],
    origin: dict[str, Any] | None = None,
    origin_rows: list[list[Any]] | None = None,
) -> None:
    """A training run's final figures (`run`: llmctl.engine.run.RunOutcome), the same frame for every
    objective: one JSON document (status, run_dir, `origin`, step, tokens, checkpoint, `fields`, summary),
    or a table (status, run, `origin_rows`, steps, tokens, the objective's `rows`, wall time, checkpoint)."""
    from llmctl.output import out, print_json, table
    from llmctl.units import fmt_count, fmt_duration

    r = run.result
    if as_json:
        print_json(
            {
                "status": r.status,
                "signal": r.signal,
                "run_dir": str(run.run_dir),
                **(origin or {}),
                "resumed_from": run.resumed_from,
                "step": r.step,
                "tokens": r.tokens,
                "checkpoint": r.checkpoint,
                **fields,
                "summary": r.summary,
            }
        )
        return
    lines: list[list[Any]] = [
        ["status", r.status + (f" ({r.signal})" if r.signal else "")],
        ["run", run.run_dir],
        *(origin_rows or []),
        ["steps", f"{r.step:,}"],
        ["tokens", fmt_count(r.tokens)],
        *rows,
    ]
    if r.summary.get("wall_time_s") is not None:
        lines.append(["wall time", fmt_duration(r.summary["wall_time_s"])])
    lines.append(["checkpoint", r.checkpoint or "none"])
    out().print(table(f"{command}: {r.status}", ["", "value"], lines))


def speed_line(result: dict[str, Any]) -> str:
    """The stderr line after a generation: tokens, seconds, speed, device and why it stopped."""
    speed = result["tokens_per_sec"]
    return (
        f"{result['new_tokens']} tokens in {result['seconds']:.2f}s"
        + (f" ({speed:,.1f} tokens/s)" if speed else "")
        + f", {result['device']}, stop: {result['stop_reason']}"
    )
