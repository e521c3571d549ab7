"""Mask secrets in text that leaves a task: error events, alerts, health reports.

Airflow's secrets masker hides values it was told about (connection passwords, ``mask_secret``);
the patterns below catch what it cannot know: credentials inside URLs, bearer tokens and JWTs,
and ``key=value`` pairs whose key names a secret. Bare 32-byte hex strings are left alone on
purpose: txids and block hashes look the same and are what an operator needs to read.
"""

from __future__ import annotations

import re

MASK = "***"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host  ->  scheme://user:***@host
    (re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?=@)"), rf"\g<head>{MASK}"),
    (re.compile(r"(?i)(?P<head>\bbearer\s+)[A-Za-z0-9._~+/=-]+"), rf"\g<head>{MASK}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK),  # JWT
    (re.compile(r"(?i)(?P<head>\b(?:password|passwd|pwd|secret|token|api[_-]?key|private[_-]?key|xprv)"
                r"[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]+"), rf"\g<head>{MASK}"),
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
