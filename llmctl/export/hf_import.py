"""`llmctl import`: a Hugging Face model (Hub or local directory) as an ordinary llmctl checkpoint directory.

    result = import_model("hf:HuggingFaceTB/SmolLM2-135M", "models/smollm2")
    result.max_logit_diff      # transformers vs llmctl on a fixed prompt, float32

    models/smollm2/
        model.safetensors      weights under llmctl's names, in the source's dtype (bf16 stays bf16)
        tokenizer.json         the model's tokenizer, post-processor included (BOS where the model wants one)
        tokenizer_config.json  copied when present (chat template, special tokens)
        chat_template.jinja    the chat template, when the model has one
        generation_config.json copied when present
        checkpoint.json        step 0, the model config, tokenizer fingerprint, prompt and chat conventions,
                               and provenance: repo, revision, resolved commit, SHA-256 of every source file

It has no optimizer state: `pretrain --init` and `sft --init` start from it; `--resume` cannot.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl.errors import LlmctlError

if TYPE_CHECKING:
    import torch

    from llmctl.config import ModelConfig

SOURCE_KIND = "hf-import"
PARITY_LIMIT = 1e-3
PARITY_PROMPT = "The quick brown fox jumps over the lazy dog. 1 + 2 = 3; def f(x): return x * 2\n"


@dataclass
class ImportResult:
    """What `import_model` wrote and measured."""

    out: str
    source: str
    repo: str | None
    commit: str | None
    architecture: str
    n_params: int
    dtype: str
    vocab_size: int
    tied_embeddings: bool
    rope_scaling: str
    add_bos: bool
    """The tokenizer's post-processor puts BOS before every prompt."""
    stop_ids: list[int]
    chat_template: bool
    max_logit_diff: float | None
    """None with --no-verify or without transformers."""
    verify_note: str | None
    untrained_tokens: list[str] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)


def load_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of model.safetensors or of the shards model.safetensors.index.json lists."""
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    else:
        shards = sorted(p.name for p in path.glob("*.safetensors"))
    if not shards:
        raise LlmctlError(
            f"{path} holds no safetensors weights",
            "import reads only *.safetensors (pickled pytorch_model.bin files are never loaded); convert it first",
        )
    state: dict[str, torch.Tensor] = {}
    for name in shards:
        if not (path / name).is_file():
            raise LlmctlError(f"shard {name} listed in {index.name} is missing", "download the model again")
        state.update(load_file(str(path / name)))
    return state


def parity(path: Path, state: dict[str, torch.Tensor], cfg: ModelConfig, ids: list[int]) -> float:
    """Max |logit difference| between transformers' model from `path` and llmctl's with `state`, float32."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from llmctl.model.llama import Transformer

    hf_logging.disable_progress_bar()

    try:
        hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    except TypeError:  # transformers < 4.56 spells it torch_dtype
        hf = AutoModelForCausalLM.from_pretrained(str(path), torch_dtype=torch.float32)
    hf.eval()
    model = Transformer(cfg)
    full = dict(state)
    if cfg.tied_embeddings:
        full["output.weight"] = full["tok_embeddings.weight"]
    model.load_state_dict({k: v.float() for k, v in full.items()})
    model.eval()
    x = torch.tensor([ids[: cfg.max_seq_len]], dtype=torch.long)
    with torch.no_grad():
        ours = model(x)
        theirs = hf(x).logits.float()
    return float((ours - theirs).abs().max())


def import_model(source: str, out: str | Path, *, verify: bool = True, force: bool = False) -> ImportResult:
    """Import a HF model (`hf:owner/name[@rev]` or a local directory) into the checkpoint directory `out`."""
    from safetensors.torch import save_file

    from llmctl.config import Config, DataConfig, to_dict
    from llmctl.export.hf_arch import from_hf_state_dict, model_config_from_hf
    from llmctl.export.hf_source import fetch_model_source
    from llmctl.files import atomic_path, atomic_write_json, file_sha256
    from llmctl.infer.checkpoint import FORMAT_NAME, FORMAT_VERSION, MANIFEST, MODEL_FILE
    from llmctl.model.untrained import template_token_ids, untrained_rows
    from llmctl.tokenizer.core import load_tokenizer
    from llmctl.tokenizer.template import TemplateChat, adds_bos, read_chat_template, stop_ids_for

    out = Path(out)
    if out.exists() and not force:
        raise LlmctlError(f"{out} already exists", "choose another --out or pass --force to replace it")
    src = fetch_model_source(source)
    cfg, arch = model_config_from_hf(json.loads((src.path / "config.json").read_text(encoding="utf-8")))
    if not (src.path / "tokenizer.json").is_file():
        raise LlmctlError(
            f"{source} has no tokenizer.json", "import needs a Hugging Face fast tokenizer (tokenizer.json)"
        )
    tok = load_tokenizer(src.path / "tokenizer.json")
    if tok.vocab_size > cfg.vocab_size:
        raise LlmctlError(
            f"the tokenizer has {tok.vocab_size} ids but the model {cfg.vocab_size} rows",
            "the model's files disagree",
        )
    state = {k: v.contiguous() for k, v in from_hf_state_dict(load_hf_weights(src.path), cfg).items()}
    dtype = str(state["tok_embeddings.weight"].dtype).removeprefix("torch.")
    template = read_chat_template(src.path)
    chat = TemplateChat.from_dir(src.path, tok)
    stops = stop_ids_for(src.path, tok, template)
    bos = adds_bos(tok)
    untrained = untrained_rows(state, cfg, template_token_ids(tok, template, stops))

    diff, note = None, None
    if verify:
        try:
            import transformers  # noqa: F401
        except ImportError:
            note = "transformers is not installed: parity not checked"
        else:
            ids = tok.backend.encode(PARITY_PROMPT, add_special_tokens=True).ids  # type: ignore[attr-defined]
            diff = parity(src.path, state, cfg, ids)
            if diff > PARITY_LIMIT:
                raise LlmctlError(
                    f"llmctl's model disagrees with transformers on {source}: max logit difference {diff:.2e} > {PARITY_LIMIT:g}",
                    "this architecture variant is not supported faithfully; please report it (--no-verify skips the check)",
                )
    else:
        note = "--no-verify: parity not checked"

    n_params = sum(v.numel() for k, v in state.items() if not (cfg.tied_embeddings and k == "output.weight"))
    config = Config(model=cfg, data=DataConfig(seq_len=min(DataConfig.seq_len, cfg.max_seq_len)))
    with atomic_path(out, directory=True) as tmp:
        save_file(
            {k: v for k, v in state.items() if not (cfg.tied_embeddings and k == "output.weight")},
            str(tmp / MODEL_FILE),
            metadata={"format": "pt"},
        )
        names = [MODEL_FILE, "tokenizer.json"]
        shutil.copyfile(src.path / "tokenizer.json", tmp / "tokenizer.json")
        for name in ("tokenizer_config.json", "generation_config.json", "special_tokens_map.json"):
            if (src.path / name).is_file():
                shutil.copyfile(src.path / name, tmp / name)
                names.append(name)
        if template is not None:
            (tmp / "chat_template.jinja").write_text(template, encoding="utf-8")
            names.append("chat_template.jinja")
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "step": 0,
            "tokens": 0,
            "saved_at": time.time(),
            "config": to_dict(config),
            "tokenizer": {"fingerprint": tok.fingerprint, "path": "tokenizer.json", "kind": tok.kind},
            "prompt": {"add_bos": bos, "bos_id": tok.bos_id if bos else None},
            "chat": chat.describe(stops) if chat is not None else {"template_text": None, "stop_ids": stops},
            "source": {
                "kind": SOURCE_KIND,
                "source": source,
                "repo": src.repo,
                "revision": src.revision,
                "commit": src.commit,
                "architecture": arch,
                "dtype": dtype,
                "files": src.files,
                "max_logit_diff": diff,
            },
            # Size and SHA-256 of each file, so loading verifies the import like any checkpoint.
            "files": {
                name: {"size": (tmp / name).stat().st_size, "sha256": file_sha256(tmp / name)}
                for name in names
            },
        }
        atomic_write_json(tmp / MANIFEST, manifest)
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    return ImportResult(
        out=str(out),
        source=source,
        repo=src.repo,
        commit=src.commit,
        architecture=arch,
        n_params=n_params,
        dtype=dtype,
        vocab_size=cfg.vocab_size,
        tied_embeddings=cfg.tied_embeddings,
        rope_scaling=cfg.rope_scaling,
        add_bos=bos,
        stop_ids=stops,
        chat_template=template is not None,
        max_logit_diff=diff,
        verify_note=note,
        untrained_tokens=untrained,
        files=files,
    )


def is_imported(manifest: dict[str, Any]) -> bool:
    """True for a checkpoint written by `llmctl import` (weights only, no optimizer state)."""
    return (manifest.get("source") or {}).get("kind") == SOURCE_KIND
