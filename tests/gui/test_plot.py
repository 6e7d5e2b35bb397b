"""The widgets' matplotlib canvas: a redraw that finds its panel closed is dropped, other errors still surface."""

from __future__ import annotations

import pytest

from napari_unet._widgets._plot import MiniPlot

pytestmark = pytest.mark.gui


def test_a_redraw_after_the_panel_closed_is_dropped_and_other_errors_are_not(qtbot, monkeypatch, capfd):
    plot = MiniPlot()
    qtbot.addWidget(plot)
    plot.lines({"loss": ([0, 1, 2], [1.0, 0.5, 0.25])}, xlabel="step")

    def deleted() -> None:
        raise RuntimeError("wrapped C/C++ object of type _Canvas has been deleted")

    monkeypatch.setattr(plot.canvas, "update", deleted)
    plot.canvas.draw()  # what matplotlib's idle redraw calls: nothing raised, nothing printed
    plot.canvas.draw_idle()
    qtbot.wait(50)
    assert "Traceback" not in capfd.readouterr().err

    def broken() -> None:
        raise RuntimeError("another failure")

    monkeypatch.setattr(plot.canvas, "update", broken)
    with pytest.raises(RuntimeError, match="another failure"):
        plot.canvas.draw()
