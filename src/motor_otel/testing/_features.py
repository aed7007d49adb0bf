"""What mongomock 4.3 lacks and the simulator adds: a small adapter, one feature per function.

mongomock supplies query, update and aggregation semantics; where it has no support for a
feature that MongoDB documents, this module adds it, following the MongoDB manual page named in
each docstring. :func:`install` extends mongomock in place once; it only turns what mongomock
refused (``NotImplementedError`` or "Unrecognized expression") into the documented behaviour,
so code that already worked on mongomock sees no change.

Features that remain unsupported reach the client as an error reply naming them (see
:func:`unsupported`), never as a wrong answer.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import random
import re
import unicodedata
from collections.abc import Iterator
from typing import Any

import bson
import mongomock
from mongomock import aggregate as _aggregate
from mongomock import collection as _collection
from mongomock import filtering as _filtering

from motor_otel.testing._errors import CommandError

Doc = dict[str, Any]

# ``let`` variables of the command being run ("let" option of find, aggregate, update, delete,
# findAndModify): visible as ``$$name`` in every expression, $expr included.
_LET: contextvars.ContextVar[Doc] = contextvars.ContextVar("motor_otel_let", default={})  # noqa: B039

# The numeric aliases of ``$type`` (MongoDB manual, "$type" query operator, "Available Types").
_TYPE_ALIASES = {
    1: "double",
    2: "string",
    3: "object",
    4: "array",
    5: "binData",
    7: "objectId",
    8: "bool",
    9: "date",
    10: "null",
    16: "int",
    18: "long",
    19: "decimal",
}
_REMOVE = "$$REMOVE"
_MISSING = object()  # a field path that names no field: "missing", not null
# System variables (MongoDB manual, "Aggregation Variables"): never "undefined".
_SYSTEM_VARIABLES = frozenset(
    {"ROOT", "CURRENT", "REMOVE", "NOW", "CLUSTER_TIME", "DESCEND", "PRUNE", "KEEP"}
)
_COMPARISONS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$cmp"})


def unsupported(feature: str) -> CommandError:
    """The reply for a feature the simulator does not have: ``ok: 0``, BadValue (2), naming it."""
    return CommandError(2, f"{feature} is not supported by the simulator (motor_otel.testing)")


class _Parser(_aggregate._Parser):  # type: ignore[misc]
    """mongomock's expression parser with ``let`` variables and ``$setField`` / ``$getField`` /
    ``$unsetField`` (MongoDB manual, "$setField (aggregation)", "$getField (aggregation)",
    "$unsetField (aggregation)")."""

    def __init__(
        self, doc_dict: Doc, user_vars: Doc | None = None, ignore_missing_keys: bool = False
    ) -> None:
        super().__init__(doc_dict, {**_LET.get(), **(user_vars or {})}, ignore_missing_keys)

    def parse(self, expression: Any) -> Any:
        if isinstance(expression, dict) and len(expression) == 1:
            ((name, args),) = expression.items()
            if name in ("$setField", "$unsetField", "$getField"):
                return self._field_operator(name, args)
            if name == "$rand":
                return _rand(args)
            if name in _COMPARISONS and isinstance(args, list) and len(args) == 2:
                return self._compare(name, args)
        return super().parse(expression)

    def _parse_basic_expression(self, expression: Any) -> Any:
        """``$$name`` must name a variable in scope: mongod fails the command with 17276 "Use of
        undefined variable" (MongoDB manual, "Aggregation Variables", "let"), where mongomock
        would treat it as a missing field."""
        if isinstance(expression, str) and expression.startswith("$$"):
            name = expression[2:].split(".", 1)[0]
            if name not in self._user_vars and name not in _SYSTEM_VARIABLES:
                raise mongomock.OperationFailure(f"Use of undefined variable: {name}", code=17276)
        return super()._parse_basic_expression(expression)

    def _compare(self, name: str, args: list[Any]) -> Any:
        """Aggregation comparisons where an operand may name a missing field (mongomock raises
        KeyError): "missing" equals only missing and sorts below null (MongoDB manual,
        "Comparison/Sort Order": "treats a non-existent field as ... less than null" in sorts;
        "$eq (aggregation)"). ``{$expr: {$eq: ["$name", "$$name"]}}`` on a document without
        ``name`` is then false, as on mongod, instead of an error."""
        a, b = (self._operand(arg) for arg in args)
        order = bson_order(a, b)
        return {
            "$eq": order == 0,
            "$ne": order != 0,
            "$gt": order > 0,
            "$gte": order >= 0,
            "$lt": order < 0,
            "$lte": order <= 0,
            "$cmp": order,
        }[name]

    def _operand(self, expression: Any) -> Any:
        try:
            return self.parse(expression)
        except KeyError:
            return _MISSING

    def _field_operator(self, name: str, args: Any) -> Any:
        if name == "$getField" and not isinstance(args, dict):
            args = {"field": args}
        if not isinstance(args, dict) or "field" not in args:
            raise mongomock.OperationFailure(f"{name} requires 'field'", code=4161101)
        field = self.parse(args["field"])
        if not isinstance(field, str):
            raise mongomock.OperationFailure(f"{name} requires 'field' to evaluate to a string")
        target = self.parse(args.get("input", "$$CURRENT"))
        if name == "$getField":
            if not isinstance(target, dict):
                raise KeyError(field)
            return target[field]
        if target is None:
            return None
        if not isinstance(target, dict):
            raise mongomock.OperationFailure(f"{name} requires 'input' to evaluate to an object")
        result = dict(target)
        raw_value = _REMOVE if name == "$unsetField" else args.get("value")
        if raw_value == _REMOVE:
            result.pop(field, None)
        else:
            result[field] = self.parse(raw_value)
        return result


def _rand(args: Any) -> float:
    """``$rand: {}``: a float in [0, 1) (MongoDB manual, "$rand (aggregation)"; it takes no
    arguments)."""
    if args != {}:
        raise mongomock.OperationFailure("$rand does not currently accept arguments", code=10065)
    return random.random()


def bson_order(a: Any, b: Any) -> int:
    """-1, 0 or 1: how mongod orders two values of any types (MongoDB manual, "Comparison/Sort
    Order": MinKey, null, numbers, strings, objects, arrays, binary, ObjectId, booleans, dates,
    timestamps, regular expressions, MaxKey), a missing field first."""
    if a is _MISSING or b is _MISSING:
        return (a is not _MISSING) - (b is not _MISSING)
    if _filtering.bson_compare(lambda x, y: x < y, a, b):
        return -1
    if _filtering.bson_compare(lambda x, y: x < y, b, a):
        return 1
    return 0


def bson_sorted(values: list[Any]) -> list[Any]:
    """Values in mongod's BSON order (see :func:`bson_order`)."""
    return sorted(values, key=functools.cmp_to_key(bson_order))


def _unset_stage(in_collection: list[Doc], database: Any, options: Any) -> list[Doc]:
    """``$unset: "f"`` / ``["f", "g"]``: an alias for a ``$project`` that excludes them
    (MongoDB manual, "$unset (aggregation)")."""
    fields = [options] if isinstance(options, str) else options
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
        raise mongomock.OperationFailure("$unset specification must be a string or an array")
    result: list[Doc] = _aggregate._handle_project_stage(
        in_collection, database, {f: 0 for f in fields}
    )
    return result


def _keep_id_in_pipeline_update(self: Any, existing: Doc, pipeline: Any, session: Any) -> None:
    """A pipeline-style update keeps the document's ``_id`` when its stages drop it (mongod
    treats the pipeline's output as a replacement document, and a replacement without ``_id``
    keeps the original: MongoDB manual, "Updates with Aggregation Pipeline", and
    "db.collection.replaceOne()": "you cannot change the _id")."""
    [new] = _aggregate.process_pipeline([existing], self.database, pipeline, session)
    if "_id" in existing and "_id" not in new:
        new = {"_id": existing["_id"], **new}
    existing.clear()
    existing.update(new)


def _check_field_names(data: Doc) -> None:
    """Field names as mongod 5.0+ stores them: top-level ``$``-prefixed names are allowed
    (MongoDB manual, "Field Names": "Starting in MongoDB 5.0, document field names can be
    dollar ($) prefixed"), but not inside ``_id`` ("The _id field ... cannot contain
    $-prefixed fields"): DollarPrefixedFieldName (52) as on mongod."""
    _collection._recursive_key_check_null_character(data)
    check_id(data)


def check_id(doc: Doc) -> None:
    """Refuse an ``_id`` holding ``$``-prefixed field names (see :func:`_check_field_names`)."""
    value = doc.get("_id")
    if isinstance(value, dict):
        for key in value:
            if str(key).startswith("$"):
                raise CommandError(
                    52,
                    f"_id fields may not contain '$'-prefixed fields: {key} is not valid for "
                    "storage.",
                )


def _replace_with(in_collection: list[Doc], database: Any, options: Any) -> list[Doc]:
    """``$replaceWith: <expr>`` is ``$replaceRoot: {newRoot: <expr>}`` (MongoDB manual,
    "$replaceWith (aggregation)": "an alias for $replaceRoot")."""
    result: list[Doc] = _aggregate._handle_replace_root_stage(
        in_collection, database, {"newRoot": options}
    )
    return result


_installed = False


def install() -> None:
    """Extend mongomock once per process (idempotent)."""
    global _installed
    if _installed:
        return
    _aggregate._Parser = _Parser
    _aggregate._PIPELINE_HANDLERS["$replaceWith"] = _replace_with
    _aggregate._PIPELINE_HANDLERS["$unset"] = _unset_stage
    _collection._validate_data_fields = _check_field_names
    _collection.Collection._apply_update_pipeline = _keep_id_in_pipeline_update
    type_map = _filtering.TYPE_MAP
    type_map["null"] = lambda v: v is None  # "$type: 'null'" matches null, not a missing field
    for code, alias in _TYPE_ALIASES.items():
        if type_map.get(alias) is not None:
            type_map[code] = type_map[alias]
    _installed = True


@contextlib.contextmanager
def let_variables(let: Any) -> Iterator[None]:
    """Make a command's ``let`` document visible to expressions while it runs."""
    if let is not None and not isinstance(let, dict):
        raise CommandError(9, "'let' must be an object")
    for name in let or {}:
        if not re.fullmatch(r"[a-z][A-Za-z0-9_]*", str(name)):
            raise CommandError(
                2, f"'{name}' starts with an invalid character for a user variable name"
            )
    values = {name: _aggregate._parse_expression(v, {}) for name, v in (let or {}).items()}
    token = _LET.set(values)
    try:
        yield
    finally:
        _LET.reset(token)


def check_collation(cmd: Doc) -> None:
    """Refuse, before anything runs, a collation the simulator cannot honour (see
    :func:`collation`): any other would silently compare wrongly."""
    specs = [cmd.get("collation")]
    for key in ("updates", "deletes", "ops"):
        specs.extend(s.get("collation") for s in cmd.get(key) or [] if isinstance(s, dict))
    for spec in specs:
        collation(spec)


# Collation options at the values ``en`` has by default (MongoDB manual, "Collation",
# "Collation Document"): accepted when given, any other value is refused.
_COLLATION_DEFAULTS: Doc = {
    "caseLevel": False,
    "caseFirst": "off",
    "numericOrdering": False,
    "alternate": "non-ignorable",
    "maxVariable": "punct",
    "backwards": False,
    "normalization": False,
}
# Query operators whose arguments are values compared under the collation.
_COLLATED_OPERATORS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$all"})


class Collation:
    """String comparison for locale ``en`` / ``en_US`` at strength 1 to 3 (MongoDB manual,
    "Collation"; ICU's levels): 1 compares base letters only (``"a" == "A" == "á"``), 2 adds
    accents (``"a" == "A" != "á"``), 3 adds case, lowercase first.

    A documented subset built on :mod:`unicodedata`: strings compare by a key of their
    NFD-decomposed, case-folded base letters, then their accents, then their case. What it does
    not do: ICU's full ordering tables (punctuation, symbols and digits order by code point, not
    ICU's order; no contractions or expansions beyond ``casefold``), other locales, strength 4
    and 5, and the options in ``_COLLATION_DEFAULTS`` at any value but their default. ``$expr``,
    ``$regex`` and aggregation stages other than a leading ``$match`` compare as ``simple``.
    """

    def __init__(self, strength: int) -> None:
        self.strength = strength

    def key(self, text: str) -> str:
        """A string whose code-point order and equality are this collation's for ``text``."""
        decomposed = unicodedata.normalize("NFD", text)
        base = "".join(c for c in decomposed if not unicodedata.combining(c))
        parts = [base.casefold()]
        if self.strength >= 2:
            parts.append(decomposed.casefold())
        if self.strength >= 3:
            parts.append("".join("1" if c.isupper() else "0" for c in base))
        return "\x01".join(parts)

    def value(self, value: Any) -> Any:
        """``value`` with every string (in arrays and embedded documents too) as its key."""
        if isinstance(value, str):
            return self.key(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        return value

    def query(self, query: Any) -> Any:
        """A filter whose compared values are keys; field names, ``$regex``, ``$type``,
        ``$expr`` and other non-comparison arguments are left as they are."""
        if not isinstance(query, dict):
            return self.value(query)
        out: Doc = {}
        for key, value in query.items():
            if key in ("$and", "$or", "$nor") and isinstance(value, list):
                out[key] = [self.query(clause) for clause in value]
            elif key in ("$not", "$elemMatch") and isinstance(value, dict):
                out[key] = self.query(value)
            elif key in _COLLATED_OPERATORS:
                out[key] = self.value(value)
            elif str(key).startswith("$"):
                out[key] = value
            elif isinstance(value, dict) and any(str(k).startswith("$") for k in value):
                out[key] = self.query(value)
            else:
                out[key] = self.value(value)
        return out

    def matches(self, query: Doc, doc: Doc) -> bool:
        return bool(_filtering.filter_applies(self.query(query), self.value(doc)))

    def sort(self, docs: list[Doc], sort: list[tuple[str, int]]) -> list[Doc]:
        """``docs`` in ``sort`` order, strings compared under this collation."""

        def compare(a: Doc, b: Doc) -> int:
            for field, direction in sort:
                order = bson_order(self.value(_field(a, field)), self.value(_field(b, field)))
                if order:
                    return order * (1 if direction >= 0 else -1)
            return 0

        return sorted(docs, key=functools.cmp_to_key(compare))

    def distinct(self, values: list[Any]) -> list[Any]:
        """Distinct values under this collation (the first of equal ones), in its order."""
        kept: dict[bytes, Any] = {}
        for value in values:
            kept.setdefault(bson.encode({"v": self.value(value)}), value)
        return sorted(
            kept.values(),
            key=functools.cmp_to_key(lambda a, b: bson_order(self.value(a), self.value(b))),
        )


def _field(doc: Doc, path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def values_at(doc: Doc, path: str) -> list[Any]:
    """The values ``distinct`` takes from ``doc`` at ``path``: an array's elements one by one
    (MongoDB manual, "distinct": "each element of the array as a separate value")."""
    value = _field(doc, path)
    if value is _MISSING:
        return []
    return list(value) if isinstance(value, list) else [value]


def collation(spec: Any) -> Collation | None:
    """The collation a command or statement asks for: None for none or ``simple`` (binary
    comparison); ``en`` / ``en_US`` at strength 1-3 (default 3) as :class:`Collation`; anything
    else is refused naming it."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or "locale" not in spec:
        raise CommandError(40414, "BSON field 'collation.locale' is missing but a required field")
    if spec["locale"] == "simple":
        return None
    strength = spec.get("strength", 3)
    other = {k: v for k, v in spec.items() if k not in ("locale", "strength")}
    if (
        spec["locale"] not in ("en", "en_US")
        or strength not in (1, 2, 3)
        or any(_COLLATION_DEFAULTS.get(k, _MISSING) != v for k, v in other.items())
    ):
        raise unsupported(
            f"collation {dict(spec)!r} (only 'simple', or 'en'/'en_US' at strength 1-3 with "
            "default options)"
        )
    return Collation(int(strength))


# -- arrayFilters ------------------------------------------------------------------------------
_POSITIONAL = re.compile(r"^\$\[([a-z][A-Za-z0-9]*)?\]$")


def _identifier(flt: Doc) -> str:
    for key, value in flt.items():
        if key.startswith("$") and isinstance(value, list) and value:
            return _identifier(value[0])
        return str(key).split(".", 1)[0]
    raise CommandError(9, "Cannot use an expression without a top-level field name in arrayFilters")


def _element_matches(element: Any, ident: str, filters: dict[str, list[Doc]]) -> bool:
    return all(_filtering.filter_applies(f, {ident: element}) for f in filters[ident])


def _paths(
    node: Any, parts: list[str], prefix: str, filters: dict[str, list[Doc]]
) -> Iterator[str]:
    if not parts:
        yield prefix
        return
    head, rest = parts[0], parts[1:]
    found = _POSITIONAL.match(head)
    join = (prefix + ".") if prefix else ""
    if found is None:
        child = node.get(head) if isinstance(node, dict) else None
        if isinstance(node, list) and head.isdigit() and int(head) < len(node):
            child = node[int(head)]
        yield from _paths(child, rest, join + head, filters)
        return
    if not isinstance(node, list):
        raise CommandError(
            2, f"The path '{prefix}' must exist in the document in order to apply array updates."
        )
    ident = found.group(1)
    for i, element in enumerate(node):
        if ident is None or _element_matches(element, ident, filters):
            yield from _paths(element, rest, f"{join}{i}", filters)


def expand_array_filters(doc: Doc, update: Any, array_filters: list[Doc]) -> Doc:
    """The update with every ``$[]`` / ``$[<identifier>]`` replaced by the concrete array indexes
    it selects in ``doc`` (MongoDB manual, "$[<identifier>]" and "$[]" update operators)."""
    filters: dict[str, list[Doc]] = {}
    for flt in array_filters:
        if not isinstance(flt, dict) or not flt:
            raise CommandError(9, "arrayFilters entries must be non-empty objects")
        filters.setdefault(_identifier(flt), []).append(flt)
    used: set[str] = set()
    expanded: Doc = {}
    for operator, fields in update.items():
        if not isinstance(fields, dict):
            expanded[operator] = fields
            continue
        out: Doc = {}
        for path, value in fields.items():
            parts = str(path).split(".")
            for part in parts:
                match = _POSITIONAL.match(part)
                if match and match.group(1):
                    if match.group(1) not in filters:
                        raise CommandError(
                            2,
                            f"No array filter found for identifier '{match.group(1)}' in path '{path}'",
                        )
                    used.add(match.group(1))
            if not any(_POSITIONAL.match(p) for p in parts):
                out[path] = value
                continue
            for concrete in _paths(doc, parts, "", filters):
                out[concrete] = copy.deepcopy(value)
        if out:
            expanded[operator] = out
    unused = set(filters) - used
    if unused:
        raise CommandError(
            9, f"The array filter for identifier '{sorted(unused)[0]}' was not used in the update"
        )
    return expanded


def has_positional(update: Any) -> bool:
    return isinstance(update, dict) and any(
        isinstance(fields, dict) and any("$[" in str(path) for path in fields)
        for fields in update.values()
    )
