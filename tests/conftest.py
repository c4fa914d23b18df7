"""Shared test setup: no network, and the optional real corpora beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SER_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def emodb_root() -> Path:
    """The real EmoDB corpus, or a skip when this machine does not have it."""
    root = SHARED_DATA / "emodb"
    if not (root / "wav").is_dir():
        pytest.skip(f"EmoDB not found at {root} (set SER_SHARED_DATA to its parent folder)")
    return root
