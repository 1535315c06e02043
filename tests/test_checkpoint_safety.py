"""A shared checkpoint or chat template is data, not a trap: mistyped or oversized checkpoint.json fields,
a tokenizer named outside the checkpoint, a corrupt `latest`, a chat template that never ends, and MLflow
credentials that must not be recorded or printed.

Checkpoints here are written by the engine's own writer from a tiny random model (no training), and
driven through `llmctl generate` as a user would.
"""

from __future__ import annotations

import base64
import http.server
import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from chat_fixtures import train_chat_tokenizer
from typer.testing import CliRunner

from llmctl.cli.app import app
from llmctl.config import load_config, to_dict
from llmctl.errors import LlmctlError

MODEL = {"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64, "max_seq_len": 64}
HANG_S = 30.0
"""How long a render or command may take before the test calls it a hang (the bounds stop it in ~1 s)."""


def _write_run(root: Path, steps: tuple[int, ...] = (10,)) -> Path:
    """RUN/checkpoints/step-*/ written by engine.checkpoint.write_checkpoint, `latest` at the last step."""
    from llmctl.engine.checkpoint import model_state_to_save, write_checkpoint
    from llmctl.model.llama import Transformer
    from llmctl.tokenizer.core import load_tokenizer

    texts = ["alpha bravo charlie delta", "echo foxtrot golf hotel", "india juliet kilo lima"] * 4
    tok_path = train_chat_tokenizer(root / "tok" / "tokenizer.json", texts, vocab_size=300)
    tok = load_tokenizer(tok_path)
    overrides = {f"model.{k}": v for k, v in MODEL.items()}
    cfg = load_config(None, {**overrides, "model.vocab_size": tok.vocab_size, "data.seq_len": 32})
    torch.manual_seed(0)
    state = model_state_to_save(Transformer(cfg.model).state_dict(), cfg.model)
    ckpts = root / "run" / "checkpoints"
    for step in steps:
        write_checkpoint(
            ckpts,
            step,
            model_state=state,
            optimizer_state={},
            rng_states=[],
            manifest={
                "tokens": 0,
                "config": to_dict(cfg),
                "tokenizer": {"fingerprint": tok.fingerprint, "path": str(tok_path), "kind": tok.kind},
                "data_meta": {},
            },
            tokenizer_file=tok_path,
            keep=0,
        )
    return ckpts


@pytest.fixture(scope="module")
def run_ckpts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_run(tmp_path_factory.mktemp("safety"), steps=(10, 20))


def _copy(src: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(src, dest, symlinks=True)
    return dest


def _edit(ckpt: Path, change: Any) -> None:
    path = ckpt / "checkpoint.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _generate(*args: str) -> Any:
    return CliRunner().invoke(app, ["generate", *args, "-n", "3", "--device", "cpu", "--temperature", "0"])


def _in_thread(work: Any, timeout: float = HANG_S) -> Any:
    """work() run off the main thread (as a server would), its result or exception; fails on a hang."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout:.0f} s"
    return box


# -- 9. checkpoint.json fields checked against the weights' header, types checked ---------------------


@pytest.fixture
def no_model_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a Transformer fails the test: a bad config must be refused before anything is allocated."""
    import llmctl.model.llama as llama

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a Transformer was built for a config that disagrees with the weights")

    monkeypatch.setattr(llama.Transformer, "__init__", refuse)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("dim", 4096, "tok_embeddings.weight"),
        ("n_layers", 1_000_000, "model.n_layers=1000000"),
        ("n_kv_heads", 4, "wk"),
        ("max_seq_len", 1_000_000_000, "model.max_seq_len=1,000,000,000"),
    ],
)
def test_config_that_disagrees_with_the_weights_is_refused_before_building(
    run_ckpts: Path, tmp_path: Path, no_model_built: None, field: str, value: int, named: str
) -> None:
    ckpt = _copy(run_ckpts / "step-000020", tmp_path / "ckpt")
    _edit(ckpt, lambda m: m["config"]["model"].update({field: value}))
    result = _generate(str(ckpt), "-p", "alpha")
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and named in result.output and "checkpoint.json" in result.output


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda m: m.update(chat="oops"), "chat must be an object"),
        (lambda m: m.update(chat={"stop_ids": "ab"}), "chat.stop_ids must be a list"),
        (lambda m: m.update(prompt=["add_bos"]), "prompt must be an object"),
        (lambda m: m.update(data_meta={"separator": "bos"}), "data_meta.separator must be an object"),
    ],
)
def test_mistyped_checkpoint_json_fields_are_an_error_not_a_traceback(
    run_ckpts: Path, tmp_path: Path, change: Any, named: str
) -> None:
    ckpt = _copy(run_ckpts / "step-000020", tmp_path / "ckpt")
    _edit(ckpt, change)
    result = _generate(str(ckpt), "-p", "alpha")
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and named in result.output, result.output


# -- 10. the tokenizer comes from inside the checkpoint, verified ----------------------------------------


@pytest.mark.parametrize("case", ["outside", "unlisted"])
def test_tokenizer_outside_the_checkpoint_or_unlisted_is_never_loaded(
    run_ckpts: Path, tmp_path: Path, case: str
) -> None:
    ckpt = _copy(run_ckpts / "step-000020", tmp_path / "ckpt")
    elsewhere = tmp_path / "elsewhere.json"
    (ckpt / "tokenizer.json").rename(elsewhere)
    if case == "unlisted":  # a tokenizer.json put in the checkpoint without a hash to check it against
        elsewhere.rename(ckpt / "tokenizer.json")

    def drop(m: dict[str, Any]) -> None:
        m["files"].pop("tokenizer.json")
        m["tokenizer"]["path"] = str(elsewhere)

    _edit(ckpt, drop)
    result = _generate(str(ckpt), "-p", "alpha")
    assert result.exit_code == 2, result.output
    assert "has no tokenizer listed in checkpoint.json" in result.output
    assert ("not listed" in result.output) == (case == "unlisted")


def test_tokenizer_swapped_inside_the_checkpoint_is_refused(run_ckpts: Path, tmp_path: Path) -> None:
    ckpt = _copy(run_ckpts / "step-000020", tmp_path / "ckpt")
    data = json.loads((ckpt / "tokenizer.json").read_text())
    data["model"]["vocab"] = {k[::-1]: v for k, v in data["model"]["vocab"].items()}
    (ckpt / "tokenizer.json").write_text(json.dumps(data))
    manifest = json.loads((ckpt / "checkpoint.json").read_text())
    manifest["files"]["tokenizer.json"]["size"] = (ckpt / "tokenizer.json").stat().st_size
    (ckpt / "checkpoint.json").write_text(json.dumps(manifest))
    result = _generate(str(ckpt), "-p", "alpha")
    assert result.exit_code == 2 and "tokenizer.json is corrupt" in result.output, result.output


# -- 11. a corrupt `latest` is said, not silently replaced --------------------------------------------------


def test_corrupt_latest_falls_back_with_a_warning(run_ckpts: Path, tmp_path: Path) -> None:
    root = _copy(run_ckpts, tmp_path / "checkpoints")
    model = root / "step-000020" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-100])  # a partial copy
    result = _generate(str(root / "latest"), "-p", "alpha", "--json")
    assert result.exit_code == 0, result.output
    line = (
        f"warning: {root / 'latest'} names step-000020, which is not a complete checkpoint; using step-000010"
    )
    assert line in result.stderr
    assert json.loads(result.stdout)["step"] == 10
    chat = _generate(str(root.parent), "--chat", "-p", "alpha")  # the run directory; --chat too
    assert chat.exit_code == 0 and "using step-000010" in chat.stderr, chat.output
    clean = _generate(str(run_ckpts / "latest"), "-p", "alpha")
    assert clean.exit_code == 0 and "warning:" not in clean.stderr


# -- 12. chat templates are bounded in steps, time and size, in any thread --------------------------------

NESTED = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
WIDE = "{% for i in range(20000) %}{{ 'x' * 1000 }}{% endfor %}"  # 20M characters


def _template_chat(template: str) -> Any:
    from llmctl.tokenizer.template import TemplateChat

    class NoSpecials:
        def special_ids(self) -> dict[str, int]:
            return {}

    return TemplateChat(template, NoSpecials())


@pytest.mark.parametrize(("template", "said"), [(NESTED, "steps"), (WIDE, "rendered more than")])
def test_runaway_chat_template_stops_off_the_main_thread(template: str, said: str) -> None:
    box = _in_thread(lambda: _template_chat(template).render_text([{"role": "user", "content": "hi"}]))
    assert isinstance(box.get("error"), LlmctlError), box
    assert said in box["error"].message and "chat template" in box["error"].message


def test_generate_chat_with_a_runaway_template_is_an_error(run_ckpts: Path, tmp_path: Path) -> None:
    ckpt = _copy(run_ckpts / "step-000020", tmp_path / "ckpt")
    _edit(ckpt, lambda m: m.update(chat={"template_text": NESTED, "stop_ids": []}))
    box = _in_thread(lambda: _generate(str(ckpt), "--chat", "-p", "alpha"))
    result = box["result"]
    assert result.exit_code == 2 and "error: the chat template took more than" in result.output, result.output


# Shaped like Qwen2.5's template (tools, namespace, tojson, loop.last, slicing): the features real
# templates use, rendered by the bounded sandbox and by a plain one.
TOOLS_TEMPLATE = """{%- if tools %}
{{- '<|im_start|>system\\n' }}{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% else %}You are helpful.{% endif %}
{{- "\\n\\n# Tools\\n<tools>" }}
{%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}
{{- "\\n</tools><|im_end|>\\n" }}
{%- elif messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(last_user=-1) %}
{%- for message in messages %}{% if message.role == 'user' %}{% set ns.last_user = loop.index0 %}{% endif %}{% endfor %}
{%- for message in messages %}
  {%- if message.role == "user" or (message.role == "system" and not loop.first) %}
    {{- '<|im_start|>' + message.role + '\\n' + message.content | trim + '<|im_end|>' + '\\n' }}
  {%- elif message.role == "assistant" %}
    {{- '<|im_start|>assistant' }}{% if message.content %}{{ '\\n' ~ message.content }}{% endif %}
    {%- for call in message.tool_calls | default([]) %}
      {{- '\\n<tool_call>\\n{"name": "' ~ call.name ~ '", "arguments": ' ~ (call.arguments | tojson) ~ '}\\n</tool_call>' }}
    {%- endfor %}
    {{- '<|im_end|>\\n' }}{% if loop.index0 > ns.last_user %}{{ '' }}{% endif %}
  {%- elif message.role == "tool" %}
    {%- if loop.first or messages[loop.index0 - 1].role != "tool" %}{{- '<|im_start|>user' }}{%- endif %}
    {{- '\\n<tool_response>\\n' ~ message.content ~ '\\n</tool_response>' }}
    {%- if loop.last or messages[loop.index0 + 1].role != "tool" %}{{- '<|im_end|>\\n' }}{%- endif %}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
{{- (messages | map(attribute='role') | select('equalto', 'user') | list | length) ~ ' ' ~ ('%03d' % 7) ~ ' ' ~ '{:>4}'.format(3) ~ ' ' ~ messages[-1].content[:4] | upper }}"""


def test_real_chat_templates_render_exactly_as_before() -> None:
    from hf_fixtures import CHATML_TEMPLATE, LLAMA3_TEMPLATE
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from llmctl.tokenizer.jinja_bounds import render_bounded

    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "  What is 2+2?  "},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 2}}]},
        {"role": "tool", "content": "4"},
        {"role": "assistant", "content": "4 ü"},
        {"role": "user", "content": "thanks"},
    ]
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"a": "int", "b": "int"}}}]
    options = {"trim_blocks": True, "lstrip_blocks": True, "extensions": ["jinja2.ext.loopcontrols"]}

    def tojson(x: Any, indent: int | None = None, **_: Any) -> str:
        return json.dumps(x, ensure_ascii=False, indent=indent)

    for template in (LLAMA3_TEMPLATE, CHATML_TEMPLATE, TOOLS_TEMPLATE):
        for gen in (False, True):
            context = {"messages": messages, "add_generation_prompt": gen, "bos_token": "<s>", "tools": tools}
            plain = ImmutableSandboxedEnvironment(**options)
            plain.filters["tojson"] = tojson
            expected = plain.from_string(template).render(**context)
            assert render_bounded(template, context, filters={"tojson": tojson}, options=options) == expected


# -- 13. MLflow credentials: used for the connection, redacted everywhere else -----------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mlflow_uri_credentials_are_redacted_in_config_and_checkpoints(tmp_path: Path) -> None:
    uri = "http://alice:s3cret@127.0.0.1:5000"
    cfg = load_config(None, {"telemetry.mlflow_uri": uri})
    assert cfg.telemetry.mlflow_uri == uri  # the sink connects with the real one
    ckpts = _write_run(tmp_path)  # the writer records to_dict(cfg), as the trainer does
    recorded = to_dict(cfg)
    assert recorded["telemetry"]["mlflow_uri"] == "http://REDACTED@127.0.0.1:5000"
    from llmctl.config import to_yaml

    assert "s3cret" not in to_yaml(cfg) and "s3cret" not in json.dumps(recorded)
    assert "s3cret" not in (ckpts / "step-000010" / "checkpoint.json").read_text()
    sqlite = load_config(None, {"telemetry.mlflow_uri": "sqlite:///runs/mlflow.db"})
    assert to_dict(sqlite)["telemetry"]["mlflow_uri"] == "sqlite:///runs/mlflow.db"  # left as written


def test_unreachable_mlflow_server_error_hides_the_password() -> None:
    from llmctl.telemetry.mlflow_sink import check_uri

    port = _free_port()
    with pytest.raises(LlmctlError) as caught:
        check_uri(f"http://alice:s3cret@127.0.0.1:{port}")
    message = str(caught.value)
    assert "cannot be reached" in message and f"http://REDACTED@127.0.0.1:{port}" in message
    assert "s3cret" not in message and "alice" not in message


def test_mlflow_health_check_sends_the_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmctl.telemetry.mlflow_sink import check_uri

    seen: list[str | None] = []

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for var in ("http_proxy", "HTTP_PROXY"):
            monkeypatch.delenv(var, raising=False)
        check_uri(f"http://alice:s3cret@127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert seen == ["Basic " + base64.b64encode(b"alice:s3cret").decode()]
