"""Qwen3 (dense), OLMo 2, Gemma 3 and Mistral with its sliding window: import parity with transformers' own
classes, greedy text, HF and GGUF export, fine-tuning an import, and the published shapes' parameter counts.

The Gemma 3 and Mistral models have a 16-token window and every prompt here is longer than that, so a
window applied wrongly (or not at all) changes the logits and the text."""

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

KINDS = ["qwen3", "olmo2", "gemma3", "mistral"]
CLASSES = {
    "qwen3": "Qwen3ForCausalLM",
    "olmo2": "Olmo2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "mistral": "MistralForCausalLM",
}
MODEL_TYPES = {"qwen3": "qwen3", "olmo2": "olmo2", "gemma3": "gemma3_text", "mistral": "mistral"}
# (head_dim, qk_norm, norm_placement, sliding_window, sliding_window_pattern) each import must carry.
LAYOUT = {
    "qwen3": (32, "head", "pre", None, 0),
    "olmo2": (None, "proj", "post", None, 0),
    "gemma3": (32, "head", "sandwich", 16, 6),
    "mistral": (None, "none", "pre", 16, 0),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("families")
    ns = SimpleNamespace(hf={}, ck={}, reports={})
    for kind in KINDS:
        # OLMo 2 unties its head; Qwen3's small models, Gemma 3 and the Mistral fixture tie it.
        ns.hf[kind] = make_hf_model(root / f"hf-{kind}", kind, tied=kind != "olmo2")
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
    keys = ("head_dim", "qk_norm", "norm_placement", "sliding_window", "sliding_window_pattern")
    assert tuple(cfg[k] for k in keys) == LAYOUT[kind]
    if kind == "gemma3":
        assert (cfg["activation"], cfg["scale_embeddings"], cfg["norm_unit_offset"]) == (
            "gelu_tanh",
            True,
            True,
        )
        assert (cfg["rope_theta"], cfg["rope_local_theta"]) == (1e6, 1e4)
    hf = getattr(transformers, CLASSES[kind]).from_pretrained(models.hf[kind], dtype=torch.float32).eval()
    ids = torch.randint(0, 400, (2, 100), generator=torch.Generator().manual_seed(1))  # 100 > the 16 window
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

    prompt = "Once upon a time there was a tiny language model"  # 13 tokens: 45 with the reply, window 16
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
    assert exported["architectures"] == [CLASSES[kind]] and exported["model_type"] == MODEL_TYPES[kind]
    source, ours = (
        load_file(str(models.hf[kind] / "model.safetensors")),
        load_file(str(out / "model.safetensors")),
    )
    if kind != "olmo2":
        source.pop("lm_head.weight", None)  # tied: transformers may save the shared tensor under both names
    if kind in ("gemma3", "mistral"):
        assert exported["sliding_window"] == 16
    if kind == "gemma3":
        assert exported["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]
        assert exported["rope_parameters"]["sliding_attention"]["rope_theta"] == 10000.0
    assert sorted(ours) == sorted(source)
    assert all(torch.equal(ours[k], source[k]) for k in source)


def test_a_qk_norm_model_is_not_written_as_llama(models: SimpleNamespace, tmp_path: Path) -> None:
    from llmctl.errors import LlmctlError
    from llmctl.export.hf import check_architecture

    cfg = model_from_preset("qwen3-0.6b")
    with pytest.raises(LlmctlError, match="LlamaForCausalLM cannot hold"):
        check_architecture(cfg, "LlamaForCausalLM")
    check_architecture(cfg, "Qwen3ForCausalLM")


GGUF_ARCH = {"qwen3": "qwen3", "olmo2": "olmo2", "gemma3": "gemma3", "mistral": "llama"}


def _gguf_fields_hold_the_family(path: Path, kind: str) -> None:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items()}
    tensors = {t.name: t for t in reader.tensors}
    arch = GGUF_ARCH[kind]
    assert fields["general.architecture"] == arch
    if kind == "mistral":
        # llama.cpp's llama has no window: the file's context is the window, within which both agree.
        assert fields["llama.context_length"] == 16 and "blk.0.attn_q_norm.weight" not in tensors
        return
    head = 16 if kind == "olmo2" else 32
    assert fields[f"{arch}.attention.key_length"] == fields[f"{arch}.attention.value_length"] == head
    assert {"blk.0.attn_q_norm.weight", "blk.0.attn_k_norm.weight"} <= set(tensors)
    if kind == "olmo2":
        assert {"blk.0.post_attention_norm.weight", "blk.0.post_ffw_norm.weight"} <= set(tensors)
        assert "blk.0.attn_norm.weight" not in tensors
    if kind == "gemma3":
        assert fields["gemma3.attention.sliding_window"] == 16
        assert fields["gemma3.rope.freq_base"] == 1e6 and fields["gemma3.rope.freq_base_swa"] == 1e4
        norms = ("attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm")
        assert {f"blk.0.{n}.weight" for n in norms} <= set(tensors)
        # llama.cpp multiplies by the stored weight: Gemma's (1 + weight), around 1, not the raw weight.
        assert abs(float(tensors["blk.0.attn_norm.weight"].data.mean()) - 1) < 0.2


@pytest.mark.parametrize("kind", KINDS)
def test_gguf_export_holds_the_family_and_llama_cpp_decodes_like_llmctl(
    models: SimpleNamespace, kind: str, tmp_path: Path
) -> None:
    from llmctl.infer.checkpoint import load_for_inference
    from llmctl.infer.generate import generate
    from llmctl.tokenizer.template import prompt_ids, stop_ids

    path = tmp_path / "m.gguf"
    result = CliRunner().invoke(
        app, ["export", str(models.ck[kind]), "--out", str(path), "--format", "gguf", "--dtype", "float32"]
    )
    assert result.exit_code == 0, result.output
    assert ("warning: llama.cpp's llama has no sliding window" in result.stderr) == (kind == "mistral")
    _gguf_fields_hold_the_family(path, kind)
    llama_cpp = pytest.importorskip("llama_cpp")
    model, tok, manifest = load_for_inference(models.ck[kind], device="cpu")
    text = (
        "Once upon a time" if kind == "mistral" else "Once upon a time there was a tiny language model that"
    )
    prompt = prompt_ids(tok, manifest, text)
    stops = stop_ids(tok, manifest)
    # 32 new tokens past a 14-token prompt (window 16); for Mistral, as many as the file's 16-token context holds.
    count = 16 - len(prompt) if kind == "mistral" else 32 if kind == "gemma3" else 12
    mine = generate(model, prompt, max_new_tokens=count, temperature=0, stop_ids=stops).ids
    llm = llama_cpp.Llama(str(path), n_ctx=64, n_batch=1, n_threads=1, verbose=False)
    theirs: list[int] = []
    for token in llm.generate(prompt, temp=0.0, top_k=1):
        theirs.append(token)
        if token in stops or len(theirs) == len(mine):
            break
    assert theirs == mine and len(mine) >= 4


def test_sft_on_each_imported_family_trains_exports_and_resumes_exactly(
    models: SimpleNamespace, tmp_path: Path
) -> None:
    """Four SFT steps on each import (data by its own template, seq_len 64 > the 16-token windows); for the
    windowed families, a run resumed from step 2 gives the uninterrupted run's losses, bit for bit."""
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
        run = tmp_path / f"sft-{kind}"
        sft = runner.invoke(app, [*_sft_args(ck, tokens, run), "--steps", "4", "--checkpoint.every=2"])
        assert sft.exit_code == 0, sft.output
        report = json.loads(sft.stdout)
        assert math.isfinite(report["summary"]["final_loss"])
        checkpoint = Path(report["checkpoint"])
        manifest = json.loads((checkpoint / "checkpoint.json").read_text())
        model = manifest["config"]["model"]
        assert manifest["step"] == 4 and (model["qk_norm"], model["sliding_window"]) == LAYOUT[kind][1:4:2]
        exported = runner.invoke(app, ["export", str(checkpoint), "--out", str(tmp_path / f"hf-{kind}")])
        assert exported.exit_code == 0, exported.output
        config = json.loads((tmp_path / f"hf-{kind}" / "config.json").read_text())
        assert config["architectures"] == [CLASSES[kind]]
        if kind in ("gemma3", "mistral"):
            resumed = runner.invoke(
                app,
                [
                    *_sft_args(ck, tokens, tmp_path / f"resumed-{kind}"),
                    *("--steps", "4", "--resume", str(run / "checkpoints" / "step-000002")),
                ],
            )
            assert resumed.exit_code == 0, resumed.output
            full, tail = _losses(run), _losses(tmp_path / f"resumed-{kind}")
            assert tail == {step: loss for step, loss in full.items() if step > 2} and len(tail) == 2


def _losses(run: Path) -> dict[int, float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if r["kind"] == "train"}


def _sft_args(init: Path, tokens: Path, out: Path) -> list[str]:
    return [
        *("sft", "--init", str(init), "--data", str(tokens), "--out", str(out)),
        *("--data.seq_len=64", "--train.device=cpu", "--train.eval_every=0", "--train.sample_every=0"),
        "--train.log_every=1",
        *("--telemetry.tensorboard=false", "--telemetry.panel=off", "--json"),
    ]


def test_gemma_template_merges_a_system_message_and_tokenize_trains_on_the_reply(
    models: SimpleNamespace, tmp_path: Path
) -> None:
    """Gemma's template has no system role: its own template puts the system text before the first user
    turn; `tokenize --mode sft|dpo --template model` take such rows, and only the reply is trained on."""
    from chat_fixtures import write_chat_parquet

    from llmctl.infer.checkpoint import load_for_inference
    from llmctl.tokenizer.template import TemplateChat

    system = {"role": "system", "content": "You reverse words."}
    rows = [
        [system, {"role": "user", "content": f"Reverse: {w}"}, {"role": "assistant", "content": w[::-1]}]
        for w in ("module", "python", "token", "model")
    ]
    raw = write_chat_parquet(tmp_path / "raw", {"train": rows, "validation": rows[:2]})
    ck = models.ck["gemma3"]
    args = ["--tokenizer", str(ck / "tokenizer.json"), "--out", str(tmp_path / "tokens"), "--num-proc", "1"]
    tokenized = CliRunner().invoke(
        app, ["tokenize", "--data", str(raw), *args, "--mode", "sft", "--template", "model"]
    )
    assert tokenized.exit_code == 0, tokenized.output
    _, tok, manifest = load_for_inference(ck, device="cpu")
    chat = TemplateChat.from_manifest(manifest, tok)
    text = chat.render_text(rows[0])
    assert text.startswith("<bos><start_of_turn>user\nYou reverse words.\n\nReverse: module<end_of_turn>")
    assert "system" not in text and "<start_of_turn>model\neludom<end_of_turn>" in text
    ids, mask = chat.render_masked(rows[0], [tok.token_to_id("<end_of_turn>")])
    assert tok.decode([i for i, m in zip(ids, mask, strict=True) if m]) == "eludom<end_of_turn>"
    pairs = [
        {"prompt": r[:2], "chosen": r[2:], "rejected": [{"role": "assistant", "content": "no"}]} for r in rows
    ]
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    runner = CliRunner()
    prefs = tmp_path / "prefs"
    downloaded = runner.invoke(
        app,
        ["data", "download", str(tmp_path / "prefs.jsonl"), "--out", str(prefs), "--val-fraction", "0.25"],
    )
    assert downloaded.exit_code == 0, downloaded.output
    args = ["--tokenizer", str(ck / "tokenizer.json"), "--out", str(tmp_path / "dpo"), "--max-len", "64"]
    dpo = runner.invoke(
        app, ["tokenize", "--mode", "dpo", "--template", "model", "--data", str(prefs), *args]
    )
    assert dpo.exit_code == 0, dpo.output


@pytest.mark.parametrize("kind", KINDS)
def test_a_model_trained_in_llmctl_with_the_family_layout_exports_as_that_family(kind: str) -> None:
    import dataclasses

    import torch
    import transformers

    from llmctl.export.hf import architecture_for, hf_config, to_hf_state_dict
    from llmctl.model.llama import Transformer
    from llmctl.presets import GEMMA3_LAYOUT

    layout = {
        "qwen3": dict(qk_norm="head"),
        "olmo2": dict(qk_norm="proj", norm_placement="post"),
        # Every Gemma option away from the fixture's and the published values: scale, window, pattern,
        # local RoPE base, linear scaling on the global layers.
        "gemma3": dict(
            GEMMA3_LAYOUT,
            attn_scalar=20.0,
            sliding_window=8,
            sliding_window_pattern=3,
            rope_local_theta=5000.0,
            rope_scaling="linear",
            rope_factor=2.0,
            n_layers=3,
        ),
        "mistral": dict(sliding_window=8),
    }[kind]
    cfg = dataclasses.replace(model_from_preset("tiny"), vocab_size=300, head_dim=24, **layout)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                # non-trivial norms, so a misplaced one shows
                p.copy_((0 if cfg.norm_unit_offset else 1) + 0.3 * torch.randn_like(p))
    arch = architecture_for(cfg)
    assert arch == CLASSES[kind]
    tok = SimpleNamespace(bos_id=None, pad_id=None)
    config = hf_config(cfg, tok, "float32", [1], arch)
    cls = getattr(transformers, arch)
    hf = cls(cls.config_class.from_dict(config)).eval()
    hf.load_state_dict(to_hf_state_dict(model.state_dict(), cfg, o_proj_bias=False), strict=True)
    ids = torch.randint(0, 300, (1, 50), generator=torch.Generator().manual_seed(3))  # 50 > the 8 window
    with torch.no_grad():
        assert (model(ids) - hf(ids).logits).abs().max().item() < 1e-4
    if kind == "gemma3":
        assert config["layer_types"] == ["sliding_attention", "sliding_attention", "full_attention"]


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
    with pytest.raises(LlmctlError, match="sliding-window layers in qwen3"):
        check_hf_config({**config, "layer_types": ["full_attention", "sliding_attention"]})


def test_batched_decoding_respects_the_window(models: SimpleNamespace) -> None:
    """infer/batch.py feeds the layers itself, left-padded: the window (cache columns), the two RoPE
    tables and the embedding scale must hold there as in one-by-one generation."""
    from llmctl.infer.batch import Request, generate_batch
    from llmctl.infer.checkpoint import load_for_inference
    from llmctl.infer.generate import generate
    from llmctl.infer.sampling import Sampling

    model, tok, _ = load_for_inference(models.ck["gemma3"], device="cpu")
    prompts = [tok.encode("Once upon a time there was a tiny language model"), tok.encode("def main():")]
    greedy = Sampling(temperature=0)
    batch = generate_batch(model, [Request(p, max_new_tokens=8, sampling=greedy) for p in prompts])
    for prompt, got in zip(prompts, batch, strict=True):
        assert got.ids == generate(model, prompt, max_new_tokens=8, temperature=0).ids


def test_packed_documents_see_only_their_own_window() -> None:
    import dataclasses

    import torch

    from llmctl.model.llama import Transformer

    cfg = dataclasses.replace(model_from_preset("tiny"), vocab_size=100, sliding_window=5)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    a, b = torch.randint(0, 100, (1, 12)), torch.randint(0, 100, (1, 9))
    doc_ids = torch.tensor([[0] * 12 + [1] * 9])
    positions = torch.cat((torch.arange(12), torch.arange(9)))[None]
    with torch.no_grad():
        packed = model(torch.cat((a, b), dim=1), doc_ids=doc_ids, position_ids=positions)
        alone = torch.cat((model(a), model(b)), dim=1)
        full = Transformer(dataclasses.replace(cfg, sliding_window=None)).eval()
        full.load_state_dict(model.state_dict())
        assert (packed - alone).abs().max().item() < 1e-5
        assert (full(a) - model(a)).abs().max().item() > 1e-3  # the window is in effect on 12 > 5 tokens


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_attention_window_equals_the_masked_sdpa() -> None:
    """The CUDA path (flex attention with a block mask), run here by its eager reference, against the CPU
    path (a boolean band mask given to SDPA); GQA and a scale other than head_dim^-0.5."""
    import torch
    import torch.nn.functional as F

    from llmctl.model.window_attention import window_kernel_available, window_mask, windowed_attention

    if not window_kernel_available():
        pytest.skip("this torch has no flex attention")
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 40, 16, generator=g)
    k, v = torch.randn(2, 2, 40, 16, generator=g), torch.randn(2, 2, 40, 16, generator=g)
    mask = window_mask(7, 40, 40, None, q.device)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True, scale=0.3)
    got = windowed_attention(q, k, v, 7, 0.3, True, compiled=False)
    assert (got - want).abs().max().item() < 1e-5


def test_published_gemma3_shapes_have_their_parameter_counts() -> None:
    """google/gemma-3-270m and google/gemma-3-1b-pt config.json (Hugging Face Hub, as published):
    270m: hidden_size 640, intermediate_size 2048, num_hidden_layers 18, num_attention_heads 4,
    num_key_value_heads 1, head_dim 256, vocab_size 262144, sliding_window 512, query_pre_attn_scalar 256,
    rope_theta 1000000, rope_local_base_freq 10000, rms_norm_eps 1e-06, max_position_embeddings 32768,
    hidden_activation gelu_pytorch_tanh, layer_types five sliding_attention to one full_attention;
    1b: hidden_size 1152, intermediate_size 6912, num_hidden_layers 26, the rest as 270m
    (sliding_window_pattern 6). Both tie the head: 268,098,176 and 999,885,952 parameters (Google's model
    cards: 170M embedding + 100M transformer for 270m; ollama's gemma3:1b lists 999.89M)."""
    import dataclasses

    from llmctl.export.hf_arch import check_hf_config
    from llmctl.plan.flops import flops_per_token, param_counts

    common = dict(
        architectures=["Gemma3ForCausalLM"],
        model_type="gemma3_text",
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        vocab_size=262144,
        sliding_window=512,
        query_pre_attn_scalar=256,
        rope_theta=1000000.0,
        rope_local_base_freq=10000.0,
        rms_norm_eps=1e-06,
        max_position_embeddings=32768,
        hidden_activation="gelu_pytorch_tanh",
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        rope_scaling=None,
    )
    shapes = {
        "gemma3-270m": (dict(hidden_size=640, intermediate_size=2048, num_hidden_layers=18), 268_098_176),
        "gemma3-1b": (dict(hidden_size=1152, intermediate_size=6912, num_hidden_layers=26), 999_885_952),
    }
    for name, (shape, total) in shapes.items():
        preset = model_from_preset(name)
        cfg, _ = check_hf_config({**common, **shape, "sliding_window_pattern": 6})
        assert cfg == dataclasses.replace(preset, preset=None)
        assert param_counts(preset).total == total
    # 1b at 4096 tokens: 4 global layers see 4096 keys, 22 windowed ones 512.
    fl = flops_per_token(model_from_preset("gemma3-1b"), 4096)
    assert fl.attn_scores == 2 * 4 * 256 * (4 * 4096 + 22 * 512)
    assert fl.attention_palm == 12 * 4 * 256 * (4 * 4096 + 22 * 512)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"final_logit_softcapping": 30.0}, "final_logit_softcapping=30.0"),
        ({"attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
        ({"layer_types": ["sliding_attention", "full_attention", "full_attention"] * 2}, "every n-th layer"),
        ({"hidden_activation": "gelu"}, "activation gelu"),
        ({"use_bidirectional_attention": True}, "bidirectional"),
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 4.0}}, "'dynamic'"),
    ],
)
def test_gemma3_options_llmctl_does_not_implement_are_refused(change: dict, message: str) -> None:
    from llmctl.errors import LlmctlError
    from llmctl.export.hf_arch import check_hf_config

    config = {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        **dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=6, head_dim=16),
        **dict(num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=128, sliding_window=8),
    }
    cfg, _ = check_hf_config(config)
    assert (cfg.sliding_window_pattern, cfg.attn_scalar) == (6, 256.0)  # Gemma3TextConfig's defaults
    with pytest.raises(LlmctlError, match=message):
        check_hf_config({**config, **change})
    with pytest.raises(LlmctlError, match="model_type 'gemma3'"):
        check_hf_config({**config, "model_type": "gemma3"})  # the multimodal config


def test_mistral_window_defaults_and_a_window_as_long_as_the_context() -> None:
    from llmctl.export.hf_arch import check_hf_config

    config = {
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        **dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2),
        **dict(num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192),
    }
    assert check_hf_config(config)[0].sliding_window == 4096  # MistralConfig's default when absent
    assert check_hf_config({**config, "sliding_window": None})[0].sliding_window is None
    assert check_hf_config({**config, "sliding_window": 8192})[0].sliding_window is None


def test_window_options_are_checked_and_off_by_default() -> None:
    from llmctl.config import ModelConfig, load_config
    from llmctl.errors import LlmctlError

    cfg = ModelConfig()
    assert (cfg.sliding_window, cfg.attn_scalar, cfg.rope_local_theta, cfg.activation) == (
        None,
        None,
        None,
        "silu",
    )
    assert not any(cfg.is_windowed(i) for i in range(cfg.n_layers))
    gemma = load_config(
        None, ["--model.preset=tiny", "--model.sliding_window=8", "--model.sliding_window_pattern=2"]
    )
    assert [gemma.model.is_windowed(i) for i in range(2)] == [True, False]
    for bad, key in (
        ("--model.sliding_window=0", "sliding_window"),
        ("--model.sliding_window_pattern=-1", "pattern"),
    ):
        with pytest.raises(LlmctlError, match=key):
            load_config(None, ["--model.preset=tiny", bad])


@pytest.mark.parametrize("attention_factor", [None, 1.5])
def test_yarn_rope_scaling_matches_transformers_past_the_original_context(
    attention_factor: float | None,
) -> None:
    """A Qwen3 config with YaRN (Qwen3's documented long-context setting, here original 16 of 128 positions):
    import reads it, llmctl's logits equal transformers' on 60 tokens, and export writes it back."""
    import torch
    import transformers

    from llmctl.export.hf import hf_config, to_hf_state_dict
    from llmctl.export.hf_arch import check_hf_config
    from llmctl.model.llama import Transformer

    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "rope_theta": 1e6}
    if attention_factor is not None:
        yarn["attention_factor"] = attention_factor
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        **dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, head_dim=32),
        **dict(
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, rope_parameters=yarn
        ),
    }
    cfg, arch = check_hf_config(config)
    assert (cfg.rope_scaling, cfg.rope_factor, cfg.rope_original_max_seq_len) == ("yarn", 4.0, 16)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    written = hf_config(cfg, SimpleNamespace(bos_id=None, pad_id=None), "float32", [1], arch)
    assert written["rope_parameters"]["rope_type"] == "yarn"
    cls = getattr(transformers, arch)
    hf = cls(cls.config_class.from_dict(written)).eval()
    hf.load_state_dict(to_hf_state_dict(model.state_dict(), cfg), strict=True)
    ids = torch.randint(0, 300, (1, 60), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (model(ids) - hf(ids).logits).abs().max().item() < 1e-4
    assert check_hf_config(written)[0] == cfg


def test_yarn_gguf_decodes_like_llmctl_past_the_original_context(tmp_path: Path) -> None:
    """A Qwen3 with YaRN (original context 16) through import and GGUF: llama.cpp's greedy tokens equal
    llmctl's for 32 tokens after a 13-token prompt, which needs the file's rope.scaling keys."""
    import torch
    from hf_fixtures import make_tokenizer
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from llmctl.infer.checkpoint import load_for_inference
    from llmctl.infer.generate import generate
    from llmctl.tokenizer.template import prompt_ids

    tok = make_tokenizer("qwen3")
    torch.manual_seed(0)
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "rope_theta": 1e6}
    config = Qwen3Config(
        **dict(
            vocab_size=len(tok) + 8, hidden_size=64, intermediate_size=96, num_hidden_layers=2, head_dim=32
        ),
        **dict(
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.1
        ),
        **dict(rope_parameters=yarn, eos_token_id=tok.eos_token_id, use_sliding_window=False),
    )
    Qwen3ForCausalLM(config).save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    runner = CliRunner()
    imported = runner.invoke(app, ["import", str(tmp_path / "hf"), "--out", str(tmp_path / "ck"), "--json"])
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.stdout)["max_logit_diff"] < 1e-4
    path = tmp_path / "m.gguf"
    exported = runner.invoke(
        app, ["export", str(tmp_path / "ck"), "--out", str(path), "--format", "gguf", "--dtype", "float32"]
    )
    assert exported.exit_code == 0, exported.output
    llama_cpp = pytest.importorskip("llama_cpp")
    model, tok, manifest = load_for_inference(tmp_path / "ck", device="cpu")
    prompt = prompt_ids(tok, manifest, "Once upon a time there was a tiny language model")
    mine = generate(model, prompt, max_new_tokens=32, temperature=0).ids
    llm = llama_cpp.Llama(str(path), n_ctx=64, n_batch=1, n_threads=1, verbose=False)
    theirs: list[int] = []
    for token in llm.generate(prompt, temp=0.0, top_k=1):
        theirs.append(token)
        if len(theirs) == len(mine):
            break
    assert theirs == mine and len(prompt) + len(mine) > 16
