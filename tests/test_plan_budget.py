"""The GPU table, `llmctl budget` both ways, and the training memory model (llmctl/plan/)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from llmctl.cli.app import app
from llmctl.config import ModelConfig, model_from_preset
from llmctl.errors import LlmctlError
from llmctl.plan.budget import chinchilla_loss, compute_optimal, plan_budget
from llmctl.plan.flops import flops_per_token, param_counts
from llmctl.plan.hardware import GPUS, detect_gpu, gpu_by_name, peak_flops
from llmctl.plan.memory import GIB, activation_bytes_per_token, fused_weight_params, training_memory

runner = CliRunner()


@pytest.mark.parametrize(
    ("device_name", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "H100-SXM"),
        ("NVIDIA H100 PCIe", "H100-PCIe"),
        ("NVIDIA H100 NVL", "H100-NVL"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA A100 80GB PCIe", "A100-PCIe-80GB"),
        ("NVIDIA A100-PCIE-40GB", "A100-PCIe-40GB"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA GeForce RTX 4090", "RTX-4090"),
        ("NVIDIA GeForce RTX 3090", "RTX-3090"),
        ("Tesla V100-SXM2-16GB", "V100-SXM2-16GB"),
        ("Tesla V100-PCIE-32GB", "V100-PCIe-32GB"),
        ("Tesla T4", "T4"),
    ],
)
def test_detect_gpu_from_torch_device_names(device_name: str, expected: str) -> None:
    spec = detect_gpu(device_name)
    assert spec is not None and spec.name == expected


@pytest.mark.parametrize(
    "device_name",
    [
        "NVIDIA GeForce RTX 3090 Ti",
        "NVIDIA GeForce RTX 4090 Laptop GPU",
        "NVIDIA L40",
        "NVIDIA GH200 480GB",
        "Tesla V100S-PCIE-32GB",
        "NVIDIA A100",
        "NVIDIA B200",
        "cpu",
        "",
    ],
)
def test_unknown_devices_are_none_never_a_guess(device_name: str) -> None:
    assert detect_gpu(device_name) is None


def test_peaks_are_dense_and_in_flop_per_second() -> None:
    # Datasheets print these with 2:4 sparsity (L4 242, H100 SXM 1,979, A100 624 TFLOP/s); dense is half.
    assert peak_flops(gpu_by_name("L4"), "bf16") == 121e12
    assert peak_flops(gpu_by_name("H100"), "bfloat16") == 989.5e12
    assert peak_flops(gpu_by_name("A100-80GB"), "torch.float16") == 312e12
    assert peak_flops(gpu_by_name("A100-40GB"), "tf32") == 156e12
    assert peak_flops(gpu_by_name("H100-SXM"), "fp8") == 1979e12
    assert peak_flops(gpu_by_name("RTX-4090"), "bf16") == 165.2e12
    assert peak_flops(gpu_by_name("A100"), "fp32") == 19.5e12
    # No BF16 tensor cores before Ampere, no FP8 before Ada/Hopper: None, so MFU reads n/a.
    assert peak_flops(gpu_by_name("T4"), "bf16") is None
    assert peak_flops(gpu_by_name("V100"), "bf16") is None
    assert peak_flops(gpu_by_name("A100"), "fp8") is None
    assert peak_flops(gpu_by_name("T4"), "auto") == 65e12


def test_table_covers_the_required_gpus() -> None:
    names = {g.name for g in GPUS}
    for required in (
        "H200",
        "H100-SXM",
        "H100-PCIe",
        "A100-40GB",
        "A100-80GB",
        "L40S",
        "L4",
        "A10G",
        "RTX-4090",
        "RTX-3090",
        "V100-SXM2-32GB",
        "T4",
    ):
        assert required in names
    for g in GPUS:
        assert g.memory_gib > 0 and g.tdp_w > 0 and g.fp32 > 0 and g.source


def test_gpu_names_are_forgiving_and_unknown_ones_list_the_table() -> None:
    assert gpu_by_name("h100").name == "H100-SXM"
    assert gpu_by_name("a100 80gb").name == "A100-80GB"
    assert gpu_by_name("rtx4090").name == "RTX-4090"
    assert gpu_by_name("NVIDIA A100-SXM4-40GB").name == "A100-40GB"
    with pytest.raises(LlmctlError) as info:
        gpu_by_name("Z100")
    assert "unknown GPU 'Z100'" in info.value.message
    assert "H100-SXM" in info.value.hint and "T4" in info.value.hint


def test_forward_mode_reproduces_the_notes_back_of_envelope() -> None:
    """One L4 for 24 hours at 100 tokens per parameter (seed notes, "Orders of magnitude").

    The notes: 2.42e14 FLOP/s (the L4's with-sparsity fp16 figure) x 86,400 s = "2x10^19" FLOPs, then
    "170M params, 17B tokens". The same arithmetic gives 2.09e19 and sqrt(2.09e19 / 600) = 187M, 18.7B;
    at the dense peak and MFU 0.4 the budget is 4.18e18 FLOPs: 83.5M parameters and 8.35B tokens.
    """
    plan = plan_budget(gpu="L4", hours=24, tokens_per_param=100, mfu=0.4)
    assert plan.compute_flops == pytest.approx(121e12 * 86_400 * 0.4)  # 4.18e18
    assert plan.optimal_params == pytest.approx(math.sqrt(121e12 * 86_400 * 0.4 / 600))  # 83.5M
    assert plan.optimal_tokens == pytest.approx(100 * plan.optimal_params)
    assert 6 * plan.optimal_params * plan.optimal_tokens == pytest.approx(plan.compute_flops)
    headline, dense, ours = plan.peaks
    assert headline.flops == pytest.approx(2.42e14 * 86_400)  # 2.09e19, the notes' "2x10^19"
    assert headline.params == pytest.approx(186.7e6, rel=1e-3)
    assert headline.tokens == pytest.approx(18.67e9, rel=1e-3)
    assert dense.flops == pytest.approx(headline.flops / 2)
    assert ours.flops == pytest.approx(plan.compute_flops)


def test_forward_mode_shape_is_sane_and_fills_the_budget() -> None:
    plan = plan_budget(gpu="L4", hours=24, tokens_per_param=100, mfu=0.4)
    cfg = plan.model
    assert cfg.dim % 64 == 0 and cfg.head_size in (64, 128)
    assert 32 <= cfg.dim / cfg.n_layers <= 128
    assert plan.n == param_counts(cfg).matmul
    assert plan.tokens == pytest.approx(100 * plan.n)
    # The shape is sized with attention included, so its PaLM cost at MFU 0.4 takes the 24 hours.
    palm = next(c for c in plan.costs if c.convention.startswith("PaLM"))
    assert palm.flops == pytest.approx(flops_per_token(cfg, 1024).train_palm * plan.tokens)
    assert palm.wall_hours_at_mfu == pytest.approx(24, rel=0.06)
    assert plan.memory.fits


def test_inverse_mode_from_a_preset() -> None:
    plan = plan_budget(gpu="A100-80GB", model="124m", tokens="2.5B", mfu=0.4)
    fl = flops_per_token(model_from_preset("124m"), 1024)
    six_nd, palm = plan.costs
    assert six_nd.flops == pytest.approx(6 * 123_568_128 * 2.5e9)
    assert palm.flops == pytest.approx(fl.train_palm * 2.5e9)
    assert palm.gpu_hours_at_peak == pytest.approx(palm.flops / 312e12 / 3600)
    assert palm.gpu_hours_at_mfu == pytest.approx(palm.gpu_hours_at_peak / 0.4)
    assert plan.tokens_per_param == pytest.approx(2.5e9 / 123_568_128)


def test_inverse_mode_from_a_parameter_count_matches_the_notes() -> None:
    # The notes' run: 170M parameters x 17B tokens; 6ND = 1.734e19 FLOPs.
    plan = plan_budget(gpu="L4", params="170M", tokens_per_param=100, num_gpus=2, mfu=0.5)
    six_nd = plan.costs[0]
    assert plan.tokens == pytest.approx(17e9)
    assert six_nd.flops == pytest.approx(6 * 170e6 * 17e9)
    assert six_nd.gpu_hours_at_mfu == pytest.approx(6 * 170e6 * 17e9 / (121e12 * 0.5) / 3600)  # 79.6 h
    assert six_nd.wall_hours_at_mfu == pytest.approx(six_nd.gpu_hours_at_mfu / 2)
    assert abs(param_counts(plan.model).matmul / 170e6 - 1) < 0.02


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpu": "L4", "hours": -1}, "--hours must be positive"),
        ({"gpu": "L4", "hours": 1, "mfu": 1.5}, "--mfu must be in (0, 1]"),
        ({"gpu": "L4"}, "nothing to plan"),
        ({"gpu": "L4", "hours": 1, "model": "124m"}, "give one of them"),
        ({"gpu": "T4", "hours": 1, "dtype": "bf16"}, "T4 has no bf16 tensor cores"),
        ({"gpu": "L4", "model": "124m", "tokens": "lots"}, "--tokens must be a number"),
        ({"gpu": "L4", "model": "125m"}, "unknown model preset '125m'"),
    ],
)
def test_budget_rejects_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(
        LlmctlError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        plan_budget(**kwargs)


def test_compute_optimal_and_chinchilla_fit() -> None:
    n, d = compute_optimal(6 * 1e9 * 20e9, 20)
    assert n == pytest.approx(1e9) and d == pytest.approx(20e9)
    # 1.69 + 406.4 / 1e9^0.34 + 410.7 / 2e10^0.28 = 1.69 + 0.3540 + 0.5362
    assert chinchilla_loss(1e9, 20e9) == pytest.approx(2.5800, abs=1e-4)


def test_memory_states_per_parameter() -> None:
    cfg = model_from_preset("124m")
    n = param_counts(cfg).total
    mixed = training_memory(cfg, 1024, "bf16", 24)
    # bf16 copies 2 + fp32 master 4 + fp32 gradients 4 + AdamW moments 8 bytes per parameter.
    assert (mixed.weights_bytes, mixed.master_bytes, mixed.grads_bytes, mixed.optimizer_bytes) == (
        2 * n,
        4 * n,
        4 * n,
        8 * n,
    )
    assert mixed.bytes_per_param == 18
    fp32 = training_memory(cfg, 1024, "fp32", 24)
    assert fp32.master_bytes == 0 and fp32.weights_bytes == 4 * n + 4 * fused_weight_params(cfg)
    assert mixed.usable_bytes == int((24 * GIB - GIB) * 0.95)
    room = mixed.usable_bytes - mixed.states_bytes
    assert mixed.max_micro_batch == room // mixed.activation_bytes_per_seq
    assert mixed.max_micro_batch_ckpt == room // mixed.activation_bytes_per_seq_ckpt
    assert mixed.max_micro_batch_ckpt > mixed.max_micro_batch >= 1
    assert mixed.verdict.startswith("fits: micro-batch up to")


def test_memory_verdicts_when_it_does_not_fit() -> None:
    states_too_big = training_memory(model_from_preset("llama3-8b"), 8192, "bf16", 24)
    assert not states_too_big.fits and "alone need" in states_too_big.verdict
    # One GPU cannot shard: the verdict never sends its owner to buy more; on eight it names FSDP.
    assert "fsdp" not in states_too_big.verdict.lower() and "more GPUs" not in states_too_big.verdict
    on_eight = training_memory(model_from_preset("llama3-8b"), 8192, "bf16", 24, num_gpus=8)
    assert "FSDP over the 8 GPUs (--dist.strategy=fsdp)" in on_eight.verdict
    cfg = model_from_preset("124m")
    # A size where checkpointing is the difference, then one where nothing helps.
    est = training_memory(cfg, 4096, "bf16", 8)
    assert est.max_micro_batch == 0 and est.max_micro_batch_ckpt >= 1
    assert "only with activation checkpointing" in est.verdict
    hopeless = training_memory(cfg, 65536, "bf16", 8)
    assert not hopeless.fits and "even with activation checkpointing" in hopeless.verdict
    assert "FSDP" not in hopeless.verdict


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_activation_model_matches_what_autograd_saves(dtype: str) -> None:
    """Sum the bytes of every tensor autograd keeps for backward (CPU autocast stands in for CUDA's)."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from llmctl.model.llama import Transformer

    cfg = ModelConfig(
        vocab_size=500, dim=128, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=320, max_seq_len=64
    )
    batch, seq = 3, 48  # 144 tokens: no parameter has a dimension of that size
    model = Transformer(cfg)
    fused = [
        (cfg.n_heads * cfg.head_size + 2 * cfg.kv_heads * cfg.head_size, cfg.dim),
        (2 * cfg.hidden_dim, cfg.dim),
    ]
    shapes = [tuple(p.shape) for p in model.parameters()] + fused  # q|k|v and w1|w3 run as one matmul each
    param_shapes = {s for shape in shapes for s in (shape, shape[::-1])}
    fused_shapes = {s for shape in fused for s in (shape, shape[::-1])}
    owned = {p.untyped_storage().data_ptr() for p in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        # autocast's (transposed) casts, and the concatenated q|k|v and w1|w3 weights (weights, not activations)
        is_weight_copy = (t.dtype == torch.bfloat16 and tuple(t.shape) in param_shapes) or tuple(
            t.shape
        ) in fused_shapes
        if t.untyped_storage().data_ptr() not in owned and not is_weight_copy and t.dim() > 0:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    tokens = torch.randint(0, cfg.vocab_size, (batch, seq))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            logits = model(tokens)
        F.cross_entropy(logits.view(-1, cfg.vocab_size), tokens.view(-1))
    measured = sum(saved.values()) - 8 * batch * seq  # less the int64 token ids (the targets here too)
    measured -= (
        8 * seq * cfg.head_size // 2
    )  # and RoPE's complex64 rotation table, one per batch (not per token)
    act = activation_bytes_per_token(cfg, dtype)
    # The model's logits term adds 8 B per vocabulary entry for the gradients at the start of backward.
    predicted = (cfg.n_layers * act.per_layer + act.final + act.logits - 8 * cfg.vocab_size) * batch * seq
    assert measured == predicted


def test_checkpointing_keeps_block_inputs_and_one_block() -> None:
    cfg = model_from_preset("124m")
    act = activation_bytes_per_token(cfg, "bf16")
    assert act.layer_input == 4 * 768  # the fp32 residual stream
    assert act.checkpointed(12) == 12 * act.layer_input + act.per_layer + act.final + act.logits
    est = training_memory(cfg, 1024, "bf16", 80)
    assert est.activation_bytes_per_seq == act.full(12) * 1024
    assert est.activation_bytes_per_seq_ckpt == act.checkpointed(12) * 1024
    tied = training_memory(replace(cfg, tied_embeddings=True), 1024, "bf16", 80)
    assert tied.states_bytes == est.states_bytes - 18 * 50_304 * 768


def test_budget_json_and_list_gpus() -> None:
    result = runner.invoke(
        app, ["budget", "--gpu", "L4", "--hours", "24", "--tokens-per-param", "100", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["mode"] == "forward"
    assert doc["compute_flops"] == pytest.approx(121e12 * 86_400 * 0.4)
    assert doc["gpu"]["peak_flops_per_gpu"] == 121e12
    for key in (
        "optimal_params",
        "optimal_tokens",
        "params_total",
        "tokens",
        "costs",
        "memory",
        "chinchilla_loss",
    ):
        assert key in doc
    assert doc["memory"]["fits"] is True and isinstance(doc["memory"]["max_micro_batch"], int)
    listed = runner.invoke(app, ["budget", "--list-gpus", "--json"])
    assert listed.exit_code == 0
    gpus = {g["name"]: g for g in json.loads(listed.stdout)}
    assert gpus["L4"]["tflops_dense"]["bf16"] == 121 and gpus["T4"]["tflops_dense"]["bf16"] is None


def test_budget_tables_show_the_notes_comparison_and_verdict() -> None:
    result = runner.invoke(app, ["budget", "--gpu", "L4", "--hours", "24", "--tokens-per-param", "100"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    for phrase in (
        "2.09e19",
        "186.7M",
        "18.67B",
        "4.18e18",
        "83.48M",
        "datasheet headline (2:4 sparsity)",
        "verdict: fits",
        "fp32 master weights",
        "Chinchilla fit",
    ):
        assert phrase in text
