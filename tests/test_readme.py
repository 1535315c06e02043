"""README's two set-up commands are what CI runs and what a new user types."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_COMMAND = "python3 -m pytest -q"


def test_ci_runs_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert TEST_COMMAND in readme
    assert any(line.strip() == TEST_COMMAND for line in ci.splitlines())
