"""The pytest plugin as a user meets it: a test file with no conftest, in a pytest of its own.

The file and the folder's only configuration (``pyproject.toml``) are the README's own ("Testing
your own transaction code"), so the README cannot drift from what works; pytest runs with
``-W error``, so a warning the user would see fails the test. It runs twice: with the ``testing``
extra (it passes), and with the extra's packages made unimportable by a meta-path finder in
``sitecustomize`` (its tests are skipped with the install hint, and pytest itself runs normally).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from motor_otel.testing.pytest_plugin import INSTALL_HINT

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
# Packages of the testing extra; without them the fixtures must skip, not fail.
EXTRA = ("mockupdb", "mongomock", "opentelemetry.sdk")

# A second user file, its tests in this order: fail points set in one test are off in the next;
# one replica set per session; motor_otel_spans alone instruments, and uninstruments afterwards.
TEARDOWN = """
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo.errors import OperationFailure

seen = []


@pytest.mark.asyncio
async def test_a_fail_point_always_on(mongodb_replica_set, mongodb_fail_point):
    seen.append(mongodb_replica_set.uri)
    document = await mongodb_fail_point("find", mode="alwaysOn", error_code=8)
    assert document["mode"] == "alwaysOn"
    client = AsyncIOMotorClient(mongodb_replica_set.uri)
    try:
        with pytest.raises(OperationFailure) as raised:
            await client.plugin_check.items.find_one()
        assert raised.value.code == 8
    finally:
        client.close()


@pytest.mark.asyncio
async def test_b_fail_point_was_turned_off(mongodb_replica_set):
    assert seen == [mongodb_replica_set.uri]  # the same replica set: one per session
    client = AsyncIOMotorClient(mongodb_replica_set.uri)
    try:
        assert await client.plugin_check.items.find_one() is None
    finally:
        client.close()


def test_c_spans_alone_instrument_for_the_test(motor_otel_spans):
    from motor_otel import MotorInstrumentor

    assert MotorInstrumentor().is_instrumented_by_opentelemetry
    assert motor_otel_spans.get_finished_spans() == ()


def test_d_uninstrumented_after_the_test():
    from motor_otel import MotorInstrumentor

    assert not MotorInstrumentor().is_instrumented_by_opentelemetry
"""

BLOCKER = f'''
import sys

BLOCKED = {EXTRA!r}


class RefuseTheTestingExtra:
    """As if the testing extra were not installed: importing its packages fails."""

    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, RefuseTheTestingExtra())
'''


def _readme_block(language: str) -> str:
    """The first ``language`` block of the README's "Testing your own transaction code"."""
    section = README.read_text().split("## Testing your own transaction code", 1)[1]
    section = section.split("\n## ", 1)[0]
    match = re.search(rf"```{language}\n(.*?)```", section, re.DOTALL)
    assert match, f"the README section has no {language} block"
    return match.group(1)


def _readme_example() -> str:
    return _readme_block("python")


def _pytest(directory: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "-W",
            "error",  # the README's configuration leaves nothing to warn about
        ],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """A user's test directory: two test files, no conftest, the README's pyproject.toml lines."""
    (tmp_path / "pyproject.toml").write_text(_readme_block("toml"))
    (tmp_path / "test_transfer.py").write_text(_readme_example())
    (tmp_path / "test_fail_point_teardown.py").write_text(TEARDOWN)
    return tmp_path


def test_with_the_testing_extra_the_users_file_passes(user_project: Path) -> None:
    """The README's file and the teardown file pass against the plugin's replica set."""
    result = _pytest(user_project, dict(os.environ))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b5 passed\b", result.stdout), result.stdout
    assert "skipped" not in result.stdout


def test_without_the_testing_extra_the_fixtures_skip_with_the_hint(
    user_project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """pytest still runs; every test using the fixtures is skipped, naming the install command."""
    blocker = tmp_path_factory.mktemp("blocker")
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}  # else a real server
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(blocker), env.get("PYTHONPATH")]))

    for module in EXTRA:  # the blocking is a real import failure in that interpreter
        probe = subprocess.run(
            [sys.executable, "-c", f"import {module}"], env=env, capture_output=True, text=True
        )
        assert probe.returncode != 0 and f"No module named '{module}'" in probe.stderr

    result = _pytest(user_project, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b1 passed, 4 skipped\b", result.stdout), result.stdout
    assert "error" not in result.stdout.lower()
    reasons = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert reasons and all(INSTALL_HINT in line for line in reasons), result.stdout
    assert "the mongodb_replica_set fixture needs 'mockupdb'" in result.stdout
    assert "the motor_otel_spans fixture needs 'opentelemetry.sdk'" in result.stdout


def test_the_plugin_imports_nothing_heavy() -> None:
    """pytest imports the plugin in every project with motor-otel installed: it must not pull in
    the simulator's dependencies or the SDK until a fixture is used."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, motor_otel.testing.pytest_plugin; "
            f"print(sorted(m for m in {EXTRA!r} if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "[]"


def test_the_entry_point_is_registered() -> None:
    """pytest finds the plugin through the installed package's pytest11 entry point."""
    from importlib.metadata import entry_points

    (plugin,) = [e for e in entry_points(group="pytest11") if e.name == "motor_otel"]
    assert plugin.value == "motor_otel.testing.pytest_plugin"
