"""OpenTelemetry traces, metrics and structured logs for MongoDB transactions.

See README.md for the user guide.
"""

from __future__ import annotations

from motor_otel.version import __version__

__all__ = ["__version__"]
