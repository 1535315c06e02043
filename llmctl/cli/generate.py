"""`llmctl generate`: continue a prompt with a trained checkpoint, streaming the text as it comes.

    llmctl generate runs/py/checkpoints/latest --prompt "def main("
    llmctl generate runs/py --prompt "import os" --max-new-tokens 100 --temperature 0 --json
    llmctl generate runs/sft/checkpoints/latest --chat --prompt "Reverse the word: module"
    llmctl generate runs/py --prompts prompts.txt --num-samples 4 --stop "\n\n" --json

The prompt is printed, then the model's continuation token by token; the speed (generated tokens per
second, EfficientLLM's inference throughput) goes to stderr. `--json` prints one document instead.
`--prompts FILE` decodes every prompt (times --num-samples) in batches and prints each result under a
`### line N, sample J` header; with `--json`, one JSON line per prompt x sample.
`--chat` (llmctl.cli._chat.py) renders the prompt as a user turn and prints the model's reply.
"""

from __future__ import annotations

import sys
from typing import Any

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
        prompts_file: str | None = typer.Option(
            None,
            "--prompts",
            help="A file of prompts, one per line (or JSON Lines with a prompt field), decoded in batches.",
        ),
        num_samples: int = typer.Option(
            1, "--num-samples", help="Samples per prompt (seeds seed, seed+1, ...)."
        ),
        stop: list[str] = typer.Option(
            [],
            "--stop",
            help="End a sample at this text (repeatable; \\n and \\t are read as newline and tab); the text is cut before it.",
        ),
        min_p: float = typer.Option(
            0.0, "--min-p", help="Drop tokens under min-p x the top token's probability; 0: off."
        ),
        repetition_penalty: float = typer.Option(
            1.0,
            "--repetition-penalty",
            help="Divide seen tokens' positive logits by this (HF semantics); 1: off.",
        ),
        max_time: float | None = typer.Option(
            None, "--max-time", help="Stop generating after this many seconds."
        ),
        batch_size: int = typer.Option(16, "--batch-size", help="--prompts: sequences decoded together."),
        truncate_left: bool = typer.Option(
            False,
            "--truncate-left",
            help="A prompt longer than the model's context "
            "keeps its end (the start is dropped, and stderr says how much) instead "
            "of being an error.",
        ),
    ) -> None:
        batched = {
            "--prompts": prompts_file is not None,
            "--num-samples": num_samples != 1,
            "--stop": bool(stop),
            "--min-p": min_p != 0.0,
            "--repetition-penalty": repetition_penalty != 1.0,
            "--max-time": max_time is not None,
        }
        if chat and any(batched.values()):
            from llmctl.errors import LlmctlError

            flags = ", ".join(flag for flag, given in batched.items() if given)
            raise LlmctlError(
                f"--chat does not take {flags}", "drop them, or drop --chat to continue plain text"
            )
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
        from llmctl.errors import LlmctlError
        from llmctl.infer.sampling import Sampling

        sampling = Sampling(
            temperature,
            top_k or None,
            top_p if top_p < 1.0 else None,
            min_p or None,
            None if repetition_penalty == 1.0 else repetition_penalty,
        )
        stops = [_unescape(text) for text in stop]
        options = {
            "max_new_tokens": max_new_tokens,
            "sampling": sampling,
            "seed": seed,
            "stop_strings": stops,
        }
        options.update(max_time=max_time, device=device, truncate_left=truncate_left)
        if prompts_file is not None or num_samples != 1:
            if prompt is not None and prompts_file is not None:
                raise LlmctlError("--prompt and --prompts were both given", "pass one of them")
            _many(
                checkpoint,
                prompt,
                prompts_file,
                json_out,
                num_samples=num_samples,
                batch_size=batch_size,
                **options,
            )
            return
        if prompt is None:
            raise LlmctlError(
                "--prompt is required", "pass --prompt TEXT, --prompts FILE, or --chat for a conversation"
            )
        _one(checkpoint, prompt, json_out, **options)


def _unescape(text: str) -> str:
    """`--stop '\\n'` as a newline: shells pass the two characters, and a newline is the stop most wanted."""
    return text.replace("\\\\", "\0").replace("\\n", "\n").replace("\\t", "\t").replace("\0", "\\")


def _stream(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def _one(checkpoint: str, prompt: str, json_out: bool, **options: Any) -> None:
    """One prompt, streamed (or one JSON document)."""
    from llmctl.cli._tables import speed_line
    from llmctl.infer.generate import generate_from_checkpoint
    from llmctl.output import log, print_json

    result = generate_from_checkpoint(
        checkpoint,
        prompt,
        on_text=None if json_out else _stream,
        echo_prompt=True,
        on_warning=lambda message: log(f"warning: {message}"),
        **options,
    )
    if not json_out:
        _stream("\n")
    dropped = result["prompt_dropped_tokens"]
    if dropped:
        log(
            f"note: --truncate-left dropped the first {dropped:,} prompt tokens to fit the model's context; "
            f"{result['prompt_tokens']:,} kept"
        )
    if json_out:
        print_json(result)
        return
    log(speed_line(result))


def _many(
    checkpoint: str, prompt: str | None, prompts_file: str | None, json_out: bool, **options: Any
) -> None:
    """Every prompt of the file (or --prompt) x --num-samples, batched; text blocks or JSON lines."""
    import json

    from llmctl.infer.generate import generate_many_from_checkpoint
    from llmctl.infer.prompts import read_prompts
    from llmctl.output import log

    prompts = read_prompts(prompts_file) if prompts_file is not None else [(1, prompt or "")]
    result = generate_many_from_checkpoint(
        checkpoint, prompts, on_warning=lambda message: log(f"warning: {message}"), **options
    )
    shared = {k: result[k] for k in ("checkpoint", "step", "device", "temperature", "top_k", "top_p")}
    for record in result["records"]:
        if json_out:
            sys.stdout.write(json.dumps({**shared, **record}, ensure_ascii=False) + "\n")
        else:
            _stream(
                f"### line {record['line']}, sample {record['sample'] + 1}\n{record['prompt']}{record['text']}\n"
            )
        if record["prompt_dropped_tokens"]:
            log(
                f"note: --truncate-left dropped the first {record['prompt_dropped_tokens']:,} tokens of line {record['line']}"
            )
    speed = result["tokens_per_sec"]
    log(
        f"{len(result['records'])} samples, {result['new_tokens']} tokens in {result['seconds']:.2f}s"
        + (f" ({speed:,.1f} tokens/s)" if speed else "")
        + f", {result['device']}"
    )
