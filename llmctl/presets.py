"""Named model shapes: training presets and the exact shapes of published models (for planning).

Pure data, no torch: `flops estimate` and `budget` read these without loading PyTorch.
Published shapes come from each model's released `config.json` / `params.json`.
"""

from __future__ import annotations

from typing import Any

# Each entry is a partial ModelConfig: fields left out take ModelConfig's defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # About 1M parameters: the unit-test model.
    "tiny": dict(vocab_size=8192, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32, max_seq_len=256),
    "10m": dict(vocab_size=8192, dim=256, n_layers=6, n_heads=4, n_kv_heads=4, multiple_of=64, max_seq_len=512),
    "50m": dict(vocab_size=32768, dim=512, n_layers=8, n_heads=8, n_kv_heads=8, max_seq_len=1024),
    # GPT-2 small's body (12 x 768, 12 heads) in Llama form.
    "124m": dict(vocab_size=50304, dim=768, n_layers=12, n_heads=12, n_kv_heads=12, max_seq_len=1024),
    "350m": dict(vocab_size=50304, dim=1024, n_layers=24, n_heads=16, n_kv_heads=16, max_seq_len=1024),
    "1b": dict(vocab_size=50304, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, max_seq_len=2048),
    # Published shapes, for planning.
    "llama2-7b": dict(
        vocab_size=32000, dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, multiple_of=256,
        max_seq_len=4096, rope_theta=10000.0, norm_eps=1e-5,
    ),
    "llama3-8b": dict(
        vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, multiple_of=1024,
        ffn_dim_multiplier=1.3, max_seq_len=8192, rope_theta=500000.0, norm_eps=1e-5,
    ),
    "llama3.2-1b": dict(
        vocab_size=128256, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, multiple_of=256,
        ffn_dim_multiplier=1.5, tied_embeddings=True, max_seq_len=131072, rope_theta=500000.0, norm_eps=1e-5,
    ),
    "qwen2.5-0.5b": dict(
        vocab_size=151936, dim=896, n_layers=24, n_heads=14, n_kv_heads=2, ffn_dim=4864,
        tied_embeddings=True, qkv_bias=True, max_seq_len=32768, rope_theta=1000000.0, norm_eps=1e-6,
    ),
}


def preset_names() -> list[str]:
    """All preset names, in the order above."""
    return list(PRESETS)
