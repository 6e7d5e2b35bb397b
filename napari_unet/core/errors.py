"""Exceptions shared by the engine, the CLI and the widgets."""

from __future__ import annotations


class UserInputError(ValueError):
    """A problem the user can fix: the message says what is wrong and what to do.

    The CLI prints it as ``error: <message>`` (exit code 2) and the widgets show
    it as a napari notification; neither shows a traceback.
    """


class Cancelled(Exception):
    """Raised inside a long-running generator when its cancel flag is set."""
