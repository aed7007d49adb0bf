"""``python -m motor_otel demo``."""

from __future__ import annotations

from motor_otel.cli import main

raise SystemExit(main())
