"""Data mixtures: `--data PATH[:WEIGHT]` parsing, weights, the deterministic schedule, exact resume with two
sources, realised proportions in metrics.jsonl / summary.json, and epochs in `budget` and `count`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine_fixtures import TINY, RecordingReporter, make_token_dir, tiny_args
from token_fixtures import stdlib_texts, train_tokenizer
from typer.testing import CliRunner

from llmctl.cli.app import app
from llmctl.config import load_config
from llmctl.data_sources import SourceSpec, parse_source
from llmctl.engine.pretrain import run_pretrain
from llmctl.errors import LlmctlError
from llmctl.tokenizer.core import load_tokenizer
from llmctl.tokens.loader import MixedStream, PackedWindows
from llmctl.tokens.mix import epochs_for, plan_mix, repeat_warnings
from llmctl.tokens.shards import (
    FORMAT_NAME,
    FORMAT_VERSION,
    ShardWriter,
    open_split,
    shard_name,
    write_json_atomic,
)


def make_source(out: Path, tok_path: Path, texts: list[str], val_every: int = 5) -> Path:
    """A pretraining token directory of `texts` with the tokenizer at tok_path (as make_token_dir does)."""
    tok = load_tokenizer(tok_path)
    splits: dict[str, Any] = {}
    for split, docs in (
        ("train", [t for i, t in enumerate(texts) if i % val_every]),
        ("validation", texts[::val_every]),
    ):
        ids = [tok.encode(d) + [tok.eos_id] for d in docs]
        writer = ShardWriter(out / split, shard_name(0), "uint16", with_mask=False)
        writer.append(np.concatenate(ids).astype(np.uint16), np.array([len(x) for x in ids]))
        record = writer.finish({})
        splits[split] = {"tokens": record["tokens"], "documents": record["documents"], "shards": [record]}
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "mode": "pretrain",
        "dtype": "uint16",
        "vocab_size": tok.vocab_size,
        "tokenizer": {**tok.describe(), "path": str(tok_path.resolve())},
        "chat_profile": None,
        "separator": {"policy": "eos", "token_id": tok.eos_id},
        "splits": splits,
    }
    write_json_atomic(out / "meta.json", meta)
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two sources sharing one tokenizer: a big one (stdlib files) and a small one (a few other files),
    the small one in a folder whose name holds a colon."""
    root = tmp_path_factory.mktemp("mix-data")
    big = make_token_dir(root / "big")
    texts = [t[:800] for t in stdlib_texts(limit=10, step=7)[3:10]]
    small = make_source(root / "sm:all", root / "big" / "tok.json", texts, val_every=3)
    return big, small


def _config(out: Path, data: list[str], **overrides: Any) -> Any:
    from llmctl.cli._config import flag_values

    values = {**TINY, "train.out_dir": str(out), "train.name": "run", **overrides}
    return load_config(None, {**values, **flag_values(data, None, None, None)})


# -- parsing ------------------------------------------------------------------------------------


def test_weights_parse_only_when_they_read_as_numbers() -> None:
    assert parse_source("tokens/web:0.7") == SourceSpec("tokens/web", 0.7)
    assert parse_source("tokens/web:2") == SourceSpec("tokens/web", 2.0)
    assert parse_source("tokens/web:.5e-1") == SourceSpec("tokens/web", 0.05)
    assert parse_source("tokens/web") == SourceSpec("tokens/web")
    # Text after the last colon that is not a number stays in the path.
    assert parse_source("runs/a:b") == SourceSpec("runs/a:b")
    assert parse_source("runs/a:b:0.25") == SourceSpec("runs/a:b", 0.25)
    # Documented: a number after the last colon is a weight, whatever the path looks like.
    assert parse_source("runs/2024-01-01T10:30") == SourceSpec("runs/2024-01-01T10", 30.0)
    assert parse_source("runs/x:1.5.2") == SourceSpec("runs/x:1.5.2")
    assert parse_source(":0.5") == SourceSpec(":0.5")
    assert parse_source("sft/a:epochs=3", allow_epochs=True) == SourceSpec("sft/a", epochs=3.0)


@pytest.mark.parametrize("text", ["a:0", "a:-1", "a:1e999", "a:-0.5"])
def test_bad_weights_are_errors(text: str) -> None:
    with pytest.raises(LlmctlError, match="positive"):
        parse_source(text)


def test_epochs_are_for_sft_and_must_be_numbers() -> None:
    with pytest.raises(LlmctlError, match="for `llmctl sft`"):
        parse_source("a:epochs=2")
    with pytest.raises(LlmctlError, match="epochs must be a number"):
        parse_source("a:epochs=x", allow_epochs=True)


def test_config_sources_and_flags(tmp_path: Path) -> None:
    cfg = _config(tmp_path, ["a:0.7", "b:0.3"])
    assert cfg.data.path is None and cfg.data.sources == [
        {"path": "a", "weight": 0.7},
        {"path": "b", "weight": 0.3},
    ]
    assert _config(tmp_path, ["c:d"]).data.path == "c:d"  # one plain path (with a colon) is data.path
    yaml = tmp_path / "mix.yaml"
    yaml.write_text(
        "data:\n  sources:\n    - {path: 'x:y', weight: 2}\n    - {path: z}\n  mix_by: documents\n"
    )
    cfg = load_config(yaml)
    assert cfg.data.sources[0] == {"path": "x:y", "weight": 2} and cfg.data.mix_by == "documents"
    yaml.write_text("data:\n  sources:\n    - {path: x, weight: -2}\n")
    with pytest.raises(LlmctlError, match="positive"):
        load_config(yaml)
    yaml.write_text("data:\n  path: p\n  sources: [{path: x}]\n")
    with pytest.raises(LlmctlError, match="both set"):
        load_config(yaml)
    # --data on the command line replaces a config file's data.path.
    yaml.write_text("data:\n  path: p\n")
    assert (
        load_config(yaml, {"data.path": None, "data.sources": [{"path": "a", "weight": 1}]}).data.path is None
    )
    with pytest.raises(LlmctlError, match="given twice"):
        _config(tmp_path, ["a:0.5", "a:0.5"])


# -- weights and the schedule ------------------------------------------------------------------


def _meta(tokens: int, documents: int, fingerprint: str = "f") -> dict[str, Any]:
    return {
        "mode": "pretrain",
        "tokenizer": {"fingerprint": fingerprint},
        "splits": {"train": {"tokens": tokens, "documents": documents}},
    }


def test_weights_normalise_and_unweighted_sources_count_by_size() -> None:
    mix = plan_mix([SourceSpec("a", 3), SourceSpec("b", 1)], [_meta(100, 10), _meta(900, 10)])
    assert [m.weight for m in mix] == [0.75, 0.25]
    mix = plan_mix([SourceSpec("a"), SourceSpec("b")], [_meta(100, 10), _meta(300, 10)])
    assert [m.weight for m in mix] == [0.25, 0.75]
    mix = plan_mix(
        [SourceSpec("a", 0.5), SourceSpec("b"), SourceSpec("c")], [_meta(1, 1), _meta(100, 1), _meta(300, 1)]
    )
    assert [round(m.weight, 6) for m in mix] == [0.5, 0.125, 0.375]
    with pytest.raises(LlmctlError, match="leaving nothing"):
        plan_mix([SourceSpec("a", 1), SourceSpec("b")], [_meta(1, 1), _meta(1, 1)])
    # By documents: equal document weights, but b's documents are 4x longer, so b gets 4x the tokens.
    mix = plan_mix(
        [SourceSpec("a", 1), SourceSpec("b", 1)], [_meta(100, 10), _meta(400, 10)], mix_by="documents"
    )
    assert [m.weight for m in mix] == [0.2, 0.8]


def test_sources_must_share_the_tokenizer() -> None:
    with pytest.raises(LlmctlError, match="another tokenizer") as err:
        plan_mix([SourceSpec("a"), SourceSpec("b")], [_meta(1, 1, "aaaa"), _meta(1, 1, "bbbb")])
    assert "same --tokenizer" in err.value.hint


def test_schedule_tracks_weights_and_resumes_exactly(sources: tuple[Path, Path]) -> None:
    big, small = sources
    windows = [PackedWindows(open_split(p, "train"), 32) for p in (big, small)]
    stream = MixedStream(windows, [0.7, 0.3], seed=5, micro_batch=4)
    for _ in range(1, 60):
        stream.next_rows()
        # Within one window of the target after every micro-step.
        assert all(abs(c - w * stream.position) < 1 for c, w in zip(stream.counts, [0.7, 0.3], strict=True))
    state = stream.state_dict()
    assert [s["position"] for s in state["sources"]] == stream.counts
    assert stream.epochs[1] > 1  # the small source wraps into further epochs on its own
    after = [stream.next_rows() for _ in range(5)]
    again = MixedStream(windows, [0.7, 0.3], seed=5, micro_batch=4)
    again.load_state_dict(state)
    assert all(
        np.array_equal(a, b) for a, b in zip(after, [again.next_rows() for _ in range(5)], strict=True)
    )
    # Two ranks read disjoint halves of what one process with twice the micro-batch reads.
    one = MixedStream(windows, [0.7, 0.3], seed=5, micro_batch=8)
    ranks = [MixedStream(windows, [0.7, 0.3], seed=5, micro_batch=4, rank=r, world=2) for r in range(2)]
    for _ in range(3):
        assert np.array_equal(one.next_rows(), np.concatenate([r.next_rows() for r in ranks]))
    with pytest.raises(LlmctlError, match="another mixture"):
        MixedStream(windows, [0.5, 0.5], seed=5, micro_batch=4).load_state_dict(state)


# -- training -----------------------------------------------------------------------------------


def test_realised_fractions_match_the_weights_in_metrics_and_summary(
    sources: tuple[Path, Path], tmp_path: Path
) -> None:
    big, small = sources
    cfg = _config(tmp_path, [f"{big}:0.7", f"{small}:0.3"], **{"train.steps": 12, "train.eval_every": 6})
    outcome = run_pretrain(cfg)
    run = outcome.run_dir
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    last = train[-1]["tokens_by_source"]
    total = sum(last.values())
    assert total == outcome.result.tokens
    assert abs(last[str(big)] / total - 0.7) <= 0.02 and abs(last[str(small)] / total - 0.3) <= 0.02
    evals = [r for r in records if r["kind"] == "eval"]
    by_source = evals[-1]["loss_by_source"]
    assert set(by_source) == {str(big), str(small)}
    assert evals[-1]["loss"] == pytest.approx(0.7 * by_source[str(big)] + 0.3 * by_source[str(small)])
    mix = json.loads((run / "summary.json").read_text())["data_mix"]
    assert [m["path"] for m in mix] == [str(big), str(small)]
    assert [m["weight"] for m in mix] == pytest.approx([0.7, 0.3])
    assert [m["tokens"] for m in mix] == [last[str(big)], last[str(small)]]
    assert mix[1]["epochs"] > mix[0]["epochs"] > 0


def test_two_source_run_resumes_exactly(sources: tuple[Path, Path], tmp_path: Path) -> None:
    big, small = sources
    data = [f"{big}:0.6", f"{small}:0.4"]

    def run(**overrides: Any) -> tuple[Any, RecordingReporter]:
        reporter = RecordingReporter()
        return run_pretrain(_config(tmp_path, data, **overrides), reporter=reporter), reporter

    _, straight = run(**{"train.name": "straight"})
    first, head = run(**{"train.name": "split", "train.max_tokens": 4 * 4 * 32})
    assert first.result.step == 4
    second, tail = run(**{"train.name": "split", "checkpoint.resume": "auto"})
    assert [s.step for s in tail.steps] == [5, 6, 7, 8]
    assert [s.loss for s in head.steps + tail.steps] == [s.loss for s in straight.steps]
    assert [s.source_tokens for s in head.steps + tail.steps] == [s.source_tokens for s in straight.steps]
    # Another mixture cannot continue this one's position.
    with pytest.raises(LlmctlError, match="another mixture"):
        run_pretrain(
            _config(
                tmp_path,
                [f"{big}:0.5", f"{small}:0.5"],
                **{"train.name": "split", "train.steps": 10, "checkpoint.resume": "auto"},
            ),
            reporter=RecordingReporter(),
        )


def test_mismatched_tokenizers_are_refused_before_training(
    sources: tuple[Path, Path], tmp_path: Path
) -> None:
    big, _ = sources
    texts = stdlib_texts(limit=8, step=11)
    other_tok = train_tokenizer(tmp_path / "other.json", texts, vocab_size=300)
    other = make_source(tmp_path / "other", other_tok, texts)
    result = CliRunner().invoke(
        app,
        [
            "pretrain",
            "--data",
            f"{big}:0.5",
            "--data",
            f"{other}:0.5",
            *tiny_args(**{"train.out_dir": str(tmp_path / "runs")}),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "another tokenizer" in result.output and "same --tokenizer" in result.output


# -- planning -----------------------------------------------------------------------------------


def test_epochs_and_repeat_warnings() -> None:
    mix = plan_mix([SourceSpec("web", 0.7), SourceSpec("small", 0.3)], [_meta(10_000, 10), _meta(100, 1)])
    assert epochs_for(mix, 1000) == pytest.approx([0.07, 3.0])
    assert repeat_warnings(mix, 1000) == []
    (line,) = repeat_warnings(mix, 10_000)
    assert line.startswith("small would be repeated 30.0 times")


def test_budget_and_count_show_epochs_per_source(sources: tuple[Path, Path]) -> None:
    big, small = sources
    runner = CliRunner()
    result = runner.invoke(
        app, ["budget", "--tokens", "200k", "--data", f"{big}:0.7", "--data", f"{small}:0.3", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    rows = doc["data_mix"]
    small_tokens = json.loads((small / "meta.json").read_text())["splits"]["train"]["tokens"]
    assert rows[1]["epochs"] == pytest.approx(200_000 * 0.3 / small_tokens)
    assert any("would be repeated" in w for w in doc["warnings"])
    result = runner.invoke(
        app, ["count", "--mix", f"{big}:0.7", "--mix", f"{small}:0.3", "--tokens", "200k", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["data_mix"][1]["epochs"] == pytest.approx(200_000 * 0.3 / small_tokens)


# -- SFT ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sft_mixes_sources_by_epochs_and_resumes_exactly(tmp_path: Path) -> None:
    from chat_fixtures import (
        conversation_text,
        instruction_rows,
        make_sft_tokens,
        pretrain_tiny,
        torch_threads,
    )

    a_rows, b_rows = instruction_rows(64, seed=1), instruction_rows(32, seed=3)
    with torch_threads(1):
        a, tok = make_sft_tokens(tmp_path / "a", a_rows, instruction_rows(8, seed=2))
        b, _ = make_sft_tokens(tmp_path / "b", b_rows, instruction_rows(8, seed=4), tokenizer=tok)
        init = pretrain_tiny(tmp_path, tok, [conversation_text(c) for c in a_rows], steps=3)
        common = [
            "sft",
            "--init",
            str(init),
            "--data",
            f"{a}:epochs=1",
            "--data",
            f"{b}:epochs=2",
            "--steps",
            "8",
            "--data.seq_len=64",
            "--train.micro_batch_size=4",
            "--train.eval_every=8",
            "--train.sample_every=0",
            "--telemetry.tensorboard=false",
            "--telemetry.panel=off",
            "--json",
        ]
        runner = CliRunner()
        straight = runner.invoke(
            app, [*common, "--out", str(tmp_path / "runs" / "straight"), "--checkpoint.every=4"]
        )
        assert straight.exit_code == 0, straight.output
        resumed = runner.invoke(
            app,
            [
                *common,
                "--out",
                str(tmp_path / "runs" / "resumed"),
                "--resume",
                str(tmp_path / "runs" / "straight" / "checkpoints" / "step-000004"),
            ],
        )
        assert resumed.exit_code == 0, resumed.output

    def train_records(name: str) -> list[dict[str, Any]]:
        lines = (tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["kind"] == "train"]

    full, tail = train_records("straight"), train_records("resumed")
    assert [r["loss"] for r in tail] == [r["loss"] for r in full if r["step"] > 4]
    assert tail[-1]["tokens_by_source"] == full[-1]["tokens_by_source"]
    summary = json.loads((tmp_path / "runs" / "straight" / "summary.json").read_text())
    mix = summary["data_mix"]
    assert [m["path"] for m in mix] == [str(a), str(b)] and sum(m["weight"] for m in mix) == pytest.approx(1)
    assert all(m["tokens"] > 0 for m in mix)
    # b is half a's size but asked for 2 epochs: about as many planned tokens as a.
    assert 0.3 < mix[1]["weight"] < 0.7
    with pytest.raises(LlmctlError, match="by epochs, not weights"):
        from llmctl.data_sources import sft_specs

        sft_specs([SourceSpec("x", 0.5)])
