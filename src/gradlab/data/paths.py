"""Where gradlab keeps downloaded data and feature caches."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming gradlab's data folder (downloads and caches).
DATA_ENV = "GRADLAB_DATA"


def data_home() -> Path:
    """gradlab's data folder.

    ``$GRADLAB_DATA`` if set, else ``$XDG_CACHE_HOME/gradlab``, else
    ``~/.cache/gradlab``. Nothing is created here.
    """
    explicit = os.environ.get(DATA_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "gradlab"


def default_cache_dir() -> Path:
    """Folder of cached feature arrays: ``data_home() / "features"``."""
    return data_home() / "features"
