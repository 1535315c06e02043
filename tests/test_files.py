"""The atomic-write helper: temporaries never survive, OSError becomes error + hint, names stay inside."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from llmctl.errors import EXIT_IO, LlmctlError, LlmctlIOError
from llmctl.files import atomic_path, atomic_write_json, atomic_write_text, ensure_inside, io_error, safe_name


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["b.txt"]


def test_failure_keeps_old_content_and_removes_temporary(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_oserror_becomes_io_error_with_hint(tmp_path: Path) -> None:
    target = tmp_path / "y.bin"
    with pytest.raises(LlmctlIOError) as info, atomic_path(target) as tmp:
        tmp.write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.exit_code == EXIT_IO
    assert "no space left" in info.value.message and "free" in info.value.message
    assert info.value.hint
    assert list(tmp_path.iterdir()) == []


def test_directory_replace(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    for content in ("old", "new"):
        with atomic_path(target, directory=True) as tmp:
            (tmp / "f").write_text(content)
    assert (target / "f").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_output_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LlmctlIOError):
        atomic_write_text(blocker / "sub" / "out.txt", "x")


@pytest.mark.parametrize(
    "name,expected",
    [
        ("a/../../../x", "x"),
        ("..", "download"),
        ("..\\..\\evil.txt", "evil.txt"),
        (".hidden", "hidden"),
        ("ok-1.parquet", "ok-1.parquet"),
    ],
)
def test_safe_name(name: str, expected: str) -> None:
    assert safe_name(name) == expected


def test_ensure_inside(tmp_path: Path) -> None:
    assert ensure_inside(tmp_path, tmp_path / "a" / "b") == (tmp_path / "a" / "b").resolve()
    with pytest.raises(LlmctlError):
        ensure_inside(tmp_path / "cache", tmp_path / "cache" / ".." / "x")


def test_io_error_permission_and_readonly(tmp_path: Path) -> None:
    assert "permission denied" in io_error(OSError(errno.EACCES, "x"), tmp_path).message
    assert "read-only" in io_error(OSError(errno.EROFS, "x"), tmp_path).message
