"""`llmctl generate`: continue a prompt with a trained checkpoint, streaming the text as it comes.

    llmctl generate runs/py/checkpoints/latest --prompt "def main("
    llmctl generate runs/py --prompt "import os" --max-new-tokens 100 --temperature 0 --json
    llmctl generate runs/sft/checkpoints/latest --chat --prompt "Reverse the word: module"

The prompt is printed, then the model's continuation token by token; the speed (generated tokens per
second, EfficientLLM's inference throughput) goes to stderr. `--json` prints one document instead.
`--chat` (llmctl.cli._chat.py) renders the prompt as a user turn and prints the model's reply.
"""

from __future__ import annotations

import sys

import typer


def register(app: typer.Typer) -> None:
    """Add `llmctl generate`."""

    @app.command(
        "generate",
        short_help="Continue a prompt, or chat, with a checkpoint.",
        help="Sample a continuation of --prompt from a checkpoint (KV cache, streamed).",
    )
    def generate(
        checkpoint: str = typer.Argument(
            ..., help="A checkpoint directory, RUN/checkpoints/latest, or a run directory."
        ),
        prompt: str | None = typer.Option(
            None, "--prompt", "-p", help="Text to continue (with --chat: the user's message)."
        ),
        max_new_tokens: int = typer.Option(
            200, "--max-new-tokens", "-n", min=1, help="Tokens to generate at most."
        ),
        temperature: float = typer.Option(
            0.8, "--temperature", "-t", min=0.0, help="0 picks the most likely token."
        ),
        top_k: int = typer.Option(
            50, "--top-k", min=0, help="Sample among the k most likely tokens; 0: all."
        ),
        top_p: float = typer.Option(
            1.0, "--top-p", min=0.0, max=1.0, help="Nucleus sampling threshold; 1: off."
        ),
        seed: int = typer.Option(0, "--seed", help="Sampling seed (same seed, same text)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        json_out: bool = typer.Option(
            False, "--json", help="Print text and speed as one JSON document; no streaming."
        ),
        chat: bool = typer.Option(
            False,
            "--chat",
            help="Reply as a chat model (chat profile, stops at <|end|>); "
            "without --prompt on a terminal: a conversation.",
        ),
        system: str | None = typer.Option(
            None, "--system", help="--chat: a system message opening the conversation."
        ),
        truncate_left: bool = typer.Option(
            False,
            "--truncate-left",
            help="A prompt longer than the model's context "
            "keeps its end (the start is dropped, and stderr says how much) instead "
            "of being an error.",
        ),
    ) -> None:
        if chat:
            from llmctl.cli._chat import run_chat

            run_chat(
                checkpoint,
                prompt,
                system=system,
                json_out=json_out,
                device=device,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_k=top_k or None,
                top_p=top_p if top_p < 1.0 else None,
                seed=seed,
            )
            return
        if prompt is None:
            from llmctl.errors import LlmctlError

            raise LlmctlError("--prompt is required", "pass --prompt TEXT, or --chat for a conversation")
        from llmctl.infer.generate import generate_from_checkpoint
        from llmctl.output import log, print_json

        def stream(piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()

        result = generate_from_checkpoint(
            checkpoint,
            prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k or None,
            top_p=top_p if top_p < 1.0 else None,
            seed=seed,
            device=device,
            on_text=None if json_out else stream,
            echo_prompt=True,
            truncate_left=truncate_left,
            on_warning=lambda message: log(f"warning: {message}"),
        )
        if not json_out:
            stream("\n")
        dropped = result["prompt_dropped_tokens"]
        if dropped:
            log(
                f"note: --truncate-left dropped the first {dropped:,} prompt tokens to fit the model's context; "
                f"{result['prompt_tokens']:,} kept"
            )
        if json_out:
            print_json(result)
            return
        speed = result["tokens_per_sec"]
        log(
            f"{result['new_tokens']} tokens in {result['seconds']:.2f}s"
            + (f" ({speed:,.1f} tokens/s)" if speed else "")
            + f", {result['device']}, stop: {result['stop_reason']}"
        )
