"""W3C Verifiable Credentials as VC-JWT: issue, verify (signature, validity, revocation), verdicts."""

SYSTEM = "vc"  # the name in error events, alerts and classifications

from tributary.vc.vcjwt import VerifiedCredential, issue_vc, verify_vc

__all__ = ["VerifiedCredential", "issue_vc", "verify_vc"]
