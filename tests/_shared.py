"""Where ``shared/`` (public specs, test vectors, real chain data) is, for tests in any checkout.

``TRIBUTARY_SHARED_DIR`` if set; else the ``shared`` folder beside the checkout (``../shared``);
else ``/work/shared``, where the machines keep it (a clone elsewhere, e.g. a CI work tree, finds it).
"""

from __future__ import annotations

import os
from pathlib import Path


def shared_dir() -> Path:
    candidates = [os.environ.get("TRIBUTARY_SHARED_DIR"), Path(__file__).resolve().parents[2] / "shared",
                  "/work/shared"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "specs").is_dir():
            return Path(candidate)
    raise FileNotFoundError(f"shared/ (specs and vectors) not found; tried {[str(c) for c in candidates if c]}; "
                            "set TRIBUTARY_SHARED_DIR")


SHARED = shared_dir()
