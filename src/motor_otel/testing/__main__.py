"""``python -m motor_otel.testing``: a simulated replica set in its own process.

Benchmarks run the server here so its CPU time is not charged to the client they measure.
Prints the URI on one line, then serves until stdin closes or SIGTERM/SIGINT arrives.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from types import FrameType

from motor_otel.testing import SimulatedReplicaSet


def _wait_for_stdin_eof(done: threading.Event) -> None:
    try:  # os.read, not sys.stdin: a buffered reader's lock aborts interpreter shutdown
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    done.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m motor_otel.testing",
        description="Serve a simulated MongoDB replica set until stdin closes or SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--server-version", default="8.0.0")
    args = parser.parse_args(argv)

    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with SimulatedReplicaSet(
        host=args.host, port=args.port, server_version=args.server_version
    ) as rs:
        print(rs.uri, flush=True)
        threading.Thread(target=_wait_for_stdin_eof, args=(done,), daemon=True).start()
        while not done.wait(0.5):  # a timeout so the main thread still runs signal handlers
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
