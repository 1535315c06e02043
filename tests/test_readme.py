"""README's two set-up commands are what CI runs and what a new user types."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_COMMAND = "python3 -m pytest -q"


def _setup_commands(readme: str) -> list[str]:
    """The commands of README's "two commands" section: the bash blocks after "Then the two commands"."""
    section = readme.split("## Set-up on a fresh machine: two commands", 1)[1].split("\n## ", 1)[0]
    after = section.split("Then the two commands", 1)[1]
    return [block.split("\n", 1)[1].strip() for block in after.split("```bash")[1:]]


def test_ci_runs_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    first, second = (c.split("\n```")[0] for c in _setup_commands(readme))
    # The first installs only the base dependencies, then runs the quickstart; the second adds the test extras
    # and runs README's test command. CI installs exactly as README does and runs the same tests.
    assert first == "python3 -m pip install -e . && bash examples/quickstart.sh"
    assert second.endswith("&& " + TEST_COMMAND) and ".[dev]" in second and ".[dev]" not in first
    assert first.split(" && ")[0] in ci and second in ci
