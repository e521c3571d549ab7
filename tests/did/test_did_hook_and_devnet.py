"""The tributary_did Connection (hook) and the devnet's command-line entry point."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tributary.core.errors import PermanentError
from tributary.did.hook import DidHook
from tributary.did.keystore import KeyStore
from tributary.did.resolver import create_did, resolve

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
@pytest.mark.devnet
def test_hook_builds_the_resolver_and_the_key_store_from_the_connection(did_conn: dict[str, str], pg3: Any,
                                                                        did_devnet: dict[str, Any]) -> None:
    hook = DidHook(did_conn["conn_id"])
    config = hook.get_conn()
    assert config.pkarr_url == did_devnet["relay"].url and config.ca_bundle == did_devnet["web"].ca_bundle
    ok, message = hook.test_connection()
    assert ok and "round trip ok" in message
    store = hook.keystore(pg3)
    assert isinstance(store, KeyStore)
    portable = create_did("dht", config=config)
    store.save(portable)
    assert resolve(portable.uri, config)["didDocument"]["id"] == portable.uri
    assert DidHook.get_ui_field_behaviour()["relabeling"]["password"] == "Key-encryption key"


@pytest.mark.unit
def test_a_connection_without_a_kek_cannot_open_the_key_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DID_NO_KEK", json.dumps({"conn_type": "tributary_did", "host": "http://x"}))
    with pytest.raises(PermanentError) as failure:
        DidHook("did_no_kek").kek()
    assert failure.value.reason == "config:kek"
    with pytest.raises(PermanentError):
        KeyStore(None, "short")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.devnet
def test_the_devnet_command_serves_both_doubles_and_stops_on_sigterm(tmp_path: Path) -> None:
    pkarr_port, web_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "devnets.did", "--pkarr-port", str(pkarr_port), "--web-port", str(web_port),
         "--state-dir", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'plugins'}"}, start_new_session=True)
    try:
        lines = [process.stdout.readline(), process.stdout.readline()]
        assert "pkarr relay ready" in lines[0] and "did:web server ready" in lines[1]
        assert requests.get(f"http://127.0.0.1:{pkarr_port}/{'y' * 52}", timeout=5).status_code == 404
        (tmp_path / "www" / ".well-known").mkdir(parents=True)
        document = {"id": f"did:web:127.0.0.1%3A{web_port}"}
        (tmp_path / "www" / ".well-known" / "did.json").write_text(json.dumps(document))
        answer = requests.get(f"https://127.0.0.1:{web_port}/.well-known/did.json", timeout=5,
                              verify=str(tmp_path / "tls" / "ca.pem"))
        assert answer.json() == document
    finally:
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if process.poll() is None:
            process.kill()
        process.stdout.close()
    assert process.returncode == 0
