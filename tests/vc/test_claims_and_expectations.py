"""Hostile but correctly signed VC-JWTs: numeric claims that are not numbers, and an expected issuer
that is checked before anything is fetched (issue 11 section 3)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tributary.did import keys
from tributary.did.encoding import b64url_encode
from tributary.did.resolver import ResolverConfig, create_did
from tributary.vc.vcjwt import create_credential, issue_vc
from tributary.vc.verdict import check_credential

pytestmark = pytest.mark.unit


def _token(claims: dict[str, Any] | None = None, *, raw: dict[str, str] | None = None,
           drop_dates: tuple[str, ...] = ()) -> str:
    """A VC-JWT signed by a did:key issuer with ``claims`` merged in; ``raw`` claims are written as JSON
    text as given (``1e400``: what another encoder emits for a number past float range)."""
    issuer = create_did("key")
    vc = create_credential(issuer.uri, {"id": "did:example:holder"})
    for name in drop_dates:
        vc.pop(name, None)
    kid, private = issuer.signing_key()
    now = int(time.time())
    payload = {"iss": issuer.uri, "iat": now, "nbf": now - 10, "vc": vc, **(claims or {})}
    text = json.dumps(payload, separators=(",", ":"))  # allow_nan: Infinity / NaN, as a hostile author may send
    for name, value in (raw or {}).items():
        text = text[:-1] + f',"{name}":{value}}}'
    header = {"typ": "JWT", "alg": "EdDSA", "kid": kid}
    signing_input = f"{b64url_encode(json.dumps(header).encode())}.{b64url_encode(text.encode())}"
    return f"{signing_input}.{b64url_encode(keys.sign(private, signing_input.encode()))}"


NOT_NUMBERS = [
    pytest.param({"exp": 1e20}, (), "exp", id="exp-1e20"),
    pytest.param({"exp": float("inf")}, (), "exp", id="exp-Infinity"),
    pytest.param({"exp": float("-inf")}, (), "exp", id="exp--Infinity"),
    pytest.param({"nbf": float("nan")}, (), "nbf", id="nbf-NaN"),
    pytest.param({"nbf": float("nan")}, ("issuanceDate",), "nbf", id="nbf-NaN-without-issuanceDate"),
    pytest.param({"nbf": -1e20}, (), "nbf", id="nbf--1e20"),
    pytest.param({"iat": float("nan")}, (), "iat", id="iat-NaN"),
    pytest.param({"iat": 1e300}, (), "iat", id="iat-1e300"),
    pytest.param({"exp": "tomorrow"}, (), "exp", id="exp-string"),
    pytest.param({"exp": True}, (), "exp", id="exp-boolean"),
    pytest.param({"nbf": [1]}, (), "nbf", id="nbf-list"),
]


@pytest.mark.parametrize("claims,drop,claim", NOT_NUMBERS)
def test_a_non_finite_non_numeric_or_out_of_range_time_claim_is_an_invalid_verdict(
        claims: dict[str, Any], drop: tuple[str, ...], claim: str) -> None:
    verdict = check_credential(_token(claims, drop_dates=drop))
    assert verdict["valid"] is False
    assert verdict["reasons"] == [f"data:malformed:{claim}"]
    assert "signature" not in verdict["checked"]


def test_a_number_past_float_range_in_the_json_text_is_an_invalid_verdict() -> None:
    verdict = check_credential(_token(raw={"exp": "1e400"}))  # json.loads reads it as float inf
    assert verdict["valid"] is False and verdict["reasons"] == ["data:malformed:exp"]


def test_ordinary_numeric_claims_still_verify() -> None:
    now = time.time()
    assert check_credential(_token({"exp": now + 3600.5, "nbf": now - 5, "iat": int(now)}))["valid"] is True
    assert check_credential(_token({"exp": int(now) - 3600}))["reasons"] == ["data:expired"]


def test_the_expected_issuer_is_checked_before_anything_is_fetched() -> None:
    fetched: list[str] = []

    def fetch(url: str) -> Any:
        fetched.append(url)
        return None

    config = ResolverConfig(fetch=fetch)
    author = create_did("web", host="issuer.example", path="x")
    token = issue_vc(author, create_credential(author.uri, {"id": "did:example:holder"}))
    verdict = check_credential(token, expected_issuer="did:web:trusted.example", config=config)
    assert verdict["valid"] is False and verdict["reasons"] == ["expectation:issuer"]
    assert verdict["issuer"] == author.uri and verdict["checked"] == []
    assert fetched == []

    # the expected issuer itself is still resolved (and here not found)
    verdict = check_credential(token, expected_issuer=author.uri, config=config)
    assert verdict["reasons"] == ["security:unknown_issuer"]
    assert fetched == ["https://issuer.example/x/did.json"]
