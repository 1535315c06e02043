"""A parsed SOURCE -> the list of input files, each with its split and a way to fetch it.

Hub files come from a listing resolved to a commit; URLs and local files are taken as given. Files
are fetched lazily (one at a time, when the reader reaches them), so `--max-rows`/`--max-bytes`
samples of a huge corpus download only the files they read.
"""

from __future__ import annotations

import fnmatch
import glob
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llmctl.errors import LlmctlError
from llmctl.files import cache_root
from llmctl.raw.readers import FORMATS, detect_format, is_data_file
from llmctl.raw.sources import SPLITS, SourceSpec
from llmctl.raw.transfer import TransferProgress

# Hub dataset repos carry metadata files in data formats; they are not rows.
_HUB_METADATA = {"dataset_infos.json", "dataset_info.json", "dataset_dict.json", "state.json", "config.json"}
_HUB_FORMATS = {"parquet", "jsonl", "json", "txt"}
_SPLIT_WORDS = (
    ("validation", {"validation", "valid", "val", "dev"}),
    ("test", {"test", "testing"}),
    ("train", {"train", "training"}),
)


@dataclass
class InputFile:
    """One file to read: its recorded name, the source split it belongs to, how to get it locally."""

    name: str
    split: str
    size: int | None
    fetch: Callable[[], tuple[Path, str]]
    """Returns (local path, sha256), downloading first when needed."""
    format_name: str | None = None
    """The name whose extension tells the format, when `name` does not (a URL with a query)."""
    cached: bool = False
    """The local copy is a download in a cache (safe to delete), not the user's own file."""


@dataclass
class ResolvedSource:
    """Everything download needs to know about a source before reading it."""

    spec: SourceSpec
    files: list[InputFile]
    revision: str | None = None
    resolved_revision: str | None = None
    offline: bool = False
    extra: dict[str, object] = field(default_factory=dict)


def infer_split(name: str) -> str:
    """A file's split from words in its name, then its folders: 'wikitext/test-000.parquet' -> 'test'."""
    parts = name.lower().split("/")
    for piece in [parts[-1], *reversed(parts[:-1])]:
        words = set(re.split(r"[^a-z]+", piece))
        for split, names in _SPLIT_WORDS:
            if words & names:
                return split
    return "train"


def split_order(split: str) -> tuple[int, str]:
    """Sort key: train, validation, test, then others by name."""
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


def _hub(spec: SourceSpec, cache_dir: str | None, progress: TransferProgress) -> ResolvedSource:
    from llmctl.raw.hub import fetch_hub_file, list_hub_files

    assert spec.repo is not None and spec.revision is not None
    listing = list_hub_files(spec.repo, spec.revision, cache_dir)
    chosen: list[tuple[str, str]] = []
    if spec.named is not None:
        for split, patterns in spec.named.files.items():
            for pattern in patterns:
                matched = sorted(p for p in listing.files if fnmatch.fnmatchcase(p, pattern))
                if not matched:
                    where = "the Hub cache" if listing.offline else f"{spec.repo}@{listing.commit[:12]}"
                    raise LlmctlError(
                        f"no file of {where} matches {pattern} (source '{spec.name}')",
                        "the repository layout changed or the cache is partial; try hf:owner/name to pick files yourself",
                    )
                chosen.extend((p, split) for p in matched)
    else:
        chosen = [(p, infer_split(p)) for p in _pick_hub_data_files(spec, sorted(listing.files))]

    def fetcher(name: str) -> Callable[[], tuple[Path, str]]:
        return lambda: fetch_hub_file(listing, name, progress)

    files = [
        InputFile(p, s, listing.files[p].size, fetcher(p), cached=not listing.offline) for p, s in chosen
    ]
    return ResolvedSource(spec, files, spec.revision, listing.commit, listing.offline)


def _pick_hub_data_files(spec: SourceSpec, names: list[str]) -> list[str]:
    data = [
        n
        for n in names
        if is_data_file(n)
        and detect_format(n)[0] in _HUB_FORMATS
        and Path(n).name not in _HUB_METADATA
        and not any(part.startswith(".") for part in n.split("/"))
    ]
    if spec.subset:
        data = [n for n in data if spec.subset in n.split("/")[:-1] or Path(n).name.startswith(spec.subset)]
    if not data:
        what = f"subset '{spec.subset}' of {spec.repo}" if spec.subset else spec.repo
        raise LlmctlError(
            f"no parquet, JSON lines, JSON or text files in {what}@{spec.revision}",
            "datasets built by a loading script have parquet copies: try "
            f"hf:{spec.repo}@refs/convert/parquet" + (f":{spec.subset}" if spec.subset else ""),
        )
    if not spec.subset:
        tops = sorted({n.split("/")[0] for n in data if "/" in n} - {"data"})
        if len(tops) > 1 and all("/" in n for n in data):
            raise LlmctlError(
                f"{spec.repo} has several subsets: {', '.join(tops)}",
                f"pick one with hf:{spec.repo}@{spec.revision}:SUBSET",
            )
    # The same rows are often published in several formats; read only the best one present.
    for fmt in ("parquet", "jsonl", "json", "txt"):
        same = [n for n in data if detect_format(n)[0] == fmt]
        if same:
            return same
    return data


def _url(
    spec: SourceSpec, cache_dir: str | None, sha256: str | None, progress: TransferProgress
) -> ResolvedSource:
    from llmctl.raw.http_download import download_url, redact_url, url_file_name

    assert spec.url is not None
    url = spec.url
    root = Path(cache_dir) / "downloads" if cache_dir else default_download_cache()
    name = url_file_name(url)
    fetch = lambda: download_url(url, root, progress, sha256)  # noqa: E731
    return ResolvedSource(
        spec, [InputFile(redact_url(url), infer_split(name), None, fetch, name, cached=True)]
    )


def default_download_cache() -> Path:
    """Where URL downloads are kept: $LLMCTL_CACHE/downloads, else ~/.cache/llmctl/downloads."""
    return cache_root() / "downloads"


def _local_fetch(path: Path, expected: str | None) -> Callable[[], tuple[Path, str]]:
    def fetch() -> tuple[Path, str]:
        from llmctl.errors import LlmctlRuntimeError
        from llmctl.files import io_error
        from llmctl.raw.http_download import file_sha256

        try:
            sha = file_sha256(path)
        except OSError as exc:
            raise io_error(exc, path, action="read") from None
        if expected and sha != expected.lower():
            raise LlmctlRuntimeError(f"checksum mismatch for {path}: SHA-256 is {sha}, expected {expected}")
        return path, sha

    return fetch


def _local(spec: SourceSpec, fmt: str | None, sha256: str | None) -> ResolvedSource:
    assert spec.path is not None
    root = Path(spec.path)
    if root.is_dir():
        paths = sorted(
            p
            for p in root.rglob("*")
            if p.is_file()
            and not any(s.startswith(".") for s in p.relative_to(root).parts)
            and (fmt is not None or is_data_file(p.name))
        )
    else:
        paths = sorted(Path(p) for p in glob.glob(spec.path, recursive=True) if Path(p).is_file())
    if not paths:
        raise LlmctlError(
            f"no files found at {spec.spec}",
            f"pass a file, a directory or a quoted glob of {', '.join(FORMATS)} files (.gz/.zst too)",
        )
    for p in paths:
        detect_format(p.name, fmt)  # fail now, naming the file, rather than halfway through
    base = root if root.is_dir() else _glob_base(spec.path)
    files = []
    for p in paths:
        # Split words count only below the directory the user named: a 'test' folder above it is not a split.
        relative = p.resolve().relative_to(base.resolve()).as_posix() if base else p.name
        files.append(InputFile(str(p), infer_split(relative), p.stat().st_size, _local_fetch(p, sha256)))
    return ResolvedSource(spec, files)


def _glob_base(pattern: str) -> Path | None:
    """The folder a glob starts from ('data/*/x.txt' -> 'data'); None for a plain file path."""
    parts = Path(pattern).parts
    for i, part in enumerate(parts):
        if set(part) & set("*?["):
            return Path(*parts[:i]) if i else Path(".")
    return None


def _pystdlib(spec: SourceSpec) -> ResolvedSource:
    from llmctl.raw.pystdlib import stdlib_files, stdlib_revision, stdlib_root

    files = [
        InputFile(rel, "train", path.stat().st_size, _local_fetch(path, None)) for rel, path in stdlib_files()
    ]
    revision = stdlib_revision()
    return ResolvedSource(spec, files, revision, revision, extra={"root": str(stdlib_root())})


def resolve_source(
    spec: SourceSpec,
    progress: TransferProgress,
    cache_dir: str | None = None,
    fmt: str | None = None,
    sha256: str | None = None,
) -> ResolvedSource:
    """The input files of a source, in reading order (split, then name)."""
    if spec.kind == "pystdlib":
        resolved = _pystdlib(spec)
    elif spec.kind == "hub":
        resolved = _hub(spec, str(Path(cache_dir) / "hub") if cache_dir else None, progress)
    elif spec.kind == "url":
        resolved = _url(spec, cache_dir, sha256, progress)
    else:
        resolved = _local(spec, fmt, sha256)
    resolved.files.sort(key=lambda f: split_order(f.split))  # stable: name order kept within a split
    return resolved
