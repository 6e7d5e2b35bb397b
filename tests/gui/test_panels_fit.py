"""All five panels docked together fit a 1920 x 1080 screen, and every control stays reachable."""

from __future__ import annotations

import pytest
from qtpy.QtCore import QPoint, QRect
from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox, QApplication, QCheckBox, QComboBox, QLabel

from napari_unet._widgets import (
    CompareWidget,
    CorrectWidget,
    ExportWidget,
    FineTuneWidget,
    NapariUnetDock,
    SegmentWidget,
)

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


SMALL_SCREEN = (1366, 768)
INDICATOR_PX = 20  # check box indicator, drop-down arrow


def text_width_needed(control) -> int:
    """Pixels ``control`` needs to show its whole text (0 for a label that wraps, or no text)."""
    if isinstance(control, QLabel) and control.wordWrap():
        return 0
    text = control.currentText() if isinstance(control, QComboBox) else control.text()
    if not text:
        return 0
    extra = INDICATOR_PX if isinstance(control, QCheckBox | QComboBox) else 0
    return control.fontMetrics().horizontalAdvance(text.replace("&", "")) + extra


def test_the_one_dock_shows_every_control_whole_at_1366x768(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    dock = NapariUnetDock(viewer)
    viewer.window.add_dock_widget(dock, area="right", name="napari-unet")
    window = viewer.window._qt_window
    window.resize(*SMALL_SCREEN)
    qtbot.waitUntil(lambda: window.height() <= SMALL_SCREEN[1], timeout=5000)
    assert list(dock.panels) == ["Experiment", "Segment", "Correct", "Fine-tune", "Compare", "Export"]
    canvas = viewer.window._qt_viewer.canvas.native
    assert canvas.width() >= 0.45 * SMALL_SCREEN[0], "the image canvas keeps most of the room beside the dock"
    checked = 0
    for title, panel in dock.panels.items():
        dock.tabs.setCurrentWidget(panel)
        QApplication.processEvents()
        assert not panel.scroll_area.horizontalScrollBar().isVisible(), f"{title} scrolls sideways"
        for control in panel.findChildren(QAbstractButton) + panel.findChildren(QLabel) + panel.findChildren(QComboBox):
            if control.isVisibleTo(panel) and text_width_needed(control):
                assert control.width() >= text_width_needed(control), (title, type(control).__name__, control)
                checked += 1
    assert checked > 60
