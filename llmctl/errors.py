"""The one error type users see, and the exit codes README's "Exit codes" table documents."""

from __future__ import annotations

EXIT_RUNTIME = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_IO = 4
EXIT_INTERRUPTED = 130


class LlmctlError(Exception):
    """An error a user can act on: printed as `error: <message>` and `hint: <hint>`, no traceback.

    `exit_code` is 2 for bad input or a refusal (the default); subclasses set the others.
    """

    def __init__(self, message: str, hint: str | None = None, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class LlmctlRuntimeError(LlmctlError):
    """A failure while running that is not an I/O fault (network down, corrupt file): exit code 1."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint, exit_code=EXIT_RUNTIME)


class LlmctlIOError(LlmctlError):
    """An I/O failure while running (disk full, permission, read-only file system): exit code 4."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint, exit_code=EXIT_IO)


class DivergedError(LlmctlError):
    """Training produced a non-finite loss or gradient norm: exit code 3."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint, exit_code=EXIT_DIVERGED)
