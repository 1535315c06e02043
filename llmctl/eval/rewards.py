"""Rewards: programs that score a reply, for eval's generative tasks and for reinforcement learning.

    rewards = [parse_reward("number"), parse_reward("format:.*#### .*:0.5")]
    scores = score_rewards(rewards, completions, answers)     # scores.total[i], scores.per_reward[label][i]

A reward is chosen by a spec `NAME[:WEIGHT]` (weight 1 when left out; any finite number):
- `exact`: the reply equals the answer after `normalize_answer` (eval's exact match: NFKC, case folded,
  whitespace and the punctuation . , ; : ! ? " ' ` stripped from both ends, inner whitespace runs made one
  space, thousands commas dropped) -> 1, else 0.
- `number`: the reply's final number equals the answer's, compared exactly as rationals (`final_number`):
  the first number after the last `####` (GSM8K's marker), else the last `\\boxed{...}`'s content, else the
  last number in the text. Numbers may carry a sign, thousands commas (1,234), decimals and a `/` fraction
  (3/4, `\\frac{3}{4}`); so "72", "72.0" and "$72." agree. The answer goes through the same extraction, so a
  GSM8K solution ending "#### 72" is a valid answer. This is what GSM8K checkers do (lm-eval's gsm8k takes
  the number after `####`, or the last number; commas and a trailing period dropped), with `\boxed{}` for
  MATH-style replies and a numeric rather than textual comparison; no units, percentages or expressions.
- `regex:PATTERN`: eval's `--regex` scoring: the answer is the pattern's last match searched in the reply
  (its first group when it has one), compared with the answer as `exact` does; no match -> 0.
- `format:PATTERN`: the whole reply, surrounding whitespace stripped, matches PATTERN -> 1 (no answer needed).
  In `regex:` and `format:` the weight is a last `:NUMBER`; a pattern that itself ends in `:NUMBER` is
  written with a weight, e.g. `format:a:1:1`.

A user's own reward is `FILE.py:function[:WEIGHT]` (`load_reward_module`): llmctl imports that file, so
it runs the user's own code, by their choice, with their rights; such a path is only ever taken from the
user's command line, never from a checkpoint, a dataset or a config found in one. The function is called
as `function(completion=..., answer=..., prompt=...)` and returns a number. A reward that raises, returns
something that is not a finite number, or needs an answer a row lacks is an `LlmctlError` naming the row,
never a silent 0.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from llmctl.errors import LlmctlError

RewardFn = Callable[..., object]
BUILT_IN = ("exact", "number", "regex", "format")

_EDGE = " \t\r\n.,;:!?\"'`"
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:/\d+)?")
_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_WEIGHT = re.compile(r"^(?P<rest>.*?)(?::(?P<weight>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))?$", re.S)


def normalize_answer(text: str) -> str:
    """The documented normalisation both sides of exact match go through (module docstring)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = " ".join(text.split())
    text = _THOUSANDS.sub("", text)
    return text.strip(_EDGE)


def extract_answer(output: str, regex: re.Pattern[str] | None) -> str | None:
    """The part of the output compared with the reference: all of it, or the regex's last match."""
    if regex is None:
        return output
    matches = list(regex.finditer(output))
    if not matches:
        return None
    last = matches[-1]
    return last.group(1) if regex.groups else last.group(0)


def match_answer(output: str, answer: str, regex: re.Pattern[str] | None) -> tuple[str | None, bool]:
    """(the extracted answer, whether it equals `answer` after normalisation): eval's exact match."""
    extracted = extract_answer(output, regex)
    return extracted, extracted is not None and normalize_answer(extracted) == normalize_answer(answer)


def compile_regex(pattern: str | None, flag: str = "--regex") -> re.Pattern[str] | None:
    """The pattern compiled, or a clear error naming `flag` when it does not compile."""
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise LlmctlError(
            f"{flag} {pattern!r} is not a valid regular expression ({exc})",
            r"for GSM8K-style answers try "
            + ("--regex '" if flag == "--regex" else "'regex:")
            + r"#### (\-?[0-9.,]+)'",
        ) from exc


def _to_number(text: str) -> Fraction | None:
    """A matched number as an exact rational: commas dropped, `a/b` divided; None when it is not one."""
    text = text.replace(",", "")
    head, _, tail = text.partition("/")
    try:
        value = Fraction(head)
        return value / Fraction(tail) if tail else value
    except (ValueError, ZeroDivisionError):
        return None


def _numbers(text: str) -> list[Fraction]:
    """Every number in the text, in order."""
    found = (_to_number(m.group(0)) for m in _NUMBER.finditer(text) if any(c.isdigit() for c in m.group(0)))
    return [value for value in found if value is not None]


def _last_boxed(text: str) -> str | None:
    r"""The content of the last `\boxed{...}`, braces balanced; None when there is none."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for k in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        if depth < 0:
            return text[begin:k]
    return None


def final_number(text: str) -> Fraction | None:
    r"""The number a reply or an answer ends on: after the last `####`, else in the last `\boxed{}`, else
    the last number in the text; None when there is none."""
    if "####" in text:
        found = _numbers(text.rsplit("####", 1)[1])
        return found[0] if found else None
    boxed = _last_boxed(text)
    if boxed is not None:
        found = _numbers(_FRAC.sub(r"(\1)/(\2)", boxed).replace("(", "").replace(")", ""))
        return found[0] if found else None
    found = _numbers(text)
    return found[-1] if found else None


@dataclass(frozen=True)
class Reward:
    """One reward: `label` (its spec without the weight, the `rewards/<label>/mean` metric), its weight,
    the function `fn(completion=, answer=, prompt=)`, and whether it needs the row's answer."""

    label: str
    weight: float
    fn: RewardFn
    needs_answer: bool


@dataclass
class RewardScores:
    """Each reward's score per row (`per_reward[label]`) and the weighted sum per row (`total`)."""

    total: list[float] = field(default_factory=list)
    per_reward: dict[str, list[float]] = field(default_factory=dict)


def _split_weight(spec: str, what: str) -> tuple[str, float]:
    """(the spec without its trailing `:WEIGHT`, the weight: 1 when there is none)."""
    match = _WEIGHT.match(spec)
    assert match is not None  # the pattern matches every string
    weight = float(match.group("weight")) if match.group("weight") else 1.0
    if not math.isfinite(weight):
        raise LlmctlError(
            f"{what} {spec!r} has weight {weight}", "a weight is a finite number, e.g. exact:0.5"
        )
    return match.group("rest"), weight


def _exact(completion: str, answer: str | None, prompt: str = "") -> float:
    return float(match_answer(completion, answer or "", None)[1])


def _number(completion: str, answer: str | None, prompt: str = "") -> float:
    reference = final_number(answer or "")
    if reference is None:
        raise ValueError(f"the answer {answer!r} has no number for the number reward to compare with")
    return float(final_number(completion) == reference)


def parse_reward(spec: str) -> Reward:
    """A built-in reward from `NAME[:WEIGHT]`, `regex:PATTERN[:WEIGHT]` or `format:PATTERN[:WEIGHT]`."""
    rest, weight = _split_weight(spec.strip(), "reward")
    name, colon, pattern = rest.partition(":")
    if name in ("exact", "number") and not colon:
        return Reward(name, weight, _exact if name == "exact" else _number, needs_answer=True)
    if name in ("exact", "number"):
        raise LlmctlError(f"reward {spec!r}: weight {pattern!r} is not a number", "e.g. --reward number:0.5")
    if name in ("regex", "format") and pattern:
        compiled = compile_regex(pattern, flag=f"reward {name}:")
        assert compiled is not None
        if name == "regex":

            def found(completion: str, answer: str | None, prompt: str = "") -> float:
                return float(match_answer(completion, answer or "", compiled)[1])

            return Reward(rest, weight, found, needs_answer=True)

        def whole(completion: str, answer: str | None, prompt: str = "") -> float:
            return float(compiled.fullmatch(completion.strip()) is not None)

        return Reward(rest, weight, whole, needs_answer=False)
    raise LlmctlError(
        f"unknown reward {spec!r}",
        "built-in rewards: exact, number, regex:PATTERN, format:PATTERN, each with an optional :WEIGHT; "
        "your own function is FILE.py:function",
    )


def load_reward_module(spec: str) -> Reward:
    """The user's reward `FILE.py:function[:WEIGHT]`, imported from the file the user named (this runs
    their code, by their choice; never call it with a path read from a checkpoint or a dataset)."""
    path_text, marker, rest = spec.strip().rpartition(".py:")
    name, weight = _split_weight(rest, "reward module")
    hint = "write it as FILE.py:function, e.g. rewards.py:score, a function of (completion, answer, prompt)"
    if not marker or not name.isidentifier():
        raise LlmctlError(f"reward module {spec!r} is not FILE.py:function", hint)
    path = Path(path_text + ".py")
    if not path.is_file():
        raise LlmctlError(f"reward module {path} does not exist", hint)
    module_spec = importlib.util.spec_from_file_location(f"llmctl_user_reward_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise LlmctlError(f"reward module {path} cannot be imported", hint)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: any failure is theirs to see, as one line
        raise LlmctlError(
            f"reward module {path} failed to import: {type(exc).__name__}: {exc}", "fix the file"
        ) from exc
    fn = getattr(module, name, None)
    if not callable(fn):
        raise LlmctlError(f"reward module {path} has no function {name!r}", hint)
    return Reward(f"{path.name}:{name}", weight, fn, needs_answer=False)


def _score_row(reward: Reward, row: int, completion: str, answer: str | None, prompt: str) -> float:
    """One reward's score of one row, or an error naming the row."""
    if reward.needs_answer and answer is None:
        raise LlmctlError(
            f"row {row} has no answer, which the {reward.label} reward needs",
            "give every row an 'answer', or use only rewards that need none (format:, your own)",
        )
    try:
        value = reward.fn(completion=completion, answer=answer, prompt=prompt)
    except Exception as exc:  # a reward's failure must stop the run, never become a silent 0
        raise LlmctlError(
            f"reward {reward.label} failed on row {row}: {type(exc).__name__}: {exc}",
            "fix the reward or the row (a reward is called as function(completion=, answer=, prompt=)); "
            "a failing reward is never scored as 0",
        ) from exc
    if not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise LlmctlError(
            f"reward {reward.label} returned {value!r} on row {row}, not a finite number",
            "a reward returns an int or a float, e.g. 1.0 for a right answer and 0.0 otherwise",
        )
    return float(value)


def score_rewards(
    rewards: Sequence[Reward],
    completions: Sequence[str],
    answers: Sequence[str | None],
    prompts: Sequence[str] | None = None,
) -> RewardScores:
    """Every reward's score of every row, and each row's weighted sum; rows are numbered from 0."""
    if len(answers) != len(completions) or (prompts is not None and len(prompts) != len(completions)):
        raise ValueError("one answer (and prompt) per completion")
    texts = prompts if prompts is not None else [""] * len(completions)
    scores = RewardScores(total=[0.0] * len(completions))
    for reward in rewards:
        column = [
            _score_row(reward, row, completion, answer, prompt)
            for row, (completion, answer, prompt) in enumerate(zip(completions, answers, texts, strict=True))
        ]
        scores.per_reward[reward.label] = column
        scores.total = [t + reward.weight * v for t, v in zip(scores.total, column, strict=True)]
    return scores
