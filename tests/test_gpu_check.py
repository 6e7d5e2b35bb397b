"""``benchmarks/gpu_check.py`` rows that run anywhere: the network timing at a chosen batch size, here on the CPU."""

from __future__ import annotations

from benchmarks.gpu_check import BATCH_SIZES, network_only
from napari_unet.core.models.registry import load_model


def test_network_timing_row_at_a_batch_size_runs_on_the_cpu():
    row = network_only(load_model("default"), 96, batch_size=2, device="cpu")
    assert row["size"] == 96 and row["batch_size"] == 2
    assert row["network_s"] > 0 and row["network_mpx_per_s"] > 0
    assert 8 in BATCH_SIZES  # the automatic GPU batch is among those tried
