"""W3C Verifiable Credentials as VC-JWT: issue, verify (signature, validity, revocation), verdicts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

SYSTEM = "vc"  # the name in error events, alerts and classifications

__all__ = ["SYSTEM", "VerifiedCredential", "issue_vc", "verify_vc"]

if TYPE_CHECKING:
    from tributary.vc.vcjwt import VerifiedCredential, issue_vc, verify_vc


def __getattr__(name: str) -> Any:
    # The API is imported on first use: DAG files read SYSTEM at parse time without loading the
    # cryptography stack, and the package's own modules import SYSTEM from here without a cycle.
    if name in ("VerifiedCredential", "issue_vc", "verify_vc"):
        from tributary.vc import vcjwt

        return getattr(vcjwt, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
