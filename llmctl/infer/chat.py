"""Chat with a fine-tuned checkpoint: the conversation is rendered by the chat profile, replies stop at <|end|>.

    session = ChatSession("runs/sft/checkpoints/latest", temperature=0)
    session.reply("Reverse the word: module", on_text=print)   # {"text": "eludom", ...}
    session.reply("And uppercase it.")                           # the history goes with each turn

What the model sees is exactly what SFT trained it on (llmctl/tokenizer/chat.py): BOS, then each turn as
`<|role|>` content `<|end|>`, then `<|assistant|>` to ask for the reply. The model is loaded once per
session; when the history no longer fits the context, the oldest exchanges are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmctl.tokenizer.chat import (
    ChatProfile,
    render,
    reply_stop_ids,
    require_profile,
)


def chat_profile_of(manifest: dict[str, Any], tokenizer: Any) -> ChatProfile:
    """The profile the checkpoint's SFT data used (`chat` for a pretrained-only model), checked against
    the tokenizer: a tokenizer without the role markers cannot chat at all."""
    name = (((manifest.get("data_meta") or {}).get("chat_profile")) or {}).get("name", "chat")
    return require_profile(
        name,
        tokenizer,
        "this checkpoint cannot chat: drop --chat to continue plain text, or fine-tune a model whose "
        "tokenizer was trained with --profile chat",
    )


class ChatSession:
    """One conversation with one loaded checkpoint."""

    def __init__(
        self,
        checkpoint: str,
        *,
        device: str = "auto",
        system: str | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int | None = 50,
        top_p: float | None = None,
        seed: int | None = 0,
    ) -> None:
        from llmctl.infer.checkpoint import open_checkpoint
        from llmctl.infer.device import choose_device
        from llmctl.tokenizer.template import TemplateChat, stop_ids

        self.device = choose_device(device, flag="--device")
        opened = open_checkpoint(checkpoint)
        self.warnings = opened.warnings
        """What the caller should show as `warning:` lines before the conversation (a corrupt `latest`)."""
        self.model, self.tokenizer, self.manifest = (
            opened.load_model(self.device),
            opened.tokenizer(),
            opened.manifest,
        )
        # A model with its own chat template (an imported one) chats with it; llmctl's models use their profile.
        self.template = TemplateChat.from_manifest(self.manifest, self.tokenizer)
        self.profile = chat_profile_of(self.manifest, self.tokenizer) if self.template is None else None
        self.checkpoint = checkpoint
        self.system = system
        self.messages: list[dict[str, str]] = []
        self.options = {
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
        }
        self.seed = seed
        if self.profile is not None:
            self.stop_ids = reply_stop_ids(self.profile, self.tokenizer.token_to_id, self.tokenizer.eos_id)
        else:
            self.stop_ids = stop_ids(self.tokenizer, self.manifest)

    def _render(self, messages: list[dict[str, str]]) -> list[int]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        if self.template is not None:
            return self.template.render_ids(head + messages, add_generation_prompt=True)
        assert self.profile is not None
        return render(
            head + messages,
            self.profile,
            self.tokenizer.encode,
            self.tokenizer.token_to_id,
            add_generation_prompt=True,
        ).ids

    def prompt_ids(self, user_text: str) -> list[int]:
        """Ids of the history plus a new user turn, oldest exchanges left out until a reply fits."""
        messages = [*self.messages, {"role": "user", "content": user_text}]
        room = self.model.cfg.max_seq_len - min(
            self.options["max_new_tokens"], self.model.cfg.max_seq_len // 2
        )
        ids = self._render(messages)
        while len(ids) > room and len(messages) > 1:
            messages = messages[2:]
            ids = self._render(messages)
        return ids

    def reply(self, user_text: str, on_text: Callable[[str], None] | None = None) -> dict[str, Any]:
        """The model's reply to `user_text` (streamed to on_text), added to the history with it."""
        from llmctl.infer.generate import IncrementalDecoder, generate
        from llmctl.telemetry import inference_metrics

        ids = self.prompt_ids(user_text)
        stream = IncrementalDecoder(self.tokenizer.decode)
        stops = set(self.stop_ids)

        def emit(token_id: int) -> None:
            if on_text is not None and token_id not in stops:
                piece = stream.push(token_id)
                if piece:
                    on_text(piece)

        from llmctl.infer.device import inference_autocast

        autocast = inference_autocast(self.device)
        turn = len(self.messages) // 2
        gen = generate(
            self.model,
            ids,
            seed=None if self.seed is None else self.seed + turn,
            stop_ids=self.stop_ids,
            autocast=autocast,
            on_token=emit,
            **self.options,
        )
        if on_text is not None:
            rest = stream.flush()
            if rest:
                on_text(rest)
        new = gen.ids[:-1] if gen.stop_reason == "stop" else gen.ids
        text = self.tokenizer.decode(new)
        self.messages += [{"role": "user", "content": user_text}, {"role": "assistant", "content": text}]
        return {
            "checkpoint": str(self.checkpoint),
            "step": self.manifest.get("step"),
            "prompt": user_text,
            "text": text,
            "prompt_tokens": gen.prompt_tokens,
            "new_tokens": len(gen.ids),
            "stop_reason": gen.stop_reason,
            "device": str(self.device),
            "seed": self.seed,
            "tokens_per_sec": gen.tokens_per_sec,
            **inference_metrics(len(gen.ids), gen.seconds),
        }

    def reset(self) -> None:
        """Forget the history (the system message stays)."""
        self.messages = []
