from __future__ import annotations

import numpy as np
import pytest
from imageio.v3 import imread

from napari_unet._widgets import CompareWidget, CorrectWidget, ExportWidget, FineTuneWidget, SegmentWidget

pytestmark = pytest.mark.gui

WIDGETS = {
    "segment": SegmentWidget,
    "correct": CorrectWidget,
    "finetune": FineTuneWidget,
    "compare": CompareWidget,
    "export": ExportWidget,
}


def test_docked_widgets_screenshots(make_napari_viewer, sample, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(sample[0], name="nuclei")
    viewer.add_labels(sample[1].astype(np.int32), name="nuclei labels")
    for name, cls in WIDGETS.items():
        widget = cls(viewer)
        dock = viewer.window.add_dock_widget(widget, name=name, area="right")
        widget_png = tmp_path / f"{name}_widget.png"
        assert widget.grab().save(str(widget_png))
        pixels = imread(widget_png)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert pixels.std() > 0, "the widget is drawn, not a blank image"
        window = viewer.screenshot(path=str(tmp_path / f"{name}_window.png"), canvas_only=False, flash=False)
        assert window.shape[0] > 300 and window.std() > 0
        viewer.window.remove_dock_widget(dock)
    assert len(list(tmp_path.glob("*.png"))) == 2 * len(WIDGETS)
