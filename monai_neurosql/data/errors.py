"""End a failed bundle run with the user's error on the last line of the output, and without an abort."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from types import TracebackType

__all__ = ["summarize_errors_at_exit", "user_error"]

_PACKAGE = str(Path(__file__).resolve().parents[1])
_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, ArithmeticError, ImportError)


def _raised_here(error: BaseException) -> bool:
    tb = error.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and str(Path(last.tb_frame.f_code.co_filename).resolve()).startswith(_PACKAGE)


def user_error(error: BaseException) -> BaseException | None:
    """The innermost error of ``error``'s chain (``__cause__``/``__context__``) that monai_neurosql raised for the
    user: a ``ValueError``/``TypeError``/``FileNotFoundError``/``FileExistsError`` about an input or an output
    folder, an ``ImportError`` naming the extra to install (:func:`monai_neurosql.extras.require`), or a run that
    diverged. MONAI's bundle parser wraps these in ``RuntimeError("Failed to evaluate ...")``;
    this finds them again."""
    from ..handlers.divergence_guard import TrainingDivergedError

    found, seen = None, set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (*_USER_ERRORS, TrainingDivergedError)) and _raised_here(error):
            found = error
        error = error.__cause__ or error.__context__
    return found


def summarize_errors_at_exit() -> None:
    """Install a ``sys.excepthook`` for bundle runs: after the usual traceback, print the user's error (see
    :func:`user_error`) as the last line, ``ERROR: <message>``, and end the process with exit code 1 at once.

    Ending at once (``os._exit`` after flushing the logs and streams) matters: when a ``CacheDataset`` worker
    thread raised while its siblings were still decoding images, the normal interpreter shutdown kills those
    threads inside native code and the process aborts (``terminate called without an active exception``, exit
    code 134). Bundles call this first in ``initialize``; the previous hook still prints the traceback.
    """
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        previous(kind, error, tb)
        if isinstance(error, KeyboardInterrupt):
            code = 130
        else:
            found = user_error(error)
            message = " ".join(str(found if found is not None else error).split())
            print(f"ERROR: {message}", file=sys.stderr)
            code = 1
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    sys.excepthook = hook
