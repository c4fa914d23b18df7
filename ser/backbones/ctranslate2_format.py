"""Read CTranslate2's ``model.bin`` into numpy arrays.

CTranslate2 exposes no API to read a model's weights back, so this parses the file
format its own writer produces (``ctranslate2/specs/model_spec.py``, ``ModelSpec._serialize``,
binary version 6): little-endian header, then ``(name, shape, dtype id, byte count, bytes)``
per variable, then ``(alias, target)`` pairs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from os import PathLike

import numpy as np
import torch

SUPPORTED_BINARY_VERSION = 6

# Order of the DataType enum in CTranslate2 (include/ctranslate2/types.h).
_DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


@dataclass
class CT2Model:
    """The variables of one CTranslate2 model file, aliases resolved."""

    spec_name: str
    revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self.offset = 0

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack_from("<" + fmt, self._data, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return value

    def string(self) -> str:
        length = self.unpack("H")  # includes the trailing NUL
        text = bytes(self._data[self.offset : self.offset + length - 1]).decode("utf-8")
        self.offset += length
        return text

    def raw(self, size: int) -> bytes:
        chunk = bytes(self._data[self.offset : self.offset + size])
        self.offset += size
        return chunk


def _to_array(raw: bytes, dtype: str, shape: list[int]) -> np.ndarray:
    if dtype == "bfloat16":  # numpy has no bfloat16: widen through torch
        return torch.frombuffer(bytearray(raw), dtype=torch.bfloat16).float().numpy().reshape(shape)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def read_ct2_model(path: str | PathLike[str]) -> CT2Model:
    """Parse a CTranslate2 ``model.bin``; aliases become extra keys sharing the array."""
    with open(path, "rb") as handle:
        reader = _Reader(handle.read())
    version = reader.unpack("I")
    if version != SUPPORTED_BINARY_VERSION:
        raise ValueError(
            f"{path}: CTranslate2 binary version {version} is not supported (expected {SUPPORTED_BINARY_VERSION})"
        )
    model = CT2Model(spec_name=reader.string(), revision=reader.unpack("I"))
    for _ in range(reader.unpack("I")):
        name = reader.string()
        shape = [reader.unpack("I") for _ in range(reader.unpack("B"))]
        dtype = _DTYPES[reader.unpack("B")]
        model.variables[name] = _to_array(reader.raw(reader.unpack("I")), dtype, shape)
    for _ in range(reader.unpack("I")):
        alias, target = reader.string(), reader.string()
        model.variables[alias] = model.variables[target]
    return model
