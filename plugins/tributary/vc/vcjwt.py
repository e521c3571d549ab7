"""Issue and verify Verifiable Credentials as VC-JWT (the Web5 profile of VC Data Model 1.1 JWTs).

``verify_vc`` runs the checks in this order and raises at the first failure:

1. structure: three base64url parts, header ``typ`` = ``JWT``, ``alg`` and ``kid`` present, a ``vc``
   object; ``nbf``/``exp``/``iat``, when present, are finite numbers in range (``nbf``/``exp``: a date
   up to 9999; ``DataError('malformed:<claim>')`` for ``1e20``, ``Infinity``, ``NaN``, a string); the JWT
   claims agree with the credential (iss/issuer, jti/id, sub/subject id) and the
   credential satisfies the data model -> ``DataError`` (reason ``malformed`` / ``invalid_credential:*``
   / ``claim_mismatch:*``)
2. validity window: ``nbf``/``issuanceDate`` not in the future -> ``DataError('not_yet_valid')``;
   ``exp``/``expirationDate`` not passed -> ``DataError('expired')``
3. issuer key: the ``kid``'s DID is the issuer, the DID resolves (any supported method), the key is a
   verification method listed for ``assertionMethod`` and fits ``alg`` -> ``SecurityError``
   (``unknown_issuer`` / ``unknown_key`` / ``key_not_for_assertion`` / ``alg_mismatch``)
4. signature over ``header.payload`` -> ``SecurityError('bad_signature')`` (also: tampered payload)
5. status: each ``credentialStatus`` entry's list credential is fetched, verified (same issuer) and
   its bit read -> ``SecurityError('revoked')`` / ``SecurityError('suspended')``; a bitstring that
   inflates past the config's ``max_decompressed_bytes`` -> ``DataError('status_list_too_large')``

did:web documents and status lists are fetched through the config's bounded fetcher
(``tributary.core.fetch``): a refused scheme, address or redirect is a ``SecurityError('fetch:*')``,
an answer over a size cap a ``DataError('fetch:too_large' / 'fetch:decompressed_too_large')``.
A resolver or status server that cannot be reached, or misses the total deadline, raises
``TransientError`` (retry later).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tributary.core.errors import DataError, SecurityError
from tributary.did import keys
from tributary.did.document import PortableDid, ResolutionError, find_method, method_has_purpose, parse_did
from tributary.did.resolver import ResolverConfig, resolve_document
from tributary.vc import SYSTEM, bitstring, jws
from tributary.vc.credential import format_datetime, issuer_id, parse_datetime, subject_id, validate

CLOCK_SKEW = 60  # seconds of tolerance on nbf / exp
TIME_CLAIMS = ("nbf", "exp", "iat")
MAX_EPOCH = 253_402_300_799  # 9999-12-31T23:59:59Z: the last second a datetime (and a credential date) holds
MAX_IAT = 2**53 - 1


@dataclass
class VerifiedCredential:
    vc: dict[str, Any]
    header: dict[str, Any]
    claims: dict[str, Any]
    checked: list[str] = field(default_factory=list)

    @property
    def issuer(self) -> str | None:
        return issuer_id(self.vc)

    @property
    def subject(self) -> str | None:
        return subject_id(self.vc)

    @property
    def types(self) -> list[str]:
        return list(self.vc.get("type") or [])


def _epoch(value: datetime) -> int:
    return int(value.timestamp())


def create_credential(issuer: str, subject: dict[str, Any], *, types: list[str] = (), credential_id: str | None = None,
                      issued: datetime | None = None, expires: datetime | None = None,
                      status: dict[str, Any] | None = None) -> dict[str, Any]:
    """A VCDM 1.1 credential (``subject`` is the ``credentialSubject`` object, with its ``id``)."""
    import uuid

    from tributary.vc.credential import BASE_CONTEXT

    vc: dict[str, Any] = {"@context": [BASE_CONTEXT], "type": ["VerifiableCredential", *types],
                          "id": credential_id or f"urn:uuid:{uuid.uuid4()}", "issuer": issuer,
                          "issuanceDate": format_datetime(issued or datetime.now(UTC)),
                          "credentialSubject": subject}
    if expires is not None:
        vc["expirationDate"] = format_datetime(expires)
    if status is not None:
        vc["credentialStatus"] = status
    return vc


def issue_vc(issuer: PortableDid, credential: dict[str, Any], kid: str | None = None) -> str:
    """Sign ``credential`` as a VC-JWT with the issuer's first assertion key (or ``kid``)."""
    validate(credential)
    if issuer_id(credential) != issuer.uri:
        raise DataError("the credential's issuer is not the signing DID", system=SYSTEM,
                        reason="claim_mismatch:issuer")
    method_id, private = issuer.signing_key(kid)
    header = {"typ": "JWT", "alg": private.get("alg") or keys.DEFAULT_ALG[keys.curve_of(private)], "kid": method_id}
    claims: dict[str, Any] = {"iss": issuer.uri, "iat": int(time.time()),
                              "nbf": _epoch(parse_datetime(credential["issuanceDate"])), "vc": credential}
    if credential.get("id"):
        claims["jti"] = credential["id"]
    if subject_id(credential):
        claims["sub"] = subject_id(credential)
    if credential.get("expirationDate"):
        claims["exp"] = _epoch(parse_datetime(credential["expirationDate"]))
    return jws.sign(header, claims, private)


def check_time_claims(claims: Mapping[str, Any]) -> None:
    """``nbf``/``exp``/``iat`` are NumericDates (RFC 7519): numbers of seconds. ``nbf`` and ``exp`` bound
    the validity window, so they must be dates a datetime holds (0 .. :data:`MAX_EPOCH`); ``iat`` is only
    informative and may be any finite number up to 2^53 (I-JSON's exact range: the Web5 reference
    implementation writes milliseconds there). Anything else would later overflow a date conversion
    (``1e20``, ``Infinity``) or compare false with everything and so pass the window (``NaN``)."""
    for name in TIME_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DataError(f"JWT claim {name} is not a number ({type(value).__name__})", system=SYSTEM,
                            reason=f"malformed:{name}")
        highest = MAX_IAT if name == "iat" else MAX_EPOCH
        if not 0 <= value <= highest:  # also false for NaN; ints of any size compare exactly
            raise DataError(f"JWT claim {name} = {value!r:.40} is out of range (0 .. {highest})", system=SYSTEM,
                            reason=f"malformed:{name}")


def _mismatch(claim: str) -> DataError:
    return DataError(f"JWT claim {claim} disagrees with the credential", system=SYSTEM,
                     reason=f"claim_mismatch:{claim}")


def _decode(token: str) -> tuple[jws.Jws, dict[str, Any]]:
    parsed = jws.parse(token)
    header, claims = parsed.header, parsed.payload
    if header.get("typ") != "JWT":
        raise DataError("JWT header typ must be 'JWT'", system=SYSTEM, reason="malformed:typ")
    if not isinstance(header.get("alg"), str) or header["alg"] not in keys.ALG_CURVE:
        raise DataError(f"unsupported or missing alg {header.get('alg')!r}", system=SYSTEM, reason="malformed:alg")
    if not isinstance(header.get("kid"), str) or "#" not in header["kid"]:
        raise DataError("JWT header kid must be a DID URL", system=SYSTEM, reason="malformed:kid")
    vc = claims.get("vc")
    if not isinstance(vc, dict):
        raise DataError("JWT without a vc claim object", system=SYSTEM, reason="malformed:vc")
    check_time_claims(claims)
    vc = dict(vc)
    # The JWT registered claims stand for credential members (VC-JWT 1.1 section 6.3.1); both present must agree.
    # The credential must name its issuer itself (a bare iss claim is not enough, as in the Web5 vectors).
    if "iss" in claims and "issuer" in vc and issuer_id(vc) != claims["iss"]:
        raise _mismatch("iss")
    if "jti" in claims:
        if vc.get("id") is None:
            vc["id"] = claims["jti"]
        elif vc["id"] != claims["jti"]:
            raise _mismatch("jti")
    if "sub" in claims and isinstance(vc.get("credentialSubject"), dict):
        if subject_id(vc) is None:
            vc["credentialSubject"] = {**vc["credentialSubject"], "id": claims["sub"]}
        elif subject_id(vc) != claims["sub"]:
            raise _mismatch("sub")
    if vc.get("issuanceDate") is None and isinstance(claims.get("nbf"), int | float):
        vc["issuanceDate"] = format_datetime(datetime.fromtimestamp(claims["nbf"], UTC))
    if vc.get("expirationDate") is None and isinstance(claims.get("exp"), int | float):
        vc["expirationDate"] = format_datetime(datetime.fromtimestamp(claims["exp"], UTC))
    validate(vc)
    return parsed, vc


def _check_window(claims: dict[str, Any], vc: dict[str, Any], now: float) -> None:
    starts = [claims.get("nbf")] if isinstance(claims.get("nbf"), int | float) else []
    ends = [claims.get("exp")] if isinstance(claims.get("exp"), int | float) else []
    for name in ("issuanceDate", "validFrom"):
        if vc.get(name):
            starts.append(parse_datetime(vc[name]).timestamp())
    for name in ("expirationDate", "validUntil"):
        if vc.get(name):
            ends.append(parse_datetime(vc[name]).timestamp())
    if any(s > now + CLOCK_SKEW for s in starts):
        raise DataError("the credential is not valid yet", system=SYSTEM, reason="not_yet_valid")
    if any(e < now - CLOCK_SKEW for e in ends):
        raise DataError("the credential has expired", system=SYSTEM, reason="expired")


def _issuer_key(kid: str, issuer: str, alg: str, config: ResolverConfig) -> keys.Jwk:
    try:
        kid_did = kid.split("#", 1)[0]
        parse_did(kid_did)
    except ResolutionError:
        raise SecurityError(f"kid {kid!r} is not a DID URL", system=SYSTEM, reason="unknown_key") from None
    if kid_did != issuer:
        raise SecurityError("the signing key does not belong to the issuer", system=SYSTEM,
                            reason="issuer_key_mismatch")
    try:
        document = resolve_document(kid_did, config)
    except ResolutionError as exc:
        raise SecurityError(f"issuer DID does not resolve ({exc.code})", system=SYSTEM,
                            reason="unknown_issuer") from None
    method = find_method(document, kid)
    if method is None or not isinstance(method.get("publicKeyJwk"), dict):
        raise SecurityError(f"{kid} is not a verification method of the issuer", system=SYSTEM, reason="unknown_key")
    method_id = f"{kid_did}{method['id']}" if method["id"].startswith("#") else method["id"]
    if document.get("assertionMethod") is not None and not method_has_purpose(document, method_id,
                                                                              "assertionMethod"):
        raise SecurityError(f"{kid} may not assert credentials", system=SYSTEM, reason="key_not_for_assertion")
    if not jws.alg_matches_key(alg, method["publicKeyJwk"]):
        raise SecurityError(f"alg {alg} does not fit the key {kid}", system=SYSTEM, reason="alg_mismatch")
    return keys.public_jwk(method["publicKeyJwk"])


def _check_status(vc: dict[str, Any], config: ResolverConfig, now: float, checked: list[str]) -> None:
    entries = vc.get("credentialStatus")
    for entry in (entries if isinstance(entries, list) else [entries] if entries else []):
        if not isinstance(entry, dict):
            raise DataError("a credentialStatus entry is not an object", system=SYSTEM, reason="status_unsupported")
        if entry.get("type") not in bitstring.ENTRY_TYPES:
            raise DataError(f"unsupported credentialStatus type {entry.get('type')!r}", system=SYSTEM,
                            reason="status_unsupported")
        url = entry.get("statusListCredential")
        try:
            index = int(entry.get("statusListIndex"))
        except (TypeError, ValueError):
            raise DataError("statusListIndex is not an integer", system=SYSTEM, reason="status_index") from None
        # the fetcher refuses what the author may not make us fetch (scheme, address, redirect, size)
        body = config.get_bytes(url) if isinstance(url, str) else None
        if body is None:
            raise SecurityError(f"status list {url} is not available", system=SYSTEM, reason="status_unavailable")
        try:
            text = body.decode().strip()
        except UnicodeDecodeError:
            raise DataError(f"status list {url} is not a VC-JWT", system=SYSTEM, reason="malformed") from None
        listing = verify_vc(text, config=config, now=now, check_status=False)
        if listing.issuer != issuer_id(vc):
            raise SecurityError("the status list was issued by another DID", system=SYSTEM,
                                reason="status_issuer_mismatch")
        subject = listing.vc.get("credentialSubject") or {}
        if not isinstance(subject, dict):
            raise DataError("the status list's credentialSubject is not an object", system=SYSTEM,
                            reason="status_list_malformed")
        purpose = entry.get("statusPurpose", "revocation")
        if subject.get("statusPurpose", purpose) != purpose:
            raise DataError("status list purpose differs from the entry's", system=SYSTEM, reason="status_purpose")
        encoded = subject.get("encodedList", "")
        if not isinstance(encoded, str):
            raise DataError("encodedList is not a string", system=SYSTEM, reason="status_list_malformed")
        if bitstring.get_bit(bitstring.decode(encoded, max_bytes=config.max_decompressed_bytes), index):
            raise SecurityError(f"the credential is {'revoked' if purpose == 'revocation' else purpose}",
                                system=SYSTEM, reason="revoked" if purpose == "revocation" else "suspended")
        checked.append(f"status:{purpose}")


def verify_vc(token: str, *, config: ResolverConfig | None = None, now: float | None = None,
              check_status: bool = True, checked: list[str] | None = None) -> VerifiedCredential:
    """Verify a VC-JWT (see the module docstring for the checks and the errors they raise).

    ``checked`` (optional) receives the name of each check as it passes, also when a later one fails.
    """
    config = config or ResolverConfig()
    now = time.time() if now is None else now
    checked = [] if checked is None else checked
    parsed, vc = _decode(token)
    checked += ["structure", "data_model"]
    _check_window(parsed.payload, vc, now)
    checked.append("validity_period")
    jwk = _issuer_key(parsed.header["kid"], issuer_id(vc), parsed.header["alg"], config)
    checked.append("issuer_key")
    if not keys.verify(jwk, parsed.signing_input, parsed.signature):
        raise SecurityError("the JWS signature does not verify", system=SYSTEM, reason="bad_signature")
    checked.append("signature")
    if check_status:
        _check_status(vc, config, now, checked)
    return VerifiedCredential(vc, parsed.header, parsed.payload, checked)
