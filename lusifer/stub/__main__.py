"""``python -m lusifer.stub``: run the stub server in the foreground until SIGTERM or SIGINT.

It prints exactly one line on stdout, its base URL (``http://HOST:PORT/v1``), once it accepts
connections, so a parent process can read the line and start using it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from pydantic import ValidationError

from lusifer.stub.config import FAULT_KINDS, StubConfig
from lusifer.stub.server import StubServer


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The command line of the stub server."""
    p = argparse.ArgumentParser(prog="python -m lusifer.stub", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each chat answer")
    p.add_argument("--latency-jitter", type=float, default=0.0, help="extra 0..J seconds")
    p.add_argument("--fault-rate", type=float, default=0.0, help="probability 0..1 of a fault")
    p.add_argument(
        "--faults",
        type=_csv,
        default=list(FAULT_KINDS),
        help=f"comma-separated fault kinds to draw from (default all: {','.join(FAULT_KINDS)})",
    )
    p.add_argument("--fault-seed", type=int, default=0, help="seed of the fault draws")
    p.add_argument("--fault-every-n", type=int, default=None, help="fault every n-th request")
    p.add_argument("--timeout-sleep", type=float, default=30.0, help="sleep of a timeout fault")
    p.add_argument("--batch-delay", type=float, default=0.0, help="seconds until a batch completes")
    p.add_argument("--models", type=_csv, default=["stub-model"], help="comma-separated names")
    p.add_argument(
        "--api-key",
        # From the environment too, so the key need not appear in the process list.
        default=os.environ.get("LUSIFER_STUB_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default $LUSIFER_STUB_API_KEY, else none)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> StubConfig:
    """The stub config the parsed flags describe."""
    return StubConfig(
        latency_s=args.latency,
        latency_jitter_s=args.latency_jitter,
        fault_rate=args.fault_rate,
        faults=args.faults,
        fault_seed=args.fault_seed,
        fault_every_n=args.fault_every_n,
        timeout_sleep_s=args.timeout_sleep,
        batch_delay_s=args.batch_delay,
        models=args.models,
        api_key=args.api_key,
    )


def main(argv: list[str] | None = None) -> int:
    """Serve until a termination signal; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        server = StubServer(config_from_args(args), host=args.host, port=args.port)
        server.start()
    except ValidationError as err:
        print(f"invalid stub option: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(server.base_url, flush=True)
    try:
        # A timed wait returns to the interpreter regularly, so signal handlers always run.
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
