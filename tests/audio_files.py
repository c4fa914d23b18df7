"""Audio files as browsers and phones send them, made in the tests (PyAV bundles the encoders)."""

from __future__ import annotations

import io

import numpy as np


def encode_av(wave: np.ndarray, rate: int, container: str, codec: str) -> bytes:
    """M4A/AAC or WebM/Opus as browsers and phones send them (PyAV bundles the encoders)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        for start in range(0, len(wave), 1024):
            frame = av.AudioFrame.from_ndarray(wave[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()
