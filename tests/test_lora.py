"""LoRA (`--lora.rank`): adapters equal PEFT's on an imported Hugging Face model, only adapters train, and bad
input is refused with a hint."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hf_fixtures import make_hf_model
from typer.testing import CliRunner

from llmctl.cli.app import app

pytest.importorskip("transformers")
pytest.importorskip("peft")

HF_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("lora")
    hf = make_hf_model(root / "hf", "llama")
    ck = root / "ck"
    result = CliRunner().invoke(app, ["import", str(hf), "--out", str(ck), "--json"])
    assert result.exit_code == 0, result.output
    return SimpleNamespace(root=root, hf=hf, ck=ck, tokens=_chat_tokens(root, ck))


def _chat_tokens(root: Path, ck: Path) -> Path:
    """A tiny SFT dataset (reverse a word) tokenized with the imported model's tokenizer and template."""
    from chat_fixtures import write_chat_parquet

    rows = [
        [{"role": "user", "content": f"Reverse the word: {w}"}, {"role": "assistant", "content": w[::-1]}]
        for w in ("module", "python", "token", "model", "fox", "dog", "quick", "brown") * 4
    ]
    raw = write_chat_parquet(root / "raw", {"train": rows, "validation": rows[:8]})
    args = [
        "tokenize",
        "--data",
        str(raw),
        "--tokenizer",
        str(ck / "tokenizer.json"),
        "--out",
        str(root / "tok"),
    ]
    result = CliRunner().invoke(app, [*args, "--mode", "sft", "--template", "model", "--num-proc", "1"])
    assert result.exit_code == 0, result.output
    return root / "tok"


def _sft(imported: SimpleNamespace, out: Path, *extra: str):
    args = ["sft", "--init", str(imported.ck), "--data", str(imported.tokens), "--out", str(out), "--json"]
    quiet = ["--train.device=cpu", "--train.eval_every=0", "--train.sample_every=0", "--data.seq_len=64"]
    quiet += ["--telemetry.tensorboard=false", "--telemetry.panel=off"]
    return CliRunner().invoke(app, [*args, *quiet, *extra])


def _same_adapters(peft_model, ours, cfg) -> None:
    """Random non-zero A and B on PEFT's side, copied into llmctl's (q and k rows in llmctl's RoPE order)."""
    import torch

    from llmctl.config import LORA_HF_NAMES
    from llmctl.export.hf_arch import permute_from_rotate_half

    gen = torch.Generator().manual_seed(1)
    heads = {"q_proj": cfg.n_heads, "k_proj": cfg.kv_heads}
    with torch.no_grad():
        for hf_layer, layer in zip(peft_model.base_model.model.model.layers, ours.layers, strict=True):
            for hf_name, name in LORA_HF_NAMES.items():
                part = "self_attn" if hf_name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
                theirs = getattr(getattr(hf_layer, part), hf_name)
                mine = getattr(layer.attention if part == "self_attn" else layer.feed_forward, name)
                a, b = theirs.lora_A["default"].weight, theirs.lora_B["default"].weight
                a.copy_(torch.randn(a.shape, generator=gen) * 0.2)
                b.copy_(torch.randn(b.shape, generator=gen) * 0.2)
                mine.lora_a.copy_(a)
                mine.lora_b.copy_(
                    permute_from_rotate_half(b, heads[hf_name], cfg.head_size) if hf_name in heads else b
                )


def test_logits_and_adapter_gradients_equal_peft(imported: SimpleNamespace) -> None:
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmctl.config import LORA_HF_NAMES, LoRAConfig
    from llmctl.export.hf_arch import permute_from_rotate_half
    from llmctl.infer.checkpoint import open_checkpoint
    from llmctl.model.build import build_model
    from llmctl.model.lora import count_parameters

    hf = AutoModelForCausalLM.from_pretrained(imported.hf, dtype=torch.float32)
    peft_model = get_peft_model(
        hf, LoraConfig(r=4, lora_alpha=12, target_modules=HF_TARGETS, lora_dropout=0.0)
    )
    ck = open_checkpoint(imported.ck)
    cfg = ck.config.model
    lora = LoRAConfig(rank=4, alpha=12.0, targets=HF_TARGETS)  # PEFT's names, as synonyms of llmctl's
    ours = build_model(cfg, "cpu", lora=lora, base_state=ck.model_state())
    assert count_parameters(ours)[0] == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    _same_adapters(peft_model, ours, cfg)

    tokens = torch.randint(0, cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(2))
    targets = torch.randint(0, cfg.vocab_size, (2 * 12,), generator=torch.Generator().manual_seed(3))
    theirs_logits = peft_model(input_ids=tokens).logits.float()
    our_logits = ours(tokens)
    assert (our_logits - theirs_logits).abs().max().item() <= 1e-5
    F.cross_entropy(theirs_logits.flatten(0, 1), targets).backward()
    F.cross_entropy(our_logits.flatten(0, 1), targets).backward()

    heads = {"q_proj": cfg.n_heads, "k_proj": cfg.kv_heads}
    for hf_layer, layer in zip(peft_model.base_model.model.model.layers, ours.layers, strict=True):
        for hf_name, name in LORA_HF_NAMES.items():
            part = "self_attn" if hf_name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            theirs = getattr(getattr(hf_layer, part), hf_name)
            mine = getattr(layer.attention if part == "self_attn" else layer.feed_forward, name)
            grad_b = theirs.lora_B["default"].weight.grad
            if hf_name in heads:
                grad_b = permute_from_rotate_half(grad_b, heads[hf_name], cfg.head_size)
            torch.testing.assert_close(
                mine.lora_a.grad, theirs.lora_A["default"].weight.grad, rtol=1e-4, atol=1e-5
            )
            torch.testing.assert_close(mine.lora_b.grad, grad_b, rtol=1e-4, atol=1e-5)
    # The base is frozen: no gradient reaches it.
    assert all(p.grad is None for n, p in ours.named_parameters() if "lora_" not in n)


def test_bad_lora_input_is_refused_with_a_hint_and_nothing_written(imported: SimpleNamespace) -> None:
    runner = CliRunner()
    unknown = runner.invoke(app, ["config", "show", "--lora.rank=4", "--lora.targets=qproj"])
    assert unknown.exit_code == 2
    assert "error: unknown lora.targets name 'qproj'" in unknown.output and "hint: " in unknown.output
    assert "q_proj" in unknown.output
    out = imported.root / "refused"
    too_big = _sft(imported, out, "--lora.rank=40")
    # The imported model's k and v projections are 32 x 64: rank 40 is not low-rank there.
    assert too_big.exit_code == 2, too_big.output
    assert "error: lora.rank=40 exceeds the smaller dimension of wk (32 x 64)" in too_big.output
    assert "hint: choose --lora.rank <= 32" in too_big.output and not out.exists()
    scratch = runner.invoke(
        app, ["pretrain", "--data", str(imported.tokens), "--lora.rank=4", "--out", str(out)]
    )
    assert scratch.exit_code == 2 and "hint: add --init CKPT" in scratch.output and not out.exists()
    mean_rows = _sft(imported, out, "--lora.rank=4", "--untrained-rows", "mean")
    assert mean_rows.exit_code == 2, mean_rows.output
    assert "error: --untrained-rows mean changes the base's embedding rows" in mean_rows.output
    assert "hint: " in mean_rows.output and not out.exists()


def test_lora_sft_trains_only_adapters_and_lowers_the_loss(imported: SimpleNamespace) -> None:
    import torch

    from llmctl.infer.checkpoint import open_checkpoint

    out = imported.root / "sft"
    run = _sft(
        imported,
        out,
        "--lora.rank=8",
        "--lora.alpha=16",
        "--steps=8",
        "--optim.lr=1e-2",
        "--train.log_every=1",
    )
    assert run.exit_code == 0, run.output
    # 8 x (in + out) per projection: 2 layers x 8 x (128 + 96 + 96 + 128 + 160 + 160 + 160)
    assert "LoRA: training 14,848 of 102,720 parameters (14.45%); the base weights are frozen" in run.output
    saved = open_checkpoint(json.loads(run.stdout)["checkpoint"])
    assert saved.config.lora.rank == 8
    base, state = open_checkpoint(imported.ck).model_state(), saved.model_state()
    assert all(torch.equal(state[k], v) for k, v in base.items())  # the base weights did not move
    adapters = {k for k in state if k not in base}
    assert adapters and all(k.endswith((".lora_a", ".lora_b")) for k in adapters)
    assert all(state[k].abs().sum() > 0 for k in adapters if k.endswith(".lora_b"))
    losses = [
        r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r
    ]
    assert losses[-1] < 0.8 * losses[0], losses
    # generate loads base and adapters from the checkpoint (through open_checkpoint's load_model)
    gen = CliRunner().invoke(
        app, ["generate", str(saved.path), "--prompt", "Reverse", "-n", "4", "--temperature", "0"]
    )
    assert gen.exit_code == 0, gen.output
    _merged_export_equals_the_adapter_checkpoint(saved, imported.root)
    _peft_export_loads_onto_the_base(saved, imported)


def _merged_export_equals_the_adapter_checkpoint(saved, root: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    refused = CliRunner().invoke(app, ["export", str(saved.path), "--out", str(root / "plain")])
    assert refused.exit_code == 2 and "holds LoRA adapters" in refused.output
    assert "hint: add --merge" in refused.output and not (root / "plain").exists()
    merged = CliRunner().invoke(app, ["export", str(saved.path), "--out", str(root / "merged"), "--merge"])
    assert merged.exit_code == 0, merged.output
    hf = AutoModelForCausalLM.from_pretrained(root / "merged", dtype=torch.float32)
    tokens = torch.randint(
        0, saved.config.model.vocab_size, (1, 16), generator=torch.Generator().manual_seed(4)
    )
    with torch.no_grad():
        diff = (hf(input_ids=tokens).logits - saved.load_model()(tokens)).abs().max().item()
    assert diff < 1e-4, diff
    # Greedy text: the adapter checkpoint (llmctl), its merged HF export (transformers) and its merged GGUF
    # (llama.cpp, where installed) give the same 12 tokens.
    mine = _greedy_ids(saved, tokens[0, :6].tolist(), 12)
    with torch.no_grad():
        hf_ids = hf.generate(tokens[:, :6], max_new_tokens=12, do_sample=False, eos_token_id=None)[0, 6:]
    assert hf_ids.tolist() == mine
    gguf = CliRunner().invoke(
        app,
        [
            "export",
            str(saved.path),
            "--merge",
            "--format",
            "gguf",
            "--dtype",
            "float32",
            "--out",
            str(root / "m.gguf"),
        ],
    )
    assert gguf.exit_code == 0, gguf.output
    try:
        import llama_cpp
    except ImportError:
        return
    llm = llama_cpp.Llama(str(root / "m.gguf"), n_ctx=64, n_threads=1, n_batch=1, verbose=False)
    theirs = []
    for token in llm.generate(tokens[0, :6].tolist(), temp=0.0, top_k=1):
        theirs.append(token)
        if len(theirs) == len(mine):
            break
    assert theirs == mine


def _greedy_ids(saved, prompt: list[int], n: int) -> list[int]:
    """llmctl's greedy continuation of `prompt` by the adapter checkpoint, ignoring stop tokens."""
    from llmctl.infer.batch import Request, generate_batch
    from llmctl.infer.sampling import Sampling

    (result,) = generate_batch(saved.load_model(), [Request(prompt, n, Sampling(temperature=0.0))])
    return list(result.ids)


def _peft_export_loads_onto_the_base(saved, imported: SimpleNamespace) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = imported.root / "adapter"
    result = CliRunner().invoke(
        app, ["export", str(saved.path), "--format", "peft", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    base = AutoModelForCausalLM.from_pretrained(imported.hf, dtype=torch.float32)  # the import's source
    peft_model = PeftModel.from_pretrained(base, out)
    tokens = torch.randint(
        0, saved.config.model.vocab_size, (1, 16), generator=torch.Generator().manual_seed(5)
    )
    with torch.no_grad():
        diff = (peft_model(input_ids=tokens).logits - saved.load_model()(tokens)).abs().max().item()
    assert diff <= 1e-5, diff
    plain = CliRunner().invoke(
        app, ["export", str(imported.ck), "--format", "peft", "--out", str(imported.root / "no-adapter")]
    )
    assert plain.exit_code == 2 and "is not a LoRA run" in plain.output and "hint: " in plain.output
    assert not (imported.root / "no-adapter").exists()


def test_adapter_checkpoints_resume_exactly_and_refuse_a_changed_base(imported: SimpleNamespace) -> None:
    import shutil

    import torch
    from safetensors import safe_open

    from llmctl.infer.checkpoint import open_checkpoint

    base = imported.root / "base-copy"
    shutil.copytree(imported.ck, base)
    args = ["--lora.rank=4", "--steps=6", "--optim.lr=1e-2", "--checkpoint.every=3"]
    straight = _sft(SimpleNamespace(**{**vars(imported), "ck": base}), imported.root / "straight", *args)
    assert straight.exit_code == 0, straight.output
    ckpts = imported.root / "straight" / "checkpoints"
    with safe_open(ckpts / "step-000006" / "model.safetensors", "pt") as f:
        names = f.keys()
    assert names and all(k.endswith((".lora_a", ".lora_b")) for k in names)  # adapters only
    manifest = json.loads((ckpts / "step-000006" / "checkpoint.json").read_text())
    recorded = json.loads((base / "checkpoint.json").read_text())["files"]["model.safetensors"]["sha256"]
    assert manifest["base"] == {"path": str(base.resolve()), "sha256": recorded}
    # k steps, then a resume from step 3 for k more, equals 2k steps, bit for bit
    resumed = _sft(imported, imported.root / "resumed", *args, f"--checkpoint.resume={ckpts / 'step-000003'}")
    assert resumed.exit_code == 0, resumed.output
    a = open_checkpoint(ckpts / "step-000006").model_state()
    b = open_checkpoint(json.loads(resumed.stdout)["checkpoint"]).model_state()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Another model put where the base was: the adapters are refused, not applied to it.
    shutil.rmtree(base)
    other = make_hf_model(imported.root / "hf-other", "llama", seed=1)
    assert CliRunner().invoke(app, ["import", str(other), "--out", str(base)]).exit_code == 0
    gen = CliRunner().invoke(app, ["generate", str(ckpts / "step-000006"), "--prompt", "Hi", "-n", "2"])
    assert gen.exit_code == 2 and "has changed" in gen.output and "hint: put the original base" in gen.output
    restart = _sft(
        SimpleNamespace(**{**vars(imported), "ck": ckpts / "step-000003"}), imported.root / "again"
    )
    assert restart.exit_code == 2 and "is a LoRA run's checkpoint" in restart.output
    assert "--merge" in restart.output and not (imported.root / "again").exists()


def test_adapters_disabled_gives_the_base_models_logits() -> None:
    from llmctl.config import LoRAConfig, ModelConfig
    from llmctl.model.build import build_model
    from llmctl.model.lora import adapters_disabled

    torch.manual_seed(0)
    cfg = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, max_seq_len=16)
    base = build_model(cfg, "cpu")
    tuned = build_model(
        cfg, "cpu", lora=LoRAConfig(rank=4, targets=["all-linear"]), base_state=base.state_dict()
    )
    for name, p in tuned.named_parameters():
        if name.endswith("lora_b"):
            torch.nn.init.normal_(p)
    x = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        want = base(x)
        assert not torch.allclose(tuned(x), want)
        with adapters_disabled(tuned):
            torch.testing.assert_close(tuned(x), want, rtol=0, atol=1e-6)
        assert not torch.allclose(tuned(x), want)


def test_lora_with_muon_trains_the_adapter_matrices(imported: SimpleNamespace) -> None:
    out = imported.root / "muon"
    run = _sft(imported, out, "--lora.rank=8", "--steps=6", "--optim.name=muon", "--train.log_every=1")
    assert run.exit_code == 0, run.output
    # 7 projections x 2 layers x (A, B): every trainable tensor is an adapter matrix, all with Muon.
    assert (
        "optimizer: Muon on 28 adapter matrices (14,848 parameters, lr 0.02); nothing else trains"
        in run.output
    )
    losses = [
        r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r
    ]
    assert losses[-1] < 0.85 * losses[0], losses


def _nonzero_adapters(*models: torch.nn.Module) -> None:
    """The same random A and B in every model (B non-zero, so the adapters change the output)."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for params in zip(*(m.named_parameters() for m in models), strict=True):
            name, first = params[0]
            if name.endswith(("lora_a", "lora_b")):
                first.copy_(torch.randn(first.shape, generator=gen) * 0.1)
                for _, p in params[1:]:
                    p.copy_(first)


def test_qlora_forward_and_gradients_equal_lora_on_the_dequantized_base(imported: SimpleNamespace) -> None:
    pytest.importorskip("torchao")
    from llmctl.config import LoRAConfig
    from llmctl.infer.checkpoint import open_checkpoint
    from llmctl.model.build import build_model
    from llmctl.model.quant import dequantized_base, is_quantized

    ck = open_checkpoint(imported.ck)
    cfg, base = ck.config.model, ck.model_state()
    qlora = build_model(cfg, "cpu", lora=LoRAConfig(rank=4, quantize="nf4"), base_state=base)
    lora = build_model(cfg, "cpu", lora=LoRAConfig(rank=4), base_state=dequantized_base(base))
    quantized = [n for n, p in qlora.named_parameters() if is_quantized(p)]
    assert len(quantized) == 7 * cfg.n_layers and all(
        not qlora.get_parameter(n).requires_grad for n in quantized
    )
    wk = qlora.layers[0].attention.wk.weight
    assert wk.quantized_data.numel() == wk.numel() // 2  # two 4-bit codes per byte
    assert not torch.equal(lora.layers[0].attention.wk.weight, base["layers.0.attention.wk.weight"])
    _nonzero_adapters(qlora, lora)
    tokens = torch.randint(0, cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(2))
    a, b = qlora(tokens), lora(tokens)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    a.square().mean().backward()
    b.square().mean().backward()
    for (name, p), (_, q) in zip(qlora.named_parameters(), lora.named_parameters(), strict=True):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_qlora_sft_lowers_the_loss_resumes_exactly_and_merges(imported: SimpleNamespace) -> None:
    pytest.importorskip("torchao")
    from transformers import AutoModelForCausalLM

    from llmctl.infer.checkpoint import open_checkpoint

    out = imported.root / "qlora"
    args = ["--lora.rank=8", "--lora.quantize=nf4", "--steps=6", "--optim.lr=1e-2", "--checkpoint.every=3"]
    run = _sft(imported, out, *args, "--train.log_every=1")
    assert run.exit_code == 0, run.output
    assert (
        "QLoRA: training 14,848 of 102,720 parameters (14.45%); the base weights are frozen, the block "
        in run.output
    )
    losses = [
        r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r
    ]
    assert losses[-1] < 0.85 * losses[0], losses
    saved = open_checkpoint(json.loads(run.stdout)["checkpoint"])
    assert saved.config.lora.quantize == "nf4" and saved.manifest["base"]["path"] == str(
        imported.ck.resolve()
    )
    assert all(k.endswith((".lora_a", ".lora_b")) for k in saved.weight_shapes())  # adapters only
    resumed = _sft(
        imported, imported.root / "qlora-resumed", *args, f"--resume={out / 'checkpoints' / 'step-000003'}"
    )
    assert resumed.exit_code == 0, resumed.output
    again = open_checkpoint(json.loads(resumed.stdout)["checkpoint"]).model_state()
    assert all(torch.equal(again[k], v) for k, v in saved.model_state().items())
    gen = CliRunner().invoke(
        app, ["generate", str(saved.path), "--prompt", "Reverse", "-n", "4", "--temperature", "0"]
    )
    assert gen.exit_code == 0, gen.output
    # --merge folds the adapters into the 4-bit base's values: transformers then computes what llmctl did.
    merged = CliRunner().invoke(
        app, ["export", str(saved.path), "--out", str(imported.root / "q-merged"), "--merge"]
    )
    assert merged.exit_code == 0, merged.output
    hf = AutoModelForCausalLM.from_pretrained(imported.root / "q-merged", dtype=torch.float32)
    tokens = torch.randint(
        0, saved.config.model.vocab_size, (1, 16), generator=torch.Generator().manual_seed(4)
    )
    with torch.no_grad():
        diff = (hf(input_ids=tokens).logits - saved.load_model()(tokens)).abs().max().item()
    assert diff < 1e-4, diff


def test_qlora_bad_input_is_refused_with_a_hint_and_nothing_written(
    imported: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    runner = CliRunner()
    no_rank = runner.invoke(app, ["config", "show", "--lora.quantize=nf4"])
    assert (
        no_rank.exit_code == 2
        and "lora.rank is 0" in no_rank.output
        and "hint: add --lora.rank" in no_rank.output
    )
    other = runner.invoke(app, ["config", "show", "--lora.rank=4", "--lora.quantize=int4"])
    assert other.exit_code == 2 and "lora.quantize must be one of none, nf4" in other.output
    fsdp = runner.invoke(
        app, ["config", "show", "--lora.rank=4", "--lora.quantize=nf4", "--dist.strategy=fsdp"]
    )
    assert fsdp.exit_code == 2 and "does not run under dist.strategy=fsdp" in fsdp.output
    assert "hint: use --dist.strategy=ddp" in fsdp.output
    # torchao missing: an import of it fails as it would in an environment without it.
    monkeypatch.setitem(sys.modules, "torchao", None)
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    out = imported.root / "no-torchao"
    missing = _sft(imported, out, "--lora.rank=4", "--lora.quantize=nf4")
    assert missing.exit_code == 2, missing.output
    assert "error: lora.quantize=nf4 needs torchao" in missing.output
    assert "hint: pip install 'llmctl[qlora]'" in missing.output and not out.exists()


def test_lora_sft_of_an_llmctl_model_exported_and_imported_lowers_the_validation_loss(tmp_path: Path) -> None:
    """The repo's example instructions, a tiny model llmctl pretrained on them, out to Hugging Face format and
    back: LoRA SFT lowers its validation loss (examples/lora_vs_full.sh at full size, docs/lora.md)."""
    from chat_fixtures import (
        conversation_text,
        pretrain_tiny,
        torch_threads,
        train_chat_tokenizer,
        write_chat_parquet,
    )

    lines = (
        (Path(__file__).resolve().parents[1] / "examples" / "data" / "instructions.jsonl")
        .read_text()
        .splitlines()
    )
    rows = [json.loads(line)["messages"] for line in lines[:160]]
    texts = [conversation_text(r) for r in rows]
    runner = CliRunner()
    with torch_threads(1):
        init = pretrain_tiny(tmp_path, train_chat_tokenizer(tmp_path / "tok.json", texts), texts, steps=80)
        for args in (
            ["export", str(init), "--format", "hf", "--out", str(tmp_path / "hf")],
            ["import", str(tmp_path / "hf"), "--out", str(tmp_path / "ck")],
        ):
            assert (result := runner.invoke(app, args)).exit_code == 0, result.output
        imported = SimpleNamespace(ck=tmp_path / "ck", tokens=tmp_path / "tok")
        raw = write_chat_parquet(tmp_path / "raw", {"train": rows[:128], "validation": rows[128:]})
        tok = ["tokenize", "--data", str(raw), "--tokenizer", str(tmp_path / "ck" / "tokenizer.json")]
        tok += ["--out", str(imported.tokens), "--mode", "sft", "--template", "model", "--num-proc", "1"]
        assert (result := runner.invoke(app, tok)).exit_code == 0, result.output
        lora = ["--lora.rank=8", "--train.eval_batches=2", "--optim.warmup_steps=0"]
        # One step at a learning rate of 1e-12 leaves the adapters at zero: the base's validation loss.
        before = _sft(
            imported,
            tmp_path / "before",
            *lora,
            "--steps=1",
            "--optim.lr=1e-12",
            "--optim.min_lr=0",
            "--train.eval_every=1",
        )
        after = _sft(
            imported, tmp_path / "after", *lora, "--steps=12", "--optim.lr=3e-3", "--train.eval_every=12"
        )
    assert before.exit_code == 0 and after.exit_code == 0, before.output + after.output
    loss = [json.loads(r.stdout)["eval"]["loss"] for r in (before, after)]
    assert loss[1] < loss[0] - 0.2, loss  # 4.27 -> 3.90 when written


def test_the_init_weights_are_released_before_training(imported: SimpleNamespace, monkeypatch) -> None:
    """Only the model holds the weights once it is built: the --init state dict read for it (and, with
    QLoRA, the fp32 projections it quantizes) is freed before the first step, so a run's host memory is
    the model's, not the model's plus the checkpoint's (benchmarks/lora_memory.py relies on it)."""
    import gc
    import weakref

    from llmctl.engine.trainer import Trainer
    from llmctl.infer.checkpoint import OpenCheckpoint

    read, fit = OpenCheckpoint.model_state, Trainer.fit
    held: list[weakref.ref] = []
    alive: list[list[str]] = []

    def model_state(self):
        state = read(self)
        held.extend(weakref.ref(t) for t in state.values())
        return state

    def training(self, *args, **kwargs):
        gc.collect()
        alive.append([str(tuple(r().shape)) for r in held if r() is not None])
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(OpenCheckpoint, "model_state", model_state)
    monkeypatch.setattr(Trainer, "fit", training)
    for i, extra in enumerate(([], ["--lora.rank=4"], ["--lora.rank=4", "--lora.quantize=nf4"])):
        run = _sft(imported, imported.root / f"released-{i}", "--steps=1", *extra)
        assert run.exit_code == 0, run.output
    assert len(held) > 0 and alive == [[], [], []], alive


def test_a_lora_checkpoint_copies_only_its_adapters_to_the_host() -> None:
    """The frozen base is never copied for a LoRA save (on a GPU that was a full host copy per checkpoint):
    a base tensor that cannot be copied at all (on the meta device) is simply not touched."""
    import torch

    from llmctl.config import ModelConfig
    from llmctl.engine.checkpoint import model_state_to_save
    from llmctl.model.lora import is_adapter

    state = {
        "layers.0.attention.wq.weight": torch.empty(8, 8, device="meta"),
        "layers.0.attention.wq.lora_a": torch.ones(2, 8),
        "layers.0.attention.wq.lora_b": torch.zeros(8, 2),
    }
    saved = model_state_to_save(state, ModelConfig(), keep=is_adapter)
    assert sorted(saved) == ["layers.0.attention.wq.lora_a", "layers.0.attention.wq.lora_b"]
