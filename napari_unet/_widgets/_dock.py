"""One dock for the whole loop: the Experiment, Segment, Correct, Fine-tune, Compare and Export panels as tabs.

Plugins > napari-unet > "napari-unet (all panels)" opens it; the single
panels stay available on their own.  One tab shows at a time, so each panel
gets the dock's whole height and the canvas keeps most of the window.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QTabWidget, QVBoxLayout, QWidget

from napari_unet._widgets._compare import CompareWidget
from napari_unet._widgets._correct import CorrectWidget
from napari_unet._widgets._experiment import ExperimentWidget
from napari_unet._widgets._export import ExportWidget
from napari_unet._widgets._finetune import FineTuneWidget
from napari_unet._widgets._segment import SegmentWidget

TABS = (
    ("Experiment", ExperimentWidget),
    ("Segment", SegmentWidget),
    ("Correct", CorrectWidget),
    ("Fine-tune", FineTuneWidget),
    ("Compare", CompareWidget),
    ("Export", ExportWidget),
)
"""Tab title and panel class, in the order of the loop."""


class NapariUnetDock(QWidget):
    """All napari-unet panels in one tabbed dock (``panels`` maps tab titles to the panel widgets)."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.tabs = QTabWidget()
        self.tabs.setUsesScrollButtons(True)
        self.panels: dict[str, QWidget] = {}
        for title, panel_class in TABS:
            panel = panel_class(napari_viewer)
            self.panels[title] = panel
            self.tabs.addTab(panel, title)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
