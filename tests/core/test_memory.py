from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from napari_unet.core.config import ModelConfig
from napari_unet.core.errors import UserInputError
from napari_unet.core.predict.memory import (
    OomGuard,
    as_torch_device,
    available_memory_bytes,
    choose_tile_size,
    inference_bytes_per_pixel,
    is_out_of_memory,
    run_with_oom_fallback,
    tiles_that_fit,
)


def fake_predict(limit_on: dict[str, int], calls: list[tuple[int, str]]):
    """A predictor that runs out of memory above a tile size per device type."""

    def fn(tile: int, device: torch.device) -> str:
        calls.append((tile, device.type))
        if tile > limit_on[device.type]:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {tile} MiB")
        return f"ok {tile} {device.type}"

    return fn


def test_cpu_memory_is_positive_and_below_installed_ram():
    free = available_memory_bytes("cpu")
    assert free > 0
    with open("/proc/meminfo") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    assert free <= total_kb * 1024


def test_gpu_memory_counts_what_the_caching_allocator_holds_unused(monkeypatch):
    gib = 1024**3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2 * gib, 16 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 5 * gib)  # earlier tiles' blocks, cached
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 1 * gib)  # the weights
    assert available_memory_bytes("cuda:0") == 6 * gib  # 2 free on the device + 4 cached and unused
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 0)
    assert available_memory_bytes("cuda:0") == 2 * gib


def test_bytes_per_pixel_grows_with_width_and_halves_with_amp():
    small = inference_bytes_per_pixel(ModelConfig(base_channels=16, depth=2), safety=1.0)
    # hand count: skips 16 + 32/4 = 24; working 5*16 + 1 + 2*3 = 87; 111 values * 4 bytes
    assert small == pytest.approx(111 * 4)
    assert inference_bytes_per_pixel(ModelConfig(base_channels=16, depth=2), amp=True, safety=1.0) == small / 2
    assert inference_bytes_per_pixel(ModelConfig(base_channels=32, depth=2)) > 2 * small


def test_tiles_that_fit_divides_half_the_free_memory_by_one_tiles_estimate():
    cfg = ModelConfig(base_channels=16, depth=4)
    one_tile = 512 * 512 * inference_bytes_per_pixel(cfg)
    assert tiles_that_fit(cfg, 512 * 512, free_bytes=int(2 * 10 * one_tile)) == 10
    assert tiles_that_fit(cfg, 512 * 512, free_bytes=int(2 * 10 * one_tile), amp=True) == 20
    assert tiles_that_fit(cfg, 512 * 512, free_bytes=1) == 1, "one tile is tried even when none seems to fit"


def test_choose_tile_size_fits_the_budget_and_the_network_multiple():
    cfg = ModelConfig(base_channels=16, depth=4)
    per_pixel = inference_bytes_per_pixel(cfg)
    free = int(per_pixel * 1000 * 1000 / 0.5)  # half of it holds exactly a 1000 x 1000 tile
    tile = choose_tile_size("cpu", cfg, free_bytes=free)
    assert tile == 992  # largest multiple of 16 <= 1000
    assert choose_tile_size("cpu", cfg, free_bytes=free, batch_size=4) == 496
    assert choose_tile_size("cpu", cfg, free_bytes=10) == 64
    assert choose_tile_size("cpu", cfg, free_bytes=10**15, max_tile=1000) == 992
    assert choose_tile_size("cpu", cfg) >= 64


def test_choose_tile_size_rejects_bad_arguments():
    with pytest.raises(UserInputError, match="batch_size"):
        choose_tile_size("cpu", ModelConfig(), batch_size=0, free_bytes=10**9)
    with pytest.raises(UserInputError, match="memory_fraction"):
        choose_tile_size("cpu", ModelConfig(), memory_fraction=0.0, free_bytes=10**9)
    with pytest.raises(UserInputError, match="unknown device"):
        as_torch_device("tpu7")


def test_is_out_of_memory_recognises_cuda_and_cpu_allocators():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 GB"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_oom_halves_tiles_until_it_fits():
    calls, messages = [], []
    result = run_with_oom_fallback(
        fake_predict({"cuda": 300, "cpu": 10**6}, calls), 1024, "cuda", on_message=messages.append
    )
    assert result.value == "ok 256 cuda"
    assert (result.tile_size, result.device.type) == (256, "cuda")
    assert calls == [(1024, "cuda"), (512, "cuda"), (256, "cuda")]
    assert len(messages) == 2 and "retrying with 512 px" in messages[0]


def test_oom_below_the_minimum_falls_back_to_cpu_with_a_warning():
    calls, messages = [], []
    with pytest.warns(UserWarning, match="falling back to the CPU"):
        result = run_with_oom_fallback(
            fake_predict({"cuda": 10, "cpu": 512}, calls), 256, "cuda", min_tile_size=64, on_message=messages.append
        )
    assert calls == [(256, "cuda"), (128, "cuda"), (64, "cuda"), (256, "cpu")]
    assert result.value == "ok 256 cpu"
    assert "falling back" in messages[-1]


def test_oom_everywhere_raises_a_user_error():
    with pytest.warns(UserWarning), pytest.raises(UserInputError, match="not enough memory"):
        run_with_oom_fallback(fake_predict({"cuda": 1, "cpu": 1}, []), 128, "cuda", min_tile_size=64)


def test_other_errors_propagate_unchanged():
    def broken(tile, device):
        raise RuntimeError("weights do not match")

    with pytest.raises(RuntimeError, match="weights do not match"):
        run_with_oom_fallback(broken, 256, "cpu")


def test_oom_guard_remembers_the_settings_that_worked():
    calls = []
    guard = OomGuard(512, "cpu", multiple=32)
    fn = fake_predict({"cpu": 200}, calls)
    assert guard.run(fn) == "ok 128 cpu"
    assert guard.run(fn) == "ok 128 cpu"
    assert calls == [(512, "cpu"), (256, "cpu"), (128, "cpu"), (128, "cpu")]


KEPT_AFTER_FREE = """
import ctypes, sys
import numpy as np
from napari_unet.core.predict.memory import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "console":  # the napari-unet console script, then a freed array
    from napari_unet.cli import console_main

    try:
        console_main(["--version"])  # prints the version and exits
    except SystemExit as done:
        took = done.code == 0
else:
    took = keep_freed_memory() if sys.argv[1] == "keep" else False
array = np.ones(64 * 2**20 // 8)  # 64 MiB: a fresh mmap by default
del array
print(took, libc.mallinfo2().fordblks)  # free bytes the process still holds
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_keep_freed_memory_keeps_a_freed_large_array_in_the_process():
    held = {}
    for mode in ("keep", "console", "default"):
        result = subprocess.run(
            [sys.executable, "-c", KEPT_AFTER_FREE, mode], capture_output=True, text=True, check=True
        )
        took, free_bytes = result.stdout.splitlines()[-1].split()
        held[mode] = (took == "True", int(free_bytes))
    assert held["keep"][0] and not held["default"][0]
    assert held["keep"][1] >= 64 * 2**20 > held["default"][1]
    assert held["console"][1] >= 64 * 2**20  # the console script keeps freed memory too


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_the_allocator_benchmark_times_both_settings_in_child_processes(tmp_path, capsys):
    from benchmarks.bench_allocator import main

    arguments = ["--size", "512", "--rounds", "1", "--repeats", "1", "--folder-edges", "256,512"]
    assert main([*arguments, "--json", str(tmp_path / "a.json")]) == 0
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["setting_took_effect"]
    assert set(report["speedup_from_kept_memory"]) == {"previous", "workers_1", "workers_2"}
    assert all(ratio > 0 for ratio in report["speedup_from_kept_memory"].values())
    memory = report["folder_memory"]
    assert memory["edges"] == [256, 512] and memory["kept"]["kept"] and not memory["default"]["kept"]
    for mode in ("default", "kept"):
        assert len(memory[mode]["rss_after_each_mib"]) == 2
        assert memory[mode]["peak_rss_mib"] >= max(memory[mode]["rss_after_each_mib"]) > 0
