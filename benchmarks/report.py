"""Writing a benchmark's JSON report: the one place that turns numpy numbers into plain JSON and saves it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from napari_unet.core.io import write_json


def save(report: dict[str, Any], path: Path | None) -> str:
    """Return ``report`` as indented JSON text (numpy numbers as floats) and write it to ``path`` when given.

    Long runs call it after every part, so an interrupted run keeps what it measured.
    """
    text = json.dumps(report, indent=2, default=float)
    if path:
        write_json(path, json.loads(text), overwrite=True)
    return text


def is_bound(report: dict[str, Any]) -> bool:
    """Whether a results ``report`` is a bound (``bench_hitl --correct-scored``), not a simulated user.

    A bound's children trained on the images they are scored on, so analyses of users' fine-tunes leave it out.
    """
    return bool(report.get("settings", {}).get("correct_scored"))
