"""The guard for our own failures: logged once per site and swallowed, re-raised under pytest."""

from __future__ import annotations

import logging
import uuid

import pytest

from motor_otel._guard import call_hook, guard, report

LOGGER = "motor_otel"


def _site() -> str:
    """A site name no other test has reported (the once-per-site memory is process-wide)."""
    return f"test.{uuid.uuid4().hex}"


@pytest.fixture
def outside_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Production semantics for our own failures, as MOTOR_OTEL_SWALLOW_ERRORS=1 gives."""
    monkeypatch.setenv("MOTOR_OTEL_SWALLOW_ERRORS", "1")


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


@pytest.mark.usefixtures("outside_pytest")
def test_an_internal_failure_is_logged_once_per_site_and_swallowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Outside pytest: three failures at one site, two at another: two warnings, nothing raised."""
    first, second = _site(), _site()
    errors = [RuntimeError(f"bug {i}") for i in range(5)]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for site, error in zip([first, first, second, first, second], errors, strict=True):
            with guard(site):
                raise error
    records = _records(caplog)
    expected = [
        (
            logging.WARNING,
            f"motor-otel failed in {first}; your code still runs, with less telemetry",
        ),
        (
            logging.WARNING,
            f"motor-otel failed in {second}; your code still runs, with less telemetry",
        ),
    ]
    assert expected == [(r.levelno, r.getMessage()) for r in records]
    assert [errors[0], errors[2]] == [r.exc_info[1] if r.exc_info else None for r in records]


@pytest.mark.usefixtures("outside_pytest")
def test_report_outside_pytest_returns(caplog: pytest.LogCaptureFixture) -> None:
    """report() itself logs the exception with its traceback and returns."""
    site = _site()
    try:
        raise ValueError("inner")
    except ValueError as exc:
        error = exc
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        report(site, error)
        report(site, error)
    (record,) = _records(caplog)
    assert record.exc_info is not None
    assert (ValueError, error) == (record.exc_info[0], record.exc_info[1])


@pytest.mark.usefixtures("outside_pytest")
def test_the_guard_never_swallows_base_exceptions() -> None:
    """Cancellation and interrupts are not our failures: they pass through the guard."""
    with pytest.raises(KeyboardInterrupt), guard(_site()):
        raise KeyboardInterrupt


def test_under_pytest_an_internal_failure_is_re_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Under pytest (no MOTOR_OTEL_SWALLOW_ERRORS) our bugs reach the test, and are not logged."""
    monkeypatch.delenv("MOTOR_OTEL_SWALLOW_ERRORS", raising=False)
    error = RuntimeError("our bug")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with pytest.raises(RuntimeError) as info, guard(_site()):
            raise error
        with pytest.raises(RuntimeError):
            report(_site(), error)
    assert error is info.value
    assert _records(caplog) == []


@pytest.mark.parametrize("swallow", [False, True], ids=["under pytest", "outside pytest"])
def test_a_raising_hook_is_logged_each_time_and_ignored(
    swallow: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A user hook that raises is logged on every call, with its traceback, and never raises."""
    if swallow:
        monkeypatch.setenv("MOTOR_OTEL_SWALLOW_ERRORS", "1")
    else:
        monkeypatch.delenv("MOTOR_OTEL_SWALLOW_ERRORS", raising=False)
    calls: list[tuple[object, ...]] = []

    def hook(*args: object) -> None:
        calls.append(args)
        raise LookupError(f"hook bug {len(calls)}")

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        for i in range(3):
            call_hook("request_hook", hook, "span", i)
        call_hook("request_hook", None, "span", 3)  # no hook: nothing happens
    assert calls == [("span", 0), ("span", 1), ("span", 2)]
    records = _records(caplog)
    assert [r.getMessage() for r in records] == ["motor-otel request_hook raised; ignored"] * 3
    assert [str(r.exc_info[1]) if r.exc_info else None for r in records] == [
        "hook bug 1",
        "hook bug 2",
        "hook bug 3",
    ]
