"""W3C Verifiable Credentials as VC-JWT: issue, verify (signature, validity, revocation), verdicts."""

from tributary.vc.vcjwt import VerifiedCredential, issue_vc, verify_vc

__all__ = ["VerifiedCredential", "issue_vc", "verify_vc"]
