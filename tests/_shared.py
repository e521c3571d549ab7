"""Where ``shared/`` (public specs, test vectors, real chain data) is, for tests in any checkout.

``TRIBUTARY_SHARED_DIR`` if set, else the ``shared`` folder beside the checkout (``../shared``). No machine
path is built in: a clone elsewhere (a CI work tree, say) sets ``TRIBUTARY_SHARED_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path


def shared_dir() -> Path:
    candidates = [os.environ.get("TRIBUTARY_SHARED_DIR"), Path(__file__).resolve().parents[2] / "shared"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "specs").is_dir():
            return Path(candidate)
    raise FileNotFoundError(f"shared/ (specs and vectors) not found; tried {[str(c) for c in candidates if c]}; "
                            "set TRIBUTARY_SHARED_DIR")


SHARED = shared_dir()
