"""Many sequences decoded together: the one generation loop behind `generate`, the Trainer's samples,
eval's generative tasks and (later) RL rollouts and a server.

    requests = [Request(ids, max_new_tokens=64, sampling=Sampling(temperature=0.8), seed=i, stop_ids=[eos])
                for i, ids in enumerate(prompts)]
    results = generate_batch(model, requests, max_batch=16, decode=tokenizer.decode)
    results[0].ids, results[0].text, results[0].stop_reason

Design: rows are **left-padded** to a common length and share one cache index, with per-row position ids
(RoPE starts at 0 for every row) and a key mask that hides each row's padding. The alternative, a cache
index per row, needs a scatter write and a ragged attention kernel per step; with left padding every step is
one ordinary [B, 1] forward through the model's own layers and one slice write, and rows leave or join by
plain tensor copies. The cost is padding: the shortest prompt pays for the longest one's columns.

- A row that finishes (stop id, stop string, its max_new_tokens, `max_time`) is dropped from the batch at once:
  the KV cache is compacted to the live rows, and columns that are padding for every live row are cut off.
- Requests beyond `max_batch` wait; when rows leave, waiting ones are prefilled and join: the shorter side
  is left-padded to the longer one's length (cache columns added on the left) and the two stacked.
- Each request draws from its own `torch.Generator` seeded with its seed, so its sample does not depend
  on what else is in the batch; greedy rows differ from batch-1 only by float summation order.
- With no padding at all (one request, or equal lengths) no mask is passed, as in the model's own forward.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from llmctl.infer.decode import DecodePlan
from llmctl.infer.sampling import Sampling, pick_token
from llmctl.model.llama import KVCache, Transformer, fused_weights_for_inference


@dataclass
class Request:
    """One sequence to continue."""

    prompt_ids: Sequence[int]
    max_new_tokens: int
    sampling: Sampling = field(default_factory=Sampling)
    seed: int | None = None
    """Seeds this request's own generator (None: the global RNG's next draws)."""
    stop_ids: Sequence[int] = ()
    stop_strings: Sequence[str] = ()
    """Texts that end the sample once the decoded output contains them (needs `decode`)."""


@dataclass
class Generation:
    """What one request produced."""

    ids: list[int] = field(default_factory=list)
    """New token ids, the stop token included when one ended the sample."""
    prompt_tokens: int = 0
    """Prompt tokens fed to the model (after cropping to the context)."""
    seconds: float = 0.0
    """Wall time from this request's prefill to its last token."""
    stop_reason: str = "length"
    """'length' (max_new_tokens or the context filled), 'stop' (a stop id), 'stop_string' or 'time'."""
    text: str | None = None
    """With `decode`: the new text, the stop id left out and cut before the stop string."""

    @property
    def tokens_per_sec(self) -> float | None:
        """Generated tokens per second, prefill included (EfficientLLM's inference throughput)."""
        return len(self.ids) / self.seconds if self.seconds > 0 else None


class _Row:
    """A request in flight: its prompt, budget, generator and what it has produced so far."""

    def __init__(self, index: int, request: Request, context: int, device: torch.device) -> None:
        self.index, self.request = index, request
        self.prompt = list(request.prompt_ids)[-(context - 1) :] or [0]
        self.budget = min(request.max_new_tokens, context - len(self.prompt))
        self.result = Generation(prompt_tokens=len(self.prompt))
        self.generator = None
        if request.seed is not None and not request.sampling.greedy:
            self.generator = torch.Generator(device=device).manual_seed(request.seed)
        self.stops = {int(s) for s in request.stop_ids}
        self.stop_strings = [s for s in request.stop_strings if s]  # "" would end every sample at once
        self.text, self.started, self.done = "", 0.0, False
        self.on_done: Callable[[int, Generation], None] | None = None

    def seen(self, device: torch.device) -> torch.Tensor | None:
        """Prompt and generated ids, for the repetition penalty (None when it is off)."""
        if self.request.sampling.repetition_penalty in (None, 1.0):
            return None
        return torch.tensor(self.prompt + self.result.ids, dtype=torch.long, device=device)

    def push(self, token: int, decode: Callable[[list[int]], str] | None) -> None:
        """Record a new token and decide whether the row is finished."""
        ids = self.result.ids
        ids.append(token)
        if token in self.stops:
            self.finish("stop", decode)
        elif self.stop_strings and decode is not None and self._hit_stop_string(decode):
            self.finish("stop_string", decode)
        elif len(ids) >= self.budget:
            self.finish("length", decode)

    def _hit_stop_string(self, decode: Callable[[list[int]], str]) -> bool:
        before = len(self.text)
        self.text = decode(self.result.ids)
        longest = max(len(s) for s in self.stop_strings)
        window = self.text[max(0, before - longest) :]
        return any(s in window for s in self.stop_strings)

    def finish(self, reason: str, decode: Callable[[list[int]], str] | None) -> None:
        """Mark the row done, with its time and (given decode) its text."""
        self.done = True
        self.result.stop_reason = reason
        self.result.seconds = time.perf_counter() - self.started if self.started else 0.0
        if decode is not None:
            ids = self.result.ids[:-1] if reason == "stop" else self.result.ids
            text = decode(ids)
            if reason == "stop_string":
                text = text[: min(i for i in (text.find(s) for s in self.stop_strings) if i >= 0)]
            self.result.text = text
        if self.on_done is not None:
            self.on_done(self.index, self.result)


@dataclass
class _Batch:
    """Live rows, left-padded into one cache: row b's prompt starts at column pads[b]."""

    rows: list[_Row]
    cache: KVCache
    pads: torch.Tensor
    key_bias: torch.Tensor | None = None
    """Additive key mask [B, 1, 1, capacity] (0, or -inf on padding) made at the first step after the
    batch changes and sliced by every step; None before that, or when no row is padded."""
    bias_ready: bool = False

    def remaining(self) -> int:
        """Cache columns the live rows may still need."""
        return max(r.budget - len(r.result.ids) for r in self.rows)


def _forward(
    model: Transformer,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    mask: torch.Tensor | None,
    cache: KVCache,
    plan: DecodePlan | None = None,
    additive: bool = False,
) -> torch.Tensor:
    """Last-position logits [B, V] (float32), with per-row positions and mask (boolean, or already
    additive with `additive`): through the plan's plain operations when there is one, else the model's
    own layers."""
    rotation = torch.complex(model.rope_cos[positions], model.rope_sin[positions]).unsqueeze(2)
    if mask is not None and not additive:
        mask = _additive(mask, model.tok_embeddings.weight.dtype)
    if plan is not None:
        return plan.forward(tokens, rotation, mask, cache)
    h = model.tok_embeddings(tokens)
    for i, layer in enumerate(model.layers):
        h = layer(h, rotation, None, mask, cache, i)
    cache.length += tokens.shape[1]
    return model.output(model.norm(h[:, -1:])).float()[:, -1]


def _empty_cache(model: Transformer, rows: int, capacity: int) -> KVCache:
    weight = model.tok_embeddings.weight  # never 4-bit (QLoRA): the model's own dtype
    shape = (rows, model.cfg.kv_heads, capacity, model.cfg.head_size)
    keys = [torch.zeros(shape, dtype=weight.dtype, device=weight.device) for _ in model.layers]
    return KVCache(keys, [torch.zeros_like(k) for k in keys])


def _additive(allowed: torch.Tensor, weights: torch.dtype) -> torch.Tensor:
    """A boolean mask as 0 / -inf in the queries' dtype (autocast's, else the weights'), made once per
    step: every layer's attention would otherwise convert it again."""
    kind = allowed.device.type
    dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else weights
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(
        ~allowed, float("-inf")
    )


def _prefill(
    model: Transformer, rows: list[_Row], autocast: Callable[[], Any], plan: DecodePlan | None
) -> tuple[_Batch, torch.Tensor]:
    """Run the rows' prompts, left-padded to the longest, into a fresh cache; their next-token logits."""
    device = model.tok_embeddings.weight.device
    length = max(len(r.prompt) for r in rows)
    pads = torch.tensor([length - len(r.prompt) for r in rows], device=device)
    tokens = torch.tensor([[0] * (length - len(r.prompt)) + r.prompt for r in rows], device=device)
    columns = torch.arange(length, device=device)
    positions = (columns[None, :] - pads[:, None]).clamp(min=0)
    mask = None
    if int(pads.max()) > 0:
        # Causal, padding hidden; a padding query sees itself so that no softmax row is empty (NaN).
        causal = columns[None, :] <= columns[:, None]
        real = columns[None, None, :] >= pads[:, None, None]
        mask = ((causal[None] & real) | torch.eye(length, dtype=torch.bool, device=device)[None]).unsqueeze(1)
    now = time.perf_counter()
    for r in rows:
        r.started = now
    batch = _Batch(rows, _empty_cache(model, len(rows), length + max(r.budget for r in rows)), pads)
    with autocast():
        logits = _forward(model, tokens, positions, mask, batch.cache, plan)
    return batch, logits


def _step(
    model: Transformer,
    batch: _Batch,
    tokens: list[int],
    autocast: Callable[[], Any],
    plan: DecodePlan | None,
) -> torch.Tensor:
    """Feed one token per live row; next-token logits [B, V]."""
    device = batch.pads.device
    length = batch.cache.length
    positions = (length - batch.pads)[:, None]
    with autocast():
        if not batch.bias_ready:
            # Once per batch, not per step (and no device sync per step for the padding check).
            batch.bias_ready = True
            if int(batch.pads.max()) > 0:
                columns = torch.arange(batch.cache.capacity, device=device)
                allowed = (columns[None, :] >= batch.pads[:, None])[:, None, None, :]
                batch.key_bias = _additive(allowed, model.tok_embeddings.weight.dtype)
        bias = None if batch.key_bias is None else batch.key_bias[..., : length + 1]
        return _forward(
            model,
            torch.tensor(tokens, device=device)[:, None],
            positions,
            bias,
            batch.cache,
            plan,
            additive=True,
        )


def _keep(batch: _Batch, keep: list[int]) -> _Batch:
    """The batch without its finished rows; columns that are padding for every live row are cut off."""
    index = torch.tensor(keep, device=batch.pads.device)
    pads = batch.pads[index]
    shift = int(pads.min())
    cache = batch.cache
    kept = KVCache(
        [k[index, :, shift:] for k in cache.keys],
        [v[index, :, shift:] for v in cache.values],
        cache.length - shift,
    )
    return _Batch([batch.rows[i] for i in keep], kept, pads - shift)


def _merge(a: _Batch, b: _Batch) -> _Batch:
    """One batch of a's rows then b's, the shorter left-padded to the longer's length."""
    length = max(a.cache.length, b.cache.length)
    capacity = length + max(a.remaining(), b.remaining())

    def stack(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros((x.shape[0] + y.shape[0], x.shape[1], capacity, x.shape[3]))
        out[: x.shape[0], :, length - a.cache.length : length] = x[:, :, : a.cache.length]
        out[x.shape[0] :, :, length - b.cache.length : length] = y[:, :, : b.cache.length]
        return out

    keys = [stack(x, y) for x, y in zip(a.cache.keys, b.cache.keys, strict=True)]
    values = [stack(x, y) for x, y in zip(a.cache.values, b.cache.values, strict=True)]
    pads = torch.cat((a.pads + length - a.cache.length, b.pads + length - b.cache.length))
    return _Batch(a.rows + b.rows, KVCache(keys, values, length), pads)


def _choose(logits: torch.Tensor, rows: list[_Row]) -> list[int]:
    """Each row's next token: one argmax for all greedy rows, the row's own draw for the others."""
    best = logits.argmax(-1).tolist()
    out = []
    for b, row in enumerate(rows):
        params = row.request.sampling
        if params.greedy and params.repetition_penalty in (None, 1.0):
            out.append(best[b])
        else:
            out.append(pick_token(logits[b], params, row.generator, row.seen(logits.device)))
    return out


@torch.no_grad()
def generate_batch(
    model: Transformer,
    requests: Sequence[Request],
    *,
    max_batch: int = 16,
    decode: Callable[[list[int]], str] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    on_token: Callable[[int, int], None] | None = None,
    max_time: float | None = None,
    on_done: Callable[[int, Generation], None] | None = None,
) -> list[Generation]:
    """Continue every request, at most `max_batch` rows at a time; one Generation per request, in order.

    on_token(request index, id) sees each token as it is picked; on_done(request index, generation)
    each request once, as it finishes (for progress). A prompt longer than the context keeps
    its last tokens; a row stops when the context is full. `max_time` (seconds from the call) ends every
    row still running with stop_reason 'time'. `decode` is needed for stop strings and fills `text`.
    """
    if any(r.stop_strings for r in requests) and decode is None:
        raise ValueError("stop strings need decode")
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, not {max_batch}")
    device = model.tok_embeddings.weight.device
    rows = [_Row(i, r, model.cfg.max_seq_len, device) for i, r in enumerate(requests)]
    for row in rows:
        row.on_done = on_done
        if row.budget <= 0:
            row.finish("length", decode)
    pending = deque(r for r in rows if not r.done)
    deadline = None if max_time is None else time.perf_counter() + max_time
    was_training = model.training
    model.eval()
    try:
        # The plan's plain operations when the architecture allows (infer/decode.py), else the modules
        # with their fused weights built once for the call.
        plan = DecodePlan.build(model)
        with contextlib.nullcontext() if plan is not None else fused_weights_for_inference(model):
            _run(model, plan, pending, max_batch, decode, autocast, on_token, deadline)
    finally:
        model.train(was_training)
    return [r.result for r in rows]


def _run(
    model: Transformer,
    plan: DecodePlan | None,
    pending: deque[_Row],
    max_batch: int,
    decode: Callable[[list[int]], str] | None,
    autocast: Callable[[], Any],
    on_token: Callable[[int, int], None] | None,
    deadline: float | None,
) -> None:
    batch: _Batch | None = None
    logits = torch.empty(0)
    while pending or batch is not None:
        room = max_batch - (len(batch.rows) if batch is not None else 0)
        if pending and room > 0:
            fresh, fresh_logits = _prefill(
                model, [pending.popleft() for _ in range(min(room, len(pending)))], autocast, plan
            )
            if batch is None:
                batch, logits = fresh, fresh_logits
            else:
                batch, logits = _merge(batch, fresh), torch.cat((logits, fresh_logits))
        tokens = _choose(logits, batch.rows)
        late = deadline is not None and time.perf_counter() > deadline
        for row, token in zip(batch.rows, tokens, strict=True):
            row.push(token, decode)
            if on_token is not None:
                on_token(row.index, token)
            if late and not row.done:
                row.finish("time", decode)
        if late:
            for row in pending:
                row.finish("time", decode)
            pending.clear()
        live = [b for b, row in enumerate(batch.rows) if not row.done]
        if not live:
            batch = None
            continue
        if len(live) < len(batch.rows):
            batch = _keep(batch, live)
            tokens = [tokens[b] for b in live]
        logits = _step(model, batch, tokens, autocast, plan)
