"""Reading a checkpoint: the typed manifest, finding one, verifying its files, loading what it holds.

    ckpt = open_checkpoint("runs/py/checkpoints/latest")   # a step dir, `latest`, checkpoints/ or a run dir
    ckpt.manifest.step, ckpt.config.model                  # typed, format version checked
    state = ckpt.model_state()                             # bytes hashed against checkpoint.json, then loaded
    model, tokenizer = ckpt.load_model("cpu"), ckpt.tokenizer()

Format version 2 (this one): checkpoint.json lists every file with its size and SHA-256; random
generator states are plain data (rng.safetensors + rng.json); the one `.pt` file, optimizer.pt,
holds tensors only and is loaded with `weights_only=True`. Version 1 stored the generator states
as a pickle (rng.pt), which can run code when loaded: such a checkpoint is refused with a pointer
to `llmctl checkpoint migrate`. Writing lives in llmctl/engine/checkpoint.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmctl.errors import LlmctlError

FORMAT_NAME = "llmctl-checkpoint"
FORMAT_VERSION = 2
MANIFEST = "checkpoint.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
RNG_TENSORS = "rng.safetensors"
RNG_JSON = "rng.json"
LEGACY_RNG_FILE = "rng.pt"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
LATEST = "latest"
STEP_DIR = re.compile(r"^step-(\d+)$")
MAX_POSITIONS = 1 << 21
"""Longest context a checkpoint may declare (2M positions: RoPE tables of about 1 GiB at head_dim 128)."""
_LAYER = re.compile(r"^layers\.(\d+)\.")
_EDITED_HINT = (
    "checkpoint.json was edited or belongs to other weights; use an unmodified copy of the checkpoint"
)


@dataclass(frozen=True)
class FileEntry:
    """One file of a checkpoint as the manifest records it."""

    size: int
    sha256: str | None
    """None only in format version 1, which recorded sizes alone."""


@dataclass(frozen=True)
class Manifest:
    """checkpoint.json, typed. `raw` keeps every field (reporter and data state, telemetry figures)."""

    format_version: int
    step: int
    tokens: int
    files: dict[str, FileEntry]
    config: dict[str, Any]
    tokenizer: dict[str, Any] = field(default_factory=dict)
    data_meta: dict[str, Any] = field(default_factory=dict)
    objective: str | None = None
    finite: bool = True
    """False never appears on disk (such a checkpoint is not written); old manifests lack the key."""
    raw: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        """A field of checkpoint.json by name (for the optional, untyped ones)."""
        return self.raw.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def __contains__(self, key: object) -> bool:
        return key in self.raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manifest:
        """Parse checkpoint.json; ValueError/KeyError/TypeError when it is not one."""
        if raw.get("format") != FORMAT_NAME:
            raise ValueError("not an llmctl checkpoint manifest")
        version = int(raw.get("format_version", 1))
        files: dict[str, FileEntry] = {}
        for name, entry in raw["files"].items():
            if "/" in name or "\\" in name or name in ("", ".", ".."):
                raise ValueError(f"bad file name in manifest: {name!r}")
            if isinstance(entry, dict):
                files[name] = FileEntry(int(entry["size"]), str(entry["sha256"]))
            else:
                files[name] = FileEntry(int(entry), None)
        _check_types(raw)
        return cls(
            format_version=version,
            step=int(raw["step"]),
            tokens=int(raw.get("tokens", 0)),
            files=files,
            config=dict(raw["config"]),
            tokenizer=dict(raw.get("tokenizer") or {}),
            data_meta=dict(raw.get("data_meta") or {}),
            objective=raw.get("objective"),
            finite=bool(raw.get("finite", True)),
            raw=raw,
        )


_OPTIONAL = type(None)
# Fields of checkpoint.json that inference reads, with the types they must have: a shared checkpoint
# with `"chat": "x"` or `"stop_ids": "ab"` is refused as corrupt instead of failing with a traceback.
_SECTION_TYPES: dict[str, tuple[type, ...]] = {
    "config": (dict,),
    "tokenizer": (dict, _OPTIONAL),
    "data_meta": (dict, _OPTIONAL),
    "chat": (dict, _OPTIONAL),
    "prompt": (dict, _OPTIONAL),
    "source": (dict, _OPTIONAL),
    "objective": (str, _OPTIONAL),
    "finite": (bool, _OPTIONAL),
}
_FIELD_TYPES: dict[tuple[str, str], tuple[type, ...]] = {
    ("chat", "template_text"): (str, _OPTIONAL),
    ("chat", "bos_token"): (str, _OPTIONAL),
    ("chat", "eos_token"): (str, _OPTIONAL),
    ("chat", "stop_ids"): (list, _OPTIONAL),
    ("prompt", "add_bos"): (bool, _OPTIONAL),
    ("prompt", "bos_id"): (int, _OPTIONAL),
    ("data_meta", "separator"): (dict, _OPTIONAL),
    ("data_meta", "tokenizer"): (dict, _OPTIONAL),
    ("data_meta", "chat_profile"): (dict, _OPTIONAL),
    ("source", "architecture"): (str, _OPTIONAL),
}


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join(
        "null" if t is _OPTIONAL else {dict: "an object", list: "a list"}.get(t, t.__name__) for t in types
    )


def _check_types(raw: dict[str, Any]) -> None:
    """ValueError naming the first field of checkpoint.json whose value has the wrong type."""

    def check(key: str, value: Any, types: tuple[type, ...]) -> None:
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"{key} must be {_type_names(types)}, got {json.dumps(value)[:60]}")

    for key in ("step", "tokens"):
        if key in raw:
            check(key, raw[key], (int,))
    for key, types in _SECTION_TYPES.items():
        if key in raw:
            check(key, raw[key], types)
    for (section, key), types in _FIELD_TYPES.items():
        if key in (raw.get(section) or {}):
            check(f"{section}.{key}", raw[section][key], types)
    for i, value in enumerate((raw.get("chat") or {}).get("stop_ids") or []):
        check(f"chat.stop_ids[{i}]", value, (int,))


def sha256_hex(data: bytes | memoryview) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def manifest_problem(path: Path) -> tuple[Manifest | None, str | None]:
    """(the manifest, None) for a complete checkpoint directory (every listed file there, sizes
    matching, fields of the right types), else (None, what is wrong).

    Cheap: sizes only. Contents are verified against the SHA-256s when a file is loaded.
    """
    try:
        manifest = Manifest.from_dict(json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8")))
    except OSError as exc:
        return None, f"cannot read {MANIFEST}: {exc.strerror or exc}"
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"{MANIFEST} is malformed: {exc}"
    for name, entry in manifest.files.items():
        try:
            size = (Path(path) / name).stat().st_size
        except OSError:
            return None, f"{name} is missing"
        if size != entry.size:
            return None, f"{name} is {size} bytes, {MANIFEST} says {entry.size}"
    return manifest, None


def read_manifest(path: Path) -> Manifest | None:
    """The manifest of a complete checkpoint directory (see manifest_problem), else None."""
    return manifest_problem(path)[0]


def is_complete(path: Path) -> bool:
    """True when `path` holds a complete checkpoint."""
    return read_manifest(path) is not None


def step_dirs(root: Path) -> list[Path]:
    """Every step-* directory under root (complete or not), oldest first."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and p.is_dir() and not p.is_symlink():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete step-* directories under root, oldest first."""
    return [p for p in step_dirs(root) if is_complete(p)]


def latest_target(root: Path) -> Path | None:
    """The directory `root/latest` names (a symlink, or a one-line file where there are no symlinks)."""
    link = root / LATEST
    try:
        if link.is_symlink():
            return root / os.readlink(link)
        if link.is_file():
            return root / link.read_text().strip()
    except OSError:
        return None
    return None


def find_latest(root: Path) -> Path | None:
    """The checkpoint `latest` names when complete, else the newest complete one, else None."""
    target = latest_target(root)
    if target is not None and is_complete(target):
        return target
    done = complete_checkpoints(root)
    return done[-1] if done else None


def latest_fallback_note(root: Path, found: Path) -> str | None:
    """What to tell the user when `root/latest` exists but `found` is not what it names (it names a
    missing, incomplete or corrupt checkpoint, or cannot be read); None when it was used."""
    link = root / LATEST
    if not (link.is_symlink() or link.exists()):
        return None
    target = latest_target(root)
    if target == found:
        return None
    named = f"names {target.name}, which is not a complete checkpoint" if target else "cannot be read"
    return f"{link} {named}; using {found.name}"


def resolve_checkpoint_noted(path: str | Path) -> tuple[Path, list[str]]:
    """resolve_checkpoint, and the warnings the caller should show (a `latest` that was passed over)."""
    p = Path(path)
    if p.name == LATEST and (p.is_symlink() or p.is_file()):
        found = find_latest(p.parent)
        if found is None:
            raise LlmctlError(
                f"{p} names no complete checkpoint", "pick a step-* directory that has a checkpoint.json"
            )
        note = latest_fallback_note(p.parent, found)
        return found, [note] if note else []
    if (p / MANIFEST).is_file():
        _, problem = manifest_problem(p)
        if problem is not None:
            others = [c.name for c in complete_checkpoints(p.parent) if c.resolve() != p.resolve()]
            raise LlmctlError(
                f"checkpoint {p} is incomplete or corrupt ({problem})",
                f"use another complete checkpoint of the run: {', '.join(others)}"
                if others
                else "no other complete checkpoint is there; start a new run",
            )
        return p, []
    for root in (p / "checkpoints", p):
        if root.is_dir() and ((root / LATEST).exists() or any(root.glob("step-*"))):
            found = find_latest(root)
            if found is not None:
                note = latest_fallback_note(root, found)
                return found, [note] if note else []
    if not p.exists():
        raise LlmctlError(
            f"checkpoint not found: {p}", "pass RUN/checkpoints/latest, a step-* directory or a run directory"
        )
    raise LlmctlError(
        f"no complete checkpoint in {p}", "pass RUN/checkpoints/latest, a step-* directory or a run directory"
    )


def resolve_checkpoint(path: str | Path) -> Path:
    """A complete checkpoint directory from a checkpoint path, a `latest` link, a checkpoints/ directory
    or a run directory; a clear error otherwise."""
    return resolve_checkpoint_noted(path)[0]


def migrate_hint(path: Path) -> str:
    """The hint for a format-1 checkpoint: convert it once, explicitly."""
    return (
        f"if you made this checkpoint yourself, convert it once with `llmctl checkpoint migrate {path}` "
        "(a pickled file can run code when loaded, so llmctl no longer loads one it did not convert)"
    )


@dataclass
class OpenCheckpoint:
    """A resolved, complete checkpoint and its typed manifest; files are verified as they are read."""

    path: Path
    manifest: Manifest
    warnings: list[str] = field(default_factory=list)
    """What the caller should show as `warning:` lines (a corrupt `latest` passed over for an older step)."""

    @property
    def config(self) -> Any:
        """The resolved llmctl.config.Config the checkpoint was trained with."""
        from llmctl.config import from_dict

        return from_dict(self.manifest.config)

    def read_verified(self, name: str) -> bytes:
        """A file's bytes after checking them against the manifest's SHA-256 (an error naming it, else)."""
        entry = self.manifest.files.get(name)
        if entry is None:
            raise LlmctlError(
                f"checkpoint {self.path} does not list {name} in {MANIFEST}", "pick another checkpoint"
            )
        try:
            data = (self.path / name).read_bytes()
        except OSError as exc:
            from llmctl.files import io_error

            raise io_error(exc, self.path / name, action="read") from exc
        if len(data) != entry.size or (entry.sha256 is not None and sha256_hex(data) != entry.sha256):
            raise LlmctlError(
                f"checkpoint file {self.path / name} is corrupt: its SHA-256 does not match {MANIFEST}",
                "copy the checkpoint again from its source, or use another checkpoint of the run",
            )
        return data

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each tensor's shape in model.safetensors, from its header alone (no tensor is read)."""
        from safetensors import safe_open

        try:
            with safe_open(str(self.path / MODEL_FILE), framework="pt") as fh:
                return {name: tuple(fh.get_slice(name).get_shape()) for name in fh.keys()}  # noqa: SIM118
        except Exception as exc:  # safetensors raises its own error types for a bad header
            raise LlmctlError(
                f"cannot read {self.path / MODEL_FILE}: {exc}", "use another checkpoint"
            ) from exc

    def check_weights_match_config(self) -> None:
        """checkpoint.json's model config against the weights' header, before anything is built: a
        `dim` or `n_layers` that disagrees with the weights would allocate or loop for their sake."""
        from llmctl.model.llama import weight_shapes
        from llmctl.model.lora import adapter_shapes

        model = self.config.model
        found = self.weight_shapes()
        layers = {int(m.group(1)) for name in found if (m := _LAYER.match(name))}
        if layers != set(range(len(layers))) or model.n_layers != len(layers):
            raise LlmctlError(
                f"{self.path / MANIFEST} says model.n_layers={model.n_layers} but {MODEL_FILE} holds "
                f"{len(layers)} layers",
                _EDITED_HINT,
            )
        if model.vocab_size is None:
            raise LlmctlError(f"{self.path / MANIFEST} has no model.vocab_size", _EDITED_HINT)
        if model.max_seq_len > MAX_POSITIONS:  # the RoPE tables are the one size the weights do not fix
            raise LlmctlError(
                f"{self.path / MANIFEST} says model.max_seq_len={model.max_seq_len:,}; llmctl builds RoPE tables "
                f"for at most {MAX_POSITIONS:,} positions",
                _EDITED_HINT,
            )
        expected = {**weight_shapes(model), **adapter_shapes(model, self.config.lora)}
        if self.manifest.get("base"):  # adapters only: the base's weights are checked when it is opened
            expected = adapter_shapes(model, self.config.lora)
        if model.tied_embeddings and "output.weight" not in found:
            expected.pop("output.weight", None)
        for name in [*expected, *(n for n in found if n not in expected)]:  # in the model's order
            if expected.get(name) != found.get(name):
                want = list(expected[name]) if name in expected else "no such tensor"
                have = list(found[name]) if name in found else "missing"
                raise LlmctlError(
                    f"{self.path / MANIFEST}'s model config does not match {MODEL_FILE}: {name} is {have} "
                    f"there, the config (dim={model.dim}, n_heads={model.n_heads}, n_kv_heads={model.kv_heads}, "
                    f"hidden_dim={model.hidden_dim}, vocab_size={model.vocab_size}) needs {want}",
                    _EDITED_HINT,
                )

    def model_state(self) -> dict[str, Any]:
        """The weights on the CPU, the tied head restored under its own name; the config is checked
        against the weights' shapes first. A LoRA checkpoint's: its base's and its adapters."""
        state = self.own_state()
        if self.manifest.get("base"):
            return {**self.base_checkpoint().model_state(), **state}
        model = self.manifest.config.get("model") or {}
        if (
            model.get("tied_embeddings", True)
            and "output.weight" not in state
            and "tok_embeddings.weight" in state
        ):
            state["output.weight"] = state["tok_embeddings.weight"]
        return state

    def own_state(self) -> dict[str, Any]:
        """The tensors of this checkpoint's model.safetensors as stored (a LoRA checkpoint's: its adapters
        alone, the base not opened), verified and checked against the config."""
        from safetensors.torch import load

        self.check_weights_match_config()
        try:
            state = load(self.read_verified(MODEL_FILE))
        except LlmctlError:
            raise
        except Exception as exc:  # safetensors raises its own error types for a bad header
            raise LlmctlError(
                f"cannot read {self.path / MODEL_FILE}: {exc}", "use another checkpoint"
            ) from exc
        return state

    def load_pt(self, name: str) -> Any:
        """A verified `.pt` file, unpickled with `weights_only=True`: tensors and plain containers only."""
        import pickle

        import torch

        data = self.read_verified(name)
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as exc:
            raise LlmctlError(
                f"refusing to load {self.path / name}: it is not plain tensor data (it may try to run code)",
                "only resume from checkpoints written by llmctl that you trust; this file was not loaded",
            ) from exc

    def tokenizer_path(self) -> Path:
        """The tokenizer copy inside the checkpoint that checkpoint.json lists (and so hashes).

        The manifest's `tokenizer.path` is only a record of where training found it: a shared
        checkpoint could name any file there, so a tokenizer outside the checkpoint is never loaded.
        """
        for name in TOKENIZER_FILES:
            if name in self.manifest.files:
                return self.path / name
        inside = [name for name in TOKENIZER_FILES if (self.path / name).is_file()]
        raise LlmctlError(
            f"checkpoint {self.path} has no tokenizer listed in {MANIFEST}"
            + (f" ({inside[0]} is there but not listed, so it cannot be verified)" if inside else ""),
            "use a checkpoint written by llmctl (pretrain, sft, dpo, import), which holds its own tokenizer; "
            "a tokenizer outside the checkpoint is never loaded",
        )

    def tokenizer(self) -> Any:
        """The checkpoint's own tokenizer, its bytes checked against checkpoint.json before it is loaded."""
        from llmctl.tokenizer.core import load_tokenizer

        path = self.tokenizer_path()
        self.read_verified(path.name)
        return load_tokenizer(path)

    def base_checkpoint(self) -> OpenCheckpoint:
        """A LoRA checkpoint's frozen base (checkpoint.json `base`), refused when its weights changed since."""
        base = self.manifest.get("base")
        if not isinstance(base, dict) or not isinstance(base.get("path"), str):
            raise LlmctlError(f"{self.path / MANIFEST} has a malformed `base`", _EDITED_HINT)
        try:
            opened = open_checkpoint(base["path"])
        except LlmctlError as exc:
            raise LlmctlError(
                f"the base of LoRA checkpoint {self.path} cannot be opened: {exc.message}",
                f"put the base checkpoint back at {base['path']}",
            ) from exc
        entry = opened.manifest.files.get(MODEL_FILE)
        if entry is None or entry.sha256 != base.get("sha256"):
            raise LlmctlError(
                f"the base of LoRA checkpoint {self.path} has changed: {opened.path / MODEL_FILE} has SHA-256 "
                f"{entry.sha256 if entry else None}, the adapters were trained on {base.get('sha256')}",
                "put the original base checkpoint back at that path; adapters on other weights are meaningless",
            )
        return opened

    def plain_model_state(self, merge: bool = False) -> dict[str, Any]:
        """Weights for a plain decoder (what export writes): a LoRA run's adapters folded into its base
        with `merge`; without it a LoRA checkpoint is refused rather than exported without its adapters."""
        state = self.model_state()
        if self.config.lora.rank <= 0:
            return state
        if not merge:
            raise LlmctlError(
                f"checkpoint {self.path} holds LoRA adapters (lora.rank={self.config.lora.rank}) on a frozen base",
                "add --merge to fold the adapters into the base weights and export a plain model",
            )
        from llmctl.model.lora import merge_adapters

        return merge_adapters(state, self.config.lora)

    def load_model(self, device: Any = "cpu") -> Any:
        """A Transformer with the checkpoint's weights (a LoRA run's: base and adapters), in eval mode."""
        from llmctl.model.build import build_model

        return build_model(self.config.model, device, state=self.model_state(), lora=self.config.lora)


def open_checkpoint(path: str | Path) -> OpenCheckpoint:
    """Resolve `path` to a complete checkpoint and read its manifest, checking the format version.

    Refuses a format-1 checkpoint (a pickled rng.pt) and any `.pt` file that would need more than
    tensors to load, without loading it.
    """
    ckpt, warnings = resolve_checkpoint_noted(path)
    manifest = read_manifest(ckpt)
    if manifest is None:  # pragma: no cover - resolve_checkpoint only returns complete ones
        raise LlmctlError(f"checkpoint {ckpt} is incomplete or corrupt", "use another checkpoint of the run")
    if manifest.format_version > FORMAT_VERSION:
        raise LlmctlError(
            f"checkpoint {ckpt} has format version {manifest.format_version}; this llmctl reads up to {FORMAT_VERSION}",
            "upgrade llmctl to read it",
        )
    # Format 1 without rng.pt (weights only, e.g. made by `llmctl import`) holds nothing pickled: it
    # loads, its files checked by size alone.
    if LEGACY_RNG_FILE in manifest.files:
        raise LlmctlError(
            f"checkpoint {ckpt} was written by an older llmctl and stores its random state as a pickle ({LEGACY_RNG_FILE})",
            migrate_hint(ckpt),
        )
    for name in manifest.files:
        if name.endswith(".pt"):
            check_pickle_globals(ckpt / name)
    return OpenCheckpoint(ckpt, manifest, warnings)


def check_pickle_globals(path: Path) -> None:
    """Refuse a `.pt` file whose pickle names anything beyond what `weights_only=True` allows; the
    pickle is scanned, never run, so an inference open can refuse it without loading the optimizer."""
    import torch

    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:  # not a torch zip file at all (a raw pickle, truncated data)
        raise LlmctlError(
            f"refusing to load {path}: it is not a torch tensor file ({type(exc).__name__})",
            "only use checkpoints written by llmctl that you trust; this file was not loaded",
        ) from exc
    if unsafe:
        raise LlmctlError(
            f"refusing to load {path}: its pickle calls {', '.join(unsafe[:3])}, which could run code",
            "only use checkpoints written by llmctl that you trust; this file was not loaded",
        )


def load_for_inference(path: str | Path, device: Any = "cpu") -> tuple[Any, Any, Manifest]:
    """(model in eval mode on device, its tokenizer, manifest) for eval; generate and chat open the
    checkpoint themselves to pass its warnings on."""
    ckpt = open_checkpoint(path)
    return ckpt.load_model(device), ckpt.tokenizer(), ckpt.manifest
