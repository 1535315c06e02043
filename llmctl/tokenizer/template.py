"""A model's own conventions: prompts encoded by its post-processor, chats rendered by its Jinja chat template.

    ids = prompt_ids(tokenizer, manifest, "Once upon a time")        # BOS first when the model wants it
    chat = TemplateChat.from_checkpoint(ckpt_dir, tokenizer)        # None when the model has no template
    ids = chat.render_ids([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    stops = stop_ids(tokenizer, manifest)

A checkpoint records its prompt convention in checkpoint.json: `prompt.add_bos` (imported models, and
llmctl's BOS-first tokenizers) means "encode through the tokenizer's post-processor", exactly what
`AutoTokenizer(prompt)` does; without it, the document prefix of the token shards it was trained on.
Templates are rendered like transformers' `apply_chat_template`: a sandboxed Jinja environment with
trim_blocks and lstrip_blocks, `raise_exception` and `strftime_now` (also bounded in steps, time and size,
jinja_bounds.py), and the text is then encoded with
the template's own special-token strings recognised and no post-processor (the template writes its own BOS).
Special-token strings inside message content stay text: a reply that mentions `<|im_end|>` does not end
its turn (transformers' apply_chat_template would make them specials; llmctl's ids differ from its ids
only there).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.errors import LlmctlError, LlmctlRuntimeError

# End-of-turn markers of common chat templates; a model's stop ids include those its template writes.
END_OF_TURN = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|end_of_turn|>", "<|eom_id|>"]

# Special-token strings in message content are swapped for characters of Unicode's plane-15 private use
# area while the template renders, so the rendered text's remaining special strings are the template's own.
_PLACEHOLDER = 0xF0000


def document_prefix(meta: dict[str, Any]) -> list[int]:
    """The token a document starts after in old-policy shards: BOS when documents are preceded by it,
    EOS when they follow one (the same rule as the pretraining objective's)."""
    sep = meta.get("separator") or {}
    tok = meta.get("tokenizer") or {}
    policy = sep.get("policy")
    if policy in ("bos", "bos+eos") and tok.get("bos_id") is not None:
        return [int(tok["bos_id"])]
    if policy == "eos" and tok.get("eos_id") is not None:
        return [int(tok["eos_id"])]
    return []


def adds_bos(tok: Any) -> bool:
    """True when the tokenizer's post-processor puts a BOS id before encoded text."""
    backend = getattr(tok, "backend", None)
    if backend is None:
        return False
    plain = backend.encode("a", add_special_tokens=False).ids
    full = backend.encode("a", add_special_tokens=True).ids
    return len(full) > len(plain) and full[-len(plain) :] == plain


def encode_with_post_processor(tokenizer: Any, text: str) -> list[int]:
    """Ids of `text` with the tokenizer's post-processor applied (special-token strings stay text)."""
    backend = getattr(tokenizer, "backend", None)
    if backend is None:
        return tokenizer.encode(text)
    return backend.encode(text, add_special_tokens=True).ids


def prompt_ids(tokenizer: Any, manifest: dict[str, Any], text: str) -> list[int]:
    """Ids of a plain-text prompt the way the checkpoint's model saw documents start."""
    if "add_bos" in (manifest.get("prompt") or {}):
        return encode_with_post_processor(tokenizer, text)
    return document_prefix(manifest.get("data_meta") or {}) + tokenizer.encode(text)


def stop_ids(tokenizer: Any, manifest: dict[str, Any]) -> list[int]:
    """Ids that end generation: the checkpoint's recorded stop ids (EOS and end-of-turn), then the tokenizer's EOS."""
    recorded = [int(i) for i in (manifest.get("chat") or {}).get("stop_ids") or []]
    eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    return list(dict.fromkeys(recorded + eos))


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, list) else [value])]


def stop_ids_for(path: Path, tok: Any, template: str | None) -> list[int]:
    """EOS ids of generation_config.json and config.json, the tokenizer's EOS, and every end-of-turn token
    the chat template writes: generation stops at any of them."""
    found: list[int] = []
    for name in ("generation_config.json", "config.json"):
        if (path / name).is_file():
            found += _ids(json.loads((path / name).read_text(encoding="utf-8")).get("eos_token_id"))
    config = path / "tokenizer_config.json"
    if config.is_file():
        eos = json.loads(config.read_text(encoding="utf-8")).get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        if isinstance(eos, str) and tok.token_to_id(eos) is not None:
            found.append(int(tok.token_to_id(eos)))  # type: ignore[arg-type]
    for marker in END_OF_TURN:
        tid = tok.token_to_id(marker)
        if tid is not None and template is not None and marker in template:
            found.append(tid)
    if not found and tok.eos_id is not None:
        found.append(tok.eos_id)
    return list(dict.fromkeys(found))


def read_chat_template(path: Path) -> str | None:
    """The default chat template of a HF model directory (chat_template.jinja, .json or tokenizer_config.json)."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        if (path / name).is_file():
            template = json.loads((path / name).read_text(encoding="utf-8")).get("chat_template")
            if isinstance(template, list):
                named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
                template = named.get("default") or next(iter(named.values()), None)
            if template:
                return str(template)
    return None


def checkpoint_chat_record(path: Path) -> dict[str, Any] | None:
    """The `chat` section (template_text, bos/eos tokens, stop_ids) of an llmctl checkpoint's checkpoint.json,
    or of a run folder's latest checkpoint; None where there is none or it holds no template. Any checkpoint
    trained from an imported model carries it, continued pretraining included."""
    checkpoints = path / "checkpoints"
    candidates = [path / "checkpoint.json", checkpoints / "latest" / "checkpoint.json"]
    latest = checkpoints / "latest"
    if latest.is_file():  # where there are no symlinks, `latest` is a one-line file naming the step folder
        name = latest.read_text(encoding="utf-8").strip()
        if name and Path(name).name == name and name not in (".", ".."):
            candidates.append(checkpoints / name / "checkpoint.json")
    for manifest in candidates:
        if manifest.is_file():
            try:
                chat = json.loads(manifest.read_text(encoding="utf-8")).get("chat")
            except (ValueError, AttributeError) as exc:
                raise LlmctlRuntimeError(
                    f"{manifest} is not a checkpoint manifest ({exc})",
                    "the checkpoint is corrupt: copy it again",
                ) from exc
            if (
                isinstance(chat, dict)
                and isinstance(chat.get("template_text"), str)
                and chat["template_text"]
            ):
                return chat
            return None
    return None


# transformers' apply_chat_template environment: its options, helpers and tojson.
_JINJA_OPTIONS = {"trim_blocks": True, "lstrip_blocks": True, "extensions": ["jinja2.ext.loopcontrols"]}


def _raise_exception(message: str) -> None:
    raise LlmctlError(
        f"the chat template refused the conversation: {message}", "check the roles and their order"
    )


def _strftime_now(fmt: str) -> str:
    import datetime

    return datetime.datetime.now().strftime(fmt)


def _tojson(x: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(x, ensure_ascii=False, indent=indent)


def _special(config: dict[str, Any], key: str) -> str | None:
    value = config.get(key)
    return value.get("content") if isinstance(value, dict) else value


@dataclass
class TemplateChat:
    """A Jinja chat template with the special-token strings it may refer to."""

    template: str
    tokenizer: Any
    bos_token: str | None = None
    eos_token: str | None = None

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], tokenizer: Any) -> TemplateChat | None:
        """The template a checkpoint.json carries in its `chat` section (imported models and their fine-tunes)."""
        chat = manifest.get("chat") or {}
        if not chat.get("template_text"):
            return None
        return cls(chat["template_text"], tokenizer, chat.get("bos_token"), chat.get("eos_token"))

    def describe(self, stop_ids: list[int]) -> dict[str, Any]:
        """The `chat` section of checkpoint.json for this template."""
        return {
            "template_text": self.template,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "stop_ids": stop_ids,
        }

    @classmethod
    def from_dir(cls, path: Path, tokenizer: Any) -> TemplateChat | None:
        """The template of a checkpoint or HF directory (chat_template.jinja or tokenizer_config.json)."""
        template = read_chat_template(path)
        if template is None:
            return None
        config_path = path / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        return cls(template, tokenizer, _special(config, "bos_token"), _special(config, "eos_token"))

    @functools.cached_property
    def _specials(self) -> list[str]:
        """The tokenizer's special-token strings, longest first (so `<|a|>b` is not read as `<|a|>` + `b`)."""
        return sorted(self.tokenizer.special_ids(), key=len, reverse=True)

    @functools.cached_property
    def _special_re(self) -> re.Pattern[str]:
        """Any special-token string, the longest where several match (Llama 3 declares 256 of them)."""
        return re.compile("|".join(re.escape(s) for s in self._specials) or "(?!)")

    def _escape(self, messages: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """`messages` with each special-token string in their content replaced by a placeholder character,
        and the placeholder -> string table to undo it after rendering."""
        specials = self._specials
        index = {s: i for i, s in enumerate(specials)}
        table: dict[str, str] = {}

        def mark(match: re.Match[str]) -> str:
            placeholder = chr(_PLACEHOLDER + index[match.group()])
            table[placeholder] = match.group()
            return placeholder

        out: list[dict[str, Any]] = []
        for message in messages:
            content = message.get("content")
            if isinstance(content, str) and self._special_re.search(content):
                if any(_PLACEHOLDER <= ord(c) < _PLACEHOLDER + len(specials) for c in content):
                    raise LlmctlError(
                        "a message holds both special-token strings and plane-15 private-use characters",
                        "remove the private-use characters (U+F0000 and up) from the data",
                    )
                message = {**message, "content": self._special_re.sub(mark, content)}
            out.append(message)
        return out, table

    def render_text(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = False) -> str:
        """The template's text for `messages`."""
        escaped, table = self._escape(messages)
        text = self._render(escaped, add_generation_prompt)
        for mark, special in table.items():
            text = text.replace(mark, special)
        return text

    def _render(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool) -> str:
        import jinja2

        from llmctl.tokenizer.jinja_bounds import render_bounded

        try:
            # Bounded in steps, time and size (llmctl/tokenizer/jinja_bounds.py): the template is the
            # model publisher's code, and a server may render it in any thread.
            return render_bounded(
                self.template,
                {
                    "messages": list(messages),
                    "add_generation_prompt": add_generation_prompt,
                    "bos_token": self.bos_token or "",
                    "eos_token": self.eos_token or "",
                },
                globals_={"raise_exception": _raise_exception, "strftime_now": _strftime_now},
                filters={"tojson": _tojson},
                options=_JINJA_OPTIONS,
            )
        except jinja2.TemplateError as exc:
            raise LlmctlError(
                f"cannot render the model's chat template: {exc}", "check chat_template.jinja"
            ) from exc

    def encode_text(self, text: str) -> list[int]:
        """Ids of rendered template text: special-token strings become specials, no post-processor."""
        backend = getattr(self.tokenizer, "backend", None)
        if backend is None:
            raise LlmctlError(
                "chat templates need a tokenizer.json tokenizer", "import the model's tokenizer.json"
            )
        previous = backend.encode_special_tokens
        backend.encode_special_tokens = False
        try:
            return backend.encode(text, add_special_tokens=False).ids
        finally:
            backend.encode_special_tokens = previous

    def render_ids(
        self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = False
    ) -> list[int]:
        """Ids of `messages` rendered by the template, as transformers' apply_chat_template(tokenize=True),
        except that special-token strings inside message content are encoded as text."""
        escaped, table = self._escape(messages)
        text = self._render(escaped, add_generation_prompt)
        if not table:
            return self.encode_text(text)
        # Split where the template wrote special tokens (the tokenizer splits there too), then encode each
        # piece between them with every special-token string read as text, the placeholders undone.
        ids: list[int] = []
        for index, piece in enumerate(re.split(f"({self._special_re.pattern})", text)):
            if index % 2:
                ids.append(int(self.tokenizer.token_to_id(piece)))
            elif piece:
                for mark, special in table.items():
                    piece = piece.replace(mark, special)
                ids += self._encode_as_text(piece)
        return ids

    def _encode_as_text(self, text: str) -> list[int]:
        backend = getattr(self.tokenizer, "backend", None)
        if backend is None:
            return self.encode_text(text)  # refuses with the message that names tokenizer.json
        previous = backend.encode_special_tokens
        backend.encode_special_tokens = True
        try:
            return backend.encode(text, add_special_tokens=False).ids
        finally:
            backend.encode_special_tokens = previous

    def render_masked(
        self, messages: Sequence[dict[str, str]], end_ids: Sequence[int]
    ) -> tuple[list[int], list[int]]:
        """(ids, loss mask) of a conversation: 1 exactly on each assistant reply's content and the end-of-turn
        token that closes it (the last of `end_ids` in the reply's span), 0 elsewhere. Special-token strings
        inside messages are text (see render_ids), so a reply that mentions `<|im_end|>` trains on those
        characters and ends at the template's own end-of-turn token.

        Most templates have no `{% generation %}` markers, so the reply's span is found by rendering
        prefixes: the conversation up to the reply with the generation prompt, and up to the reply
        included; the reply is what the second adds to the first. A template whose prefixes do not
        render as prefixes of the whole (one that rewrites earlier turns) is refused.
        """
        ids = self.render_ids(messages)
        mask = [0] * len(ids)
        ends = set(int(i) for i in end_ids)
        for i, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            before = self.render_ids(messages[:i], add_generation_prompt=True)
            after = self.render_ids(messages[: i + 1])
            if after[: len(before)] != before or ids[: len(after)] != after:
                raise LlmctlError(
                    "the chat template does not render a conversation's prefixes as prefixes of it, so the reply "
                    "tokens cannot be located",
                    "use a template that renders turns independently, or a llmctl tokenizer with --profile chat",
                )
            # Through the last end-of-turn id of the span: what follows it (ChatML's newline) is not the reply's.
            stop = len(after)
            for j in range(len(after) - 1, len(before) - 1, -1):
                if after[j] in ends:
                    stop = j + 1
                    break
            for j in range(len(before), stop):
                mask[j] = 1
        return ids, mask
