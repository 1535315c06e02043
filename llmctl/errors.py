"""The one error type users see, and the exit codes of DESIGN.md section 5."""

from __future__ import annotations

EXIT_BAD_INPUT = 2
EXIT_RUNTIME = 1
EXIT_INTERRUPTED = 130


class LlmctlError(Exception):
    """An error a user can act on: printed as `error: <message>` and `hint: <hint>`, no traceback.

    `exit_code` is 2 for bad input (the default) and 1 for failures at run time.
    """

    def __init__(self, message: str, hint: str | None = None, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class LlmctlRuntimeError(LlmctlError):
    """A failure while running (network down, disk full, corrupt file): exit code 1."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint, exit_code=EXIT_RUNTIME)
