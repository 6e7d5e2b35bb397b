"""Small helpers shared by the widget tests."""

from __future__ import annotations


def wait_until_idle(qtbot, widget, timeout: int = 120_000) -> None:
    """Wait until the widget's job panel has no running worker and has handled all the worker's signals.

    The panel forgets the worker as soon as the worker thread finishes, while
    its progress, result and finished signals still wait in the Qt event
    queue; the finished handler (which disables Cancel) runs after the others.
    """
    qtbot.waitUntil(lambda: widget.jobs.worker is None, timeout=timeout)
    qtbot.waitUntil(lambda: not widget.jobs.cancel_button.isEnabled(), timeout=timeout)


def messages(captured: list[tuple[str, str]], level: str) -> list[str]:
    """Messages of one level (``error``, ``warning`` or ``info``)."""
    return [message for lvl, message in captured if lvl == level]


def make_segment_widget(make_napari_viewer, model: str):
    """A viewer with a docked Segment widget that has ``model`` selected."""
    from napari_unet._widgets import SegmentWidget

    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.select(model)
    return viewer, widget
