"""--apply-chat-template for multiple-choice tasks: the context as a user turn of the model's chat template.

    pair_ids = chat_pairs(loaded)
    items = [without_delimiter(i) for i in items]
    ctx_ids, choice_ids = pair_ids("Question: Which is a gas?\\nAnswer:", "steam")

As lm-evaluation-harness (0.4) with `--apply_chat_template`: the whole context (few-shot examples included)
is one user message rendered with the generation prompt, and the choice follows with no target delimiter.
A checkpoint carrying a Jinja template (imported models and their fine-tunes) renders it as transformers
would and encodes the pair by lm-eval's rule (the rendered text's trailing whitespace moves onto the
choice); the model's prompt prefix goes first unless the template wrote it. A llmctl model fine-tuned on
its chat profile renders the profile's turn markers and encodes the choice on its own.
"""

from __future__ import annotations

from dataclasses import replace

from llmctl.errors import LlmctlError
from llmctl.eval.choice import PairIds, encode_pair
from llmctl.eval.model_io import LoadedModel, prompt_prefix
from llmctl.eval.tasks import ChoiceItem


def without_delimiter(item: ChoiceItem) -> ChoiceItem:
    """The item as lm-eval scores it under a chat template: the choice right after the rendered turn."""
    return replace(item, delimiter="")


def _template_pairs(loaded: LoadedModel, template: object) -> PairIds:
    from llmctl.tokenizer.template import TemplateChat

    assert isinstance(template, TemplateChat)
    prefix = prompt_prefix(loaded)
    bos = template.bos_token or ""

    def pair(context: str, choice: str) -> tuple[list[int], list[int]]:
        text = template.render_text([{"role": "user", "content": context}], add_generation_prompt=True)
        first = [] if bos and text.startswith(bos) else prefix
        return encode_pair(template.encode_text, first, text, choice)

    return pair


def chat_pairs(loaded: LoadedModel) -> PairIds:
    """How a (context, choice) pair is encoded with the checkpoint's chat template."""
    from llmctl.tokenizer.chat import get_profile, missing_tokens, render
    from llmctl.tokenizer.template import TemplateChat

    tok = loaded.tokenizer
    template = TemplateChat.from_manifest(loaded.manifest, tok)
    if template is not None:
        return _template_pairs(loaded, template)
    name = (((loaded.manifest.get("data_meta") or {}).get("chat_profile")) or {}).get("name", "chat")
    profile = get_profile(name)
    if missing_tokens(profile, tok.token_to_id):
        raise LlmctlError(
            f"{loaded.checkpoint} has no chat template (no template in checkpoint.json, no chat tokens)",
            "drop --apply-chat-template for a base model, or evaluate a fine-tuned or imported chat model",
        )

    def pair(context: str, choice: str) -> tuple[list[int], list[int]]:
        turn = render([{"role": "user", "content": context}], profile, tok.encode, tok.token_to_id, True)
        return turn.ids, tok.encode(choice)

    return pair
