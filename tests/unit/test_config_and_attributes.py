"""Settings resolution and attribute builders, called directly."""

from __future__ import annotations

import uuid
from dataclasses import fields
from typing import Any

import pymongo
import pytest
from bson.binary import Binary, UuidRepresentation
from bson.timestamp import Timestamp

import motor_otel
from motor_otel import MotorInstrumentor, instrument_client, uninstrument_client
from motor_otel import attributes as A
from motor_otel.config import Settings


def test_public_api_is_sorted_and_complete() -> None:
    """__all__ is the sorted list of public names, each importable."""
    assert motor_otel.__all__ == sorted(motor_otel.__all__)
    for name in motor_otel.__all__:
        assert hasattr(motor_otel, name)


def test_defaults() -> None:
    """With nothing set: enabled, no query text, driver mode."""
    assert Settings.resolve(environ={}) == Settings()


def test_environment_is_read() -> None:
    """OTEL_PYTHON_INSTRUMENTATION_MONGODB_* variables configure every setting."""
    env = {
        "OTEL_PYTHON_INSTRUMENTATION_MONGODB_ENABLED": "false",
        "OTEL_PYTHON_INSTRUMENTATION_MONGODB_QUERY_TEXT_MAX_LENGTH": "1024",
        "OTEL_PYTHON_INSTRUMENTATION_MONGODB_WITH_TRANSACTION": "spec",
    }
    assert Settings.resolve(environ=env) == Settings(
        enabled=False, query_text_max_length=1024, with_transaction="spec"
    )


def test_keywords_override_environment() -> None:
    """instrument() keywords win over the environment."""
    env = {"OTEL_PYTHON_INSTRUMENTATION_MONGODB_QUERY_TEXT_MAX_LENGTH": "10"}
    assert Settings.resolve(environ=env, query_text_max_length=5).query_text_max_length == 5


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("ENABLED", "maybe", "enabled"),
        ("QUERY_TEXT_MAX_LENGTH", "abc", "query_text_max_length"),
        ("QUERY_TEXT_MAX_LENGTH", "-5", "query_text_max_length"),
        ("QUERY_TEXT_MAX_LENGTH", "", "query_text_max_length"),
        ("QUERY_TEXT_RAW_VALUES", "2", "query_text_raw_values"),
        ("WITH_TRANSACTION", "sometimes", "with_transaction"),
        ("LOG_LIFECYCLE", "loud", "log_lifecycle"),
    ],
)
def test_a_bad_variable_is_treated_as_unset_with_one_warning(
    caplog: pytest.LogCaptureFixture, variable: str, value: str, field: str
) -> None:
    """An invalid variable: the default, and one warning naming the variable and the value."""
    name = "OTEL_PYTHON_INSTRUMENTATION_MONGODB_" + variable
    env = {name: value, "OTEL_PYTHON_INSTRUMENTATION_MONGODB_WITH_TRANSACTION_X": "ignored"}
    if field != "query_text_max_length":  # a good variable beside the bad one still counts
        env["OTEL_PYTHON_INSTRUMENTATION_MONGODB_QUERY_TEXT_MAX_LENGTH"] = "7"
    with caplog.at_level("WARNING", logger="motor_otel"):
        settings = Settings.resolve(environ=env)
    assert getattr(Settings(), field) == getattr(settings, field)
    if field != "query_text_max_length":
        assert settings.query_text_max_length == 7
    (record,) = caplog.records
    assert name in record.getMessage() and repr(value) in record.getMessage()


def test_a_bad_variable_is_warned_about_once_per_process_and_value(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """instrument() again, instrument_client(), resolve again: the same bad value warns once;
    another value of the variable warns once more."""
    name = "OTEL_PYTHON_INSTRUMENTATION_MONGODB_WITH_TRANSACTION"
    monkeypatch.setenv(name, "sometimes")
    instrumentor = MotorInstrumentor()
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(connect=False)
    with caplog.at_level("WARNING", logger="motor_otel"):
        try:
            for _ in range(2):
                instrumentor.instrument()
                instrumentor.uninstrument()
            instrument_client(client)
            instrument_client(client)
            monkeypatch.setenv(name, "never")
            Settings.resolve()
            Settings.resolve()
        finally:
            uninstrument_client(client)
            client.close()
    warned = [r.getMessage() for r in caplog.records if name in r.getMessage()]
    assert [("'sometimes'" in m, "'never'" in m) for m in warned] == [(True, False), (False, True)]


def test_every_field_but_the_hooks_has_a_variable_that_cannot_break_resolve() -> None:
    """Any field's variable set to nonsense resolves to the defaults: nothing raises."""
    names = [f.name for f in fields(Settings) if not f.name.endswith("_hook")]
    env = {"OTEL_PYTHON_INSTRUMENTATION_MONGODB_" + n.upper(): "\x00nonsense" for n in names}
    assert Settings() == Settings.resolve(environ=env)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"query_text_max_length": -1}, ValueError),
        ({"query_text_max_length": "lots"}, ValueError),
        ({"with_transaction": "sometimes"}, ValueError),
        ({"enabled": "maybe"}, ValueError),
        ({"request_hook": 3}, TypeError),
        ({"no_such_setting": 1}, TypeError),
    ],
)
def test_bad_values_are_clear_errors(kwargs: dict[str, object], error: type[Exception]) -> None:
    """Invalid settings raise at instrument() time, naming the setting."""
    with pytest.raises(error, match=next(iter(kwargs))):
        Settings.resolve(environ={}, **kwargs)


def test_lsid_is_the_uuid_string() -> None:
    """db.mongodb.lsid is the session UUID as a string."""
    u = uuid.uuid4()
    lsid = {"id": Binary.from_uuid(u, UuidRepresentation.STANDARD)}
    assert A.lsid_to_str(lsid) == str(u)
    assert A.lsid_to_str({"id": 5}) is None


def test_timestamp_is_one_sortable_int64() -> None:
    """A BSON timestamp becomes seconds << 32 | increment."""
    assert A.timestamp_to_int(Timestamp(10, 3)) == (10 << 32) | 3
    assert A.timestamp_to_int(Timestamp(10, 3)) < A.timestamp_to_int(Timestamp(11, 0))


def test_query_text_redacts_values_by_default() -> None:
    """Keys and structure survive; no document value does; private fields are stripped."""
    command = {
        "insert": "users",
        "documents": [{"name": "alice", "card": "4111-1111"}],
        "lsid": {"id": 1},
        "$db": "shop",
    }
    text = A.query_text(command, 1000, raw_values=False)
    assert text is not None
    assert "alice" not in text and "4111" not in text
    assert '"insert": "users"' in text and '"name": "?"' in text
    assert "lsid" not in text and "$db" not in text


def test_query_text_is_off_by_default_and_truncated() -> None:
    """Length 0 means no attribute; a positive length truncates, then appends "..."."""
    command = {"find": "users", "filter": {"name": "bob"}}
    assert A.query_text(command, 0, raw_values=True) is None
    assert A.query_text(command, 10, raw_values=True) == '{"find": "...'


def test_query_text_at_the_limit_is_whole() -> None:
    """Text exactly as long as the limit is not truncated and gets no marker."""
    command = {"find": "users"}
    full = '{"find": "users"}'
    assert full == A.query_text(command, len(full), raw_values=True)
    assert full == A.query_text(command, len(full) + 1, raw_values=True)


def test_query_text_one_past_the_limit_is_cut_and_marked() -> None:
    """One character over the limit: the limit's worth of text, then "..."."""
    command = {"find": "users"}
    full = '{"find": "users"}'
    assert full[:-1] + "..." == A.query_text(command, len(full) - 1, raw_values=True)


def test_query_text_never_splits_a_multi_byte_character() -> None:
    """Non-ASCII text is written as itself and cut by code point, never mid-character."""
    command = {"find": "café", "filter": {"naïve": "日本語"}}
    full = A.query_text(command, 1000, raw_values=True)
    assert full == '{"find": "café", "filter": {"naïve": "日本語"}}'
    for limit in range(1, len(full)):
        cut = A.query_text(command, limit, raw_values=True)
        assert cut == full[:limit] + "..."
        cut.encode("utf-8")  # a split surrogate or escape would not encode
    cut_in_kanji = A.query_text(command, full.index("本") + 1, raw_values=True)
    assert cut_in_kanji is not None and cut_in_kanji.endswith('"日本...')


def test_sensitive_commands() -> None:
    """Authentication commands and speculative hellos are sensitive."""
    assert A.is_sensitive("saslStart", {})
    assert A.is_sensitive("hello", {"speculativeAuthenticate": {}})
    assert not A.is_sensitive("find", {})


def test_collection_is_omitted_on_admin() -> None:
    """db.collection.name only for commands on a user collection, never on admin."""
    assert A.collection_of("insert", {"insert": "c"}, "db") == "c"
    assert A.collection_of("getMore", {"getMore": 5, "collection": "c"}, "db") == "c"
    assert A.collection_of("commitTransaction", {"commitTransaction": 1}, "admin") is None


def test_error_messages_lose_the_key_values_mongod_quotes() -> None:
    """mongod's E11000 message names the index but not the duplicated value."""
    message = 'E11000 duplicate key error collection: shop.users index: email_1 dup key: { email: "a@b.c" }'
    assert A.error_message(message) == (
        "E11000 duplicate key error collection: shop.users index: email_1 dup key: { ? }"
    )
    assert A.error_message("WriteConflict error") == "WriteConflict error"


@pytest.mark.parametrize(
    ("name", "value", "noun"),
    [
        ("query_text_max_length", -1, "integer"),
        ("query_text_max_length", float("inf"), "integer"),
        ("query_text_max_length", True, "integer"),
        ("long_transaction_ms", float("nan"), "number"),
        ("long_transaction_ms", "soon", "number"),
        ("long_transaction_ms", float("inf"), "number"),
    ],
)
def test_a_bad_number_keyword_is_a_value_error_naming_it(name: str, value: Any, noun: str) -> None:
    """A negative, infinite, NaN, boolean or unreadable number keyword raises ValueError."""
    with pytest.raises(ValueError, match=f"{name} must be a non-negative {noun}"):
        Settings.resolve(environ={}, **{name: value})
