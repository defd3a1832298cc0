"""The ``saliency-sanity`` command line (also ``python -m saliency_sanity``).

- :mod:`._args`: the parser and the options built from the arguments;
- :mod:`.commands`: one function per subcommand.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from ._args import build_parser, critique_options
from ._common import apply_normalize, os_message
from .commands import EXIT_EXTRA_FAILED, command, keeps_run_dir

#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130

__all__ = ["EXIT_EXTRA_FAILED", "EXIT_INTERRUPTED", "apply_normalize", "build_parser",
           "critique_options", "interrupted_message", "main", "warnings_through_tqdm"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``saliency-sanity`` console script (and ``python -m saliency_sanity``).
    """
    args = build_parser().parse_args(argv)
    if os.environ.get("SALIENCY_SANITY_DEFAULT_MALLOC") != "1":
        from ..performance import tune_allocator

        tune_allocator()  # this process is ours: keep freed memory between stages
    from ..io_inputs import InputError

    try:
        with warnings_through_tqdm():
            return command(args.command)(args, list(argv) if argv is not None else sys.argv[1:])
    except (InputError, KeyError, ValueError, TypeError, OSError, ImportError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else os_message(err)
        print(f"saliency-sanity: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted_message(args), file=sys.stderr)
        return EXIT_INTERRUPTED


def interrupted_message(args: argparse.Namespace) -> str:
    """The one line printed after Ctrl-C.

    Example:
        >>> interrupted_message(argparse.Namespace(command="list"))
        'saliency-sanity: interrupted'
    """
    out = getattr(args, "out", None)
    if out is None or not keeps_run_dir(args.command):
        return "saliency-sanity: interrupted"
    return (f"saliency-sanity: interrupted; finished work is kept in {out}: run the same command "
            "again to continue where it stopped")


@contextlib.contextmanager
def warnings_through_tqdm() -> Iterator[None]:
    """While active, warnings are printed with ``tqdm.write`` (one line each, on stderr), which
    clears and redraws any active progress bar, so a warning never breaks a bar.

    Example:
        >>> import warnings
        >>> with warnings_through_tqdm():
        ...     warnings.warn("careful")  # doctest: +SKIP
    """
    from tqdm import tqdm

    previous = warnings.showwarning

    def show(message: Any, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        text = " ".join(str(message).split())
        tqdm.write(f"saliency-sanity: warning: {text} ({category.__name__})", file=sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous
