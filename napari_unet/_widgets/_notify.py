"""Notifications: a user's error is shown as its message, anything else briefly while the traceback is logged."""

from __future__ import annotations

import logging

from napari.utils.notifications import show_error, show_info, show_warning

from napari_unet.core.errors import Cancelled, UserInputError

logger = logging.getLogger("napari_unet")


def notify_exception(exc: BaseException, action: str) -> None:
    """Show ``exc`` as a napari notification, never as a traceback.

    :class:`UserInputError` shows its own message, :class:`Cancelled` an info
    line; anything else a short error while the traceback goes to the log.
    """
    if isinstance(exc, Cancelled):
        show_info(f"{action} cancelled.")
    elif isinstance(exc, UserInputError):
        show_error(str(exc))
    else:
        logger.error("%s failed", action, exc_info=(type(exc), exc, exc.__traceback__))
        show_error(f"{action} failed: {type(exc).__name__}: {exc}. See the log for details.")


def warn(message: str) -> None:
    """Show a warning notification."""
    show_warning(message)


def error(message: str) -> None:
    """Show an error notification."""
    show_error(message)


def info(message: str) -> None:
    """Show an info notification."""
    show_info(message)
