"""``napari-unet models``: list the bundled and user models with their versions."""

from __future__ import annotations

import argparse
import json
from typing import Any


def cmd_models(args: argparse.Namespace) -> int:
    """List the bundled and user models with their versions (``--json`` for a machine-readable list).

    Parameters
    ----------
    args
        Parsed flags of ``models``.

    Returns
    -------
    int
        The exit code.

    """
    from napari_unet.core.models.registry import list_models, user_model_dir

    infos = list_models()
    if args.json:
        print(json.dumps([_model_row(i) for i in infos], indent=2, default=str))
        return 0
    print(f"user model folder: {user_model_dir()}")
    for info in infos:
        row = _model_row(info)
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in (row.get("metrics") or {}).items() if isinstance(v, float))
        version = f"@v{row['version']}" if row.get("version") is not None else ""
        print(f"  {row['name']}{version}  {row.get('created') or ''}  {metrics}")
    return 0


def _model_row(info: Any) -> dict[str, Any]:
    """Return the listed fields of one model's info."""
    keys = ("name", "version", "path", "created", "metrics", "parent")
    return {k: getattr(info, k, None) for k in keys}
