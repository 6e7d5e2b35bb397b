"""``benchmarks/report.py``: a benchmark's report as JSON text, written only when a path is given."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.report import save


def test_save_turns_numpy_numbers_into_json_and_writes_only_when_asked(tmp_path):
    report = {"gain": np.float32(0.25), "gains": [np.float64(0.5)], "name": "run"}
    text = save(report, None)
    assert json.loads(text) == {"gain": 0.25, "gains": [0.5], "name": "run"}
    assert list(tmp_path.iterdir()) == []
    path = tmp_path / "results.json"
    assert save(report, path) == text
    assert json.loads(path.read_text()) == json.loads(text)
    save({"gain": 1.0}, path)  # a long run saves after every part: the file is replaced
    assert json.loads(path.read_text()) == {"gain": 1.0}
