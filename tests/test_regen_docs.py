"""scripts/regen_docs.py: the quickstart's figures in README and docs/ come from one run's summary.json, and
`--check` fails when a page disagrees with the run."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("regen_docs", ROOT / "scripts" / "regen_docs.py")
assert _spec is not None and _spec.loader is not None
regen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regen)


def _fake_run(folder: Path, loss: float, ppl: float, acc: float, bpb: float, steps: int = 270) -> Path:
    folder.mkdir(parents=True)
    final = {"step": steps, "loss": loss, "perplexity": ppl, "accuracy": acc, "bpb": bpb}
    (folder / "summary.json").write_text(json.dumps({"steps": steps, "final_loss": 3.5, "final_eval": final}))
    return folder


PAGE = """# quickstart

a validation loss of <!-- quickstart:val_loss:.2f -->3.70<!-- /quickstart --> nats after
<!-- quickstart:steps:d -->270<!-- /quickstart --> steps, accuracy <!-- quickstart:val_acc:.1% -->33.5%<!-- /quickstart -->

<!-- quickstart:log -->
```console
$ llmctl pretrain -c examples/configs/quickstart.yaml --data quickstart/tokens/py --out quickstart/runs/quickstart
final eval (step 270): loss 3.6987 | ppl 40.39 | acc 33.5% | bpb 1.5463
```
"""


def _fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "docs" / "commands").mkdir(parents=True)
    (root / "README.md").write_text(PAGE)
    (root / "docs" / "commands" / "pretrain.md").write_text(
        "the loss: <!-- quickstart:val_loss:.3f -->3.699<!-- /quickstart -->\n"
    )
    return root


def test_check_passes_when_the_docs_show_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _fake_run(tmp_path / "run", loss=3.6987, ppl=40.39, acc=0.335, bpb=1.5463)
    assert regen.main([str(run), "--check", "--root", str(_fake_root(tmp_path))]) == 0
    assert "docs agree with the run" in capsys.readouterr().err


def test_check_names_each_figure_that_disagrees(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _fake_root(tmp_path)
    before = (root / "README.md").read_text()
    run = _fake_run(tmp_path / "run", loss=3.6710, ppl=39.29, acc=0.3412, bpb=1.5348)
    assert regen.main([str(run), "--check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "README.md: val_loss shows 3.70, the run has 3.67" in err
    assert "README.md: val_acc shows 33.5%, the run has 34.1%" in err
    assert "docs/commands/pretrain.md: val_loss shows 3.699, the run has 3.671" in err
    assert "the log shows final eval (step 270: loss 3.6987 | ppl 40.39)" in err
    assert (root / "README.md").read_text() == before  # --check changes nothing


def test_regenerate_rewrites_the_figures_and_not_the_outputs(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    run = _fake_run(tmp_path / "run", loss=3.6710, ppl=39.29, acc=0.3412, bpb=1.5348)
    assert regen.main([str(run), "--root", str(root)]) == 1  # the pasted log is still the old run's
    readme = (root / "README.md").read_text()
    assert "-->3.67<!--" in readme and "-->34.1%<!--" in readme
    assert "final eval (step 270): loss 3.6987" in readme  # a shown output is never rewritten
    assert "-->3.671<!--" in (root / "docs" / "commands" / "pretrain.md").read_text()
    (root / "README.md").write_text(readme.replace("loss 3.6987 | ppl 40.39", "loss 3.6710 | ppl 39.29"))
    assert regen.main([str(run), "--check", "--root", str(root)]) == 0


def test_a_run_that_did_not_finish_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit, match="not a finished run's summary"):
        regen.main([str(tmp_path / "run"), "--check", "--root", str(_fake_root(tmp_path))])


def test_the_docs_figures_agree_with_the_log_they_show(tmp_path: Path) -> None:
    """README and docs/ mark the quickstart figures; they must be those of the run whose log the pretrain page
    shows (its final-eval line), so a figure from another run is caught."""
    shown = (ROOT / "docs" / "commands" / "pretrain.md").read_text().split(regen.LOG_MARK, 1)[1]
    found = re.search(
        r"final eval \(step (\d+)\): loss ([0-9.]+) \| ppl ([0-9.]+) \| acc ([0-9.]+)% \| bpb ([0-9.]+)",
        shown,
    )
    assert found is not None
    steps, loss, ppl, acc, bpb = found.groups()
    run = _fake_run(tmp_path / "run", float(loss), float(ppl), float(acc) / 100, float(bpb), int(steps))
    assert regen.regenerate(run, ROOT, check=True) == []
    marked = sum(len(regen.MARK.findall(p.read_text())) for p in regen.pages(ROOT))
    assert marked >= 8
