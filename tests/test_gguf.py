"""`llmctl export --format gguf`: keys, tensors and tokenizer read back with gguf.GGUFReader, for an imported
Llama-3.2-style model (llama3 RoPE scaling -> rope_freqs), a Qwen2-style one (qwen2 arch, NEOX q/k order,
biases) and a llmctl-trained one (llama-bpe split, chat profile template); pre-tokenizer names matched
exactly; --force replaces only a GGUF file."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hf_fixtures import make_hf_model
from typer.testing import CliRunner

from llmctl.cli.app import app

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("gguf")
    ns = SimpleNamespace(root=root, hf={}, ck={})
    for kind in ("llama", "qwen2"):
        ns.hf[kind] = make_hf_model(root / f"hf-{kind}", kind)
        ns.ck[kind] = root / f"ck-{kind}"
        result = CliRunner().invoke(
            app, ["import", str(ns.hf[kind]), "--out", str(ns.ck[kind]), "--no-verify"]
        )
        assert result.exit_code == 0, result.output
    return ns


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {
        t.name: dequantize(t.data, t.tensor_type).reshape(tuple(int(n) for n in reversed(t.shape)))
        for t in reader.tensors
    }
    return fields, tensors


def _export(ck: Path, out: Path, *extra: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        app, ["export", str(ck), "--format", "gguf", "--out", str(out), "--json", *extra]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("dtype", ["float32", "float16", "q8_0"])
def test_llama3_import_to_gguf(imported: SimpleNamespace, tmp_path: Path, dtype: str) -> None:
    import torch

    from llmctl.config import from_dict
    from llmctl.infer.checkpoint import open_checkpoint
    from llmctl.model.llama import llama3_frequencies

    ck = imported.ck["llama"]
    report = _export(ck, tmp_path / "m.gguf", "--dtype", dtype)
    fields, tensors = _read(tmp_path / "m.gguf")
    cfg = from_dict(json.loads((ck / "checkpoint.json").read_text())["config"]).model
    assert fields["general.architecture"] == "llama" and fields["llama.block_count"] == 2
    assert fields["llama.attention.head_count_kv"] == 2 and fields["llama.rope.freq_base"] == pytest.approx(
        500000.0
    )
    assert fields["llama.context_length"] == 256 and fields[
        "llama.attention.layer_norm_rms_epsilon"
    ] == pytest.approx(1e-5)
    tok = json.loads((ck / "tokenizer.json").read_text())
    eot = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|eot_id|>")
    assert fields["tokenizer.ggml.eot_token_id"] == eot and fields["tokenizer.ggml.add_bos_token"] is True
    assert fields["tokenizer.ggml.pre"] == "gpt-2" and fields["tokenizer.ggml.model"] == "gpt2"
    assert "<|start_header_id|>" in fields["tokenizer.chat_template"]
    assert len(fields["tokenizer.ggml.tokens"]) == cfg.vocab_size
    assert fields["tokenizer.ggml.token_type"][eot] == 3 and fields["tokenizer.ggml.token_type"][-1] == 5
    # rope_freqs: 1 for high frequencies, the full factor 8 for the lowest, as llama.cpp divides by them.
    base = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_size, 2, dtype=torch.float32) / cfg.head_size))
    factors = tensors["rope_freqs.weight"]
    assert np.allclose(factors, (base / llama3_frequencies(base, cfg)).numpy())
    assert factors[0] == 1.0 and factors[-1] == pytest.approx(8.0)
    # llama.cpp's llama arch rotates interleaved pairs, as llmctl does: q rows are stored unchanged.
    state = open_checkpoint(ck).model_state()
    want = state["layers.1.attention.wq.weight"].numpy()
    tol = {"float32": 0.0, "float16": 1e-3, "q8_0": np.abs(want).max() / 100}[dtype]
    assert np.abs(tensors["blk.1.attn_q.weight"] - want).max() <= tol
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    assert report["max_abs_error"] <= tol and report["dtype"] == dtype


def test_qwen2_import_to_gguf_uses_qwen2_arch_and_hf_row_order(
    imported: SimpleNamespace, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    _export(imported.ck["qwen2"], tmp_path / "q.gguf", "--dtype", "float32")
    fields, tensors = _read(tmp_path / "q.gguf")
    assert fields["general.architecture"] == "qwen2" and "qwen2.block_count" in fields
    hf = load_file(str(imported.hf["qwen2"] / "model.safetensors"))
    assert np.array_equal(
        tensors["blk.0.attn_q.weight"], hf["model.layers.0.self_attn.q_proj.weight"].numpy()
    )
    assert np.array_equal(tensors["blk.0.attn_k.bias"], hf["model.layers.0.self_attn.k_proj.bias"].numpy())
    assert "rope_freqs.weight" not in tensors and fields["tokenizer.ggml.add_bos_token"] is False
    tok = json.loads((imported.ck["qwen2"] / "tokenizer.json").read_text())
    im_end = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|im_end|>")
    assert fields["tokenizer.ggml.eot_token_id"] == im_end


def test_llmctl_model_gets_llama_bpe_and_its_chat_template(tmp_path: Path) -> None:
    import torch
    from token_fixtures import train_tokenizer
    from tokenizers import Regex, pre_tokenizers

    from llmctl.config import Config, DataConfig, ModelConfig, to_dict
    from llmctl.engine.checkpoint import model_state_to_save, write_checkpoint
    from llmctl.model.llama import Transformer
    from llmctl.tokenizer.chat import BASE_SPECIALS, get_profile
    from llmctl.tokenizer.core import load_tokenizer
    from llmctl.tokenizer.train import SPLIT_PATTERN

    split = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    specials = [*BASE_SPECIALS, *get_profile("chat").special_tokens]
    tok = load_tokenizer(
        train_tokenizer(tmp_path / "tok.json", ["some words to merge"] * 20, 300, split, specials)
    )
    cfg = ModelConfig(vocab_size=320, dim=64, n_layers=2, n_heads=4, ffn_dim=96, max_seq_len=64)
    model = Transformer(cfg)
    ckpt = write_checkpoint(
        tmp_path / "run" / "checkpoints",
        5,
        model_state=model_state_to_save(model.state_dict(), cfg),
        optimizer_state={},
        rng_states=[],
        tokenizer_file=tok.path,
        keep=1,
        manifest={
            "config": to_dict(Config(model=cfg, data=DataConfig(seq_len=32))),
            "tokenizer": {"fingerprint": tok.fingerprint, "path": str(tok.path), "kind": tok.kind},
        },
    )
    report = _export(ckpt, tmp_path / "own.gguf")
    fields, tensors = _read(tmp_path / "own.gguf")
    assert report["pre_tokenizer"] == fields["tokenizer.ggml.pre"] == "llama-bpe"
    assert fields["tokenizer.ggml.eot_token_id"] == tok.token_to_id("<|end|>")
    assert fields["tokenizer.chat_template"] == get_profile("chat").chat_template()
    assert tensors["output.weight"].shape == (320, 64) and tensors["token_embd.weight"].dtype == np.float32
    with torch.no_grad():
        assert np.abs(tensors["output.weight"] - model.output.weight.numpy()).max() < 1e-3


@pytest.mark.parametrize(
    ("pre", "expected"),
    [
        ({"type": "ByteLevel", "use_regex": True}, "gpt-2"),
        (
            {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Digits", "individual_digits": True},
                    {"type": "ByteLevel", "use_regex": True},
                ],
            },
            "smollm",
        ),
        (
            {
                "type": "Sequence",
                "pretokenizers": [
                    {
                        "type": "Split",
                        "pattern": {
                            "Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
                        },
                        "behavior": "Isolated",
                        "invert": False,
                    },
                    {"type": "ByteLevel", "use_regex": False},
                ],
            },
            "qwen2",
        ),
    ],
)
def test_pre_tokenizer_names_match_exactly(pre: dict[str, Any], expected: str) -> None:
    from llmctl.export.gguf_vocab import pre_tokenizer_name

    assert pre_tokenizer_name(pre) == expected


def test_unknown_split_and_sentencepiece_tokenizers_are_errors() -> None:
    from llmctl.errors import LlmctlError
    from llmctl.export.gguf_vocab import gguf_vocab, pre_tokenizer_name

    near = {
        "type": "Sequence",
        "pretokenizers": [
            {
                "type": "Split",
                "pattern": {"Regex": "\\p{N}{1,4}|\\s+"},
                "behavior": "Isolated",
                "invert": False,
            },
            {"type": "ByteLevel", "use_regex": False},
        ],
    }
    with pytest.raises(LlmctlError, match="split regex"):
        pre_tokenizer_name(near)
    spm = {
        "model": {"type": "BPE", "vocab": {}, "merges": []},
        "decoder": {"type": "Sequence"},
        "pre_tokenizer": None,
    }
    with pytest.raises(LlmctlError, match="sentencepiece"):
        gguf_vocab(spm, 10)


def test_force_replaces_only_a_gguf_file(imported: SimpleNamespace, tmp_path: Path) -> None:
    ck = imported.ck["qwen2"]
    target = tmp_path / "m.gguf"
    _export(ck, target)
    again = CliRunner().invoke(app, ["export", str(ck), "--format", "gguf", "--out", str(target)])
    assert again.exit_code == 2 and "--force" in again.output
    _export(ck, target, "--force")
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    refused = CliRunner().invoke(
        app, ["export", str(ck), "--format", "gguf", "--out", str(precious), "--force"]
    )
    assert refused.exit_code == 2 and "not a GGUF file" in refused.output
    assert precious.read_text() == "keep me"
