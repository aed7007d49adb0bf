"""The Grafana dashboards: every panel can render what its query returns, and every PromQL query
returns data from a real Prometheus.

Prometheus (Debian's package, installed here if missing) scrapes the metrics of an instrumented
Motor workload on loopback; the test fails on any panel query that comes back empty. The panel
checks exist because a PromQL-only check let a dead panel through: a `traces` panel fed by a
Jaeger search, which renders one trace by id and so showed nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import start_http_server
from pymongo.errors import OperationFailure

from motor_otel import instrument_client
from motor_otel.testing import fail_command
from tests.conftest import CLIENT_OPTIONS

pytestmark = pytest.mark.e2e

DASHBOARDS = Path(__file__).resolve().parents[2] / "grafana" / "dashboards"
TRANSACTIONS = DASHBOARDS / "motor-otel-transactions.json"
DEADLINE_S = 120
TTE = "TransientTransactionError"

# The codeName of each common server error code, from MongoDB's src/mongo/base/error_codes.yml
# (mongodb/mongo at 007ba93); 24, 112, 246 and 251 also as the transactions-convenient-api suite's
# fail points name them, 91, 189, 10107 and 262 as in the retryable-writes spec's table.
CODE_NAMES = {
    "24": "LockTimeout",
    "50": "MaxTimeMSExpired",
    "91": "ShutdownInProgress",
    "112": "WriteConflict",
    "189": "PrimarySteppedDown",
    "225": "TransactionTooOld",
    "246": "SnapshotUnavailable",
    "251": "NoSuchTransaction",
    "262": "ExceededTimeLimit",
    "10107": "NotWritablePrimary",
    "11000": "DuplicateKey",
}

# What each query kind returns, and the panel types that render it.
RANGE_SERIES_PANELS = {"timeseries", "stat", "gauge", "bargauge"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prometheus() -> str:
    found = shutil.which("prometheus")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
            check=True,
            capture_output=True,
            timeout=900,
            env=env,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"Debian's prometheus package could not be installed: {exc}")
    found = shutil.which("prometheus")
    if not found:
        pytest.skip("apt-get installed prometheus but no prometheus binary is on PATH")
    return found


def _panels() -> list[tuple[str, dict[str, Any]]]:
    """(dashboard file name, panel) for every panel of every dashboard."""
    return [
        (path.name, panel)
        for path in sorted(DASHBOARDS.glob("*.json"))
        for panel in json.loads(path.read_text())["panels"]
    ]


def _renderers(target: dict[str, Any], panel: dict[str, Any]) -> set[str]:
    """The panel types that can show what this target returns."""
    kind = (target.get("datasource") or panel["datasource"])["type"]
    if kind == "prometheus":
        if target.get("format") == "table" or target.get("instant"):
            return {"table"}
        return RANGE_SERIES_PANELS
    if kind == "jaeger":
        # A search returns a table of traces; the traces panel draws the one trace of an id query.
        return {"table"} if target.get("queryType") == "search" else {"traces"}
    raise AssertionError(f"no rule for {kind} queries in panel {panel['title']!r}")


def _override(panel: dict[str, Any], field: str) -> dict[str, Any]:
    """The panel's field override properties for one field name, by property id."""
    for override in panel["fieldConfig"]["overrides"]:
        if override["matcher"] == {"id": "byName", "options": field}:
            return {prop["id"]: prop["value"] for prop in override["properties"]}
    raise AssertionError(f"panel {panel['title']!r} has no override for {field!r}")


def _mapped_texts(panel: dict[str, Any]) -> dict[str, str]:
    """Displayed text of each error_type value the panel maps."""
    return {
        value: result["text"]
        for mapping in _override(panel, "error_type")["mappings"]
        if mapping["type"] == "value"
        for value, result in mapping["options"].items()
    }


def _error_type_panels() -> list[dict[str, Any]]:
    """Panels that show error_type as a field value (tables), where value mappings apply."""
    return [
        panel
        for _, panel in _panels()
        if panel["type"] == "table"
        and any("error_type" in target.get("expr", "") for target in panel.get("targets", []))
    ]


def test_every_panel_type_renders_its_queries() -> None:
    """Each panel's type can draw what each of its queries returns."""
    checked = 0
    for name, panel in _panels():
        if panel["type"] in {"row", "text"}:
            continue  # layout and prose, no query
        assert panel["targets"], f"{name}: panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert panel["type"] in _renderers(target, panel), (
                f"{name}: panel {panel['title']!r} is a {panel['type']} panel fed by {target}"
            )
            checked += 1
    assert checked >= 12


def test_panels_have_stable_ids_and_do_not_overlap() -> None:
    """Panel ids are unique and set; no two panels share a grid cell."""
    for path in sorted(DASHBOARDS.glob("*.json")):
        panels = json.loads(path.read_text())["panels"]
        ids = [panel["id"] for panel in panels]
        assert len(ids) == len(set(ids)), path.name
        cells: dict[tuple[int, int], int] = {}
        for panel in panels:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (path.name, panel["id"])
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in cells, (path.name, panel["id"], cells[x, y])
                    cells[x, y] = panel["id"]


def test_dashboard_has_a_fixed_uid() -> None:
    """Provisioned bookmarks keep working: the dashboard's uid is fixed, not generated."""
    assert json.loads(TRANSACTIONS.read_text())["uid"] == "motor-otel-transactions"


def test_trace_search_is_a_table_whose_trace_ids_open_the_trace() -> None:
    """The Jaeger search panel is a table; its trace id column links to that trace in Explore."""
    [panel] = [
        panel
        for panel in json.loads(TRANSACTIONS.read_text())["panels"]
        if panel.get("datasource", {}).get("type") == "jaeger"
    ]
    assert panel["type"] == "table"
    [target] = panel["targets"]
    assert target["queryType"] == "search"
    assert target["operation"] == "withTransaction"
    assert target["service"] == "${service}"
    [link] = _override(panel, "traceID")["links"]
    url = urllib.parse.urlsplit(link["url"])
    assert url.path == "/explore"
    [panes] = urllib.parse.parse_qs(url.query)["panes"]
    [pane] = json.loads(panes).values()
    assert pane["datasource"] == "${traces}"
    # No queryType: the Jaeger datasource looks the query up as one trace id.
    assert pane["queries"] == [
        {
            "refId": "A",
            "datasource": {"type": "jaeger", "uid": "${traces}"},
            "query": "${__value.raw}",
        }
    ]


def test_exemplars_lead_from_the_retry_panels_to_jaeger() -> None:
    """The two retry panels ask Prometheus for exemplars, and the Prometheus datasource sends an
    exemplar's trace_id to the provisioned Jaeger datasource."""
    panels = {panel["title"]: panel for _, panel in _panels()}
    for title in ("Time lost to retries", "Retries by collection and operation"):
        assert [t.get("exemplar") for t in panels[title]["targets"]] == [True] * len(
            panels[title]["targets"]
        ), title
    provisioning = DASHBOARDS.parent / "provisioning" / "datasources" / "motor-otel.yaml"
    sources = {s["type"]: s for s in yaml.safe_load(provisioning.read_text())["datasources"]}
    (destination,) = sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert destination == {"name": "trace_id", "datasourceUid": sources["jaeger"]["uid"]}


def test_error_codes_have_readable_names() -> None:
    """error.type carries the server code; value mappings show each common code's codeName."""
    panels = _error_type_panels()
    assert "Failed operations by error type" in [panel["title"] for panel in panels]
    expected = {code: f"{name} ({code})" for code, name in CODE_NAMES.items()}
    for panel in panels:
        assert _mapped_texts(panel) == expected, panel["title"]


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every Prometheus target of every dashboard."""
    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                if "expr" in target:
                    queries.append((panel["title"], target["expr"]))
    return queries


@pytest.fixture
def metrics_endpoint() -> Iterator[tuple[MeterProvider, int]]:
    reader = PrometheusMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    port = _free_port()
    server, thread = start_http_server(port, addr="127.0.0.1")
    yield provider, port
    server.shutdown()
    server.server_close()
    thread.join(5)
    provider.shutdown()  # also unregisters the reader's collector


@pytest.fixture
def prometheus(tmp_path: Path, metrics_endpoint: tuple[MeterProvider, int]) -> Iterator[str]:
    binary = _prometheus()
    _, target_port = metrics_endpoint
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: motor-otel\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
    )
    port = _free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def _query(base: str, expr: str) -> list[Any]:
    # Grafana replaces $__rate_interval and $__range; 30s covers many 1 s scrapes, 1h the whole run.
    expr = expr.replace("$__rate_interval", "30s").replace("$__range", "1h")
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
    except OSError:
        return []  # not up yet
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def _workload(client: AsyncIOMotorClient) -> None:
    """Retried and failed transactions, so every series the dashboards plot exists."""
    calls = 0

    async def callback(session: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            await client.admin.command(
                {
                    "configureFailPoint": "failCommand",
                    "mode": {"times": 2},
                    "data": {"failCommands": ["commitTransaction"], "errorCode": 91},
                }
            )
        await client.dash.orders.insert_one({"n": calls}, session=session)

    await client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["insert"], "errorCode": 112},
        }
    )
    async with await client.start_session() as session:
        await session.with_transaction(callback)
        await client.dash.orders.find_one({}, session=session)


async def _unretried_commit(client: AsyncIOMotorClient) -> None:
    """A commit conflict that Motor's own loop (driver mode) lets escape: commit_not_retried."""
    await client.admin.command(
        fail_command("commitTransaction", error_code=112, error_labels=[TTE])
    )
    async with await client.start_session() as session:
        with contextlib.suppress(OperationFailure):
            await session.with_transaction(
                lambda s: client.dash.orders.insert_one({"n": 0}, session=s)
            )


def _series_labels(base: str, title: str, *labels: str) -> set[tuple[str, ...]]:
    """The label values of every series the panel's first query returns."""
    [panel] = [panel for _, panel in _panels() if panel["title"] == title]
    return {
        tuple(series["metric"].get(label, "") for label in labels)
        for series in _query(base, panel["targets"][0]["expr"])
    }


async def test_every_dashboard_query_returns_data(
    prometheus: str,
    metrics_endpoint: tuple[MeterProvider, int],
    mongodb_uri: str,
    summary_line: Callable[[str], None],
) -> None:
    """All PromQL in grafana/dashboards returns a non-empty result against real scrapes."""
    meter_provider, _ = metrics_endpoint
    queries = panel_queries()
    assert len(queries) >= 11
    client: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    instrument_client(
        client,
        tracer_provider=TracerProvider(),
        meter_provider=meter_provider,
        with_transaction="spec",
    )
    driver: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    instrument_client(
        driver,
        tracer_provider=TracerProvider(),
        meter_provider=meter_provider,
        with_transaction="driver",
    )
    empty = queries
    deadline = time.monotonic() + DEADLINE_S
    # A transaction left open while Prometheus scrapes, as a leaked one would be: the "Open
    # transactions" panel's oldest age has a point only while one is open.
    held = await client.start_session()
    held.start_transaction()
    await client.dash.held.insert_one({"n": "held"}, session=held)
    try:
        while empty and time.monotonic() < deadline:
            await _workload(client)  # the workload paces the polling
            await _unretried_commit(driver)
            empty = [
                (title, expr)
                for title, expr in empty
                if not await asyncio.to_thread(_query, prometheus, expr)
            ]
    finally:
        await held.abort_transaction()
        await held.end_session()
        await client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        client.close()
        driver.close()
    summary_line(
        f"checked {len(queries)} dashboard panel queries against Prometheus, {len(empty)} empty"
    )
    assert empty == [], f"panel queries with no data: {empty}"
    [failures] = [
        panel
        for panel in _error_type_panels()
        if panel["title"] == "Failed operations by error type"
    ]
    error_types = {
        series["metric"]["error_type"]
        for series in _query(prometheus, failures["targets"][0]["expr"])
    }
    assert error_types, "the workload's failures are not in the error-type table"
    summary_line(f"error types in the failures table: {sorted(error_types)}")
    codes = {value for value in error_types if value.isdigit()}
    # The workload's fail points answer 112 (WriteConflict) and 91 (ShutdownInProgress): error.type
    # is the server code, and the table names each one.
    assert {"112", "91"} <= codes, f"the workload's server codes are not error types: {codes}"
    assert codes <= _mapped_texts(failures).keys(), f"server codes without a name: {codes}"
    causes = _series_labels(
        prometheus,
        "Retries by collection and operation",
        "db_collection_name",
        "db_operation_name",
        "error_type",
    )
    summary_line(f"retry causes in the retries panel: {sorted(causes)}")
    assert ("orders", "insert", "112") in causes  # the injected insert conflict
    unretried = _series_labels(prometheus, "Commits Motor did not retry", "error_type")
    assert unretried == {("112",)}
    windows = _series_labels(prometheus, "Write window p95 by collection", "db_collection_name")
    assert ("orders",) in windows  # the first write of the workload's transactions
