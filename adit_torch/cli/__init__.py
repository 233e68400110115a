"""The ``adit`` command line: one sub-command module per concept.

Each module in :data:`COMMAND_MODULES` exposes ``register(subparsers)`` that
adds its sub-commands; a sub-command's handler takes the parsed
``argparse.Namespace`` and returns an exit status. Errors raised on purpose
(:class:`adit_torch.errors.AditError`) become one clear line on stderr and a
documented exit status (see :data:`EXIT_CODES`), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from adit_torch import __version__
from adit_torch.errors import AditError, CheckpointError, ConfigError, DataFormatError, InvalidSystemError

COMMAND_MODULES = ("data", "evaluate", "train", "sample", "models", "stability", "gallery")

#: Exit statuses of the ``adit`` command; the AiiDA parsers rely on them.
EXIT_CODES = {
    "ok": 0,
    "internal": 1,
    "bad_input": 2,
    "checkpoint": 3,
    "nan_loss": 4,
    "out_of_memory": 5,
    "incomplete": 6,
}
#: Exit statuses of a training stopped by a signal after saving its state (128 + the signal's number:
#: SIGINT 130, SIGUSR1 138, SIGTERM 143); ``--resume`` continues it.
INTERRUPTED_STATUSES = (130, 138, 143)


class NaNLossError(AditError):
    """Training produced a non-finite loss; the last good checkpoint is kept."""


class IncompleteOutputError(AditError):
    """A run produced fewer results than asked (for example fewer samples)."""


def _status_for(exc: BaseException) -> int:
    if isinstance(exc, CheckpointError):
        return EXIT_CODES["checkpoint"]
    if isinstance(exc, NaNLossError):
        return EXIT_CODES["nan_loss"]
    if isinstance(exc, IncompleteOutputError):
        return EXIT_CODES["incomplete"]
    if isinstance(exc, (ConfigError, DataFormatError, InvalidSystemError, AditError)):
        return EXIT_CODES["bad_input"]
    return EXIT_CODES["internal"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="adit",
        description="All-atom Diffusion Transformer: data, training, sampling and evaluation "
        "for molecules and crystals.",
    )
    parser.add_argument("--version", action="version", version=f"aiida-adit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"adit_torch.cli.{name}")
        module.register(sub)
    return parser


#: When this environment variable names a file, ``adit`` writes its own exit status there (the AiiDA
#: CalcJobs set it): a status no later command of a job script can overwrite. Under ``torchrun`` each
#: process writes ``FILE`` (rank 0) or ``FILE.rank<R>`` (other ranks, only when they fail), so a worker's
#: NaN (4) or out-of-memory (5) status is not hidden by the launcher's.
STATUS_FILE_ENV = "ADIT_STATUS_FILE"


def write_status(status: int) -> None:
    """Write ``status`` to ``$ADIT_STATUS_FILE`` (see :data:`STATUS_FILE_ENV`); atomic, never raises."""
    import os
    from pathlib import Path

    target = os.environ.get(STATUS_FILE_ENV)
    if not target:
        return
    rank = int(os.environ.get("RANK", "0") or 0)
    if rank != 0 and status == 0:
        return
    path = Path(target if rank == 0 else f"{target}.rank{rank}")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(f"{status}\n")
        os.replace(tmp, path)
    except OSError as exc:
        print(f"adit: could not write the exit status to {path}: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``adit`` console script; returns the exit status (also written to
    ``$ADIT_STATUS_FILE`` when set)."""
    try:
        status = _main(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_CODES["bad_input"])
        write_status(code)
        raise
    except BaseException:
        write_status(EXIT_CODES["internal"])
        raise
    write_status(status)
    return status


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.handler(args)
    except AditError as exc:
        print(f"adit {args.command}: error: {exc}", file=sys.stderr)
        return _status_for(exc)
    except MemoryError:
        print(f"adit {args.command}: error: out of memory", file=sys.stderr)
        return EXIT_CODES["out_of_memory"]
    except RuntimeError as exc:
        # CUDA says "out of memory"; the CPU allocator (e.g. under `ulimit -v`) "can't allocate memory"
        if any(text in str(exc).lower() for text in ("out of memory", "can't allocate memory",
                                                      "cannot allocate memory")):
            print(f"adit {args.command}: error: out of memory: {exc}", file=sys.stderr)
            return EXIT_CODES["out_of_memory"]
        raise
    except KeyboardInterrupt:
        print(f"adit {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
