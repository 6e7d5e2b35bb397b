"""Training-data preparation shared by the CLI, the Fine-tune panel and the Python API."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.errors import UserInputError
from napari_unet.core.train.preparation import add_synthetic_images, rescale_training_data


def test_rescaling_resizes_images_labels_and_rois_together():
    image, labels = synthetic_nuclei((64, 80), n_nuclei=8, seed=1)
    images, scaled, rois = rescale_training_data([image], [labels], [[(0, 0, 32, 40)]], 2.0)
    assert images[0].shape == (128, 160) and scaled[0].shape == (128, 160)
    assert set(np.unique(scaled[0])) == set(np.unique(labels)), "nearest neighbour keeps every object id"
    assert np.allclose(np.asarray(rois[0][0], dtype=float).reshape(-1, 2).max(axis=0), [64, 80], atol=1)
    with pytest.raises(UserInputError, match="scale must be in"):
        rescale_training_data([image], [labels], None, 0.0)
    with pytest.raises(UserInputError, match="2D"):
        rescale_training_data([image], [np.stack([labels, labels])], None, 2.0)


def test_synthetic_images_come_with_exact_labels_and_whole_image_rois():
    images, labels, rois = [], [], []
    add_synthetic_images(images, labels, rois, 2, seed=3)
    assert images[0].ndim == 2 and images[1].shape[-1] == 3, "fluorescence, then H&E-like colour"
    assert all(lab.max() > 5 for lab in labels)
    assert rois == [[(0, 0, *labels[0].shape)], [(0, 0, *labels[1].shape)]]
