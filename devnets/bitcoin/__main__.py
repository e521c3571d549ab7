"""Command line: ``python -m devnets.bitcoin --datadir DIR --rpcport PORT [--rpcuser U --rpcpassword P]``."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

import bitcoin

from .rpc import Node
from .server import RPCServer

COOKIE_USER = "__cookie__"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devnets.bitcoin", description=__doc__)
    parser.add_argument("--datadir", required=True, type=Path)
    parser.add_argument("--rpcport", type=int, default=18443)
    parser.add_argument("--rpcbind", default="127.0.0.1",
                        help="address to listen on (0.0.0.0 in a container; a devnet has no business on a LAN)")
    parser.add_argument("--rpcuser")
    parser.add_argument("--rpcpassword")
    args = parser.parse_args(argv)
    if bool(args.rpcuser) != bool(args.rpcpassword):
        parser.error("--rpcuser and --rpcpassword go together")

    bitcoin.SelectParams("regtest")
    datadir: Path = args.datadir.absolute()
    (datadir / "regtest").mkdir(parents=True, exist_ok=True)
    cookie = datadir / "regtest" / ".cookie"
    if args.rpcuser:
        user, password = args.rpcuser, args.rpcpassword
    else:
        user, password = COOKIE_USER, secrets.token_hex(32)
        cookie.write_text(f"{user}:{password}")
        os.chmod(cookie, 0o600)
    # Listen first and answer -28 (warming up) while the chain loads, as bitcoind does.
    server = RPCServer(args.rpcport, None, user, password, host=args.rpcbind)
    stopping = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    serving.start()
    node = None
    try:
        node = Node(datadir)
        server.node = node
        if not stopping.is_set():
            print(f"bitcoin devnet ready on {args.rpcbind}:{server.server_address[1]}", flush=True)
        while serving.is_alive():
            serving.join(0.2)
    finally:
        if not stopping.is_set():
            server.shutdown()
        server.server_close()
        if node is not None:
            with server.lock:
                node.close()
        if not args.rpcuser:
            cookie.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
