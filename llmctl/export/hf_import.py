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

Nothing in the model folder runs: config.json alone decides whether llmctl supports it (`auto_map` is refused),
only verified safetensors files inside the folder are read, and the parity check builds transformers' own class
from the parsed config with those tensors (no Auto class, no remote code, no pickle).

It has no optimizer state: `pretrain --init` and `sft --init` start from it; `--resume` cannot.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl.errors import LlmctlError, LlmctlRuntimeError
from llmctl.output import quiet_library_logs

if TYPE_CHECKING:
    import torch

    from llmctl.config import ModelConfig
    from llmctl.export.hf_source import ModelSource
    from llmctl.tokenizer.core import HFTokenizer

SOURCE_KIND = "hf-import"
PARITY_LIMIT = 1e-3
INDEX = "model.safetensors.index.json"
COPIED = ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json")
"""Source files copied unchanged into the checkpoint (each must be one the source verified)."""
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


def load_hf_weights(src: ModelSource) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors files model.safetensors.index.json lists (else of every *.safetensors),
    read only from the files `fetch_model_source` verified: no other name, path or format is ever opened."""
    index = src.json_object(INDEX)
    if index is not None:
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise LlmctlError(
                f"{INDEX} in {src.source} has no weight_map object (tensor name -> file name)",
                "the model folder is damaged; download the model again",
            )
        shards = sorted(set(weight_map.values()))
        for name in shards:
            if Path(name).name != name or name in ("", ".", "..") or not name.endswith(".safetensors"):
                raise LlmctlError(
                    f"{INDEX} in {src.source} names {name!r}, which is not a safetensors file in the model folder",
                    "import reads only *.safetensors files inside the model folder (no paths, no ../)",
                )
            if src.file(name) is None:
                raise LlmctlError(f"shard {name} listed in {INDEX} is missing", "download the model again")
    else:
        shards = sorted(n for n in src.files if n.endswith(".safetensors"))
    if not shards:
        raise LlmctlError(
            f"{src.source} holds no safetensors weights",
            "import reads only *.safetensors (pickled pytorch_model.bin files are never loaded); convert it first",
        )
    state: dict[str, torch.Tensor] = {}
    for name in shards:
        state.update(_read_safetensors(src.path / name, src.source))
    return state


def _read_safetensors(path: Path, source: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from llmctl.files import io_error

    try:
        return load_file(str(path))
    except SafetensorError as exc:
        raise LlmctlRuntimeError(
            f"{path.name} in {source} is corrupt or truncated ({exc})", "download the model again"
        ) from exc
    except OSError as exc:
        raise io_error(exc, path, action="read") from exc


def parity(
    config: dict[str, Any],
    hf_tensors: dict[str, torch.Tensor],
    state: dict[str, torch.Tensor],
    cfg: ModelConfig,
    ids: list[int],
) -> float:
    """Max |logit difference| between transformers' model and llmctl's, float32, on `ids`.

    transformers' model is its own class for config.json's architecture (never an Auto class, never remote
    code), built from the parsed config and given the tensors llmctl read itself: nothing in the model
    folder is opened by transformers, so no pickle or Python file there can run.
    """
    import torch
    import transformers

    from llmctl.model.build import build_model

    with quiet_library_logs():  # the model classes import torchao where it is installed
        cls = getattr(
            transformers, config["architectures"][0]
        )  # one of SUPPORTED, checked by check_hf_config
    hf_config = cls.config_class.from_dict({k: v for k, v in config.items() if k != "auto_map"})
    hf = cls(hf_config).float().eval()
    missing, unexpected = hf.load_state_dict({k: v.float() for k, v in hf_tensors.items()}, strict=False)
    missing = [k for k in missing if not (cfg.tied_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise LlmctlError(
            f"transformers' {cls.__name__} does not take these weights (missing {missing[:3]}, unexpected {unexpected[:3]})",
            "this architecture variant is not supported faithfully; please report it (--no-verify skips the check)",
        )
    if cfg.tied_embeddings:
        hf.tie_weights()
    full = dict(state)
    if cfg.tied_embeddings:
        full["output.weight"] = full["tok_embeddings.weight"]
    model = build_model(cfg, "cpu", state={k: v.float() for k, v in full.items()})
    x = torch.tensor([ids[: cfg.max_seq_len]], dtype=torch.long)
    with torch.no_grad():
        ours = model(x)
        theirs = hf(x).logits.float()
    return float((ours - theirs).abs().max())


def _check_parity(source: str, diff: float) -> None:
    if not math.isfinite(diff):
        raise LlmctlError(
            f"the logits of {source} are not finite (max logit difference {diff})",
            "the weights overflow in float32 on a plain prompt: the model is damaged; download it again",
        )
    if diff > PARITY_LIMIT:
        raise LlmctlError(
            f"llmctl's model disagrees with transformers on {source}: max logit difference {diff:.2e} > {PARITY_LIMIT:g}",
            "this architecture variant is not supported faithfully; please report it (--no-verify skips the check)",
        )


def _verify(
    verify: bool,
    source: str,
    config: dict[str, Any],
    hf_tensors: dict[str, torch.Tensor],
    state: dict[str, torch.Tensor],
    cfg: ModelConfig,
    tok: HFTokenizer,
) -> tuple[float | None, str | None]:
    """(max logit difference, note when it was not measured); an error when it is too large or not finite."""
    if not verify:
        return None, "--no-verify: parity not checked"
    try:
        import transformers  # noqa: F401
    except ImportError:
        return None, "transformers is not installed: parity not checked"
    ids = tok.backend.encode(PARITY_PROMPT, add_special_tokens=True).ids
    diff = parity(config, hf_tensors, state, cfg, ids)
    _check_parity(source, diff)
    return diff, None


def _read_model(
    src: ModelSource,
) -> tuple[dict[str, Any], ModelConfig, str, HFTokenizer, dict[str, torch.Tensor]]:
    """(config.json, ModelConfig, architecture, tokenizer, HF tensors): every check before anything is written."""
    from llmctl.export.hf_arch import check_hf_config, check_tensors
    from llmctl.tokenizer.core import HFTokenizer

    config = src.json_object("config.json") or {}  # present: fetch_model_source refuses a folder without it
    cfg, arch = check_hf_config(config)
    for name in (
        "tokenizer_config.json",
        "generation_config.json",
        "special_tokens_map.json",
        "chat_template.json",
    ):
        src.json_object(name)  # the template and stop-id readers expect objects
    if src.json_object("tokenizer.json") is None:
        raise LlmctlError(
            f"{src.source} has no tokenizer.json",
            "import needs a Hugging Face fast tokenizer (tokenizer.json)",
        )
    tok = HFTokenizer(src.path / "tokenizer.json")
    if tok.vocab_size > cfg.vocab_size:
        raise LlmctlError(
            f"the tokenizer has {tok.vocab_size} ids but the model {cfg.vocab_size} rows",
            "the model's files disagree",
        )
    hf_tensors = load_hf_weights(src)
    check_tensors(hf_tensors, cfg)
    return config, cfg, arch, tok, hf_tensors


def import_model(source: str, out: str | Path, *, verify: bool = True, force: bool = False) -> ImportResult:
    """Import a HF model (`hf:owner/name[@rev]` or a local directory) into the checkpoint directory `out`.

    `force` replaces only a previous import holding nothing else (export's guard), never another folder.
    """
    from llmctl.export.hf import check_out
    from llmctl.export.hf_arch import from_hf_state_dict
    from llmctl.export.hf_source import fetch_model_source
    from llmctl.model.untrained import template_token_ids, untrained_rows
    from llmctl.tokenizer.template import TemplateChat, adds_bos, read_chat_template, stop_ids_for

    out = Path(out)
    check_out(
        out, force, owned=_import_files, what="import (its checkpoint.json with a source of kind hf-import)"
    )
    src = fetch_model_source(source)
    config, cfg, arch, tok, hf_tensors = _read_model(src)
    state = {k: v.contiguous() for k, v in from_hf_state_dict(hf_tensors, cfg).items()}
    dtype = str(state["tok_embeddings.weight"].dtype).removeprefix("torch.")
    template = read_chat_template(src.path)
    chat = TemplateChat.from_dir(src.path, tok)
    stops = stop_ids_for(src.path, tok, template)
    bos = adds_bos(tok)
    untrained = untrained_rows(state, cfg, template_token_ids(tok, template, stops))

    diff, note = _verify(verify, source, config, hf_tensors, state, cfg, tok)
    del hf_tensors

    n_params = sum(v.numel() for k, v in state.items() if not (cfg.tied_embeddings and k == "output.weight"))
    manifest = {
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
    }
    _write_checkpoint(out, src, state, cfg, tok, template, manifest)
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


def _write_checkpoint(
    out: Path,
    src: ModelSource,
    state: dict[str, torch.Tensor],
    cfg: ModelConfig,
    tok: HFTokenizer,
    template: str | None,
    extra: dict[str, Any],
) -> None:
    """Write the checkpoint folder atomically; every copied file is byte for byte the one hashed in provenance."""
    from llmctl.config import Config, DataConfig, to_dict
    from llmctl.export.hf import save_safetensors
    from llmctl.files import atomic_path, atomic_write_json, file_sha256
    from llmctl.infer.checkpoint import FORMAT_NAME, FORMAT_VERSION, MANIFEST, MODEL_FILE

    weights = {k: v for k, v in state.items() if not (cfg.tied_embeddings and k == "output.weight")}
    copied = [n for n in COPIED if src.file(n) is not None]
    needed = sum(v.numel() * v.element_size() for v in weights.values())
    needed += sum((src.path / n).stat().st_size for n in copied) + len(template or "") + (64 << 10)
    config = Config(model=cfg, data=DataConfig(seq_len=min(DataConfig.seq_len, cfg.max_seq_len)))
    with atomic_path(out, directory=True, needed=needed) as tmp:
        save_safetensors(weights, tmp / MODEL_FILE)
        for name in copied:
            shutil.copyfile(src.path / name, tmp / name)
            if file_sha256(tmp / name) != src.files[name]:
                raise LlmctlRuntimeError(
                    f"{name} in {src.source} changed while the import ran", "run the same command again"
                )
        if template is not None:
            (tmp / "chat_template.jinja").write_text(template, encoding="utf-8")
        names = [MODEL_FILE, *copied] + (["chat_template.jinja"] if template is not None else [])
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "step": 0,
            "tokens": 0,
            "saved_at": time.time(),
            "config": to_dict(config),
            "tokenizer": {"fingerprint": tok.fingerprint, "path": "tokenizer.json", "kind": tok.kind},
            **extra,
            # Size and SHA-256 of each file, so loading verifies the import like any checkpoint.
            "files": {
                name: {"size": (tmp / name).stat().st_size, "sha256": file_sha256(tmp / name)}
                for name in names
            },
        }
        atomic_write_json(tmp / MANIFEST, manifest)


def _import_files(path: Path) -> set[str] | None:
    """The names a previous `llmctl import` wrote into `path` (checkpoint.json included), or None."""
    from llmctl.infer.checkpoint import MANIFEST

    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(manifest, dict)
        or not is_imported(manifest)
        or not isinstance(manifest.get("files"), dict)
    ):
        return None
    return {*manifest["files"], MANIFEST}


def is_imported(manifest: dict[str, Any]) -> bool:
    """True for a checkpoint written by `llmctl import` (weights only, no optimizer state)."""
    return (manifest.get("source") or {}).get("kind") == SOURCE_KIND
