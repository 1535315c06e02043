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
from typing import Any

import torch

from llmctl.errors import LlmctlError
from llmctl.infer.batch import Generation, Request, generate_batch
from llmctl.infer.sampling import Sampling, filter_logits
from llmctl.model.llama import Transformer

__all__ = [
    "Generation",
    "IncrementalDecoder",
    "filter_logits",
    "fit_prompt",
    "generate",
    "generate_from_checkpoint",
]


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
    min_p: float | None = None,
    repetition_penalty: float | None = None,
) -> Generation:
    """Continue prompt_ids by up to max_new_tokens sampled tokens, calling on_token(id) as each arrives.

    A prompt longer than the model's context keeps its last tokens; generation stops when the
    context is full. `seed` makes the sample reproducible without touching the global RNG. One row of
    `generate_batch` (llmctl/infer/batch.py), which decodes many prompts together.
    """
    sampling = Sampling(temperature, top_k, top_p, min_p, repetition_penalty)
    request = Request(prompt_ids, max_new_tokens, sampling, seed, stop_ids)
    report = None if on_token is None else (lambda _row, token: on_token(token))
    return generate_batch(model, [request], max_batch=1, autocast=autocast, on_token=report)[0]


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


def _open(checkpoint: str, device: str, on_warning: Callable[[str], None] | None) -> Any:
    """(opened checkpoint, model, device) with the checkpoint's warnings passed on."""
    from llmctl.infer.checkpoint import open_checkpoint
    from llmctl.infer.device import choose_device

    dev = choose_device(device, flag="--device")
    opened = open_checkpoint(checkpoint)
    for warning in opened.warnings if on_warning is not None else []:
        on_warning(warning)
    return opened, opened.load_model(dev), dev


def _encode(
    tokenizer: Any,
    manifest: Any,
    prompt: str,
    render: Callable[[Any, dict[str, Any], str], list[int]] | None,
    context: int,
    max_new_tokens: int,
    truncate_left: bool,
) -> tuple[list[int], int]:
    """The prompt's ids fitted to the context (see fit_prompt), and how many were dropped."""
    from llmctl.tokenizer.template import prompt_ids

    if render is None:
        ids = prompt_ids(tokenizer, manifest, prompt)
        # The token a document starts after (BOS, or EOS for old models) survives a left truncation.
        firsts = {tokenizer.bos_id, tokenizer.eos_id} - {None}
        keep = 1 if ids and ids[0] in firsts else 0
    else:
        ids, keep = render(tokenizer, manifest, prompt), 0
    prefix, body, dropped = fit_prompt(ids[:keep], ids[keep:], context, max_new_tokens, truncate_left)
    return prefix + body, dropped


class _Holdback:
    """Streams text pieces, holding back the last len(longest stop string) - 1 characters so that a stop
    string is never printed: the held text is where a stop string could still begin."""

    def __init__(self, on_text: Callable[[str], None], stop_strings: Sequence[str]) -> None:
        self.on_text, self.stops = on_text, [s for s in stop_strings if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buffer, self.sent, self.stopped = "", "", False

    def push(self, piece: str) -> None:
        if self.stopped:
            return
        self.buffer += piece
        hits = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if hits:  # what was sent held no stop string's start, so one that completes lies in the buffer
            ready, self.buffer, self.stopped = self.buffer[: min(hits)], "", True
        else:
            ready = self.buffer[: len(self.buffer) - self.hold]
            self.buffer = self.buffer[len(ready) :]
        if ready:
            self.sent += ready
            self.on_text(ready)

    def finish(self, final: str | None) -> None:
        """Send the rest: of the final (cut) text when given, else the held-back buffer."""
        rest = final[len(self.sent) :] if final is not None and final.startswith(self.sent) else self.buffer
        if rest:
            self.on_text(rest)


def generate_from_checkpoint(
    checkpoint: str,
    prompt: str,
    *,
    max_new_tokens: int = 200,
    sampling: Sampling | None = None,
    seed: int | None = 0,
    stop_strings: Sequence[str] = (),
    max_time: float | None = None,
    device: str = "auto",
    render: Callable[[Any, dict[str, Any], str], list[int]] | None = None,
    on_text: Callable[[str], None] | None = None,
    echo_prompt: bool = False,
    truncate_left: bool = False,
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Load a checkpoint and continue `prompt`; on_text receives the text as it is generated (after
    the prompt itself with echo_prompt, once the checkpoint has loaded).

    `sampling` defaults to temperature 0.8, top-k 50. `render(tokenizer, manifest, prompt)` turns the
    prompt into ids; by default the model's own convention (llmctl/tokenizer/template.py: its
    post-processor, or the shards' document prefix). Generation stops at EOS, at the checkpoint's recorded
    end-of-turn ids and at `stop_strings` (cut from the text). A prompt that leaves no room in the model's
    context is an error, unless `truncate_left`: then its first tokens are dropped (a leading BOS/document
    prefix kept) so that min(max_new_tokens, context / 2) new tokens fit; the result's
    `prompt_dropped_tokens` says how many. What the user should be warned about (a corrupt `latest` passed
    over for an older step) goes to on_warning as soon as the checkpoint is open, and is the result's
    `warnings`.
    """
    from llmctl.infer.device import inference_autocast
    from llmctl.telemetry import inference_metrics
    from llmctl.tokenizer.template import stop_ids

    sampling = sampling or Sampling(temperature=0.8, top_k=50)
    sampling.check()
    opened, model, dev = _open(checkpoint, device, on_warning)
    tokenizer, manifest = opened.tokenizer(), opened.manifest
    ids, dropped = _encode(
        tokenizer, manifest, prompt, render, model.cfg.max_seq_len, max_new_tokens, truncate_left
    )
    stream, stops = IncrementalDecoder(tokenizer.decode), set(stop_ids(tokenizer, manifest))
    out = _Holdback(on_text, stop_strings) if on_text is not None else None
    if on_text is not None and echo_prompt:
        on_text(prompt)

    def emit(_row: int, token_id: int) -> None:
        if out is not None and token_id not in stops:
            out.push(stream.push(token_id))

    request = Request(ids, max_new_tokens, sampling, seed, sorted(stops), tuple(stop_strings))
    (gen,) = generate_batch(
        model,
        [request],
        decode=tokenizer.decode,
        autocast=inference_autocast(dev),
        on_token=emit,
        max_time=max_time,
    )
    if out is not None:
        out.push(stream.flush())
        out.finish(gen.text)
    return {
        "checkpoint": str(checkpoint),
        "step": manifest.get("step"),
        "warnings": opened.warnings,
        **_text_fields(prompt, gen, dropped),
        "device": str(dev),
        "seed": seed,
        **_sampling_fields(sampling),
        "tokens_per_sec": gen.tokens_per_sec,
        **inference_metrics(len(gen.ids), gen.seconds),
    }


def _text_fields(prompt: str, gen: Any, dropped: int) -> dict[str, Any]:
    """One generation's prompt, text and token counts, as every JSON record names them."""
    return {
        "prompt": prompt,
        "text": gen.text,
        "prompt_tokens": gen.prompt_tokens,
        "prompt_dropped_tokens": dropped,
        "new_tokens": len(gen.ids),
        "stop_reason": gen.stop_reason,
    }


def _sampling_fields(sampling: Sampling) -> dict[str, Any]:
    """The settings as the JSON output names them (min_p and the penalty only when used)."""
    fields: dict[str, Any] = {
        "temperature": sampling.temperature,
        "top_k": sampling.top_k,
        "top_p": sampling.top_p,
    }
    if sampling.min_p:
        fields["min_p"] = sampling.min_p
    if sampling.repetition_penalty not in (None, 1.0):
        fields["repetition_penalty"] = sampling.repetition_penalty
    return fields


def generate_many_from_checkpoint(
    checkpoint: str,
    prompts: Sequence[tuple[int, str]],
    *,
    num_samples: int = 1,
    max_new_tokens: int = 200,
    sampling: Sampling | None = None,
    seed: int | None = 0,
    stop_strings: Sequence[str] = (),
    max_time: float | None = None,
    batch_size: int = 16,
    device: str = "auto",
    truncate_left: bool = False,
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Continue every (line, prompt) `num_samples` times, batch_size rows decoded together.

    Sample j of every prompt is drawn with seed + j, so a prompt's samples are the same whatever else is
    in the file (and sample 0 is `generate --prompt`'s text for the same seed). Returns the run's
    settings and `records`, one per prompt x sample in file order. A prompt too long for the context is
    an error naming its line, unless `truncate_left`.
    """
    from llmctl.infer.device import inference_autocast
    from llmctl.tokenizer.template import stop_ids

    sampling = sampling or Sampling(temperature=0.8, top_k=50)
    sampling.check()
    if num_samples < 1 or batch_size < 1:
        raise LlmctlError("--num-samples and --batch-size must be at least 1", "pass a positive count")
    opened, model, dev = _open(checkpoint, device, on_warning)
    tokenizer, manifest = opened.tokenizer(), opened.manifest
    stops = sorted(set(stop_ids(tokenizer, manifest)))
    encoded = []
    for line, prompt in prompts:
        try:
            encoded.append(
                _encode(
                    tokenizer, manifest, prompt, None, model.cfg.max_seq_len, max_new_tokens, truncate_left
                )
            )
        except LlmctlError as err:
            raise LlmctlError(f"prompt on line {line}: {err.message}", err.hint) from None
    requests = [
        Request(ids, max_new_tokens, sampling, None if seed is None else seed + j, stops, tuple(stop_strings))
        for ids, _ in encoded
        for j in range(num_samples)
    ]
    start = time.perf_counter()
    gens = generate_batch(
        model,
        requests,
        max_batch=batch_size,
        decode=tokenizer.decode,
        autocast=inference_autocast(dev),
        max_time=max_time,
    )
    seconds = time.perf_counter() - start
    records = []
    for k, gen in enumerate(gens):
        (line, prompt), (_, dropped) = prompts[k // num_samples], encoded[k // num_samples]
        records.append(
            {
                "line": line,
                "sample": k % num_samples,
                **_text_fields(prompt, gen, dropped),
                "seed": None if seed is None else seed + k % num_samples,
                "seconds": gen.seconds,
            }
        )
    new_tokens = sum(r["new_tokens"] for r in records)
    return {
        "checkpoint": str(checkpoint),
        "step": manifest.get("step"),
        "warnings": opened.warnings,
        "device": str(dev),
        **_sampling_fields(sampling),
        "records": records,
        "new_tokens": new_tokens,
        "seconds": seconds,
        "tokens_per_sec": new_tokens / seconds if seconds > 0 else None,
    }
