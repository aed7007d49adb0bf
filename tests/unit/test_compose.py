"""examples/compose.yaml: MongoDB is healthy only as a writable primary, and what needs it waits.

The old healthcheck exited 0 as soon as `mongosh` connected (`mongosh --eval` exits 0 whatever
the script evaluates to), so a service could start before the replica set had a primary.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "examples" / "compose.yaml"
PRIMARY_CHECK = "quit(db.hello().isWritablePrimary ? 0 : 1)"


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def _healthcheck_script() -> str:
    """The JavaScript the MongoDB healthcheck hands to `mongosh --eval`."""
    test = _services()["mongo"]["healthcheck"]["test"]
    # Exec form: the script reaches mongosh as one argument, with no shell quoting in between.
    assert isinstance(test, list), f"healthcheck test is a shell string: {test!r}"
    assert test[:2] == ["CMD", "mongosh"], test
    return str(test[test.index("--eval") + 1])


def _needs_mongodb(service: dict[str, Any]) -> bool:
    """A service needs MongoDB when its environment or command points at the `mongo` service."""
    text = json.dumps([service.get("environment"), service.get("command")])
    return "mongodb://mongo:" in text or "mongodb://mongo/" in text


def test_mongo_healthcheck_fails_until_the_member_is_a_writable_primary() -> None:
    """The healthcheck's exit status is the member's isWritablePrimary, set by quit()."""
    script = _healthcheck_script()
    assert script.rstrip().endswith(PRIMARY_CHECK), script


def test_services_that_need_mongodb_wait_until_it_is_healthy() -> None:
    """Every service that talks to MongoDB depends on it with condition: service_healthy."""
    services = _services()
    needing = sorted(name for name, service in services.items() if _needs_mongodb(service))
    assert needing, "no service in the compose file talks to MongoDB"
    for name in needing:
        depends_on = services[name].get("depends_on")
        assert isinstance(depends_on, dict), f"{name}: depends_on must be the long form"
        assert depends_on["mongo"] == {"condition": "service_healthy"}, name


# mongosh's behaviour the script relies on: rs.status() throws before the replica set is
# initiated (NotYetInitialized, code 94), db.hello() reports isWritablePrimary, quit(n) exits n.
_MONGOSH_STAND_IN = """
const state = JSON.parse(process.argv[1]);
globalThis.rs = {
  status() {
    if (!state.initiated) throw new Error("NotYetInitialized: no replset config has been received");
    return {ok: 1};
  },
  initiate(config) { console.log("initiate " + JSON.stringify(config)); return {ok: 1}; },
};
globalThis.db = {hello() { return {isWritablePrimary: state.primary}; }};
globalThis.quit = (code) => process.exit(code);
"""


@pytest.mark.parametrize(
    ("initiated", "primary", "exit_code", "initiates"),
    [
        pytest.param(False, False, 1, True, id="first start: initiates, not yet primary"),
        pytest.param(True, False, 1, False, id="initiated, election pending"),
        pytest.param(True, True, 0, False, id="writable primary"),
    ],
)
def test_healthcheck_script_exit_status(
    initiated: bool, primary: bool, exit_code: int, initiates: bool
) -> None:
    """The script initiates the set once and exits 0 only on a writable primary."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed to evaluate the healthcheck's JavaScript")
    done = subprocess.run(
        [
            node,
            "-e",
            _MONGOSH_STAND_IN + _healthcheck_script(),
            json.dumps({"initiated": initiated, "primary": primary}),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout.startswith("initiate ")) == (exit_code, initiates), done
    if initiates:
        config = json.loads(done.stdout.removeprefix("initiate "))
        command = _services()["mongo"]["command"]
        assert config["_id"] == command[command.index("--replSet") + 1]
        assert [member["_id"] for member in config["members"]] == [0]


def test_prometheus_stores_exemplars_and_receives_them_over_otlp() -> None:
    """Exemplar storage and the OTLP receiver are on, and the stack's app pushes its metrics
    there (the pull format drops exemplars), under the keep sampler."""
    services = _services()
    command = services["prometheus"]["command"]
    (features,) = [arg for arg in command if arg.startswith("--enable-feature=")]
    assert {"exemplar-storage", "otlp-write-receiver"} <= set(features.split("=", 1)[1].split(","))
    shop = " ".join(services["shop"]["command"])
    assert "--metrics-otlp-endpoint http://prometheus:9090/api/v1/otlp/v1/metrics" in shop
    assert "--sample " in shop
    assert "prometheus" in services["shop"]["depends_on"]


def test_the_tail_sampling_example_keys_on_our_attributes() -> None:
    """examples/collector-tail-sampling.yaml keeps traces with attempts or commit attempts above
    1 or ERROR status, and samples the rest, in a traces pipeline."""
    path = COMPOSE.parent / "collector-tail-sampling.yaml"
    config = yaml.safe_load(path.read_text())
    policies = config["processors"]["tail_sampling"]["policies"]
    numeric = {
        p["numeric_attribute"]["key"]: p["numeric_attribute"]["min_value"]
        for p in policies
        if p["type"] == "numeric_attribute"
    }
    assert numeric == {
        "db.mongodb.transaction.attempts": 2,
        "db.mongodb.transaction.commit_attempts": 2,
    }
    (status,) = [p["status_code"]["status_codes"] for p in policies if p["type"] == "status_code"]
    assert status == ["ERROR"]
    assert config["service"]["pipelines"]["traces"]["processors"] == ["tail_sampling"]
