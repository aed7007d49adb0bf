"""Zero-code tracing: `opentelemetry-instrument` on examples/plain_app.py (no tracing code in it).

The app runs in a subprocess against the test simulator with the console exporter; its stdout
holds the app's own lines and the exported spans as JSON objects, which we split apart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

APP = Path(__file__).resolve().parents[2] / "examples" / "plain_app.py"
OTEL_INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"
APP_OUTPUT = [
    "callback calls: 2",
    "orders: 1",
    "apples left: 9",
    "found: {'item': 'apple', 'n': 1}",
]

Span = dict[str, Any]


def _run(
    uri: str, db: str, *, metrics: str = "none", traces: str = "console", **env: str
) -> tuple[list[str], list[Span], list[Span]]:
    """Run the app under opentelemetry-instrument; (app output lines, spans, metrics exports)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ.update(
        MONGODB_URI=uri,
        PLAIN_APP_DB=db,
        # Export only at exit, so exported JSON never interleaves with the app's own lines.
        OTEL_BSP_SCHEDULE_DELAY="600000",
        OTEL_METRIC_EXPORT_INTERVAL="600000",
        **env,
    )
    done = subprocess.run(
        [
            str(OTEL_INSTRUMENT),
            "--traces_exporter",
            traces,
            "--metrics_exporter",
            metrics,
            # The distro's default logs exporter is OTLP/gRPC; without that package installed
            # the SDK set-up fails as a whole and the app runs untraced (exit code still 0).
            "--logs_exporter",
            "none",
            sys.executable,
            str(APP),
        ],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr  # the loader logs, and goes on, on errors
    return _split(done.stdout)


def _split(stdout: str) -> tuple[list[str], list[Span], list[Span]]:
    """The console exporters write one indented JSON object per span or metrics export; the
    rest is the app's."""
    decoder = json.JSONDecoder()
    lines: list[str] = []
    spans: list[Span] = []
    metrics: list[Span] = []
    pos = 0
    while pos < len(stdout):
        if stdout[pos] == "{":
            exported, pos = decoder.raw_decode(stdout, pos)
            (metrics if "resource_metrics" in exported else spans).append(exported)
        else:
            end = stdout.find("\n", pos)
            end = len(stdout) if end < 0 else end
            if stdout[pos:end].strip():
                lines.append(stdout[pos:end])
            pos = end + 1
    return lines, spans, metrics


def _ours(spans: list[Span]) -> list[Span]:
    """motor-otel's spans (stable semconv `db.system.name`; the contrib one sets `db.system`)."""
    return [s for s in spans if "db.system.name" in s["attributes"]]


def _id(span: Span) -> str:
    return str(span["context"]["span_id"])


def _kids(spans: list[Span], parent: Span) -> list[Span]:
    found = [s for s in spans if s["parent_id"] == _id(parent)]
    return sorted(found, key=lambda s: s["start_time"])


def _command_spans(spans: list[Span]) -> list[tuple[str, Span]]:
    """(command name, span) for every span that stands for one command sent, by any tracer."""
    found = []
    for span in spans:
        attrs = span["attributes"]
        if "db.command.name" in attrs:  # motor-otel (and MongoDB's spec tracing)
            found.append((attrs["db.command.name"], span))
        elif "db.statement" in attrs:  # opentelemetry-instrumentation-pymongo
            found.append((attrs["db.statement"].split()[0], span))
    return found


def test_full_tree_from_an_app_with_no_tracing_code(mongodb_uri: str) -> None:
    """withTransaction → 2 attempts (first TransientTransactionError) → operations → commands."""
    lines, spans, metrics = _run(mongodb_uri, "auto_tree", metrics="console")
    assert lines == APP_OUTPUT
    ours = _ours(spans)

    (wt,) = [s for s in ours if s["name"] == "withTransaction"]
    assert wt["parent_id"] is None
    assert wt["attributes"]["db.mongodb.transaction.attempts"] == 2
    assert wt["attributes"]["db.mongodb.transaction.outcome"] == "committed"
    assert wt["attributes"]["db.mongodb.error_labels"] == ["TransientTransactionError"]

    first, second = _kids(ours, wt)
    assert [first["name"], second["name"]] == ["transaction", "transaction"]
    assert first["attributes"]["db.mongodb.transaction.attempt"] == 1
    assert first["attributes"]["db.mongodb.transaction.outcome"] == "aborted"
    assert first["attributes"]["db.mongodb.error_labels"] == ["TransientTransactionError"]
    assert second["attributes"]["db.mongodb.transaction.attempt"] == 2
    assert second["attributes"]["db.mongodb.transaction.outcome"] == "committed"
    assert "db.mongodb.error_labels" not in second["attributes"]

    expected = {
        _id(first): [
            ("update auto_tree.stock", "update"),
            ("insert auto_tree.orders", "insert"),
            ("abortTransaction admin", "abortTransaction"),
        ],
        _id(second): [
            ("update auto_tree.stock", "update"),
            ("insert auto_tree.orders", "insert"),
            ("commitTransaction admin", "commitTransaction"),
        ],
    }
    for attempt in (first, second):
        operations = _kids(ours, attempt)
        tree = []
        for op in operations:
            (command,) = _kids(ours, op)
            tree.append((op["name"], command["name"]))
            for key in ("db.mongodb.lsid", "db.mongodb.txn_number"):
                assert command["attributes"][key] == attempt["attributes"][key]
            assert command["context"]["trace_id"] == wt["context"]["trace_id"]
        assert tree == expected[_id(attempt)]

    failed_insert = _kids(ours, _kids(ours, first)[1])[0]
    assert failed_insert["status"]["status_code"] == "ERROR"
    assert failed_insert["attributes"]["db.response.status_code"] == "112"
    assert failed_insert["attributes"]["db.mongodb.error_labels"] == ["TransientTransactionError"]

    # Outside the transaction: Motor's count_documents and PyMongo AsyncMongoClient's find_one.
    (count,) = [s for s in ours if s["name"] == "aggregate auto_tree.orders"]
    (native_find,) = [s for s in ours if s["name"] == "find auto_tree.orders"]
    for op, command in ((count, "aggregate"), (native_find, "find")):
        assert op["parent_id"] is None
        assert [c["name"] for c in _kids(ours, op)] == [command]

    # --metrics_exporter console: the transaction is counted once, committed, labels and all.
    points = [
        point
        for export in metrics
        for resource in export["resource_metrics"]
        for scope in resource["scope_metrics"]
        if scope["scope"]["name"] == "motor_otel"
        for metric in scope["metrics"]
        if metric["name"] == "db.client.mongodb.transactions"
        for point in metric["data"]["data_points"]
    ]
    assert [(p["value"], p["attributes"]) for p in points] == [
        (
            1,
            {
                "db.system.name": "mongodb",
                "db.mongodb.transaction.outcome": "committed",
                "db.mongodb.error_labels": "TransientTransactionError",
            },
        )
    ]


def test_no_duplicate_command_spans_beside_the_contrib_pymongo_instrumentation(
    mongodb_uri: str,
) -> None:
    """opentelemetry-instrumentation-pymongo is loaded too, yet each command is one span."""
    loaded = {ep.name for ep in entry_points(group="opentelemetry_instrumentor")}
    assert {"motor", "pymongo"} <= loaded  # both run under opentelemetry-instrument

    _, alone, _ = _run(mongodb_uri, "auto_dupes", OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="pymongo")
    _, spans, _ = _run(mongodb_uri, "auto_dupes")
    commands = _command_spans(spans)
    assert {"insert", "update", "commitTransaction", "find"} <= {name for name, _ in commands}
    assert len(commands) == len(_command_spans(alone))  # one span per command sent
    # The app is sequential: two spans of the same command overlapping in time are one command
    # traced twice.
    duplicates = [
        (name, a["name"], b["name"])
        for i, (name, a) in enumerate(commands)
        for other, b in commands[i + 1 :]
        if other == name and a["start_time"] < b["end_time"] and b["start_time"] < a["end_time"]
    ]
    assert duplicates == []


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "motor"},
        {"OTEL_PYTHON_INSTRUMENTATION_MONGODB_ENABLED": "false"},
    ],
    ids=["disabled-instrumentations", "mongodb-enabled-false"],
)
def test_switched_off_emits_no_motor_otel_spans(mongodb_uri: str, env: dict[str, str]) -> None:
    """Either switch: the app behaves and prints the same, and motor-otel exports nothing."""
    lines, spans, _ = _run(mongodb_uri, "auto_off", **env)
    assert lines == APP_OUTPUT
    assert _ours(spans) == []
    assert not any(s["name"] in ("withTransaction", "transaction") for s in spans)


def test_a_bad_variable_leaves_the_app_traced(mongodb_uri: str) -> None:
    """QUERY_TEXT_MAX_LENGTH=abc under opentelemetry-instrument: ignored, not an untraced app;
    database/dup adds the old names beside the stable ones."""
    lines, spans, _ = _run(
        mongodb_uri,
        "auto_bad_env",
        OTEL_PYTHON_INSTRUMENTATION_MONGODB_QUERY_TEXT_MAX_LENGTH="abc",
        OTEL_SEMCONV_STABILITY_OPT_IN="database/dup",
    )
    assert lines == APP_OUTPUT
    ours = _ours(spans)
    assert [s["name"] for s in ours if s["name"] == "withTransaction"] == ["withTransaction"]
    commands = [s for s in ours if "db.command.name" in s["attributes"]]
    assert commands
    for command in commands:
        attrs = command["attributes"]
        assert "db.query.text" not in attrs and "db.statement" not in attrs
        assert (attrs["db.system"], attrs["db.name"], attrs["net.peer.port"]) == (
            attrs["db.system.name"],
            attrs["db.namespace"],
            attrs["server.port"],
        )


# -- instrument() after a client already exists ----------------------------------------------

# Run in a fresh interpreter: PyMongo cannot unregister listeners, so once any test has called
# instrument(), every later client in that process already carries our (dormant) listener.
PRE_EXISTING_CLIENTS = """
import asyncio, json, os, sys
import pymongo
from motor.motor_asyncio import AsyncIOMotorClient
from motor_otel import (
    InstrumentedAsyncClientSession, InstrumentedAsyncIOMotorClientSession, MotorInstrumentor
)
from tests.signals import make_signals
from tests.spans import render

async def main():
    uri = os.environ["MONGODB_URI"]
    motor = AsyncIOMotorClient(uri, serverSelectionTimeoutMS=5000)
    native = pymongo.AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)
    await motor.early.items.insert_one({"before": True})
    await native.early.items.insert_one({"before": True})
    signals = make_signals()
    exporter = signals.exporter
    MotorInstrumentor().instrument(tracer_provider=signals.tracer_provider)
    phases = {}

    def phase(name):
        phases[name] = render(exporter.get_finished_spans())
        exporter.clear()

    await motor.early.items.find_one({})
    await native.early.items.find_one({})
    phase("operations before any session")
    async with await motor.start_session() as s1:
        await s1.with_transaction(lambda s: motor.early.items.insert_one({"m": 1}, session=s))
    async with native.start_session() as s2:
        await s2.with_transaction(lambda s: native.early.items.insert_one({"n": 1}, session=s))
    phase("transactions")
    await motor.early.items.find_one({})
    await native.early.items.find_one({})
    phase("operations after a session")
    phases["instrumented sessions"] = [
        isinstance(s1, InstrumentedAsyncIOMotorClientSession),
        isinstance(s2, InstrumentedAsyncClientSession),
    ]
    motor.close()
    await native.close()
    print(json.dumps(phases))

asyncio.run(main())
"""


def test_client_created_before_instrument_is_covered_from_its_next_session(
    mongodb_uri: str,
) -> None:
    """The documented limit: an older client gets command spans once it starts a session."""
    done = subprocess.run(
        [sys.executable, "-c", PRE_EXISTING_CLIENTS],
        cwd=APP.parents[1],
        env={**os.environ, "MONGODB_URI": mongodb_uri},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    phases = json.loads(done.stdout)
    # Operations are patched on the driver classes, so they are traced at once; the command
    # listener reaches a client that already existed only when it starts a session.
    assert phases["operations before any session"] == ["find early.items", "find early.items"]
    tree = [
        "withTransaction",
        "  transaction",
        "    insert early.items",
        "      insert",
        "    commitTransaction admin",
        "      commitTransaction",
    ]
    assert phases["transactions"] == tree + tree
    assert phases["operations after a session"] == ["find early.items", "  find"] * 2
    assert phases["instrumented sessions"] == [True, True]
