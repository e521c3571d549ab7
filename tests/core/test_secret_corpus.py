"""A corpus of failure messages with planted secrets: none of them reaches error_events, alerts or
the task log in clear text.

Two kinds of secret: the ones a pattern can recognise (credentials in URLs, authorization headers,
named key/value pairs, extended and WIF private keys, PEM blocks), masked by
``tributary.core.masking.mask_text`` wherever the text comes from; and bare values that look like
anything else (a hex private key looks like a txid), which the hooks hand to Airflow's masker with
``mask_secret`` when they read them from the Connection.
"""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from tributary.core.masking import mask_secret, mask_text

XPRV = ("xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33y"
        "uGBxrMPHi")  # BIP32 test vector 1, master key

# (message, the secret planted in it)
PATTERN_CORPUS: list[tuple[str, str]] = [
    # credentials in URLs
    ("could not connect to postgresql://svc:s3cr3t-pw@db:5432/x", "s3cr3t-pw"),
    ("POST https://mainnet.infura.io/v3/9aa3d95b3bc440fa88ea12eaa4456161 failed: 429",
     "9aa3d95b3bc440fa88ea12eaa4456161"),
    ("https://eth-mainnet.g.alchemy.com/v2/AbCdEf123456789_ghijkLMNop timed out", "AbCdEf123456789_ghijkLMNop"),
    ("https://example.quiknode.pro/7f3c2a9b1d4e5f60718293a4b5c6d7e8f9a0b1c2/ 502",
     "7f3c2a9b1d4e5f60718293a4b5c6d7e8f9a0b1c2"),
    ("webhook https://hooks.slack.com/services/T0A1B2C3D/B0A1B2C3D4E/aBcDeFgHiJkLmNoPqRsTuVwX answered 404",
     "aBcDeFgHiJkLmNoPqRsTuVwX"),
    ("https://discord.com/api/webhooks/112233445566/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 failed",
     "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
    ("GET https://api.example.com/v1/data?key=AIzaSyA1b2C3d4E5f6&page=2 -> 403", "AIzaSyA1b2C3d4E5f6"),
    ("GET https://api.example.com/v1/data?page=2&access_token=ya29.a0AfH6SMB -> 401", "ya29.a0AfH6SMB"),
    ("redis://:hunter2hunter2@cache:6379/0 refused", "hunter2hunter2"),
    # authorization headers
    ("401 with Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
    ("sent Authorization: Basic dXNlcjpwYXNzd29yZA== and got 401", "dXNlcjpwYXNzd29yZA=="),
    ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJvcHMifQ.c2lnbmF0dXJl rejected", "eyJhbGciOiJIUzI1NiJ9"),
    # named values, in every spelling we have seen in library errors
    ('config {"password": "hunter2", "user": "x"}', "hunter2"),
    ("api_key=AKIA1234567 private_key=5Kb8kLf9", "AKIA1234567"),
    ("api_key=AKIA1234567 private_key=5Kb8kLf9", "5Kb8kLf9"),
    ("private key: 0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318 rejected",
     "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"),
    ("Private Key = 'deadbeefcafe0011'", "deadbeefcafe0011"),
    ("macaroon: 0201036c6e6402f801030a1012", "0201036c6e6402f801030a1012"),
    ("rune=tU-RLjMiDpY2U0o3W1oFowar36RFGpWloPbW9-RuZdo9MyZpZD0w",
     "tU-RLjMiDpY2U0o3W1oFowar36RFGpWloPbW9-RuZdo9MyZpZD0w"),
    ("mnemonic: abandon-abandon-about", "abandon-abandon-about"),
    # key formats that stand alone
    ("wallet import failed for " + XPRV, XPRV),
    ("importprivkey cVpF924EspNh8KjYsfhgY96mmxvT6DgdWiTYMtMjuM74hJaU5psW failed",
     "cVpF924EspNh8KjYsfhgY96mmxvT6DgdWiTYMtMjuM74hJaU5psW"),
    ("loaded -----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n"
     "-----END PRIVATE KEY----- bad", "MC4CAQAwBQYDK2VwBCIEIJ"),
]

# Identifiers an operator must be able to read: never masked.
READABLE = [
    "txn-mempool-conflict 4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b",
    "https://mempool.space/tx/4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b",
    "reverted: 0x5FbDB2315678afecb367f032d93F642f64180aa3 at http://127.0.0.1:8545/",
    "http://127.0.0.1:18443/wallet/tributary answered 500",
    "basic authentication is not configured",
    "block 000000000000000000024bead8df69990852c202db0e0097c1a12ea637d7e96d orphaned",
]


@pytest.mark.unit
@pytest.mark.parametrize(("text", "secret"), PATTERN_CORPUS, ids=[f"{i:02d}" for i in range(len(PATTERN_CORPUS))])
def test_mask_text_hides_every_planted_secret(text: str, secret: str) -> None:
    masked = mask_text(text)
    assert secret not in masked
    assert "***" in masked


@pytest.mark.unit
@pytest.mark.parametrize("text", READABLE)
def test_chain_identifiers_and_plain_words_stay_readable(text: str) -> None:
    assert mask_text(text) == text


@pytest.mark.unit
def test_a_bare_secret_handed_to_mask_secret_is_masked_everywhere_after() -> None:
    bare = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f3623aa"  # looks like a txid
    assert bare in mask_text(f"signing with {bare}")  # a pattern cannot know it
    mask_secret(bare)
    assert bare not in mask_text(f"signing with {bare}")


@pytest.mark.postgres
def test_no_planted_secret_reaches_error_events_alerts_or_the_task_log(
        pg, http_sink, webhook_conn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from tributary.core.callbacks import OutcomeRecorder
    from tributary.core.errors import PermanentError
    from tributary.core.failfast import ClassifiedFailure, raise_classified

    monkeypatch.setenv("TRIBUTARY_ALERTING", json.dumps(
        {"min_severity": "warning", "notifiers": [{"type": "log"}, {"type": "webhook", "conn_id": webhook_conn}]}))
    caplog.set_level(logging.DEBUG)
    for i, (text, _) in enumerate(PATTERN_CORPUS):
        try:
            raise_classified(PermanentError(text), "platform")
        except ClassifiedFailure as exc:
            ti = SimpleNamespace(dag_id="secret_corpus", task_id="t", run_id=f"corpus-{i}", map_index=-1,
                                 try_number=1)
            OutcomeRecorder("failure", "platform")({"ti": ti, "exception": exc})

    with pg.cursor() as cur:
        cur.execute("SELECT message, exception_type FROM error_events WHERE dag_id = 'secret_corpus'")
        stored = " ".join(" ".join(str(v) for v in row) for row in cur.fetchall())
    alerts = json.dumps(http_sink.posted_json())
    logged = caplog.text
    assert stored and alerts != "[]" and logged
    leaked = [secret for _, secret in PATTERN_CORPUS
              if secret in stored or secret in alerts or secret in logged]
    assert not leaked, f"secrets in clear text: {leaked}"
