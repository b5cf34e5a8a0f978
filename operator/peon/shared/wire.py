"""JSON to and from the API server, through orjson.

Decoding the API server's answers and watch events was the operator's largest single cost while
1,000 servers came up (the stdlib's decoder: 11.6% of the operator's CPU samples, py-spy --gil
on bench/converge.py); orjson decodes a Deployment with its managedFields about 4x faster and
encodes an apply body about 10x faster.

orjson reads an integer beyond 64 bits as a float, silently (a user's json setting could hold
one, and the ConfigMap rendered from it would then differ from what the user wrote): a text with
a run of 19 digits or more, and what orjson refuses, goes through the stdlib's decoder instead.

Digests of rendered children (the applied-hash annotation) stay on the stdlib's json.dumps:
their bytes must not change, or every child would be applied again after an upgrade.
"""
from __future__ import annotations

import json
from typing import Any

import orjson

# 19 digits: anything from 10**18 up may be beyond a signed 64-bit integer (a false alarm, in a
# string, only takes the slower decoder). Found by mapping every digit to "0" and looking for a
# run: a regular expression ([0-9]{19}) took longer than the stdlib's whole decode (185 against
# 148 us on a Deployment), this 21 us.
DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
LONG_NUMBER = b"0" * 19


def has_long_number(raw: bytes) -> bool:
    return raw.translate(DIGITS_AS_ZERO).find(LONG_NUMBER) >= 0


def loads(raw: bytes) -> Any:
    if has_long_number(raw):
        return json.loads(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)  # what orjson refuses: the stdlib's answer, or its error


def dumps(obj: Any) -> bytes:
    """Compact JSON, as bytes."""
    try:
        return orjson.dumps(obj)
    except TypeError:  # an integer beyond 64 bits, a key that is not a string
        return json.dumps(obj, separators=(",", ":")).encode()
