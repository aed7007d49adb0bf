"""Every PromQL query in every Grafana panel returns data from a real Prometheus.

Prometheus (Debian's package, installed here if missing) scrapes the metrics of an instrumented
Motor workload on loopback; the test fails on any panel query that comes back empty.
"""

from __future__ import annotations

import asyncio
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
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import start_http_server

from motor_otel import instrument_client
from tests.conftest import CLIENT_OPTIONS

pytestmark = pytest.mark.e2e

DASHBOARDS = Path(__file__).resolve().parents[2] / "grafana" / "dashboards"
DEADLINE_S = 120


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
    # Grafana replaces $__rate_interval; 30s covers many 1 s scrapes.
    expr = expr.replace("$__rate_interval", "30s")
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


async def test_every_dashboard_query_returns_data(
    prometheus: str,
    metrics_endpoint: tuple[MeterProvider, int],
    mongodb_uri: str,
    summary_line: Callable[[str], None],
) -> None:
    """All PromQL in grafana/dashboards returns a non-empty result against real scrapes."""
    meter_provider, _ = metrics_endpoint
    queries = panel_queries()
    assert len(queries) >= 10
    client: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    instrument_client(
        client,
        tracer_provider=TracerProvider(),
        meter_provider=meter_provider,
        with_transaction="spec",
    )
    empty = queries
    deadline = time.monotonic() + DEADLINE_S
    try:
        while empty and time.monotonic() < deadline:
            await _workload(client)  # the workload paces the polling
            empty = [
                (title, expr)
                for title, expr in empty
                if not await asyncio.to_thread(_query, prometheus, expr)
            ]
    finally:
        await client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        client.close()
    summary_line(
        f"checked {len(queries)} dashboard panel queries against Prometheus, {len(empty)} empty"
    )
    assert empty == [], f"panel queries with no data: {empty}"
