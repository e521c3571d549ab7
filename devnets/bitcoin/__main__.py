"""Command line: ``python -m devnets.bitcoin --datadir DIR --rpcport PORT [--rpcuser U --rpcpassword P]
[--mine-every SECONDS]``.

``--mine-every`` mines one block every SECONDS to an address of the first loaded wallet, so that
waits for confirmations end on a deployment nobody mines by hand (the run command sets it). The
default 0 mines only when asked (``generatetoaddress``), as regtest does: tests keep mining explicitly.
"""

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
    parser.add_argument("--mine-every", type=float, default=0.0, metavar="SECONDS",
                        help="mine a block every SECONDS to the first loaded wallet (default 0: only when asked)")
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
        if args.mine_every > 0:
            threading.Thread(target=_mine_periodically, args=(node, server.lock, args.mine_every, stopping),
                             name="miner", daemon=True).start()
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


def _mine_periodically(node: Node, lock: threading.RLock, every: float, stopping: threading.Event) -> None:
    """One block every ``every`` seconds, under the node lock like any RPC call. Until a wallet is
    loaded (the run command creates ``tributary`` after start-up) there is no address to mine to."""
    address = None
    while not stopping.wait(every):
        try:
            with lock:
                if address is None:
                    wallets = node.call("listwallets", [], None)
                    if not wallets:
                        continue
                    address = node.call("getnewaddress", [], wallets[0])
                node.call("generatetoaddress", [1, address], None)
        except Exception as exc:  # a devnet keeps serving even if one tick fails
            print(f"bitcoin devnet: periodic mining failed: {type(exc).__name__}: {exc}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
