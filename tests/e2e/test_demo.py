"""The README's first command: `motor-otel demo` prints real span trees and exits 0."""

from __future__ import annotations

import subprocess
import sys


def test_demo_prints_retried_transaction_tree() -> None:
    """The demo runs on the embedded simulator and shows attempts, labels and commit retries."""
    done = subprocess.run(
        [sys.executable, "-m", "motor_otel", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "withTransaction" in out
    assert "attempts=2 commit_attempts=1 outcome=committed labels=TransientTransactionError" in out
    assert "transaction" in out and "attempt=1 outcome=aborted" in out
    assert out.count("commitTransaction admin") >= 3
    assert "UnknownTransactionCommitResult" in out


def test_demo_rejects_unknown_command() -> None:
    """An unknown subcommand is a usage error, not a traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "motor_otel", "nope"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "invalid choice" in done.stderr
