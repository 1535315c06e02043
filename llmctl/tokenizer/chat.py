"""Chat profiles: how a list of {role, content} messages becomes token ids and a loss mask.

One definition shared by `tokenize --mode sft`, `sft`, `generate --chat` and `export` (whose Jinja
`chat_template` renders the same ids). Profile `chat` v1:

    <|bos|> <|user|> {content} <|end|> <|assistant|> {content} <|end|> ...

Each role marker and `<|end|>` is a single special token. The loss mask is 1 exactly on assistant
content tokens and the `<|end|>` that closes them, 0 everywhere else (BOS, markers, system and user turns).
Content is encoded as ordinary text, so special-token strings typed by a user never become specials.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llmctl.errors import LlmctlError

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
BASE_SPECIALS = [BOS, EOS, PAD]


@dataclass(frozen=True)
class ChatProfile:
    """A named, versioned way of rendering conversations."""

    name: str
    version: int
    roles: dict[str, str]
    """role -> its marker token."""
    end: str
    """Token closing every turn; generation stops on it."""

    @property
    def special_tokens(self) -> list[str]:
        """The tokens a tokenizer needs for this profile, beyond BOS/EOS/PAD."""
        return [*self.roles.values(), self.end]

    def chat_template(self) -> str:
        """A Jinja chat template for transformers' apply_chat_template that yields the same ids as `render`."""
        markers = " ".join(f"'{role}': '{marker}'," for role, marker in self.roles.items())
        return (
            "{%- set markers = {" + markers + "} -%}"
            "{{- '" + BOS + "' -}}"
            "{%- for message in messages -%}"
            "{{- markers[message['role']] + message['content'] + '" + self.end + "' -}}"
            "{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{- '" + self.roles["assistant"] + "' -}}{%- endif -%}"
        )


PROFILES: dict[str, ChatProfile] = {
    "chat": ChatProfile(
        name="chat",
        version=1,
        roles={"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"},
        end="<|end|>",
    ),
}


def get_profile(name: str) -> ChatProfile:
    """The profile called `name`; unknown names list the known ones."""
    if name not in PROFILES:
        raise LlmctlError(f"unknown chat profile '{name}'", f"known profiles: {', '.join(PROFILES)}")
    return PROFILES[name]


def missing_tokens(profile: ChatProfile, token_to_id: Callable[[str], int | None]) -> list[str]:
    """The profile's tokens (BOS included) that a tokenizer lacks; empty when it can render chats."""
    return [t for t in [BOS, *profile.special_tokens] if token_to_id(t) is None]


def require_profile(name: str, tokenizer: Any, hint: str) -> ChatProfile:
    """The named chat profile, after checking that the tokenizer holds all its tokens (BOS included);
    else the one error every command gives, naming the missing tokens, with the caller's `hint`."""
    profile = get_profile(name)
    missing = missing_tokens(profile, tokenizer.token_to_id)
    if missing:
        raise LlmctlError(
            f"the tokenizer {tokenizer.path} lacks the chat profile '{profile.name}' tokens {', '.join(missing)}",
            hint,
        )
    return profile


def reply_stop_ids(
    profile: ChatProfile | None, token_to_id: Callable[[str], int | None], eos_id: int | None
) -> list[int]:
    """Ids that end a reply: the profile's end marker, then end-of-document; absent ones skipped, no repeats."""
    ids = [token_to_id(profile.end) if profile is not None else None, eos_id]
    return [i for i in dict.fromkeys(ids) if i is not None]


@dataclass
class RenderedChat:
    """Token ids of a conversation and the loss mask (1 = trained) of the same length."""

    ids: list[int]
    mask: list[int]


def _special_id(token_to_id: Callable[[str], int | None], token: str) -> int:
    tid = token_to_id(token)
    if tid is None:
        raise LlmctlError(
            f"the tokenizer has no special token {token}",
            "train it with `llmctl tokenizer train --profile chat` so it holds the chat markers",
        )
    return tid


def render(
    messages: Sequence[dict[str, str]],
    profile: ChatProfile,
    encode: Callable[[str], list[int]],
    token_to_id: Callable[[str], int | None],
    add_generation_prompt: bool = False,
) -> RenderedChat:
    """Render messages into ids and a loss mask.

    `encode` must encode ordinary text (no special tokens added or recognised); `token_to_id` maps a
    special token string to its id. With `add_generation_prompt` the assistant marker is appended
    (for generation), unmasked.
    """
    ids = [_special_id(token_to_id, BOS)]
    mask = [0]
    end_id = _special_id(token_to_id, profile.end)
    for message in messages:
        role = message.get("role")
        if role not in profile.roles:
            raise LlmctlError(
                f"message role {role!r} is not in chat profile '{profile.name}'",
                f"use one of {', '.join(profile.roles)}",
            )
        content_ids = encode(message.get("content") or "")
        trained = 1 if role == "assistant" else 0
        ids.append(_special_id(token_to_id, profile.roles[role]))
        mask.append(0)
        ids.extend(content_ids)
        mask.extend([trained] * len(content_ids))
        ids.append(end_id)
        mask.append(trained)
    if add_generation_prompt:
        ids.append(_special_id(token_to_id, profile.roles["assistant"]))
        mask.append(0)
    return RenderedChat(ids=ids, mask=mask)
