"""Settings resolution and attribute builders, called directly."""

from __future__ import annotations

import uuid

import pytest
from bson.binary import Binary, UuidRepresentation
from bson.timestamp import Timestamp

import motor_otel
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
    """Length 0 means no attribute; a positive length truncates."""
    command = {"find": "users", "filter": {"name": "bob"}}
    assert A.query_text(command, 0, raw_values=True) is None
    assert A.query_text(command, 10, raw_values=True) == '{"find": "'


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
