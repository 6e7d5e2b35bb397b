"""A small matplotlib canvas for the widgets (live training curves, bar charts)."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget


class _Canvas(FigureCanvasQTAgg):
    """A matplotlib canvas whose pending redraw is dropped when its widget was deleted meanwhile.

    matplotlib's idle redraw checks that the Qt object still exists, renders,
    then asks Qt to repaint; a panel closed in between raises "wrapped C/C++
    object ... has been deleted", which matplotlib prints as a traceback.
    """

    def draw(self) -> None:
        try:
            super().draw()
        except RuntimeError as error:
            if "has been deleted" not in str(error):
                raise


class MiniPlot(QWidget):
    """A compact dark plot matching napari's theme."""

    def __init__(self, height: float = 2.2) -> None:
        super().__init__()
        self.figure = Figure(figsize=(4, height), tight_layout=True)
        self.figure.patch.set_facecolor("#262930")
        self.canvas = _Canvas(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.canvas.setFixedHeight(int(height * 80))
        self.axes = self.figure.add_subplot(111)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self._style()

    def _style(self) -> None:
        axes = self.axes
        axes.set_facecolor("#262930")
        for spine in axes.spines.values():
            spine.set_color("#888888")
        axes.tick_params(colors="#dddddd", labelsize=7)
        axes.xaxis.label.set_color("#dddddd")
        axes.yaxis.label.set_color("#dddddd")
        axes.title.set_color("#dddddd")

    def clear(self) -> None:
        """Empty the plot."""
        self.axes.clear()
        self._style()
        self.canvas.draw_idle()

    def lines(
        self, series: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str = "", secondary: str | None = None
    ) -> None:
        """Draw one line per series ``name -> (x, y)``; ``secondary`` names a series drawn on a right-hand axis."""
        self.figure.clear()
        self.axes = self.figure.add_subplot(111)
        self._style()
        colors = iter(["#4fc3f7", "#ffb74d", "#81c784", "#e57373"])
        handles = []
        for name, (x, y) in series.items():
            if name == secondary:
                continue
            handles += self.axes.plot(x, y, color=next(colors), label=name, linewidth=1.2)
        if secondary is not None and secondary in series:
            right = self.axes.twinx()
            right.tick_params(colors="#dddddd", labelsize=7)
            x, y = series[secondary]
            handles += right.plot(x, y, "o-", color=next(colors), label=secondary, markersize=3, linewidth=1.2)
            right.set_ylim(0, 1)
        self.axes.set_xlabel(xlabel, fontsize=7)
        if handles:
            self.axes.legend(handles=handles, fontsize=7, loc="upper right", framealpha=0.3)
        self.canvas.draw_idle()

    def bars(self, names: Sequence[str], values: Sequence[float], ylabel: str = "") -> None:
        """Draw a bar chart of ``values`` (NaN bars are left empty)."""
        self.clear()
        self.axes.bar(range(len(names)), values, color="#4fc3f7")
        self.axes.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        self.axes.set_ylabel(ylabel, fontsize=7)
        self.axes.set_ylim(0, 1)
        self.canvas.draw_idle()
