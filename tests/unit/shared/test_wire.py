"""The API server's JSON through orjson reads and writes as the stdlib's would."""
import json
import re

import pytest
from hypothesis import given, strategies as hs

from peon.shared import wire

JSON = hs.recursive(
    hs.none() | hs.booleans() | hs.integers() | hs.floats(allow_nan=False, allow_infinity=False)
    | hs.text(),
    lambda inner: hs.lists(inner, max_size=4) | hs.dictionaries(hs.text(), inner, max_size=4),
    max_leaves=20)


@given(JSON)
def test_reads_what_the_stdlib_reads(value):
    raw = json.dumps(value).encode()
    assert wire.loads(raw) == json.loads(raw)


@given(JSON)
def test_writes_what_reads_back_the_same(value):
    assert json.loads(wire.dumps(value)) == value


def test_integer_beyond_64_bits_is_kept_exact():
    # orjson alone reads it as a float: a user's json setting would change in its ConfigMap
    raw = b'{"spec": {"seed": 123456789012345678901234567890, "low": -9223372036854775809}}'
    got = wire.loads(raw)
    assert got["spec"]["seed"] == 123456789012345678901234567890
    assert isinstance(got["spec"]["seed"], int)
    assert got["spec"]["low"] == -9223372036854775809
    assert wire.dumps({"n": 2 ** 70}) == b'{"n":1180591620717411303424}'


def test_lone_surrogate_is_read_as_the_stdlib_reads_it():
    assert wire.loads(b'{"name": "\\ud800"}') == {"name": "\ud800"}


def test_bad_json_raises_a_value_error():
    with pytest.raises(ValueError):
        wire.loads(b'{"a": ')


@given(hs.text(alphabet="0123456789a\" ", max_size=60))
def test_a_long_number_is_a_run_of_19_digits(text):
    assert wire.has_long_number(text.encode()) == bool(re.search("[0-9]{19}", text))
