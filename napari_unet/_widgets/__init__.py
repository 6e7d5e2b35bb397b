"""napari widgets of napari-unet (declared in ``napari.yaml``; shown under Plugins > napari-unet)."""

from __future__ import annotations

from napari_unet._widgets._compare import CompareWidget
from napari_unet._widgets._correct import CorrectWidget
from napari_unet._widgets._dock import NapariUnetDock
from napari_unet._widgets._experiment import ExperimentWidget
from napari_unet._widgets._export import ExportWidget
from napari_unet._widgets._finetune import FineTuneWidget
from napari_unet._widgets._segment import SegmentWidget

__all__ = [
    "CompareWidget",
    "CorrectWidget",
    "ExperimentWidget",
    "ExportWidget",
    "FineTuneWidget",
    "NapariUnetDock",
    "SegmentWidget",
]
