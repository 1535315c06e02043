"""Autoregressive sampling with a KV cache, shared by `llmctl generate` and the Trainer's sample rounds.

    result = generate(model, prompt_ids, max_new_tokens=64, temperature=0.8, top_k=50, seed=0,
                      stop_ids=[eos], on_token=print_piece)
    result.ids, result.seconds, result.tokens_per_sec

The prompt is processed in one forward pass that fills the cache (prefill); each new token then costs
one forward pass of length 1 over the cached keys and values.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from llmctl.errors import LlmctlError
from llmctl.model.llama import Transformer


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Logits [B, V] with everything outside the top-k and outside the top-p nucleus set to -inf."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        # Nucleus sampling (Holtzman et al. 2020): the smallest set whose probability reaches top_p.
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row of logits [B, V]; temperature 0 is greedy (argmax)."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@dataclass
class Generation:
    """What one call to generate produced."""

    ids: list[int] = field(default_factory=list)
    """New token ids, the stop token included when one ended the sample."""
    prompt_tokens: int = 0
    """Prompt tokens fed to the model (after cropping to the context)."""
    seconds: float = 0.0
    """Wall time of prefill and decoding."""
    stop_reason: str = "length"
    """'length' (max_new_tokens or the context filled) or 'stop' (a stop token)."""

    @property
    def tokens_per_sec(self) -> float | None:
        """Generated tokens per second, prefill included (EfficientLLM's inference throughput)."""
        return len(self.ids) / self.seconds if self.seconds > 0 else None


@torch.no_grad()
def generate(
    model: Transformer,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop_ids: Sequence[int] = (),
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    on_token: Callable[[int], None] | None = None,
) -> Generation:
    """Continue prompt_ids by up to max_new_tokens sampled tokens, calling on_token(id) as each arrives.

    A prompt longer than the model's context keeps its last tokens; generation stops when the
    context is full. `seed` makes the sample reproducible without touching the global RNG.
    """
    device = next(model.parameters()).device
    context = model.cfg.max_seq_len
    prompt = list(prompt_ids)[-(context - 1) :] or [0]
    budget = min(max_new_tokens, context - len(prompt))
    generator = None
    if seed is not None and temperature > 0:
        generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    result = Generation(prompt_tokens=len(prompt))
    stops = set(int(s) for s in stop_ids)
    start = time.perf_counter()
    try:
        cache = model.new_cache(1, len(prompt) + budget)
        tokens = torch.tensor([prompt], dtype=torch.long, device=device)
        for _ in range(budget):
            with autocast():
                logits = model(tokens, cache=cache, last_only=True)
            next_id = int(sample_next(logits[:, -1], temperature, top_k, top_p, generator).item())
            result.ids.append(next_id)
            if on_token is not None:
                on_token(next_id)
            if next_id in stops:
                result.stop_reason = "stop"
                break
            tokens = torch.tensor([[next_id]], dtype=torch.long, device=device)
    finally:
        model.train(was_training)
    result.seconds = time.perf_counter() - start
    return result


class IncrementalDecoder:
    """Turns a stream of token ids into text pieces for printing as they arrive.

    Byte-level tokens can split a character; a piece is held back until its bytes decode cleanly.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._printed = 0

    def push(self, token_id: int) -> str:
        """The new text this token completes (possibly empty)."""
        self._ids.append(token_id)
        text = self._decode(self._ids)
        if text.endswith("\ufffd"):
            return ""
        piece = text[self._printed :]
        self._printed = len(text)
        return piece

    def flush(self) -> str:
        """Whatever is left, replacement characters included."""
        text = self._decode(self._ids)
        piece = text[self._printed :]
        self._printed = len(text)
        return piece


def fit_prompt(
    prefix: list[int], body: list[int], context: int, max_new_tokens: int, truncate_left: bool
) -> tuple[list[int], list[int], int]:
    """(prefix, body, tokens dropped): the prompt must leave room for one new token in the context.

    Without `truncate_left` a prompt that does not is an error naming both lengths; with it, the start of
    `body` is dropped so that min(max_new_tokens, context // 2) new tokens fit, and the prefix stays.
    """
    total = len(prefix) + len(body)
    if total < context:
        return prefix, body, 0
    if not truncate_left:
        raise LlmctlError(
            f"the prompt is {total:,} tokens but the model's context is {context:,} (at most {context - 1:,} prompt "
            "tokens, to leave room for one new token)",
            "shorten the prompt, or pass --truncate-left to keep its end and drop the start",
        )
    keep = max(1, context - len(prefix) - max(1, min(max_new_tokens, context // 2)))
    return prefix, body[-keep:], len(body) - keep


def generate_from_checkpoint(
    checkpoint: str,
    prompt: str,
    *,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 50,
    top_p: float | None = None,
    seed: int | None = 0,
    device: str = "auto",
    render: Callable[[Any, dict[str, Any], str], list[int]] | None = None,
    on_text: Callable[[str], None] | None = None,
    echo_prompt: bool = False,
    truncate_left: bool = False,
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Load a checkpoint and continue `prompt`; on_text receives the text as it is generated (after
    the prompt itself with echo_prompt, once the checkpoint has loaded).

    `render(tokenizer, manifest, prompt)` turns the prompt into ids; by default the model's own
    convention (llmctl/tokenizer/template.py: its post-processor, or the shards' document prefix).
    Generation stops at EOS and at the checkpoint's recorded end-of-turn ids. A prompt that leaves no
    room in the model's context is an error, unless `truncate_left`: then its first tokens are dropped
    (a leading BOS/document prefix kept) so that min(max_new_tokens, context / 2) new tokens fit; the
    result's `prompt_dropped_tokens` says how many. What the user should be warned about (a corrupt
    `latest` passed over for an older step) goes to on_warning as soon as the checkpoint is open, and
    is the result's `warnings`.
    """
    from llmctl.infer.checkpoint import open_checkpoint
    from llmctl.infer.device import choose_device, inference_autocast
    from llmctl.telemetry import inference_metrics
    from llmctl.tokenizer.template import prompt_ids, stop_ids

    dev = choose_device(device, flag="--device")
    opened = open_checkpoint(checkpoint)
    for warning in opened.warnings if on_warning is not None else []:
        on_warning(warning)
    model, tokenizer, manifest = opened.load_model(dev), opened.tokenizer(), opened.manifest
    if render is None:
        ids = prompt_ids(tokenizer, manifest, prompt)
        # The token a document starts after (BOS, or EOS for old models) survives a left truncation.
        firsts = {tokenizer.bos_id, tokenizer.eos_id} - {None}
        keep = 1 if ids and ids[0] in firsts else 0
    else:
        ids, keep = render(tokenizer, manifest, prompt), 0
    prefix, body, dropped = fit_prompt(
        ids[:keep], ids[keep:], model.cfg.max_seq_len, max_new_tokens, truncate_left
    )
    ids = prefix + body
    autocast = inference_autocast(dev)
    stream = IncrementalDecoder(tokenizer.decode)
    stops = set(stop_ids(tokenizer, manifest))
    if on_text is not None and echo_prompt:
        on_text(prompt)

    def emit(token_id: int) -> None:
        if on_text is not None and token_id not in stops:
            piece = stream.push(token_id)
            if piece:
                on_text(piece)

    gen = generate(
        model,
        ids,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        stop_ids=list(stops),
        autocast=autocast,
        on_token=emit,
    )
    if on_text is not None:
        rest = stream.flush()
        if rest:
            on_text(rest)
    new = gen.ids[:-1] if gen.stop_reason == "stop" else gen.ids
    return {
        "checkpoint": str(checkpoint),
        "step": manifest.get("step"),
        "warnings": opened.warnings,
        "prompt": prompt,
        "text": tokenizer.decode(new),
        "prompt_tokens": gen.prompt_tokens,
        "prompt_dropped_tokens": dropped,
        "new_tokens": len(gen.ids),
        "stop_reason": gen.stop_reason,
        "device": str(dev),
        "seed": seed,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "tokens_per_sec": gen.tokens_per_sec,
        **inference_metrics(len(gen.ids), gen.seconds),
    }
