"""README and the pages under docs/: the set-up commands CI runs, every `llmctl` command shown exists and its
flags parse, every command of the app has a page, and every relative link leads to a file."""

from __future__ import annotations

import dataclasses
import re
import shlex
import typing
from pathlib import Path
from typing import Any

import pytest
import typer

from llmctl.cli.app import app
from llmctl.config import Config, parse_overrides

ROOT = Path(__file__).resolve().parents[1]
TEST_COMMAND = "python3 -m pytest -q"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
COMMAND_PAGES = sorted((ROOT / "docs" / "commands").glob("*.md"))


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


# --- commands shown in the docs ------------------------------------------------------------------------------


def _code_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(info string, lines) of every fenced block; an indented fence (inside a list item) counts too."""
    blocks: list[tuple[str, list[str]]] = []
    fence: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if fence is None and stripped.startswith("```"):
            fence, info, body = stripped[:3], stripped[3:].strip(), []
        elif fence is not None and stripped == fence:
            blocks.append((info, body))
            fence = None
        elif fence is not None:
            body.append(stripped)
    return blocks


def _joined(lines: list[str]) -> list[str]:
    """Lines with backslash continuations joined."""
    out: list[str] = []
    pending = ""
    for line in lines:
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return out


def _llmctl_argv(line: str) -> list[str] | None:
    """The arguments after `llmctl` of a shell line that runs llmctl (first command of a pipeline), or None."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:
        return None
    cut = next((i for i, w in enumerate(words) if w and set(w) <= set("|&;<>()")), len(words))
    words = words[:cut]
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):  # VAR=value llmctl ...
        words = words[1:]
    if words[:1] == ["llmctl"]:
        return words[1:]
    if words[:1] == ["torchrun"] and "-m" in words and words[words.index("-m") + 1 :][:1] == ["llmctl"]:
        return words[words.index("-m") + 2 :]
    return None


def _shown_commands(path: Path) -> list[tuple[list[str], bool]]:
    """Every llmctl command line of a page (`$ llmctl ...` in any block, `llmctl ...` in bash blocks), and
    whether the page shows it failing (its output starts with `error:`: a mistake shown on purpose)."""
    found: list[tuple[list[str], bool]] = []
    for info, body in _code_blocks(path.read_text()):
        lines = _joined(body)
        for i, line in enumerate(lines):
            if line.startswith("$ "):
                line = line[2:]
            elif info not in ("bash", "sh", "shell"):
                continue
            argv = _llmctl_argv(re.sub(r"<[a-z-]+>", "X", line))  # `--sha256 <hex>`: a placeholder
            if argv is not None:
                fails = i + 1 < len(lines) and lines[i + 1].startswith("error:")
                found.append((argv, fails))
    return found


def _config_keys() -> set[str]:
    """Every dotted key a `--section.key=value` override may name."""
    sections = typing.get_type_hints(Config)
    return {f"{name}.{field.name}" for name, cls in sections.items() for field in dataclasses.fields(cls)}


ROOT_COMMAND = typer.main.get_command(app)
CONFIG_KEYS = _config_keys()


def _resolve(argv: list[str]) -> tuple[Any, list[str], str]:
    """The (sub)command argv names, the arguments left, and its name ("data download")."""
    command: Any = ROOT_COMMAND
    names: list[str] = []
    while hasattr(command, "commands") and argv and not argv[0].startswith("-"):
        sub = command.commands.get(argv[0])
        assert sub is not None, f"llmctl {' '.join(names + argv[:1])}: no such command"
        names.append(argv[0])
        command, argv = sub, argv[1:]
    return command, argv, " ".join(names)


def _check_parses(argv: list[str]) -> None:
    """Raises when the command does not exist, a flag is unknown or takes no such value, or a
    `--section.key=value` override names no config key."""
    command, args, name = _resolve(argv)
    if hasattr(command, "commands"):  # `llmctl --help`, `llmctl data`: options of the group only
        args = [a for a in args if a.startswith("-")]
    # Shell variables hold values the page does not show ($SLURM_ARRAY_TASK_ID); $TINY is the tests' overrides.
    # `...` stands for flags left out.
    args = [("1" if a.startswith("$") else a) for a in args if a not in ("$TINY", "...", "…")]
    ctx = command.make_context(f"llmctl {name}", list(args), resilient_parsing=False)
    if ctx.args:
        keys = set(parse_overrides(list(ctx.args)))
        unknown = sorted(keys - CONFIG_KEYS - {"model"})  # --model=124m names a preset
        assert not unknown, f"llmctl {name}: no flag or config key {unknown}"


def _all_shown() -> list[tuple[str, list[str], bool]]:
    return [(str(p.relative_to(ROOT)), argv, fails) for p in PAGES for argv, fails in _shown_commands(p)]


def test_every_command_shown_exists_and_its_flags_parse() -> None:
    shown = _all_shown()
    assert len(shown) > 100, "the extraction found too few commands"
    problems = []
    for page, argv, fails in shown:
        try:
            _resolve(argv) if fails else _check_parses(argv)
        except typer.Exit:
            pass  # --help, --list-gpus: eager options that end parsing
        except Exception as exc:  # an unknown command or flag, a bad value: what a reader would get
            problems.append(f"{page}: llmctl {' '.join(argv)}\n    {type(exc).__name__}: {exc}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "line",
    [
        "llmctl tokenize --no-such-flag x",
        "llmctl data dowload pystdlib --out d",
        "llmctl pretrain --data t --optim.lrr=1e-3",
    ],
)
def test_a_wrong_command_is_caught(line: str) -> None:
    argv = _llmctl_argv(line)
    assert argv is not None
    with pytest.raises(Exception):  # noqa: B017 (an AssertionError or the parser's own error)
        _check_parses(argv)


# --- every command has a page -------------------------------------------------------------------------------


def _app_commands() -> list[str]:
    """Every leaf command of the Typer app, as typed: `pretrain`, `data download`, `flops estimate`."""
    out: list[str] = []

    def walk(command: Any, prefix: str) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            out.append(prefix)

    walk(ROOT_COMMAND, "")
    return sorted(out)


def _names(text: str, command: str) -> bool:
    """Whether `text` names `llmctl COMMAND` (in code: `llmctl data download`, or a shown command line)."""
    return re.search(r"llmctl " + re.escape(command) + r"(?![\w-])", text) is not None


def test_readme_and_command_pages_name_every_command() -> None:
    readme = (ROOT / "README.md").read_text()
    pages = "\n".join(p.read_text() for p in COMMAND_PAGES)
    commands = _app_commands()
    assert "pretrain" in commands and "data download" in commands
    missing_readme = [c for c in commands if not _names(readme, c)]
    missing_pages = [c for c in commands if not _names(pages, c)]
    assert not missing_readme, f"README does not name: {missing_readme}"
    assert not missing_pages, f"no page under docs/commands/ names: {missing_pages}"


def test_each_top_level_command_has_its_page() -> None:
    tops = {c.split()[0] for c in _app_commands()}
    pages = {p.stem for p in COMMAND_PAGES}
    assert tops <= pages, f"commands without docs/commands/NAME.md: {sorted(tops - pages)}"


# --- links -------------------------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return [m.group(1) for m in LINK.finditer(text)]


def _anchors(path: Path) -> set[str]:
    """The #fragments GitHub gives the page's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    slugs: set[str] = set()
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(
            slug
            if slug not in slugs
            else next(f"{slug}-{i}" for i in range(1, 99) if f"{slug}-{i}" not in slugs)
        )
    return slugs


def test_relative_links_lead_to_files() -> None:
    broken = []
    for page in PAGES:
        for target in _links(page):
            if re.match(r"[a-z]+:", target):
                continue
            name, _, anchor = target.partition("#")
            file = (page.parent / name).resolve() if name else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)
