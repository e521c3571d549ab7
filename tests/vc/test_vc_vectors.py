"""The Web5 vc_jwt and credentials vectors: one parametrized test per file."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests._shared import SHARED
from tributary.core.errors import DataError, SecurityError, TributaryError
from tributary.did.document import PortableDid
from tributary.vc.credential import validate
from tributary.vc.vcjwt import _decode, issue_vc, verify_vc

pytestmark = pytest.mark.unit

WEB5 = SHARED / "specs" / "web5" / "test-vectors"


def vectors(name: str) -> list[dict[str, Any]]:
    return json.loads((WEB5 / name).read_text())["vectors"]


def _vid(vector: dict[str, Any]) -> str:
    return vector["description"][:60]


@pytest.mark.parametrize("vector", vectors("vc_jwt/decode.json"), ids=_vid)
def test_vc_jwt_decode_vectors(vector: dict[str, Any]) -> None:
    if vector.get("errors"):
        with pytest.raises(DataError):
            _decode(vector["input"])
    else:
        _decode(vector["input"])


@pytest.mark.parametrize("vector", vectors("vc_jwt/verify.json"), ids=_vid)
def test_vc_jwt_verify_vectors(vector: dict[str, Any]) -> None:
    if vector.get("errors"):
        with pytest.raises((DataError, SecurityError)):
            verify_vc(vector["input"])
    else:
        assert verify_vc(vector["input"]).checked[-1] == "signature"


@pytest.mark.parametrize("vector", vectors("credentials/verify.json"), ids=_vid)
def test_credentials_verify_vectors(vector: dict[str, Any]) -> None:
    token = vector["input"]["vcJwt"]
    if vector.get("errors"):
        with pytest.raises(TributaryError) as failure:
            verify_vc(token)
        assert isinstance(failure.value, DataError | SecurityError)
        if "signature" in vector["description"]:
            assert isinstance(failure.value, SecurityError) and failure.value.reason == "bad_signature"
    else:
        verified = verify_vc(token)
        assert verified.issuer and verified.types[0] == "VerifiableCredential"


@pytest.mark.parametrize("vector", vectors("credentials/create.json"), ids=_vid)
def test_credentials_create_vectors(vector: dict[str, Any]) -> None:
    credential = vector["input"]["credential"]
    if vector.get("errors"):
        with pytest.raises(DataError):
            validate(credential)
        return
    signer = PortableDid.from_dict(vector["input"]["signerPortableDid"])
    ours = verify_vc(issue_vc(signer, credential))
    theirs = verify_vc(vector["output"])  # the reference JWT (alg "Ed25519") verifies too
    assert ours.vc == theirs.vc == credential
    assert ours.header["kid"] == theirs.header["kid"]
