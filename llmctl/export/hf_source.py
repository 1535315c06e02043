"""Where an import's files come from: `hf:owner/name[@revision]` through huggingface_hub, or a local directory.

    src = fetch_model_source("hf:HuggingFaceTB/SmolLM2-135M")      # or "path/to/model_dir"
    src.path, src.repo, src.commit, src.files                         # files: name -> SHA-256

Only what a checkpoint needs is downloaded: config files, safetensors weights and tokenizer files
(never pickled `.bin` weights). huggingface_hub honours HF_TOKEN (gated and private repos), HF_ENDPOINT
(mirrors) and HF_HUB_OFFLINE (cached snapshots only).

A file that resolves outside the model folder (a symlink to a private file, a `../` or absolute name in
model.safetensors.index.json) is refused; for a Hub snapshot the folder is the repo's cache folder, whose
blobs/ the snapshot's links point into. The files hashed here are the only ones an import reads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmctl.errors import LlmctlError
from llmctl.files import file_sha256

# The files an import reads; everything else in a model repo (pickles, ONNX, GGUF, images) is skipped.
ALLOW_PATTERNS = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
]


@dataclass
class ModelSource:
    """A local directory holding a HF model's files, and where they came from."""

    path: Path
    source: str
    """What the user passed."""
    repo: str | None = None
    """owner/name on the Hub; None for a local directory."""
    revision: str | None = None
    """The revision asked for (branch, tag or commit)."""
    commit: str | None = None
    """The commit the revision resolved to."""
    files: dict[str, str] = field(default_factory=dict)
    """Source file name -> SHA-256, for every file the import read."""
    root: Path | None = None
    """The folder every file must resolve inside (resolved); None: `path` itself."""

    def file(self, name: str) -> Path | None:
        """The verified file `name` (one of `files`), or None when the folder has none."""
        return self.path / name if name in self.files else None

    def json_object(self, name: str) -> dict[str, Any] | None:
        """A verified JSON file that must hold an object (config, tokenizer config, index); None when absent."""
        path = self.file(name)
        if path is None:
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise LlmctlError(
                f"{name} in {self.source} is not valid JSON ({exc})",
                "the model folder is damaged; download the model again",
            ) from exc
        if not isinstance(data, dict):
            raise LlmctlError(
                f"{name} in {self.source} is a JSON {type(data).__name__}, not an object",
                "the model folder is damaged or not a Hugging Face model; download the model again",
            )
        return data


def parse_hf_source(source: str) -> tuple[str, str | None]:
    """'hf:owner/name@rev' -> ('owner/name', 'rev')."""
    spec = source[len("hf:") :]
    repo, _, revision = spec.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise LlmctlError(f"bad Hub model name '{source}'", "write hf:owner/name or hf:owner/name@revision")
    return repo, revision or None


def _endpoint() -> str | None:
    # Read at call time: huggingface_hub's own constant is fixed when it is first imported.
    value = os.environ.get("HF_ENDPOINT")
    return value.rstrip("/") if value else None


def _download(repo: str, revision: str | None) -> Path:
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import snapshot_download

    where = _endpoint() or "https://huggingface.co"
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        path = snapshot_download(
            repo,
            revision=revision,
            allow_patterns=ALLOW_PATTERNS,
            endpoint=_endpoint(),
            local_files_only=offline,
        )
    except hf_errors.GatedRepoError as exc:
        raise LlmctlError(
            f"{repo} is gated on the Hub", "accept its terms on its Hub page and set HF_TOKEN"
        ) from exc
    except hf_errors.RepositoryNotFoundError as exc:
        raise LlmctlError(
            f"model {repo} not found on {where}",
            "check the name (hf:owner/name); private repos need HF_TOKEN",
        ) from exc
    except hf_errors.RevisionNotFoundError as exc:
        raise LlmctlError(
            f"{repo} has no revision '{revision}'", "use a branch, tag or commit of the repo"
        ) from exc
    except hf_errors.LocalEntryNotFoundError as exc:
        raise LlmctlError(
            f"{repo}@{revision or 'main'} is not in the Hub cache and cannot be downloaded ({'offline' if offline else where})",
            "unset HF_HUB_OFFLINE, check the network, or set HF_ENDPOINT to a mirror",
        ) from exc
    except (hf_errors.HfHubHTTPError, OSError) as exc:
        raise LlmctlError(
            f"cannot download {repo} from {where}: {exc}", "check the network and HF_ENDPOINT; try again"
        ) from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise LlmctlError(
            f"unexpected answer from {where} for {repo}: {exc!r}",
            "check HF_ENDPOINT points at a Hugging Face Hub",
        ) from exc
    return Path(path)


def fetch_model_source(source: str) -> ModelSource:
    """Download (or find) the model's files and hash the ones an import reads."""
    if source.startswith("hf:"):
        repo, revision = parse_hf_source(source)
        path = _download(repo, revision)
        # snapshot_download returns .../snapshots/<commit>.
        result = ModelSource(path, source, repo=repo, revision=revision or "main", commit=path.name)
    else:
        path = Path(source)
        if not path.is_dir():
            raise LlmctlError(
                f"model source not found: {source}",
                "pass hf:owner/name[@revision] or a local directory holding config.json and *.safetensors",
            )
        result = ModelSource(path, source)
    if not (path / "config.json").is_file():
        raise LlmctlError(
            f"{source} has no config.json", "import takes a Hugging Face transformers model directory"
        )
    # A Hub snapshot's files are links into the repo cache folder's blobs/.
    result.root = (path.parent.parent if result.repo else path).resolve()
    for name in sorted(os.listdir(path)):
        if any(Path(name).match(p) for p in ALLOW_PATTERNS):
            _check_inside(result.root, path / name, source)
            if (path / name).is_file():
                result.files[name] = file_sha256(path / name)
    return result


def _check_inside(root: Path, path: Path, source: str) -> None:
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise LlmctlError(
            f"{path.name} in {source} resolves outside the model folder (to {resolved})",
            "import reads only files inside the model folder; copy the real file in, or remove the link",
        )
