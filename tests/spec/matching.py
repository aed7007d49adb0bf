"""Unified-test-format matching: root documents may hold extra keys, nested ones may not."""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping
from typing import Any

from bson import json_util
from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.timestamp import Timestamp

_MISSING = object()
UNSET = _MISSING  # an optional result the driver did not set (e.g. no partial result)

# The special operators this matcher implements; any other ``$$`` operator is Unsupported.
OPERATORS = frozenset(
    {
        "$$exists",
        "$$lte",
        "$$matchAsDocument",
        "$$matchAsRoot",
        "$$sessionLsid",
        "$$type",
        "$$unsetOrMatches",
    }
)


class Unsupported(Exception):
    """The runner lacks a feature this test uses: the test is skipped, naming it."""


class Mismatch(AssertionError):
    pass


def _type_names(value: Any) -> set[str]:
    if value is None:
        return {"null"}
    if isinstance(value, bool):
        return {"bool"}
    if isinstance(value, Int64):
        return {"long", "number"}
    if isinstance(value, int):
        return {"int", "long", "number"}  # Python ints (OTel attributes) are int64 on the wire
    if isinstance(value, float):
        return {"double", "number"}
    if isinstance(value, Decimal128):
        return {"decimal", "number"}
    if isinstance(value, str):
        return {"string"}
    if isinstance(value, Mapping):
        return {"object"}
    if isinstance(value, (list, tuple)):
        return {"array"}
    if isinstance(value, (Binary, bytes)):
        return {"binData"}
    if isinstance(value, ObjectId):
        return {"objectId"}
    if isinstance(value, datetime.datetime):
        return {"date"}
    if isinstance(value, Timestamp):
        return {"timestamp"}
    if isinstance(value, re.Pattern):
        return {"regex"}
    return {type(value).__name__}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal128)) and not isinstance(value, bool)


class Matcher:
    """Matches expected (JSON) against actual values; ``lsid_of`` resolves ``$$sessionLsid``."""

    def __init__(self, lsid_of: Callable[[str], Any]) -> None:
        self.lsid_of = lsid_of

    def match(self, expected: Any, actual: Any, *, root: bool = True, path: str = "") -> None:
        if isinstance(expected, Mapping) and len(expected) == 1:
            (key,) = expected
            if key.startswith("$$"):
                self._operator(key, expected[key], actual, path, root)
                return
        if isinstance(expected, Mapping):
            if not isinstance(actual, Mapping):
                raise Mismatch(f"{path}: expected a document, got {actual!r}")
            for key, value in expected.items():
                sub = actual.get(key, _MISSING)
                if isinstance(value, Mapping) and len(value) == 1:
                    op = next(iter(value))
                    if op == "$$exists":
                        if (sub is not _MISSING) != bool(value[op]):
                            raise Mismatch(f"{path}.{key}: $$exists {value[op]} but got {sub!r}")
                        continue
                    if op == "$$unsetOrMatches" and sub is _MISSING:
                        continue
                if sub is _MISSING:
                    raise Mismatch(f"{path}.{key}: missing (expected {value!r})")
                self.match(value, sub, root=False, path=f"{path}.{key}")
            if not root:
                extra = set(actual) - set(expected)
                if extra:
                    raise Mismatch(f"{path}: unexpected keys {sorted(extra)}")
            return
        if isinstance(expected, list):
            if not isinstance(actual, (list, tuple)) or len(actual) != len(expected):
                raise Mismatch(f"{path}: expected {len(expected)} items, got {actual!r}")
            for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
                self.match(e, a, root=False, path=f"{path}[{i}]")
            return
        if _is_number(expected) and _is_number(actual):
            if float(str(expected)) != float(str(actual)):
                raise Mismatch(f"{path}: {expected!r} != {actual!r}")
            return
        if expected != actual or isinstance(expected, bool) != isinstance(actual, bool):
            raise Mismatch(f"{path}: {expected!r} != {actual!r}")

    def _operator(self, op: str, arg: Any, actual: Any, path: str, root: bool = False) -> None:
        if op == "$$type":
            names = {arg} if isinstance(arg, str) else set(arg)
            if not names & _type_names(actual):
                raise Mismatch(f"{path}: type {sorted(_type_names(actual))} not in {sorted(names)}")
        elif op == "$$unsetOrMatches":  # a root document stays one (extra keys allowed)
            if actual is not _MISSING:
                self.match(arg, actual, root=root, path=path)
        elif op == "$$exists":
            if not arg:
                raise Mismatch(f"{path}: expected to be absent")
        elif op == "$$sessionLsid":
            expected = self.lsid_of(arg)
            if isinstance(actual, str):  # tracing attribute: the UUID string
                from motor_otel.attributes import lsid_to_str

                expected = lsid_to_str(expected)
            if expected != actual:
                raise Mismatch(f"{path}: lsid {actual!r} is not session {arg!r} ({expected!r})")
        elif op == "$$matchAsDocument":
            if not isinstance(actual, str):
                raise Mismatch(f"{path}: $$matchAsDocument needs a string, got {actual!r}")
            self.match(arg, json_util.loads(actual), root=False, path=path)
        elif op == "$$matchAsRoot":
            self.match(arg, actual, root=True, path=path)
        elif op == "$$lte":
            if not (_is_number(actual) and actual <= arg):
                raise Mismatch(f"{path}: {actual!r} > {arg!r}")
        else:
            raise Unsupported(f"operator {op}")
