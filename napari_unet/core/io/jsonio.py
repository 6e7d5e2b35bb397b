"""JSON helpers: configs, paths and numpy values to plain JSON, written atomically."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.io.atomic import atomic_write_path

PathLike = str | os.PathLike


def json_default(obj: Any) -> Any:
    """``json.dump`` fallback for configs, paths, numpy values and arrays."""
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    if isinstance(obj, _dt.datetime | _dt.date):
        return obj.isoformat()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def to_jsonable(data: Any) -> Any:
    """Return ``data`` converted to plain JSON types (via :func:`json_default`)."""
    return json.loads(json.dumps(data, default=json_default))


def write_json(path: PathLike, data: Any, overwrite: bool = False) -> Path:
    """Atomically write ``data`` as indented JSON; return the path."""
    text = json.dumps(data, indent=2, default=json_default)
    with atomic_write_path(path, overwrite) as temp:
        temp.write_text(text + "\n", encoding="utf-8")
    return Path(path)
