"""All five panels docked together fit a 1920 x 1080 screen, and every control stays reachable."""

from __future__ import annotations

import pytest
from qtpy.QtCore import QPoint, QRect
from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox, QApplication, QComboBox

from napari_unet._widgets import CompareWidget, CorrectWidget, ExportWidget, FineTuneWidget, SegmentWidget

pytestmark = pytest.mark.gui

SCREEN = (1920, 1080)


def test_five_docked_panels_fit_a_1080p_screen(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    panels = [cls(viewer) for cls in (SegmentWidget, CorrectWidget, FineTuneWidget, CompareWidget, ExportWidget)]
    for panel in panels:  # stacked in one dock column: the layout that used to need 3,354 px
        viewer.window.add_dock_widget(panel, area="right")
    window.resize(*SCREEN)
    qtbot.waitUntil(lambda: window.height() <= SCREEN[1], timeout=5000)
    QApplication.processEvents()

    needed = sum(panel.scroll_area.widget().minimumSizeHint().height() for panel in panels)
    assert needed > SCREEN[1], "without scrolling the panels would not fit (so this test means something)"
    assert window.minimumSizeHint().height() <= SCREEN[1]
    assert window.height() <= SCREEN[1] and window.width() <= SCREEN[0]
    canvas = viewer.window._qt_viewer.canvas.native
    assert canvas.width() >= 0.45 * SCREEN[0], "the image canvas stays usable beside the docks"
    visible = QRect(QPoint(0, 0), window.size())
    for panel in panels:
        controls = panel.findChildren(QAbstractButton) + panel.findChildren(QComboBox)
        controls += panel.findChildren(QAbstractSpinBox)
        assert controls
        for control in controls:
            if not control.isVisibleTo(panel):
                continue
            panel.scroll_area.ensureWidgetVisible(control)
            QApplication.processEvents()
            top_left = control.mapTo(window, QPoint(0, 0))
            assert visible.contains(QRect(top_left, control.size()).center()), (type(panel).__name__, control)
