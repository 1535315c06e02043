"""Imported by the fork server only (PRELOAD): its workers must not run the parent's script again.

multiprocessing asks each new worker to import the parent's main script as `__mp_main__` unless the
worker's `__main__` already has that file. Python 3.11's fork server never imports it itself (its
`__main__` preload is skipped), so under the `llmctl` console script every worker would import the
whole command line (typer, rich, pydantic, every command) before its first chunk. Workers only ever
run functions of `llmctl.tokens.workers`, never anything of `__main__`, so the server records the
script as its own and the check passes. Never import this module anywhere else.
"""

from __future__ import annotations

import os
import sys

from llmctl.tokens.worker_start import MAIN_PATH_ENV

_path = os.environ.get(MAIN_PATH_ENV)
_main = sys.modules.get("__main__")
if _path and _main is not None and getattr(_main, "__file__", None) is None:
    _main.__file__ = _path
