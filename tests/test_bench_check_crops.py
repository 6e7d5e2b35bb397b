"""``benchmarks/bench_check_crops.py``: the check-crop choice it measures against the shipped one."""

from __future__ import annotations

import numpy as np

from benchmarks.bench_check_crops import check_flags, nuclei_ranked
from napari_unet.core.models.registry import load_model
from napari_unet.core.train.replay import CHECK_EVERY, load_replay_set, replay_set_path


def test_check_flags_take_alternate_crops_of_each_groups_nuclei_ranking():
    counts = {"a": [5, 40, 3, 30, 20, 10, 8, 1], "b": [2, 9, 4, 7]}
    labels = [np.arange(n + 1, dtype=np.uint16)[None] for group in counts.values() for n in group]
    groups = [group for group, values in counts.items() for _ in values]
    flags = check_flags(labels, groups, every=4)
    assert [i for i, flag in enumerate(flags) if flag] == [1, 4, 9]  # a: 40 and 20 (not 30); b: 9


def test_nuclei_ranked_checks_cover_tumour_and_normal_tissue_of_the_shipped_set():
    path = replay_set_path(load_model("default"))
    crops = load_replay_set(path)
    flags = nuclei_ranked(path, len(crops.images))
    for group in set(crops.groups):
        members = [i for i, name in enumerate(crops.groups) if name == group]
        assert sum(flags[i] for i in members) == len(members) // CHECK_EVERY
    tissue = [int(crops.labels[i].max()) for i in range(len(flags)) if flags[i] and crops.groups[i] == "tissue"]
    every_fourth = [
        int(crops.labels[i].max())
        for i in range(len(flags))
        if i % CHECK_EVERY == CHECK_EVERY - 1 and crops.groups[i] == "tissue"
    ]
    assert sum(tissue) > 2 * sum(every_fourth)
