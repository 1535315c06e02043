"""Qwen3 (dense) and OLMo 2: import parity with transformers' own classes, greedy text, HF and GGUF export,
fine-tuning an import, and the published shapes' parameter counts."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from hf_fixtures import make_hf_model
from typer.testing import CliRunner

from llmctl.cli.app import app
from llmctl.config import model_from_preset

pytest.importorskip("transformers")

KINDS = ["qwen3", "olmo2"]
CLASSES = {"qwen3": "Qwen3ForCausalLM", "olmo2": "Olmo2ForCausalLM"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("families")
    ns = SimpleNamespace(hf={}, ck={}, reports={})
    for kind in KINDS:
        # OLMo 2 unties its head; Qwen3's small models tie it.
        ns.hf[kind] = make_hf_model(root / f"hf-{kind}", kind, tied=kind == "qwen3")
        ns.ck[kind] = root / f"ck-{kind}"
        result = CliRunner().invoke(app, ["import", str(ns.hf[kind]), "--out", str(ns.ck[kind]), "--json"])
        assert result.exit_code == 0, result.output
        ns.reports[kind] = json.loads(result.stdout)
    return ns


@pytest.mark.parametrize("kind", KINDS)
def test_import_matches_transformers_logits(models: SimpleNamespace, kind: str) -> None:
    import torch
    import transformers

    from llmctl.infer.checkpoint import load_for_inference

    report = models.reports[kind]
    assert report["architecture"] == CLASSES[kind]
    assert report["max_logit_diff"] is not None and report["max_logit_diff"] < 1e-4
    model, _, manifest = load_for_inference(models.ck[kind], device="cpu")
    cfg = manifest["config"]["model"]
    if kind == "qwen3":
        assert (cfg["head_dim"], cfg["qk_norm"], cfg["norm_placement"]) == (32, "head", "pre")
    else:
        assert (cfg["head_dim"], cfg["qk_norm"], cfg["norm_placement"]) == (None, "proj", "post")
    hf = getattr(transformers, CLASSES[kind]).from_pretrained(models.hf[kind], dtype=torch.float32).eval()
    ids = torch.randint(0, 400, (2, 100), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (model.float()(ids) - hf(ids).logits).abs().max().item()
    assert diff < 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_text_equals_transformers_for_32_tokens(models: SimpleNamespace, kind: str) -> None:
    import torch
    import transformers
    from transformers import AutoTokenizer

    from llmctl.infer.generate import generate_from_checkpoint
    from llmctl.infer.sampling import Sampling

    prompt = "Once upon a time"
    tok = AutoTokenizer.from_pretrained(models.hf[kind])
    hf = getattr(transformers, CLASSES[kind]).from_pretrained(models.hf[kind], dtype=torch.float32).eval()
    enc = tok(prompt, return_tensors="pt")
    out = hf.generate(
        **enc, max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id
    )[0, enc.input_ids.shape[1] :].tolist()
    stops = set(json.loads((models.ck[kind] / "checkpoint.json").read_text())["chat"]["stop_ids"])
    cut = next((i for i, t in enumerate(out) if t in stops), len(out))
    ours = generate_from_checkpoint(
        str(models.ck[kind]), prompt, max_new_tokens=32, sampling=Sampling(temperature=0), device="cpu"
    )
    assert ours["text"] == tok.decode(out[:cut])
    assert cut >= 8  # text long enough to tell the families apart


@pytest.mark.parametrize("kind", KINDS)
def test_export_of_an_import_has_bit_identical_weights(
    models: SimpleNamespace, kind: str, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "hf"
    result = CliRunner().invoke(app, ["export", str(models.ck[kind]), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    exported = json.loads((out / "config.json").read_text())
    assert exported["architectures"] == [CLASSES[kind]] and exported["model_type"] == kind
    source, ours = (
        load_file(str(models.hf[kind] / "model.safetensors")),
        load_file(str(out / "model.safetensors")),
    )
    if kind == "qwen3":
        source.pop("lm_head.weight", None)  # tied: transformers may save the shared tensor under both names
    assert sorted(ours) == sorted(source)
    assert all(torch.equal(ours[k], source[k]) for k in source)


def test_a_qk_norm_model_is_not_written_as_llama(models: SimpleNamespace, tmp_path: Path) -> None:
    from llmctl.errors import LlmctlError
    from llmctl.export.hf import check_architecture

    cfg = model_from_preset("qwen3-0.6b")
    with pytest.raises(LlmctlError, match="LlamaForCausalLM cannot hold"):
        check_architecture(cfg, "LlamaForCausalLM")
    check_architecture(cfg, "Qwen3ForCausalLM")


@pytest.mark.parametrize("kind", KINDS)
def test_gguf_export_holds_the_family_and_llama_cpp_decodes_like_llmctl(
    models: SimpleNamespace, kind: str, tmp_path: Path
) -> None:
    from gguf import GGUFReader

    from llmctl.infer.checkpoint import load_for_inference
    from llmctl.infer.generate import generate
    from llmctl.tokenizer.template import prompt_ids, stop_ids

    path = tmp_path / "m.gguf"
    result = CliRunner().invoke(
        app, ["export", str(models.ck[kind]), "--out", str(path), "--format", "gguf", "--dtype", "float32"]
    )
    assert result.exit_code == 0, result.output
    reader = GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items()}
    names = {t.name for t in reader.tensors}
    assert fields["general.architecture"] == kind
    head = 32 if kind == "qwen3" else 16
    assert fields[f"{kind}.attention.key_length"] == fields[f"{kind}.attention.value_length"] == head
    assert {"blk.0.attn_q_norm.weight", "blk.0.attn_k_norm.weight"} <= names
    if kind == "olmo2":
        assert {"blk.0.post_attention_norm.weight", "blk.0.post_ffw_norm.weight"} <= names
        assert "blk.0.attn_norm.weight" not in names
    llama_cpp = pytest.importorskip("llama_cpp")
    model, tok, manifest = load_for_inference(models.ck[kind], device="cpu")
    prompt = prompt_ids(tok, manifest, "Once upon a time")
    stops = stop_ids(tok, manifest)
    mine = generate(model, prompt, max_new_tokens=12, temperature=0, stop_ids=stops).ids
    llm = llama_cpp.Llama(str(path), n_ctx=64, n_batch=1, n_threads=1, verbose=False)
    theirs: list[int] = []
    for token in llm.generate(prompt, temp=0.0, top_k=1):
        theirs.append(token)
        if token in stops or len(theirs) == len(mine):
            break
    assert theirs == mine and len(mine) >= 4


def test_sft_on_each_imported_family_trains_and_exports(models: SimpleNamespace, tmp_path: Path) -> None:
    from chat_fixtures import write_chat_parquet

    rows = [
        [{"role": "user", "content": f"Reverse the word: {w}"}, {"role": "assistant", "content": w[::-1]}]
        for w in ("module", "python", "token", "model", "fox", "dog", "quick", "brown") * 4
    ]
    raw = write_chat_parquet(tmp_path / "raw", {"train": rows, "validation": rows[:8]})
    runner = CliRunner()
    for kind in KINDS:
        ck, tokens = models.ck[kind], tmp_path / f"tokens-{kind}"
        args = ["--tokenizer", str(ck / "tokenizer.json"), "--out", str(tokens), "--num-proc", "1"]
        tokenized = runner.invoke(
            app, ["tokenize", "--data", str(raw), *args, "--mode", "sft", "--template", "model"]
        )
        assert tokenized.exit_code == 0, tokenized.output
        sft = runner.invoke(
            app,
            [
                *("sft", "--init", str(ck), "--data", str(tokens), "--out", str(tmp_path / f"sft-{kind}")),
                *("--steps", "4", "--data.seq_len=64", "--train.device=cpu", "--train.eval_every=0"),
                *(
                    "--train.sample_every=0",
                    "--telemetry.tensorboard=false",
                    "--telemetry.panel=off",
                    "--json",
                ),
            ],
        )
        assert sft.exit_code == 0, sft.output
        report = json.loads(sft.stdout)
        assert math.isfinite(report["summary"]["final_loss"])
        checkpoint = Path(report["checkpoint"])
        manifest = json.loads((checkpoint / "checkpoint.json").read_text())
        assert manifest["step"] == 4 and manifest["config"]["model"]["qk_norm"] != "none"
        exported = runner.invoke(app, ["export", str(checkpoint), "--out", str(tmp_path / f"hf-{kind}")])
        assert exported.exit_code == 0, exported.output
        config = json.loads((tmp_path / f"hf-{kind}" / "config.json").read_text())
        assert config["architectures"] == [CLASSES[kind]]


@pytest.mark.parametrize("kind", KINDS)
def test_a_model_trained_in_llmctl_with_the_family_layout_exports_as_that_family(kind: str) -> None:
    import dataclasses

    import torch
    import transformers

    from llmctl.export.hf import architecture_for, hf_config, to_hf_state_dict
    from llmctl.model.llama import Transformer

    layout = {"qwen3": dict(qk_norm="head"), "olmo2": dict(qk_norm="proj", norm_placement="post")}[kind]
    cfg = dataclasses.replace(model_from_preset("tiny"), vocab_size=300, head_dim=24, **layout)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))  # non-trivial norms, so a misplaced one shows
    arch = architecture_for(cfg)
    assert arch == CLASSES[kind]
    tok = SimpleNamespace(bos_id=None, pad_id=None)
    config = hf_config(cfg, tok, "float32", [1], arch)
    cls = getattr(transformers, arch)
    hf = cls(cls.config_class.from_dict(config)).eval()
    hf.load_state_dict(to_hf_state_dict(model.state_dict(), cfg, o_proj_bias=False), strict=True)
    ids = torch.randint(0, 300, (1, 50), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (model(ids) - hf(ids).logits).abs().max().item() < 1e-4


def test_head_dim_must_be_positive_and_even() -> None:
    from llmctl.config import load_config
    from llmctl.errors import LlmctlError

    assert load_config(None, ["--model.preset=tiny", "--model.head_dim=32"]).model.head_size == 32
    for bad in ("-2", "15"):
        with pytest.raises(LlmctlError, match="head_dim"):
            load_config(None, ["--model.preset=tiny", f"--model.head_dim={bad}"])


def test_qwen3_config_defaults_and_sliding_layers() -> None:
    from llmctl.errors import LlmctlError
    from llmctl.export.hf_arch import check_hf_config

    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        **dict(vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=2),
        **dict(num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128),
    }
    cfg, _ = check_hf_config(config)  # no head_dim in config.json: Qwen3Config's default, 128
    assert (cfg.head_size, cfg.qk_norm, cfg.qkv_bias) == (128, "head", False)
    with pytest.raises(LlmctlError, match="sliding-window layers"):
        check_hf_config({**config, "layer_types": ["full_attention", "sliding_attention"]})
