"""DlibReader on hand-encoded bytes (encodings worked out by hand from dlib's serialize.h)."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from facelab.convert.dlib_reader import DlibReader
from facelab.errors import ModelError


def test_integers():
    data = bytes(
        [0x01, 0x00]  # 0
        + [0x01, 0x05]  # 5
        + [0x81, 0x02]  # -2
        + [0x02, 0x2C, 0x01]  # 300
        + [0x84, 0x00, 0x00, 0x00, 0x80]  # -2**31
        + [0x08]
        + [0xFF] * 8  # 2**64 - 1
    )
    r = DlibReader(data, "ints.dat")
    assert [r.read_int() for _ in range(5)] == [0, 5, -2, 300, -(2**31)]
    assert r.read_ulong() == 2**64 - 1
    assert r.at_end() and r.remaining == 0


def test_integer_too_wide_for_its_type_and_negative_unsigned():
    with pytest.raises(ModelError, match="control byte"):
        DlibReader(bytes([0x05, 1, 2, 3, 4, 5]), "x").read_int32()
    with pytest.raises(ModelError, match="negative"):
        DlibReader(bytes([0x81, 0x01]), "x").read_ulong()


def test_floats():
    # 1.5 = 3 * 2**-1; -0.25 = -1 * 2**-2; 0 = 0 * 2**0; inf: exponent 32000 (0x7d00); nan: 32002
    data = bytes(
        [0x01, 0x03, 0x81, 0x01]
        + [0x81, 0x01, 0x81, 0x02]
        + [0x01, 0x00, 0x01, 0x00]
        + [0x01, 0x00, 0x02, 0x00, 0x7D]
        + [0x01, 0x00, 0x02, 0x02, 0x7D]
    )
    r = DlibReader(data, "floats.dat")
    assert r.read_double() == 1.5
    assert r.read_float() == -0.25
    assert r.read_double() == 0.0
    assert r.read_double() == math.inf
    assert math.isnan(r.read_double())
    r = DlibReader(data, "floats.dat")
    values = r.read_floats(5)
    assert values.dtype == np.float32
    assert values[:4].tolist() == [1.5, -0.25, 0.0, math.inf] and np.isnan(values[4])
    assert r.at_end()


def test_float_mantissa_of_third():
    # float(1/3) = 11184811 * 2**-25 exactly (24-bit mantissa)
    m = 11184811
    data = bytes([0x03]) + m.to_bytes(3, "little") + bytes([0x81, 25])
    assert DlibReader(data).read_float() == np.float32(1 / 3)


def test_bool_char_string_vector():
    data = b"1" + b"0" + b"\x07" + bytes([0x01, 0x03]) + b"abc" + bytes([0x01, 0x02, 0x01, 0x04, 0x81, 0x04])
    r = DlibReader(data, "mixed.dat")
    assert r.read_bool() is True and r.read_bool() is False
    assert r.read_uchar() == 7
    assert r.peek_string() == "abc"
    assert r.read_string() == "abc"
    assert r.read_vector(r.read_int) == [4, -4]
    with pytest.raises(ModelError, match="invalid bool"):
        DlibReader(b"x").read_bool()


def test_expect_string_and_int():
    r = DlibReader(bytes([0x01, 0x04]) + b"con_" + bytes([0x01, 0x02]), "net.dat")
    with pytest.raises(ModelError, match=r"net\.dat: unexpected version string 'con_', expected 'fc_'.*offset 0"):
        r.expect_string("fc_")
    r.offset = 0
    assert r.expect_string(("fc_", "con_")) == "con_"
    with pytest.raises(ModelError, match="unexpected version number 2, expected 1"):
        r.expect_int(1)


def test_matrix_both_sign_conventions():
    # rows/cols negated (current format): 2x1 of floats 1.0, 2.0; then old format 1x2 ints
    data = bytes([0x81, 0x02, 0x81, 0x01, 0x01, 0x01, 0x01, 0x00, 0x01, 0x01, 0x01, 0x01])
    data += bytes([0x01, 0x01, 0x01, 0x02, 0x01, 0x07, 0x81, 0x03])
    r = DlibReader(data, "m.dat")
    m = r.read_matrix(cols=1)
    assert m.shape == (2, 1) and m[:, 0].tolist() == [1.0, 2.0]
    assert r.read_matrix(element="int", dtype=np.int64).tolist() == [[7, -3]]
    with pytest.raises(ModelError, match="shape 2x1, expected 3x1"):
        DlibReader(data, "m.dat").read_matrix(rows=3, cols=1)


def test_tensor_and_alias_tensor():
    values = [1.0, -2.5, 3.25, 0.0, 8.0, 0.5]
    data = bytes([0x01, 0x02, 0x01, 0x01, 0x01, 0x02, 0x01, 0x03, 0x01, 0x01]) + struct.pack("<6f", *values)
    data += bytes([0x01, 0x01, 0x01, 0x04, 0x01, 0x01, 0x01, 0x00, 0x01, 0x02])
    r = DlibReader(data, "t.dat")
    t = r.read_tensor()
    assert t.shape == (1, 2, 3, 1) and t.dtype == np.float32
    assert t.reshape(-1).tolist() == values
    assert r.read_alias_tensor() == (4, 1, 0, 2)
    assert r.at_end()


def test_truncation_names_file_and_offset():
    data = bytes([0x01, 0x02, 0x01, 0x01, 0x01, 0x02, 0x01, 0x03, 0x01, 0x01]) + b"\x00" * 10
    with pytest.raises(ModelError, match=r"t\.dat: file is truncated.*at byte offset 10 of 20"):
        DlibReader(data, "t.dat").read_tensor()
    with pytest.raises(ModelError, match=r"truncated.*offset 2 of 3"):
        r = DlibReader(bytes([0x01, 0x02, 0x01]), "short.dat")
        r.read_int()
        r.read_int()
    with pytest.raises(ModelError, match="truncated"):
        DlibReader(bytes([0x01, 0x03, 0x81]), "f.dat").read_floats(1)
    with pytest.raises(ModelError, match="implausible length"):
        DlibReader(bytes([0x04, 0xFF, 0xFF, 0xFF, 0x7F]), "s.dat").read_string()
    assert DlibReader(bytes([0x04, 0xFF]), "s.dat").peek_string() is None
