"""Tensors of the Open Inference Protocol v2: datatypes, shapes, and their three wire forms.

A tensor arrives as JSON (`data`, flat or nested, row-major), as raw bytes (the binary tensor data
extension over REST; `raw_input_contents` over gRPC) or as gRPC's typed contents, and leaves as
JSON or raw bytes. Raw bytes are little-endian, row-major; a BYTES tensor's raw form is each
element as a 4-byte little-endian length and its bytes. Every malformed tensor is a BadRequest
(400 / INVALID_ARGUMENT) naming the tensor: nothing here can fail as a 500.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sagegate.server.exceptions import BadRequest

__all__ = ["DATATYPES", "Tensor", "bytes_elements", "coded_bytes", "from_data", "from_raw", "to_raw", "wire_data"]

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_FLOATS = frozenset({"FP16", "FP32", "FP64"})


@dataclass(frozen=True)
class Tensor:
    """`data` has `shape` (BYTES: an object array of bytes)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    raw: bytes | None = None  # its raw form, when the maker has it already

    @property
    def numeric(self) -> bool:
        return self.datatype != "BYTES"


def _dtype(name: str, datatype: Any) -> np.dtype[Any]:
    dtype = DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise BadRequest(f"tensor {name!r}: unsupported datatype {datatype!r} (one of {', '.join(DATATYPES)})")
    return dtype


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, Sequence | np.ndarray) or isinstance(shape, str | bytes):
        raise BadRequest(f"tensor {name!r}: shape must be a list of integers, got {shape!r}")
    dims = tuple(shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise BadRequest(f"tensor {name!r}: shape must be a list of integers >= 0, got {list(dims)!r}")
    return dims


def from_raw(name: str, datatype: Any, shape: Any, raw: bytes | memoryview) -> Tensor:
    """A tensor from its raw bytes (zero-copy for numbers: a read-only view of the request)."""
    dtype = _dtype(name, datatype)
    dims = check_shape(name, shape)
    count = math.prod(dims)
    if datatype == "BYTES":
        return Tensor(name, datatype, dims, _objects(bytes_elements(name, raw, count)).reshape(dims))
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(
            f"tensor {name!r}: shape {list(dims)} of {datatype} is {count * dtype.itemsize} bytes, got {len(raw)}"
        )
    return Tensor(name, datatype, dims, np.frombuffer(raw, dtype=dtype).reshape(dims))


def bytes_elements(name: str, raw: bytes | memoryview, count: int) -> list[bytes]:
    view = memoryview(raw)
    elements: list[bytes] = []
    at = 0
    while at < len(view):
        if at + 4 > len(view):
            raise BadRequest(f"tensor {name!r}: a BYTES element's 4-byte length is cut short")
        (size,) = struct.unpack_from("<I", view, at)
        at += 4
        if at + size > len(view):
            raise BadRequest(f"tensor {name!r}: a BYTES element of {size} bytes runs past the data")
        elements.append(bytes(view[at : at + size]))
        at += size
    if len(elements) != count:
        raise BadRequest(f"tensor {name!r}: its shape holds {count} elements, the data has {len(elements)}")
    return elements


def from_data(name: str, datatype: Any, shape: Any, data: Any) -> Tensor:
    """A tensor from JSON `data` (or gRPC typed contents): flat or nested, row-major."""
    dtype = _dtype(name, datatype)
    dims = check_shape(name, shape)
    count = math.prod(dims)
    if datatype == "BYTES":
        flat = _flatten(name, data)
        if not all(isinstance(v, str | bytes) for v in flat):
            raise BadRequest(f"tensor {name!r}: BYTES data must be strings")
        elements = [v.encode("utf-8", "surrogatepass") if isinstance(v, str) else v for v in flat]
        if len(elements) != count:
            raise BadRequest(f"tensor {name!r}: its shape holds {count} elements, the data has {len(elements)}")
        return Tensor(name, datatype, dims, _objects(elements).reshape(dims))
    flat = _flatten(name, data)
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise BadRequest(f"tensor {name!r}: BOOL data must be true or false")
    elif any(isinstance(v, bool) or not isinstance(v, int | float) for v in flat):
        raise BadRequest(f"tensor {name!r}: {datatype} data must be numbers")
    elif datatype not in _FLOATS and not all(isinstance(v, int) for v in flat):
        raise BadRequest(f"tensor {name!r}: {datatype} data must be integers")
    try:
        with np.errstate(over="raise", invalid="raise"):
            array = np.array(flat, dtype=np.float64 if datatype in _FLOATS else dtype)
            if datatype in _FLOATS and dtype != np.float64:
                narrowed = array.astype(dtype)
                if not np.array_equal(np.isfinite(narrowed), np.isfinite(array)):
                    raise FloatingPointError
                array = narrowed
    except (OverflowError, FloatingPointError, ValueError):
        raise BadRequest(f"tensor {name!r}: a value is beyond the range of {datatype}") from None
    if array.size != count:
        raise BadRequest(f"tensor {name!r}: its shape holds {count} elements, the data has {array.size}")
    return Tensor(name, datatype, dims, array.reshape(dims))


def coded_bytes(name: str, codes: np.ndarray, names: Sequence[str]) -> Tensor:
    """A BYTES tensor of one of a few texts per element (labels): its raw form made by lookup, not
    element by element."""
    texts, framed = _coded(tuple(names))
    return Tensor(name, "BYTES", codes.shape, texts[codes], b"".join(framed[codes].tolist()))


@functools.lru_cache(maxsize=256)
def _coded(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Each text as bytes, and framed as a BYTES element (its 4-byte length first): a model's labels."""
    texts = _objects([n.encode() for n in names])
    return texts, _objects([struct.pack("<I", len(t)) + t for t in texts.tolist()])


def _objects(elements: list[bytes]) -> np.ndarray:
    array = np.empty(len(elements), dtype=object)
    array[:] = elements
    return array


def _flatten(name: str, data: Any) -> list[Any]:
    if not isinstance(data, list | tuple):
        raise BadRequest(f"tensor {name!r}: data must be a list")
    if not data or not isinstance(data[0], list | tuple):
        flat = list(data)
    else:
        flat = []
        stack = [data]
        while stack:  # row-major order of a nested list, without recursion
            item = stack.pop()
            if isinstance(item, list | tuple):
                stack.extend(reversed(item))
            else:
                flat.append(item)
    if any(isinstance(v, list | tuple | dict) for v in flat):
        raise BadRequest(f"tensor {name!r}: data must be numbers, booleans or strings")
    return flat


def to_raw(tensor: Tensor) -> bytes:
    if tensor.raw is not None:
        return tensor.raw
    if tensor.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in tensor.data.reshape(-1).tolist())
    return np.ascontiguousarray(tensor.data, dtype=DATATYPES[tensor.datatype]).tobytes()


def wire_data(tensor: Tensor) -> list[Any]:
    """The flat JSON `data` of a tensor (BYTES as text)."""
    flat = tensor.data.reshape(-1)
    if tensor.datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat.tolist()]
    return list(flat.tolist())
