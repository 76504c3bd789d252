"""What every command does with a user's mistake, and the ``--device`` rule every command shares.

A bad flag value, file, checkpoint or data set is answered with one or two lines that name it and
say what to do, on standard error, and exit status 2 (:data:`EXIT_USER_ERROR`, argparse's own
status for a bad flag); the traceback is shown only with ``--debug``. A real bug (any other
exception) still shows its traceback.

``--device auto`` (the default of every command that takes ``--device``) is ``cuda`` when a CUDA
GPU is visible, else ``cpu``; asking for ``cuda`` (or ``mps``) where there is none is a user error,
not a silent fall-back.
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import Callable

EXIT_USER_ERROR = 2
DEVICE_HELP = ("torch device: auto (cuda when a GPU is visible, else cpu), cpu, cuda, cuda:N or mps; "
               "asking for a GPU that is not there is an error")


class UserError(ValueError):
    """A mistake in what the user gave (a flag, a file, a data set); the message names it."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types a command reports as ``error: ...`` (exit 2) instead of a traceback.

    ``ValueError`` (bad values and formats, :class:`UserError`, :class:`~farslip.data.image_files.DataError`),
    ``OSError`` (missing, unreadable or unwritable files and folders), the checkpoint errors and a
    checkpoint that is neither cached nor downloadable.
    """
    from .models.checkpoint import CheckpointError
    from .models.hub import CheckpointNotAvailable

    return (ValueError, OSError, CheckpointError, CheckpointNotAvailable)


_WORKER = re.compile(r"^Caught (\w+) in DataLoader worker process (\d+)\.\nOriginal Traceback")


def message(err: BaseException) -> str:
    """The user-facing text of ``err``.

    An exception re-raised by a torch DataLoader from one of its workers carries the worker's whole
    traceback in its message; only the original message is kept (with the worker named).
    """
    text = str(err)
    match = _WORKER.match(text)
    if match is None:
        return text
    kind = type(err)
    names = {kind.__qualname__, f"{kind.__module__}.{kind.__qualname__}"}
    lines = text.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        head, sep, rest = lines[index].partition(": ")
        if sep and head in names:
            original = "\n".join([rest, *lines[index + 1:]]).strip()
            return f"{original} (in data loader worker {match.group(2)})"
    return text


def add_debug_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action=argparse.BooleanOptionalAction, default=False,
                        help="on a user error (bad flag value, file, checkpoint or data) show the full traceback "
                             "instead of the one-line message")


def report(prog: str, err: BaseException, stream=None) -> int:
    """Print ``prog: error: <message>`` and return :data:`EXIT_USER_ERROR`."""
    print(f"{prog}: error: {message(err)}", file=stream or sys.stderr, flush=True)
    return EXIT_USER_ERROR


def run_command(prog: str, debug: bool, body: Callable[[], int]) -> int:
    """``body()``, with a user error reported as one message and exit status 2 (re-raised with ``debug``)."""
    try:
        return body()
    except user_errors() as err:
        if debug:
            raise
        return report(prog, err)


def resolve_device(spec: str, flag: str = "--device") -> str:
    """``auto`` -> ``cuda`` or ``cpu``; any other device is checked to exist here (:class:`UserError` if not)."""
    import torch

    text = str(spec).strip()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UserError(f"{flag} {spec!r} is not a torch device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch is a CPU-only build" if torch.version.cuda is None else "torch sees no CUDA GPU"
            raise UserError(f"{flag} {text}: no CUDA GPU is available here ({build}); use --device cpu, or "
                            f"--device auto to take a GPU only when there is one")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UserError(f"{flag} {text}: there are only {count} CUDA device(s) (cuda:0 .. cuda:{count - 1})")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError(f"{flag} {text}: the Apple MPS backend is not available here; use --device cpu or auto")
    elif device.type != "cpu":  # xpu, hpu, ...: their own availability check, where torch has one
        backend = getattr(torch, device.type, None)
        available = getattr(backend, "is_available", None)
        if available is None or not available():
            raise UserError(f"{flag} {text}: no {device.type} device is available here; use --device cpu or auto")
    return text
