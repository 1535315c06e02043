"""`llmctl generate --chat`: one reply, or an interactive conversation on a terminal.

    llmctl generate runs/sft/checkpoints/latest --chat --prompt "Reverse the word: module"
    llmctl generate runs/sft/checkpoints/latest --chat            # on a terminal: a conversation
    echo "What is 12 + 30?" | llmctl generate runs/sft --chat --json

Not a command of its own: `generate` hands over here when --chat is given. In the interactive loop
`/reset` forgets the history and `/exit` (or Ctrl-D) ends the session.
"""

from __future__ import annotations

import sys
from typing import Any

from llmctl.cli._tables import speed_line
from llmctl.errors import LlmctlError


def run_chat(
    checkpoint: str, prompt: str | None, *, system: str | None, json_out: bool, **options: Any
) -> None:
    """Answer --prompt (or piped stdin) once, or hold a conversation when stdin is a terminal."""
    from llmctl.infer.chat import ChatSession
    from llmctl.output import log, print_json

    def stream(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    interactive = prompt is None and sys.stdin.isatty()
    if prompt is None and not interactive:
        prompt = sys.stdin.read().strip()
        if not prompt:
            raise LlmctlError(
                "--chat got no message",
                "pass --prompt TEXT, pipe the message on stdin, or run it on a terminal",
            )
    session = ChatSession(checkpoint, system=system, **options)
    for warning in session.warnings:
        log(f"warning: {warning}")
    if not interactive:
        assert prompt is not None
        result = session.reply(prompt, on_text=None if json_out else stream)
        if json_out:
            print_json(result)
            return
        stream("\n")
        log(speed_line(result))
        return
    log(
        f"chatting with {checkpoint} (step {session.manifest.get('step')}); /reset clears the history, /exit or Ctrl-D ends"
    )
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            stream("\n")
            return
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            session.reset()
            log("history cleared")
            continue
        if not text:
            continue
        stream("model> ")
        session.reply(text, on_text=stream)
        stream("\n")
