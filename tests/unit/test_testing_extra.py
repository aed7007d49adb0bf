"""Without the ``testing`` extra, the simulator's import error says what to install."""

from __future__ import annotations

import sys

import pytest


@pytest.mark.parametrize("missing", ["mockupdb", "mongomock"])
def test_missing_extra(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    """A missing simulator dependency names itself and the exact pip command."""
    monkeypatch.setitem(sys.modules, missing, None)  # as if it were not installed
    import motor_otel.testing

    for name in [m for m in sys.modules if m.startswith("motor_otel.testing._")]:
        monkeypatch.delitem(sys.modules, name)  # imported afresh, as in a new process
        monkeypatch.delattr(motor_otel.testing, name.rpartition(".")[2], raising=False)

    with pytest.raises(ImportError) as raised:
        motor_otel.testing.SimulatedReplicaSet  # noqa: B018 - the lazy import is the point
    assert f"motor_otel.testing needs {missing!r}: pip install 'motor-otel[testing]'" == str(
        raised.value
    )
