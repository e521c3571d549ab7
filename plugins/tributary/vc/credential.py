"""The VC data model checks (VCDM 1.1, and 2.0's validFrom/validUntil) that Web5 applies."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from tributary.core.errors import DataError
from tributary.vc import SYSTEM

BASE_CONTEXT = "https://www.w3.org/2018/credentials/v1"
BASE_CONTEXT_V2 = "https://www.w3.org/ns/credentials/v2"
BASE_TYPE = "VerifiableCredential"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def _invalid(message: str, reason: str) -> DataError:
    return DataError(f"invalid credential: {message}", system=SYSTEM, reason=reason)


def is_uri(value: Any) -> bool:
    return isinstance(value, str) and bool(_URI.match(value))


def parse_datetime(value: Any) -> datetime:
    if not isinstance(value, str) or not _DATETIME.match(value):
        raise ValueError(f"not an XML Schema dateTime: {value!r}")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_datetime(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def issuer_id(credential: dict[str, Any]) -> str | None:
    issuer = credential.get("issuer")
    return issuer.get("id") if isinstance(issuer, dict) else issuer


def subject_id(credential: dict[str, Any]) -> str | None:
    subject = credential.get("credentialSubject")
    return subject.get("id") if isinstance(subject, dict) else None


def validate(credential: Any) -> None:
    """Raise ``DataError`` (reason ``invalid_credential:<field>``) unless ``credential`` is well formed."""
    if not isinstance(credential, dict):
        raise _invalid("the credential must be an object", "invalid_credential:vc")
    context = credential.get("@context")
    if not isinstance(context, list) or not context or context[0] not in (BASE_CONTEXT, BASE_CONTEXT_V2):
        raise _invalid(f"@context must start with {BASE_CONTEXT}", "invalid_credential:context")
    if "id" in credential and credential["id"] is not None and not is_uri(credential["id"]):
        raise _invalid("id must be a single URI", "invalid_credential:id")
    types = credential.get("type")
    if not isinstance(types, list) or not types or types[0] != BASE_TYPE or not all(isinstance(t, str) for t in types):
        raise _invalid(f"type must be a list starting with {BASE_TYPE}", "invalid_credential:type")
    issuer = credential.get("issuer")
    if isinstance(issuer, dict):
        issuer = issuer.get("id")
    if not is_uri(issuer):
        raise _invalid("issuer must be a URI or an object with a URI id", "invalid_credential:issuer")
    v2 = context[0] == BASE_CONTEXT_V2
    for name, required in (("issuanceDate", not v2), ("expirationDate", False), ("validFrom", False),
                           ("validUntil", False)):
        value = credential.get(name)
        if value is None:
            if required:
                raise _invalid(f"{name} is required", f"invalid_credential:{name}")
            continue
        try:
            parse_datetime(value)
        except ValueError:
            raise _invalid(f"{name} must be one dateTime", f"invalid_credential:{name}") from None
    subject = credential.get("credentialSubject")
    if not isinstance(subject, dict | list) or not subject:
        raise _invalid("credentialSubject is required", "invalid_credential:credentialSubject")
    status = credential.get("credentialStatus")
    if status is not None:
        entries = status if isinstance(status, list) else [status]
        for entry in entries:
            if not isinstance(entry, dict) or not entry.get("type") or ("id" not in entry and not v2):
                raise _invalid("credentialStatus needs an id and a type", "invalid_credential:credentialStatus")
