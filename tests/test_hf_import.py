"""`llmctl import`: tiny random transformers models (Llama-3.2 style with llama3 RoPE scaling and GQA; Qwen2 style
with QKV bias and tied embeddings) as local directories and through the fake Hub; parity, greedy text, chat ids,
stop ids, provenance, refusals, `pretrain --init` and `--resume` on an imported checkpoint."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fakehub import FakeServers
from hf_fixtures import ids_with_content_as_text, make_hf_model
from typer.testing import CliRunner

from llmctl.cli.app import app

pytest.importorskip("transformers")

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Reverse the word: module"},
    {"role": "assistant", "content": "eludom <|im_end|> <|eot_id|> as text"},
    {"role": "user", "content": "And again?"},
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("hf")
    ns = SimpleNamespace(root=root, hf={}, ck={}, reports={})
    for kind in ("llama", "qwen2"):
        ns.hf[kind] = make_hf_model(root / f"hf-{kind}", kind)
        ns.ck[kind] = root / f"ck-{kind}"
        result = CliRunner().invoke(app, ["import", str(ns.hf[kind]), "--out", str(ns.ck[kind]), "--json"])
        assert result.exit_code == 0, result.output
        ns.reports[kind] = json.loads(result.stdout)
    return ns


def _manifest(ck: Path) -> dict[str, Any]:
    return json.loads((ck / "checkpoint.json").read_text())


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_import_matches_transformers_logits_and_records_provenance(
    models: SimpleNamespace, kind: str
) -> None:
    report, manifest = models.reports[kind], _manifest(models.ck[kind])
    assert report["max_logit_diff"] is not None and report["max_logit_diff"] < 1e-4
    src = models.hf[kind]
    assert (
        manifest["source"]["files"]["model.safetensors"]
        == hashlib.sha256((src / "model.safetensors").read_bytes()).hexdigest()
    )
    assert set(manifest["source"]["files"]) >= {"config.json", "tokenizer.json", "tokenizer_config.json"}
    assert manifest["step"] == 0 and "optimizer.pt" not in manifest["files"]
    model = manifest["config"]["model"]
    assert model["tied_embeddings"] is True and model["n_kv_heads"] == 2
    if kind == "llama":
        assert model["rope_scaling"] == "llama3" and model["rope_original_max_seq_len"] == 64
        assert report["add_bos"] is True and report["architecture"] == "LlamaForCausalLM"
    else:
        assert model["qkv_bias"] is True and report["add_bos"] is False


def test_llama3_rope_scaling_is_what_makes_the_logits_match(models: SimpleNamespace) -> None:
    from llmctl.config import from_dict
    from llmctl.export.hf_import import load_hf_weights, parity
    from llmctl.export.hf_source import fetch_model_source
    from llmctl.infer.checkpoint import open_checkpoint

    ck = models.ck["llama"]
    cfg = from_dict(_manifest(ck)["config"]).model
    state = open_checkpoint(ck).model_state()
    state.pop("output.weight")
    ids = list(range(1, 200))
    src = fetch_model_source(str(models.hf["llama"]))
    config, hf_tensors = json.loads((src.path / "config.json").read_text()), load_hf_weights(src)
    assert parity(config, hf_tensors, state, cfg, ids) < 1e-4
    unscaled = dataclasses.replace(cfg, rope_scaling="none")
    assert parity(config, hf_tensors, state, unscaled, ids) > 1e-3


def test_untied_qwen_and_bf16_sources(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    src = make_hf_model(tmp_path / "hf", "qwen2", seed=3, tied=False)
    # bf16 weights, split into two shards with an index, as large Hub models are.
    state = {k: v.to(torch.bfloat16) for k, v in load_file(str(src / "model.safetensors")).items()}
    (src / "model.safetensors").unlink()
    names = sorted(state)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(src / shard), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    config = json.loads((src / "config.json").read_text())
    config["dtype"] = config["torch_dtype"] = "bfloat16"
    (src / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(app, ["import", str(src), "--out", str(tmp_path / "ck"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dtype"] == "bfloat16" and report["tied_embeddings"] is False
    assert report["max_logit_diff"] < 1e-4
    saved = load_file(str(tmp_path / "ck" / "model.safetensors"))
    assert saved["output.weight"].dtype == torch.bfloat16


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_greedy_text_equals_transformers(models: SimpleNamespace, kind: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmctl.infer.generate import generate_from_checkpoint
    from llmctl.infer.sampling import Sampling

    prompt = "Once upon a time"
    tok = AutoTokenizer.from_pretrained(models.hf[kind])
    hf = AutoModelForCausalLM.from_pretrained(models.hf[kind], dtype=torch.float32).eval()
    enc = tok(prompt, return_tensors="pt")
    if kind == "llama":
        assert enc.input_ids[0, 0].item() == tok.bos_token_id
    out = hf.generate(**enc, max_new_tokens=20, do_sample=False)[0, enc.input_ids.shape[1] :].tolist()
    stops = set(_manifest(models.ck[kind])["chat"]["stop_ids"])
    if out and out[-1] in stops:
        out = out[:-1]
    ours = generate_from_checkpoint(
        str(models.ck[kind]), prompt, max_new_tokens=20, sampling=Sampling(temperature=0), device="cpu"
    )
    assert ours["prompt_tokens"] == enc.input_ids.shape[1]
    assert ours["text"] == tok.decode(out)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_chat_prompt_ids_equal_apply_chat_template_and_stop_ids(models: SimpleNamespace, kind: str) -> None:
    from transformers import AutoTokenizer

    from llmctl.infer.chat import ChatSession

    tok = AutoTokenizer.from_pretrained(models.hf[kind])
    session = ChatSession(
        str(models.ck[kind]), device="cpu", system="You are terse.", temperature=0, max_new_tokens=8
    )
    session.messages = MESSAGES[1:3]
    ids = session.prompt_ids("And again?")
    # The reply's special-token strings are text (transformers would make them specials).
    assert ids == ids_with_content_as_text(tok, MESSAGES, strip=kind == "llama", add_generation_prompt=True)
    names = {tok.convert_ids_to_tokens(i) for i in session.stop_ids}
    assert names == (
        {"<|end_of_text|>", "<|eot_id|>"} if kind == "llama" else {"<|im_end|>", "<|endoftext|>"}
    )
    reply = session.reply("Hi")
    assert reply["stop_reason"] in ("stop", "length") and reply["new_tokens"] <= 8


def test_import_through_the_fake_hub_downloads_only_what_it_needs(
    models: SimpleNamespace, tmp_path: Path
) -> None:
    src = models.hf["qwen2"]
    files = {p.name: p.read_bytes() for p in src.iterdir()}
    files["pytorch_model.bin"] = b"a pickle that must never be fetched"
    with FakeServers() as hub:
        commit = hub.add_repo("acme/tiny-qwen", files, lfs={"model.safetensors"})
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.endpoint,
            "HF_HUB_CACHE": str(tmp_path / "cache"),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "llmctl",
                "import",
                "hf:acme/tiny-qwen@main",
                "--out",
                str(tmp_path / "ck"),
                "--no-verify",
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr
        assert not [p for _, p, _ in hub.requests if "pytorch_model.bin" in p]
        missing = subprocess.run(
            [sys.executable, "-m", "llmctl", "import", "hf:acme/nope", "--out", str(tmp_path / "x")],
            env=env,
            capture_output=True,
            text=True,
        )
    source = _manifest(tmp_path / "ck")["source"]
    assert source["repo"] == "acme/tiny-qwen" and source["commit"] == commit and source["revision"] == "main"
    assert source["files"]["tokenizer.json"] == hashlib.sha256(files["tokenizer.json"]).hexdigest()
    assert json.loads(run.stdout)["verify_note"].startswith("--no-verify")
    assert missing.returncode == 2 and "error: model acme/nope not found" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"architectures": ["GPT2LMHeadModel"]}, "architecture GPT2LMHeadModel"),
        (
            # Mistral's window is held (tests/test_families.py); Qwen2's, on some layers only, is not.
            {
                "architectures": ["Qwen2ForCausalLM"],
                "model_type": "qwen2",
                "sliding_window": 32,
                "use_sliding_window": True,
            },
            "sliding window of 32",
        ),
        ({"num_local_experts": 8}, "mixture of experts"),
        (
            {"rope_parameters": {"rope_type": "dynamic", "factor": 4.0, "rope_theta": 1e4}},
            "RoPE scaling type 'dynamic'",
        ),
    ],
)
def test_unsupported_models_are_refused_with_the_supported_list(
    models: SimpleNamespace, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    src = tmp_path / "src"
    shutil.copytree(models.hf["llama"], src)
    config = json.loads((src / "config.json").read_text())
    config.update(change)
    (src / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(app, ["import", str(src), "--out", str(tmp_path / "ck")])
    assert result.exit_code == 2
    assert (
        message in result.output
        and "LlamaForCausalLM" in result.output
        and "Qwen2ForCausalLM" in result.output
    )
    assert not (tmp_path / "ck").exists()


def test_mistral_without_an_active_window_imports(models: SimpleNamespace, tmp_path: Path) -> None:
    from llmctl.config import model_config_from_hf

    config = json.loads((models.hf["llama"] / "config.json").read_text())
    config.update({"architectures": ["MistralForCausalLM"], "model_type": "mistral", "sliding_window": None})
    cfg, arch = model_config_from_hf(config)
    assert arch == "MistralForCausalLM" and cfg.n_kv_heads == 2


def test_untrained_special_rows_are_warned_about(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    src = make_hf_model(tmp_path / "hf", "qwen2", seed=5)
    state = load_file(str(src / "model.safetensors"))
    tok = json.loads((src / "tokenizer.json").read_text())
    im_end = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|im_end|>")
    state["model.embed_tokens.weight"][im_end] = torch.zeros_like(state["model.embed_tokens.weight"][im_end])
    save_file(state, str(src / "model.safetensors"), metadata={"format": "pt"})
    result = CliRunner().invoke(app, ["import", str(src), "--out", str(tmp_path / "ck"), "--json"])
    assert result.exit_code == 0, result.output
    assert "warning: untrained embedding rows for <|im_end|>" in result.stderr
    assert json.loads(result.stdout)["untrained_tokens"] == ["<|im_end|>"]


def test_pretrain_init_continues_an_imported_model_and_resume_names_init(
    models: SimpleNamespace, tmp_path: Path
) -> None:
    import numpy as np
    from engine_fixtures import TINY

    from llmctl.tokenizer.core import load_tokenizer
    from llmctl.tokens.shards import FORMAT_NAME, FORMAT_VERSION, ShardWriter, shard_name, write_json_atomic

    ck = models.ck["llama"]
    tok = load_tokenizer(ck / "tokenizer.json")
    texts = ["The quick brown fox jumps over the lazy dog. " * 3, "def main():\n    return 0\n" * 4] * 20
    out = tmp_path / "tokens"
    splits = {}
    for split in ("train", "validation"):
        ids = [[tok.bos_id, *tok.encode(t), tok.eos_id] for t in texts]
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
        "tokenizer": {**tok.describe(), "path": str(ck / "tokenizer.json")},
        "chat_profile": None,
        "separator": {"policy": "bos+eos", "token_id": tok.eos_id},
        "splits": splits,
    }
    write_json_atomic(out / "meta.json", meta)
    keep = {k: v for k, v in TINY.items() if not k.startswith("model.")}
    args = [f"--{k}={v}" for k, v in keep.items()]
    run = CliRunner().invoke(
        app,
        [
            "pretrain",
            "--data",
            str(out),
            "--init",
            str(ck),
            "--steps",
            "2",
            "--out",
            str(tmp_path / "run"),
            "--json",
            *args,
        ],
    )
    assert run.exit_code == 0, run.output
    report = json.loads(run.stdout)
    assert report["step"] == 2 and report["resumed_from"] is None
    saved = _manifest(Path(report["checkpoint"]))
    assert (
        saved["config"]["model"]["rope_scaling"] == "llama3" and saved["config"]["model"]["vocab_size"] == 408
    )

    other = CliRunner().invoke(
        app,
        [
            "pretrain",
            "--data",
            str(out),
            "--init",
            str(models.ck["qwen2"]),
            "--steps",
            "2",
            "--out",
            str(tmp_path / "r3"),
            *args,
        ],
    )
    assert other.exit_code == 2 and "was trained with tokenizer" in other.output, other.output
    resumed = CliRunner().invoke(
        app,
        [
            "pretrain",
            "--data",
            str(out),
            "--resume",
            str(ck),
            "--steps",
            "2",
            "--out",
            str(tmp_path / "run2"),
            *args,
        ],
    )
    assert resumed.exit_code == 2
    assert "holds weights only" in resumed.output and f"--init {ck}" in resumed.output


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_flops_and_budget_plan_with_the_imported_shape(models: SimpleNamespace, kind: str) -> None:
    import torch

    from llmctl.config import from_dict
    from llmctl.model.llama import Transformer

    ck = models.ck[kind]
    cfg = from_dict(_manifest(ck)["config"]).model
    with torch.device("meta"):
        n = Transformer(cfg).num_params()
    flops = CliRunner().invoke(app, ["flops", "estimate", "--model", str(ck), "--json"])
    assert flops.exit_code == 0, flops.output
    assert json.loads(flops.stdout)["params_total"] == n == models.reports[kind]["n_params"]
    from_hf = CliRunner().invoke(app, ["flops", "estimate", "--model", str(models.hf[kind]), "--json"])
    assert json.loads(from_hf.stdout)["params_total"] == n
    budget = CliRunner().invoke(
        app, ["budget", "--model", str(ck), "--tokens", "10M", "--gpu", "L4", "--json"]
    )
    assert budget.exit_code == 0, budget.output
    memory = json.loads(budget.stdout)["memory"]
    assert memory["fits"] is True and memory["weights_bytes"] == 2 * n


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_export_of_an_import_is_the_source_model(models: SimpleNamespace, kind: str, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "hf"
    result = CliRunner().invoke(app, ["export", str(models.ck[kind]), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["chat_template"] is True
    source = json.loads((models.hf[kind] / "config.json").read_text())
    exported = json.loads((out / "config.json").read_text())
    assert exported["architectures"] == source["architectures"]
    assert sorted(json.loads((out / "generation_config.json").read_text())["eos_token_id"]) == sorted(
        report["eos_token_ids"]
    )
    ids = torch.randint(0, 400, (2, 40), generator=torch.Generator().manual_seed(2))
    logits = []
    for path in (models.hf[kind], out):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        with torch.no_grad():
            logits.append(model(ids).logits)
    assert torch.equal(logits[0], logits[1])
    theirs, ours = AutoTokenizer.from_pretrained(models.hf[kind]), AutoTokenizer.from_pretrained(out)
    assert ours("Once upon a time").input_ids == theirs("Once upon a time").input_ids
    assert ours.apply_chat_template(MESSAGES, tokenize=False) == theirs.apply_chat_template(
        MESSAGES, tokenize=False
    )


def test_import_of_an_export_has_bit_identical_weights(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file
    from token_fixtures import train_tokenizer

    from llmctl.config import Config, DataConfig, ModelConfig, to_dict
    from llmctl.engine.checkpoint import model_state_to_save, write_checkpoint
    from llmctl.model.llama import Transformer
    from llmctl.tokenizer.core import load_tokenizer

    tok = load_tokenizer(
        train_tokenizer(tmp_path / "tok.json", ["some text to learn a few merges from"] * 20, 320)
    )
    for shape in ({"tied_embeddings": False, "n_kv_heads": 2}, {"tied_embeddings": True, "qkv_bias": True}):
        cfg = ModelConfig(vocab_size=320, dim=64, n_layers=2, n_heads=4, ffn_dim=96, max_seq_len=64, **shape)
        torch.manual_seed(0)
        model = Transformer(cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        name = "tied" if cfg.tied_embeddings else "untied"
        ckpt = write_checkpoint(
            tmp_path / name / "checkpoints",
            10,
            model_state=model_state_to_save(model.state_dict(), cfg),
            optimizer_state={},
            rng_states=[],
            manifest={
                "config": to_dict(Config(model=cfg, data=DataConfig(seq_len=32))),
                "tokenizer": {"fingerprint": tok.fingerprint, "path": str(tok.path), "kind": tok.kind},
            },
            tokenizer_file=tok.path,
            keep=1,
        )
        runner = CliRunner()
        exported = runner.invoke(app, ["export", str(ckpt), "--out", str(tmp_path / name / "hf")])
        assert exported.exit_code == 0, exported.output
        imported = runner.invoke(
            app, ["import", str(tmp_path / name / "hf"), "--out", str(tmp_path / name / "back"), "--json"]
        )
        assert imported.exit_code == 0, imported.output
        assert json.loads(imported.stdout)["max_logit_diff"] < 1e-4
        before, after = (
            load_file(str(ckpt / "model.safetensors")),
            load_file(str(tmp_path / name / "back" / "model.safetensors")),
        )
        assert sorted(before) == sorted(after)
        assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_template_mask_covers_exactly_the_replies_and_their_end_of_turn(
    models: SimpleNamespace, kind: str
) -> None:
    from transformers import AutoTokenizer

    from llmctl.tokenizer.core import load_tokenizer
    from llmctl.tokenizer.template import TemplateChat, stop_ids

    ck = models.ck[kind]
    manifest = _manifest(ck)
    tok = load_tokenizer(ck / "tokenizer.json")
    chat = TemplateChat.from_manifest(manifest, tok)
    conv = [*MESSAGES, {"role": "assistant", "content": "second reply"}]
    ids, mask = chat.render_masked(conv, stop_ids(tok, manifest))
    hf = AutoTokenizer.from_pretrained(models.hf[kind])
    # transformers would read the special-token strings in a reply as specials; llmctl keeps them text
    # (tests/test_template_specials.py), so the rendered text, not the ids, is what matches.
    assert hf.decode(ids) == hf.apply_chat_template(conv, tokenize=False)
    assert ids.count(hf.convert_tokens_to_ids("<|eot_id|>" if kind == "llama" else "<|im_end|>")) == len(conv)
    end = "<|eot_id|>" if kind == "llama" else "<|im_end|>"
    trained = [(i, t) for i, (t, m) in enumerate(zip(ids, mask, strict=True)) if m]
    # Two replies; each span is the reply's content then its end-of-turn, nothing of the next header.
    spans: list[list[int]] = []
    for i, _t in trained:
        if spans and spans[-1][-1] == i - 1:
            spans[-1].append(i)
        else:
            spans.append([i])
    assert len(spans) == 2
    texts = [hf.decode([ids[i] for i in span]) for span in spans]
    first = MESSAGES[2]["content"].strip() if kind == "llama" else MESSAGES[2]["content"]
    assert texts == [first + end, "second reply" + end]
    assert ids[spans[0][-1]] == hf.convert_tokens_to_ids(end)


@pytest.mark.slow
def test_sft_on_an_imported_model_then_chat_and_export(models: SimpleNamespace, tmp_path: Path) -> None:
    import torch
    from chat_fixtures import write_chat_parquet
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmctl.tokens.tokenize import TokenizeOptions, tokenize

    ck = models.ck["qwen2"]
    rows = [
        [{"role": "user", "content": f"Reverse the word: {w}"}, {"role": "assistant", "content": w[::-1]}]
        for w in ("module", "python", "token", "model", "fox", "dog", "quick", "brown") * 6
    ]
    raw = write_chat_parquet(tmp_path / "raw", {"train": rows, "validation": rows[:8]})
    runner = CliRunner()
    tokenized = runner.invoke(
        app,
        [
            "tokenize",
            "--data",
            str(raw),
            "--tokenizer",
            str(ck / "tokenizer.json"),
            "--out",
            str(tmp_path / "tokens"),
            "--mode",
            "sft",
            "--template",
            "model",
            "--num-proc",
            "1",
        ],
    )
    assert tokenized.exit_code == 0, tokenized.output
    meta = json.loads((tmp_path / "tokens" / "meta.json").read_text())
    assert meta["chat_profile"]["name"] == "model" and meta["chat_profile"]["stop_ids"]
    assert TokenizeOptions and tokenize  # the CLI above is the path under test
    sft = runner.invoke(
        app,
        [
            "sft",
            "--init",
            str(ck),
            "--data",
            str(tmp_path / "tokens"),
            "--out",
            str(tmp_path / "sft"),
            "--steps",
            "3",
            "--data.seq_len=64",
            "--train.device=cpu",
            "--train.eval_every=0",
            "--train.sample_every=0",
            "--telemetry.tensorboard=false",
            "--telemetry.panel=off",
            "--json",
        ],
    )
    assert sft.exit_code == 0, sft.output
    checkpoint = Path(json.loads(sft.stdout)["checkpoint"])
    manifest = _manifest(checkpoint)
    assert manifest["chat"]["template_text"] and "add_bos" in manifest["prompt"]
    chat = runner.invoke(
        app,
        [
            "generate",
            str(checkpoint),
            "--chat",
            "--prompt",
            "Reverse the word: fox",
            "--temperature",
            "0",
            "-n",
            "6",
            "--json",
        ],
    )
    assert chat.exit_code == 0, chat.output
    out = tmp_path / "hf"
    exported = runner.invoke(app, ["export", str(checkpoint), "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    hf_tok = AutoTokenizer.from_pretrained(out)
    ours = AutoTokenizer.from_pretrained(models.hf["qwen2"])
    conv = [{"role": "user", "content": "Reverse the word: fox"}]
    assert hf_tok.apply_chat_template(conv, add_generation_prompt=True) == ours.apply_chat_template(
        conv, add_generation_prompt=True
    )
    assert AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32) is not None
    resumed = runner.invoke(
        app,
        [
            "sft",
            "--init",
            str(ck),
            "--data",
            str(tmp_path / "tokens"),
            "--resume",
            str(ck),
            "--out",
            str(tmp_path / "sft2"),
            "--steps",
            "3",
        ],
    )
    assert resumed.exit_code == 2 and "--init" in resumed.output


def test_import_prints_nothing_from_libraries_it_loads_for_the_parity_check(tmp_path: Path) -> None:
    """transformers' model classes import torchao where it is installed (the qlora and dev extras), which
    logs a line per CUDA kernel it cannot load and torch a line per enum: none of it reaches the user."""
    pytest.importorskip("torchao")
    hf = make_hf_model(tmp_path / "hf", "llama")
    run = subprocess.run(
        [sys.executable, "-m", "llmctl", "import", str(hf), "--out", str(tmp_path / "ck")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert run.returncode == 0, run.stderr
    assert "torchao" not in run.stderr and "_pytree" not in run.stderr, run.stderr
