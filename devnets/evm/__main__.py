"""``python -m devnets.evm [--port 8545] [--state FILE]``: run anvil in the foreground (for the run command)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from devnets.evm.anvil import CHAIN_ID, start_anvil


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local anvil EVM node (chain id 31337).")
    parser.add_argument("--port", type=int, default=8545)
    parser.add_argument("--chain-id", type=int, default=CHAIN_ID)
    parser.add_argument("--block-time", type=float, default=None, help="seconds per block (default: automine)")
    parser.add_argument("--state", default=None,
                        help="keep the chain in this file across restarts (anvil --state; also dumped every 30 s)")
    args = parser.parse_args(argv)
    extra = ["--state", args.state, "--state-interval", "30"] if args.state else []
    node = start_anvil(args.port, chain_id=args.chain_id, block_time=args.block_time, extra_args=extra)
    print(f"anvil ready on {node.url} (chain id {node.chain_id})", flush=True)
    # The handlers only set a flag: stopping anvil from inside a handler while this thread waits on
    # it would deadlock on Popen's wait lock.
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    while not stopping.is_set() and node.process.poll() is None:
        stopping.wait(0.5)
    if not stopping.is_set():
        return node.process.returncode  # anvil ended by itself: the run command sees it exit
    node.stop()  # SIGTERM: anvil writes its --state file on the way out
    return 0


if __name__ == "__main__":
    sys.exit(main())
