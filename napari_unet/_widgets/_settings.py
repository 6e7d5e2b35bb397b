"""Where the widgets keep their settings and caches: one JSON file per user, a cache folder."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger("napari_unet")

CONFIG_ENV = "NAPARI_UNET_CONFIG_DIR"
CACHE_ENV = "NAPARI_UNET_CACHE_DIR"
SETTINGS_FILE = "widgets.json"


def config_dir() -> Path:
    """Folder of the widget settings (``$NAPARI_UNET_CONFIG_DIR`` or the platform's user config dir)."""
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override)
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-unet", appauthor=False))


def cache_dir() -> Path:
    """Folder for bulky results kept on disk (``$NAPARI_UNET_CACHE_DIR`` or the platform's user cache dir)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("napari-unet", appauthor=False))


def _read_all() -> dict[str, Any]:
    path = config_dir() / SETTINGS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        logger.warning("ignoring the unreadable napari-unet settings file %s", path, exc_info=True)
        return {}
    return data if isinstance(data, dict) else {}


def load_settings(section: str) -> dict[str, Any]:
    """Return the settings a widget saved last time (empty when none or unreadable)."""
    values = _read_all().get(section, {})
    return values if isinstance(values, dict) else {}


def save_settings(section: str, values: dict[str, Any]) -> None:
    """Remember ``values`` for ``section`` (best effort: a failure is only logged)."""
    data = _read_all()
    data[section] = values
    path = config_dir() / SETTINGS_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(path)
    except OSError:
        logger.warning("could not save napari-unet settings to %s", path, exc_info=True)
