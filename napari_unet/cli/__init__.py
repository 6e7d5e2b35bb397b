"""The ``napari-unet`` command line: a thin layer over :mod:`napari_unet.core`.

Every sub-command parses its arguments, calls one engine function and reports
progress with a terminal progress bar.  Problems the user can fix are printed
as ``error: ...`` (exit code 2) without a traceback.

Modules
-------
parser
    :func:`build_parser`, the options of every command.
common, inference
    Helpers the commands share: progress bar, inputs and outputs, inference flags.
predict, evaluate, train, tune, export, models, export_model, import_model, demo
    One module per command, each with its ``cmd_<command>`` function.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from napari_unet.cli.common import expand_inputs
from napari_unet.cli.parser import build_parser
from napari_unet.core.errors import Cancelled, UserInputError

__all__ = ["build_parser", "console_main", "expand_inputs", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv
        The arguments after the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        The exit code: 0 on success, 2 for a problem the user can fix (printed
        as ``error: ...``), 130 when cancelled or interrupted.

    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from napari_unet.core.config import ConfigError

    try:
        return int(args.func(args) or 0)
    except (UserInputError, ConfigError) as exc:  # ConfigError: an out-of-range flag such as --tile 5
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Cancelled:
        print("cancelled; nothing was written for the unfinished item", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def console_main(argv: Sequence[str] | None = None) -> int:
    """Run the ``napari-unet`` console script: :func:`main` in a process of its own.

    A command is a one-shot process, so glibc is first told to keep freed
    memory for reuse (:func:`~napari_unet.core.predict.memory.keep_freed_memory`):
    post-processing a large plane then stops paying page faults for every
    temporary (``benchmarks/results/allocator.json``: 1.7x to 2.2x on the
    post-processing paths, resident memory bounded by the peak).  napari and
    library callers of :func:`main` keep the default allocator.
    """
    from napari_unet.core.predict.memory import keep_freed_memory

    keep_freed_memory()
    return main(argv)
