"""Run the did devnet: ``python -m devnets.did --pkarr-port 8787 --web-port 8443 --state-dir DIR``."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from devnets.did.pkarr import PkarrRelay
from devnets.did.web import DidWebServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--pkarr-port", type=int, default=8787)
    parser.add_argument("--web-port", type=int, default=8443)
    parser.add_argument("--state-dir", default=".did-devnet", help="records, web root (www/) and TLS files (tls/)")
    args = parser.parse_args()
    state = Path(args.state_dir)
    relay = PkarrRelay(args.host, args.pkarr_port, data_dir=state / "pkarr").start()
    web = DidWebServer(state / "www", state / "tls", args.host, args.web_port).start()
    print(f"pkarr relay ready on {relay.url}", flush=True)
    print(f"did:web server ready on {web.url} (root {web.document_root}, trust {web.ca_bundle})", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    relay.stop()
    web.stop()


if __name__ == "__main__":
    main()
