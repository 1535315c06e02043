"""Chat templates rendered within bounds: a template from a shared model folder cannot hang or fill memory.

    text = render_bounded(template_text, {"messages": messages, "add_generation_prompt": True}, env_options)

A model's chat template is Jinja code from whoever published the model. transformers renders it in a
sandboxed environment, which stops attribute tricks but not cost: two nested `range(100000)` loops run
10^10 times, `"x" * 10**10` or a string doubled in a loop fills memory. Here the sandbox also counts
work and checks sizes, all inline (no signal.alarm), so it works in any thread of a server:

- every loop iteration, call and intercepted operator is a step: at most MAX_STEPS per render, and the
  render stops once MAX_SECONDS of wall time have passed (checked at each step);
- `range` yields at most MAX_RANGE numbers; an integer argument above MAX_RANGE to a call or filter
  (`center(10**9)`, `ljust`, `slice`) is refused before it runs;
- `*`, `+`, `%`, `~` and every filter result are held to MAX_CHARS characters (or items), and so is the
  rendered text, counted as its chunks stream out.

Each `{% for %}` reads its sequence through a counting wrapper put into the template's syntax tree before
it is compiled; the text a template renders is unchanged (tests hold real HF templates to it).
"""

from __future__ import annotations

import contextvars
import functools
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from llmctl.errors import LlmctlError

MAX_STEPS = 1_000_000
"""Loop iterations, calls and operators one render may take (a 1,000-turn chat takes about 20,000)."""
MAX_SECONDS = 10.0
"""Wall time one render may take (real templates take milliseconds)."""
MAX_RANGE = 100_000
"""Longest range(), and the largest integer argument a call or filter may get."""
MAX_CHARS = 16 * 1024 * 1024
"""Longest rendered text, string or list an operator or filter may make."""

_LOOP = "__llmctl_loop"
_CONCAT = "__llmctl_concat"
_NUMBER = re.compile(r"\d{6,}")


class BoundExceeded(LlmctlError):
    """A chat template went past one of the render bounds (exit code 2)."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"the chat template {what}; rendering stopped",
            "use a model whose chat template you trust (chat_template.jinja, tokenizer_config.json, or "
            "checkpoint.json's chat.template_text)",
        )


class _Budget:
    """Steps and wall time left to one render."""

    def __init__(self) -> None:
        self.deadline = time.monotonic() + MAX_SECONDS
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise BoundExceeded(f"took more than {MAX_STEPS:,} steps (loop iterations and calls)")
        if time.monotonic() > self.deadline:
            raise BoundExceeded(f"took longer than {MAX_SECONDS:g} s")


# The budget of the render running in this thread (or task): compiled templates are shared and cached,
# each render brings its own budget.
_BUDGET: contextvars.ContextVar[_Budget] = contextvars.ContextVar("llmctl_template_budget")


def _step() -> None:
    _BUDGET.get().step()


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple, dict, bytes)) else 0


def _check_size(value: Any, what: str) -> Any:
    if _size(value) > MAX_CHARS:
        raise BoundExceeded(f"made {what} longer than {MAX_CHARS:,} characters or items")
    return value


def _check_args(args: Iterable[Any], what: str) -> None:
    """Refuse an integer argument big enough to make a huge string or list in one C call."""
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_RANGE:
            raise BoundExceeded(f"passed {arg:,} to {what} (at most {MAX_RANGE:,})")


def _check_format(text: Any) -> None:
    """Refuse a format string with a width or precision over MAX_RANGE (`'%999999999d'`, `'{:>999999999}'`)."""
    if isinstance(text, str):
        for number in _NUMBER.findall(text):
            if int(number) > MAX_RANGE and ("%" in text or "{" in text):
                raise BoundExceeded(f"used a format width of {int(number):,} (at most {MAX_RANGE:,})")


@functools.cache
def _bounded_env_class() -> type:
    """The sandbox subclass, made on first use so that importing this module does not import jinja2."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        """An immutable sandbox that charges each call and intercepted operator to a budget."""

        intercepted_binops = frozenset({"*", "**", "+", "%"})

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            _step()
            _check_args([*args, *kwargs.values()], getattr(__obj, "__name__", "a call"))
            if getattr(__obj, "__name__", None) in ("format", "format_map"):
                # The sandbox wraps str.format; the string it was taken from is its __wrapped__'s __self__.
                _check_format(getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None))
            return _check_size(super().call(__context, __obj, *args, **kwargs), "a call's result")

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _step()
            if operator == "**" and isinstance(right, int) and abs(right) > 64 and left not in (0, 1, -1):
                raise BoundExceeded(f"raised a number to the power {right:,}")
            if operator == "*":
                count, seq = (right, left) if isinstance(right, int) else (left, right)
                if isinstance(count, int) and _size(seq) * count > MAX_CHARS:
                    raise BoundExceeded(f"repeated a sequence {count:,} times")
            if operator == "+" and _size(left) + _size(right) > MAX_CHARS:
                raise BoundExceeded(f"made a value longer than {MAX_CHARS:,} characters or items")
            if operator == "%":
                _check_format(left)
            return _check_size(super().call_binop(context, operator, left, right), "a value")

    return BoundedEnvironment


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` charged to the budget, its integer arguments and its result checked (the value filtered
    comes first, after the context, eval context or environment a pass_* filter is given)."""
    value_at = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)  # keeps jinja_pass_arg, so jinja passes the same arguments as before
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        _step()
        _check_args([*args[value_at + 1 :], *kwargs.values()], f"the {name} filter")
        if name == "format" and len(args) > value_at:
            _check_format(args[value_at])
        return _check_size(func(*args, **kwargs), f"the {name} filter's result")

    return wrapped


def _counted_loops(tree: Any) -> Any:
    """The template's syntax tree with each for-loop's sequence read through _LOOP and each `~` joined by
    _CONCAT, so the budget sees every iteration and every concatenation."""
    from jinja2 import nodes

    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Call(nodes.Name(_LOOP, "load"), [loop.iter], [], None, None, lineno=loop.lineno)
    for parent in tree.find_all(nodes.Node):
        for field in parent.fields:
            value = getattr(parent, field, None)
            if isinstance(value, nodes.Concat):
                setattr(parent, field, _concat_call(value))
            elif isinstance(value, list):
                setattr(parent, field, [_concat_call(v) if isinstance(v, nodes.Concat) else v for v in value])
    return tree


def _concat_call(node: Any) -> Any:
    from jinja2 import nodes

    return nodes.Call(nodes.Name(_CONCAT, "load"), node.nodes, [], None, None, lineno=node.lineno)


def _counted(sequence: Any) -> Iterator[Any]:
    for item in sequence:
        _step()
        yield item


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise BoundExceeded(f"asked for a range of {len(numbers):,} numbers (at most {MAX_RANGE:,})")
    return numbers


def _concat(*parts: Any) -> str:
    texts = [str(part) for part in parts]
    if sum(map(len, texts)) > MAX_CHARS:
        raise BoundExceeded(f"joined a string longer than {MAX_CHARS:,} characters")
    return "".join(texts)


@functools.lru_cache(maxsize=16)
def _compiled(
    source: str, globals_: tuple[Any, ...], filters: tuple[Any, ...], options: tuple[Any, ...]
) -> Any:
    """The bounded template for `source`, compiled once per source and settings (a tokenize run renders
    one template for every conversation); the arguments are hashable forms of render_bounded's."""
    env = _bounded_env_class()(**{k: list(v) if isinstance(v, tuple) else v for k, v in options})
    env.filters.update(dict(filters))
    for name, func in list(env.filters.items()):
        env.filters[name] = _bounded_filter(name, func)
    env.globals.update(dict(globals_))
    env.globals.update({"range": _bounded_range, _LOOP: _counted, _CONCAT: _concat})
    return env.from_string(_counted_loops(env.parse(source)))


def render_bounded(
    source: str,
    context: dict[str, Any],
    *,
    globals_: dict[str, Any] | None = None,
    filters: dict[str, Callable[..., Any]] | None = None,
    options: dict[str, Any] | None = None,
) -> str:
    """`source` rendered with `context`, within MAX_STEPS, MAX_SECONDS and MAX_CHARS (BoundExceeded past
    them); extra `globals_` and `filters` (module-level functions, so the compiled template is reused),
    and the environment `options` as jinja2.Environment takes them. jinja2 errors propagate for the
    caller to word."""

    def frozen(mapping: dict[str, Any] | None) -> tuple[Any, ...]:
        items = (mapping or {}).items()
        return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in items))

    template = _compiled(source, frozen(globals_), frozen(filters), frozen(options))
    budget = _Budget()
    token = _BUDGET.set(budget)
    chunks: list[str] = []
    total = 0
    try:
        for chunk in template.generate(**context):
            total += len(chunk)
            if total > MAX_CHARS:
                raise BoundExceeded(f"rendered more than {MAX_CHARS:,} characters")
            budget.step()
            chunks.append(chunk)
    except RecursionError:
        raise BoundExceeded("recursed too deeply") from None
    except MemoryError:
        raise BoundExceeded("ran out of memory") from None
    finally:
        _BUDGET.reset(token)
    return "".join(chunks)
