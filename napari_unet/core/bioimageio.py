"""Old import path of the bioimage.io network class, kept for packages exported before the core was regrouped.

bioimage.io packages record the class that rebuilds their network as
``napari_unet.core.bioimageio.ExportNetwork``; packages exported since record
:class:`napari_unet.core.models.bioimageio.ExportNetwork`, the same class.
"""

from napari_unet.core.models.bioimageio import ExportNetwork

__all__ = ["ExportNetwork"]
