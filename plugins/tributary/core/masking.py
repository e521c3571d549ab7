"""Mask secrets in text that leaves a task: error events, alerts, health reports.

Airflow's secrets masker hides values it was told about (connection passwords, ``mask_secret``);
the patterns below catch what it cannot know: credentials inside URLs, bearer tokens and JWTs,
and ``key=value`` pairs whose key names a secret. Bare 32-byte hex strings are left alone on
purpose: txids and block hashes look the same and are what an operator needs to read.
"""

from __future__ import annotations

import re

MASK = "***"

# Key names whose value is a secret, in ``name=value`` / ``name: value`` / JSON ``"name": "value"``.
_SECRET_NAMES = (r"password|passwd|pwd|secret(?:[ _-]?key)?|token|access[_-]?token|refresh[_-]?token|"
                 r"api[_-]?key|apikey|private[ _-]?key|priv[_-]?key|secret[_-]?key|xprv|mnemonic|"
                 r"macaroon|rune|kek|authorization|client[_-]?secret")
# URL query parameters that carry credentials (``?key=…``, ``&access_token=…``).
_SECRET_QUERY = r"key|apikey|api[_-]?key|token|access[_-]?token|auth|secret|sig|signature|password|pass|code"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host  ->  scheme://user:***@host
    (re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?=@)"), rf"\g<head>{MASK}"),
    # Incoming-webhook URLs are the credential: everything after the fixed prefix
    (re.compile(r"(?i)(?P<head>\bhttps?://hooks\.slack\.com/(?:services|workflows|triggers)/)[^\s\"'<>]+"),
     rf"\g<head>{MASK}"),
    (re.compile(r"(?i)(?P<head>\bhttps?://[^\s/]*discord(?:app)?\.com/api/webhooks/)[^\s\"'<>]+"),
     rf"\g<head>{MASK}"),
    # API keys in URL paths (Infura /v3/<key>, Alchemy /v2/<key>, QuickNode /<token>/): a path segment
    # of 20+ key characters with both letters and digits. 64-hex segments (txids, block hashes) and
    # 0x-addresses stay readable; the lookahead keeps the segment's end at / ? # or whitespace.
    (re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/]+(?:/[^\s/?#]*)*?/)"
                r"(?!(?:0x)?[0-9a-fA-F]{64}(?:[/?#\s]|$))(?!0x[0-9a-fA-F]{40}(?:[/?#\s]|$))"
                r"(?=[A-Za-z0-9_-]{20,}(?:[/?#\s\"'<>]|$))(?=[A-Za-z_-]*[0-9])(?=[0-9_-]*[A-Za-z])"
                r"[A-Za-z0-9_-]{20,}"), rf"\g<head>{MASK}"),
    # ?key=… &token=… in URLs
    (re.compile(rf"(?i)(?P<head>[?&](?:{_SECRET_QUERY})=)[^\s&#\"'<>]+"), rf"\g<head>{MASK}"),
    # HTTP authorization schemes
    (re.compile(r"(?i)(?P<head>\bbearer\s+)[A-Za-z0-9._~+/=-]+"), rf"\g<head>{MASK}"),
    (re.compile(r"(?i)(?P<head>\b(?:basic|digest)\s+)(?=[A-Za-z0-9._~+/=-]{8,})(?=(?-i:[a-z._~-]*[A-Z0-9+/=]))"
                r"[A-Za-z0-9._~+/=-]+"),
     rf"\g<head>{MASK}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK),  # JWT
    # name=value, name: value, "name": "value" (the value may be quoted, may start with 0x)
    (re.compile(rf"(?i)(?P<head>\b(?:{_SECRET_NAMES})[\"']?\s*[:=]\s*[\"']?)(?!\*\*\*)(?!(?:bearer|basic|digest)\s)[^\s\"',;}}]+"),
     rf"\g<head>{MASK}"),
    # BIP32 extended private keys and WIF keys wherever they stand
    (re.compile(r"\b[xtyzuv]prv[1-9A-HJ-NP-Za-km-z]{100,112}\b"), MASK),
    (re.compile(r"\b[5KLc9][1-9A-HJ-NP-Za-km-z]{50,51}\b"), MASK),
    # PEM private keys
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"), MASK),
)


def _airflow_redact(text: str) -> str:
    try:
        from airflow.sdk._shared.secrets_masker import redact
    except ImportError:  # outside an Airflow runtime the patterns below still apply
        return text
    redacted = redact(text)
    return redacted if isinstance(redacted, str) else text


def mask_secret(secret: str | None) -> None:
    """Tell Airflow's secrets masker about a secret read at run time (a private key, a token), so it
    is redacted from task logs. Outside an Airflow runtime there is no masker to tell."""
    if not secret:
        return
    try:
        from airflow.sdk.log import mask_secret as airflow_mask_secret
    except ImportError:
        return
    airflow_mask_secret(secret)


def mask_text(text: str) -> str:
    masked = _airflow_redact(text)
    for pattern, replacement in _PATTERNS:
        masked = pattern.sub(replacement, masked)
    return masked
