"""Rewards (llmctl/eval/rewards.py): built-in specs, the user's own function, and errors naming the row."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import pytest

from llmctl.errors import LlmctlError
from llmctl.eval import generative
from llmctl.eval.rewards import final_number, load_reward_module, parse_reward, score_rewards


def score(spec: str, completion: str, answer: str | None) -> float:
    return score_rewards([parse_reward(spec)], [completion], [answer]).total[0]


def test_exact_is_evals_exact_match() -> None:
    assert score("exact", "  The Answer: 1,234. \n", "the answer: 1234") == 1.0
    assert score("exact", "12", "1 2") == 0.0
    # eval's scoring is this same function: its match and the reward agree on every pair
    for output, answer in [(" Paris. ", "paris"), ("1,234", "1234"), ("no", "yes")]:
        assert generative.match_answer(output, answer, None)[1] == bool(score("exact", output, answer))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("so 3 + 4 = 7, then 1,234 apples", Fraction(1234)),
        ("steps 3 and 9 #### $1,234.", Fraction(1234)),
        ("#### -72.50", Fraction(-145, 2)),
        ("#### 42 (checked 3 times)", Fraction(42)),
        (r"first 5, then \boxed{-\frac{3}{4}} done 9", Fraction(-3, 4)),
        (r"\boxed{\{1\}} or \boxed{12}", Fraction(12)),
        ("it is 3/4", Fraction(3, 4)),
        ("about .5", Fraction(1, 2)),
        ("no number here", None),
        ("#### none", None),
    ],
)
def test_final_number(text: str, value: Fraction | None) -> None:
    assert final_number(text) == value


def test_number_compares_numerically_with_a_gsm8k_answer() -> None:
    solution = "Natalia sold 48/2 = 24 clips in May.\n#### 72"
    assert score("number", "She sold 72.0 clips in total.", solution) == 1.0
    assert score("number", "48 + 24 = 72, so the answer is $72.", "72") == 1.0
    assert score("number", "72 ... or maybe 71", "72") == 0.0
    assert score("number", "I do not know", "72") == 0.0


def test_regex_is_evals_regex_scoring_and_format_the_whole_reply() -> None:
    output = "work: 5 #### 7 then #### 42"
    pattern = r"#### (\d+)"
    assert score(f"regex:{pattern}", output, "42") == 1.0
    assert score(f"regex:{pattern}", output, "7") == 0.0  # the last match counts, as in eval
    assert generative.match_answer(output, "42", re.compile(pattern)) == ("42", True)
    assert score(r"format:<answer>\d+</answer>", " <answer>12</answer>\n", None) == 1.0
    assert score(r"format:<answer>\d+</answer>", "so <answer>12</answer>", None) == 0.0


def test_weights_and_the_weighted_sum() -> None:
    rewards = [parse_reward("exact:2"), parse_reward("format:a+:-0.5"), parse_reward("format:x:1:1")]
    assert [(r.label, r.weight) for r in rewards] == [
        ("exact", 2.0),
        ("format:a+", -0.5),
        ("format:x:1", 1.0),
    ]
    scores = score_rewards(rewards, ["aaa", "b"], ["aaa", "c"])
    assert scores.total == [1.5, 0.0]
    assert scores.per_reward == {"exact": [1.0, 0.0], "format:a+": [1.0, 0.0], "format:x:1": [0.0, 0.0]}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("exakt", "unknown reward"),
        ("regex:", "unknown reward"),
        ("exact:heavy", "is not a number"),
        ("number:1e999", "weight inf"),
        ("regex:(unclosed", "not a valid regular expression"),
    ],
)
def test_bad_specs_are_errors_with_hints(spec: str, message: str) -> None:
    with pytest.raises(LlmctlError, match=message) as info:
        parse_reward(spec)
    assert info.value.hint


def test_rows_without_an_answer_or_number_are_named() -> None:
    with pytest.raises(LlmctlError, match="row 1 has no answer") as info:
        score_rewards([parse_reward("exact")], ["a", "b"], ["a", None])
    assert "answer" in (info.value.hint or "")
    with pytest.raises(LlmctlError, match="failed on row 0.*no number"):
        score_rewards([parse_reward("number")], ["7"], ["seven"])


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "my_rewards.py"
    path.write_text(body)
    return path


def test_users_own_reward_gets_completion_answer_and_prompt(tmp_path: Path) -> None:
    path = write(
        tmp_path, "def short(completion, answer, prompt):\n    return len(prompt) - len(completion)\n"
    )
    reward = load_reward_module(f"{path}:short:0.5")
    assert (reward.label, reward.weight) == ("my_rewards.py:short", 0.5)
    scores = score_rewards([reward], ["ab", "abcd"], [None, None], prompts=["abcdef", "abc"])
    assert scores.total == [2.0, -0.5]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("def bad(completion, answer, prompt):\n    raise KeyError('boom')\n", "failed on row 1: KeyError"),
        ("def bad(completion, answer, prompt):\n    return 'yes'\n", "returned 'yes' on row 0"),
        ("def bad(completion, answer, prompt):\n    return float('nan')\n", "returned nan on row 0"),
        ("def bad(completion, answer, prompt):\n    return None\n", "returned None on row 0"),
    ],
)
def test_a_failing_user_reward_is_an_error_naming_the_row(tmp_path: Path, body: str, message: str) -> None:
    if "raise" in body:
        body = body.replace("    raise", "    if completion == 'y':\n        raise")
        body += "    return 1.0\n"
    reward = load_reward_module(f"{write(tmp_path, body)}:bad")
    with pytest.raises(LlmctlError, match=message) as info:
        score_rewards([reward], ["x", "y"], [None, None])
    assert info.value.hint


def test_bad_reward_modules_are_errors_with_hints(tmp_path: Path) -> None:
    good = write(tmp_path, "import math\nVALUE = 1\ndef fine(completion, answer, prompt):\n    return 1\n")
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_for_llmctl\n")
    cases = [
        (f"{tmp_path / 'missing.py'}:fine", "does not exist"),
        (f"{good}:nothing", "has no function 'nothing'"),
        (f"{good}:VALUE", "has no function 'VALUE'"),
        (str(good), "is not FILE.py:function"),
        (f"{broken}:fine", "failed to import: ModuleNotFoundError"),
    ]
    for spec, message in cases:
        with pytest.raises(LlmctlError, match=message) as info:
            load_reward_module(spec)
        assert info.value.hint, spec
