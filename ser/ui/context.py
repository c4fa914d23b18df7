"""What every tab shares: the settings, the annotation store and the model in use.

The model can be swapped while requests are running (Models tab, end of a retrain), so handlers
take ``context.predictor`` once per request and keep that object: a swap never changes the model
in the middle of one prediction, and loading the new model happens outside the lock so requests
keep being served while it loads.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ser.audio import InvalidAudio, load_audio
from ser.hub_sync import start_hub_sync
from ser.model import ModelLoadError, Predictor, default_model_path
from ser.store import AnnotationStore, NotInStore
from ser.ui.config import AppConfig
from ser.ui.sandbox import DataRoots

DECODE_WAIT_S = 120.0  # a request waits this long for a decode slot, then is told the server is busy

log = logging.getLogger(__name__)


def model_metrics(path: str) -> dict[str, Any]:
    """The training metrics a checkpoint directory carries (``metrics.json``), if any."""
    metrics = Path(path) / "metrics.json"
    if not metrics.is_file():
        return {}
    try:
        return json.loads(metrics.read_text())
    except (OSError, ValueError):
        return {}


class AppContext:
    """The app's shared state; one per ``build_app``."""

    def __init__(self, config: AppConfig, predictor: Predictor | None = None) -> None:
        self.config = config
        self.store = AnnotationStore(config.store)
        self.data_roots = DataRoots(config.data_roots)
        # One limit on decodes across every event (predict, save, queue loading): each decode can
        # hold a few hundred MB while it runs, and per-event limits would add up.
        self.decode_slots = threading.BoundedSemaphore(config.max_decodes)
        self.pending_candidate: dict[str, str] | None = None  # a retrain that needs an admin's confirmation
        # Opt-in: with SER_HUB_DATASET and HF_TOKEN set (a Space's secrets), the store is pushed to a
        # private dataset repo every few minutes; otherwise nothing leaves the machine.
        self.hub_sync = start_hub_sync(self.store)
        self._lock = threading.Lock()
        self._predictor = predictor or self._initial_predictor()

    @property
    def predictor(self) -> Predictor:
        with self._lock:
            return self._predictor

    def load_audio(self, source: Any) -> np.ndarray:
        """Decode user audio with the app's length limit, in one of the process's few decode slots;
        raises ``InvalidAudio`` with a readable message."""
        if not self.decode_slots.acquire(timeout=DECODE_WAIT_S):
            raise InvalidAudio("The server is busy decoding other audio; try again in a minute.")
        try:
            if self.config.max_duration_s is None:
                return load_audio(source)
            return load_audio(source, max_duration_s=self.config.max_duration_s)
        finally:
            self.decode_slots.release()

    def switch_model(self, version: str) -> Predictor:
        """Load a registered model version and make it the one every new request uses."""
        record = next((m for m in self.store.list_models() if m["version"] == version), None)
        if record is None:
            raise NotInStore(f"no model version {version!r} is registered in the store")
        predictor = Predictor.from_pretrained(record["path"])
        with self._lock:
            self._predictor = predictor
            self.store.set_active(version)
        return predictor

    def _initial_predictor(self) -> Predictor:
        """``--model`` if given, else the store's active model, else the embedded default.

        The model in use is registered in the store, so the Models tab can always switch back to it.
        """
        source = self.config.model
        active = self.store.active_model()
        if source is None and active is not None:
            try:
                return Predictor.from_pretrained(active["path"])
            except (ModelLoadError, OSError) as error:
                log.warning("active model %s could not be loaded (%s); using the default model", active["version"], error)
        source = source or default_model_path()
        predictor = Predictor.from_pretrained(source)
        path = str(Path(source).resolve()) if Path(source).exists() else source
        self.store.register_model(predictor.version, path, model_metrics(path))
        self.store.set_active(predictor.version)
        return predictor
