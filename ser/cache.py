"""Where the project keeps what it can rebuild: converted backbones, ONNX exports, feature caches.

One root for all of them, ``$SER_CACHE_DIR`` or the user cache folder, so one variable moves (or
one ``rm -r`` clears) everything.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SER_CACHE_DIR"


def cache_root() -> Path:
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_path

    return user_cache_path("ser")
