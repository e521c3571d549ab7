"""Local peers the run command starts for systems whose real server cannot run here (test doubles).

Each devnet lives in ``devnets/<system>`` (with a README saying what it implements) and runs as one
more supervised process. It is skipped when the deployment points at a real server instead:

* Bitcoin: ``devnets/bitcoin`` (Core's JSON-RPC on regtest). ``TRIBUTARY_BITCOIN_HOST`` set means
  a real bitcoind: nothing is started and ``airflow_settings.yaml`` builds the Connection from the
  ``TRIBUTARY_BITCOIN_*`` variables. Otherwise the devnet keeps its chain under
  ``<AIRFLOW_HOME>/tributary/bitcoin`` (it survives restarts), authenticates with a cookie file like
  a local bitcoind, and gets a ``tributary`` wallet with 101 mined blocks on its first start, so the
  settlement DAG has coins to spend.
* EVM: anvil (``devnets/evm``, chain id 31337). Skipped when ``TRIBUTARY_EVM_URL`` is set; listens
  on ``--evm-port`` (default 8545) and keeps its chain in ``<AIRFLOW_HOME>/tributary/evm/anvil-state.json``,
  so contracts in the deployment registry still exist after a restart. At the first start ``Registry``
  is deployed from the Connection's account and registered, so ``evm_contract_execution``'s defaults work.
* DID: ``devnets/did``, a Pkarr relay (did:dht) and an HTTPS server for did:web documents and status
  lists with its own CA. Skipped when ``TRIBUTARY_PKARR_URL`` is set; ports ``--pkarr-port`` (8787)
  and ``--did-web-port`` (8443); records, documents and the CA under ``<AIRFLOW_HOME>/tributary/did``.
* DWN: two real ``@web5/dwn-server`` 0.6.1 instances (``devnets/dwn``, SQLite stores under
  ``<AIRFLOW_HOME>/tributary/dwn``), the source and target of ``dwn_data_replication``. Skipped when
  ``TRIBUTARY_DWN_SOURCE_URL`` is set; ports ``--dwn-ports`` (3001 3002).
* Stacks: ``devnets/stacks`` (the Clarity simnet behind the stacks-core node RPC). Skipped when
  ``TRIBUTARY_STACKS_URL`` is set; listens on ``--stacks-port`` (default 20443, the node's RPC port).
  Its chain lives in memory: a restart starts from the devnet's genesis.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tributary.cli.env import PROJECT_ROOT, free_port

log = logging.getLogger("tributary.run")
BITCOIN_WALLET = "tributary"
BITCOIN_BLOCK_INTERVAL = 30.0  # seconds between the devnet's blocks (--bitcoin-block-interval); at 10 s a
# chain sync on a busy 2-core machine ends more than its max_tip_lag (6) behind the tip
# Clarinet's public devnet deployer key (also the tributary_stacks default in airflow_settings.yaml):
# for the devnet only, never for real funds.
STACKS_DEVNET_KEY = "753b7cc01a1a2e86221266a154af739463fce51219d97e4f856cd7200c3bd2a601"
# anvil's public dev account 0 (also the tributary_evm default in airflow_settings.yaml): devnet only.
EVM_DEVNET_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
# Deployed and registered at start: evm_contract_execution's default contract (no constructor arguments).
# TributaryToken is left to the user: its constructor takes the name, symbol and supply.
EVM_EXAMPLES = ("Registry",)
BITCOIN_DEFAULT_PORT = 18443  # bitcoind's regtest RPC port
STACKS_DEFAULT_PORT = 20443  # stacks-core's RPC port
EVM_DEFAULT_PORT = 8545
PKARR_DEFAULT_PORT = 8787
DID_WEB_DEFAULT_PORT = 8443
DWN_DEFAULT_PORTS = (3001, 3002)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class BitcoinDevnet:
    datadir: Path
    port: int
    # A block every N seconds, so that a settlement triggered from the UI confirms; 0: only when asked.
    mine_every: float = BITCOIN_BLOCK_INTERVAL

    @property
    def cookie_file(self) -> Path:
        return self.datadir / "regtest" / ".cookie"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "devnets.bitcoin", "--datadir", str(self.datadir), "--rpcport", str(self.port),
                "--mine-every", str(self.mine_every)]

    def environ(self) -> dict[str, str]:
        return {"TRIBUTARY_BITCOIN_PORT": str(self.port), "TRIBUTARY_BITCOIN_COOKIE": str(self.cookie_file),
                "TRIBUTARY_BITCOIN_NETWORK": "regtest", "TRIBUTARY_BITCOIN_WALLET": BITCOIN_WALLET}

    def _rpc(self, method: str, *params: Any, wallet: str | None = None) -> Any:
        import requests

        user, _, password = self.cookie_file.read_text().strip().partition(":")
        url = self.url + (f"/wallet/{wallet}" if wallet else "/")
        body = {"jsonrpc": "2.0", "id": method, "method": method, "params": list(params)}
        answer = requests.post(url, json=body, auth=(user, password), timeout=30).json()
        if answer.get("error"):
            raise RuntimeError(f"bitcoin devnet {method}: {answer['error']}")
        return answer["result"]

    def bootstrap(self, timeout: float = 60.0) -> str:
        """Wait for the node, then make sure the ``tributary`` wallet exists, is loaded and has coins."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                height = int(self._rpc("getblockcount"))
                break
            except Exception as exc:  # not up yet: no cookie, connection refused, -28 warming up
                if time.monotonic() > deadline:
                    raise TimeoutError(f"bitcoin devnet on {self.url} not ready after {timeout:.0f}s: {exc}") from exc
                time.sleep(0.3)
        if BITCOIN_WALLET not in self._rpc("listwallets"):
            known = {w.get("name") for w in self._rpc("listwalletdir").get("wallets", [])}
            self._rpc("loadwallet" if BITCOIN_WALLET in known else "createwallet", BITCOIN_WALLET)
        if height < 101:
            address = self._rpc("getnewaddress", wallet=BITCOIN_WALLET)
            self._rpc("generatetoaddress", 101 - height, address)
            height = 101
        balance = self._rpc("getbalances", wallet=BITCOIN_WALLET)["mine"]["trusted"]
        return f"bitcoin devnet (regtest) on {self.url}: height {height}, wallet {BITCOIN_WALLET} {balance} BTC"


@dataclass
class EvmDevnet:
    datadir: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        self.datadir.mkdir(parents=True, exist_ok=True)
        return [sys.executable, "-m", "devnets.evm", "--port", str(self.port),
                "--state", str(self.datadir / "anvil-state.json")]

    def environ(self) -> dict[str, str]:
        return {"TRIBUTARY_EVM_URL": self.url}

    def _rpc(self, method: str, *params: Any) -> Any:
        import requests

        answer = requests.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)},
                               timeout=30).json()
        if answer.get("error"):
            raise RuntimeError(f"EVM devnet {method}: {answer['error']}")
        return answer["result"]

    def bootstrap(self, timeout: float = 180.0, warehouse_dsn: str | None = None) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                block = int(self._rpc("eth_blockNumber"), 16)
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"anvil on {self.url} not ready after {timeout:.0f}s: {exc}") from exc
                time.sleep(0.2)
        deployed = self.deploy_examples(warehouse_dsn) if warehouse_dsn else []
        return (f"EVM devnet (anvil, chain 31337) on {self.url}: block {block}; example contracts: "
                f"{', '.join(deployed) or 'already deployed'}")

    def deploy_examples(self, warehouse_dsn: str, key_hex: str | None = None) -> list[str]:
        """Deploy ``EVM_EXAMPLES`` from the Connection's account and register them in the deployment
        registry (``evm_deployments``), so ``evm_contract_execution``'s defaults (``Registry.increment``)
        work on a fresh devnet. Runs before any task, so no nonce of that account is in use yet; a
        registered build whose code is on the chain is left alone."""
        import os

        import psycopg2
        from eth_account import Account
        from eth_utils import to_checksum_address

        from tributary.evm import contracts, deployments

        account = Account.from_key(key_hex or os.environ.get("TRIBUTARY_EVM_KEY") or EVM_DEVNET_KEY)
        chain_id = int(self._rpc("eth_chainId"), 16)
        done = []
        conn = psycopg2.connect(warehouse_dsn)
        try:
            for name in EVM_EXAMPLES:
                artifact = contracts.load_artifact(name, PROJECT_ROOT / "include" / "contracts")
                found = deployments.find(conn, name, chain_id, artifact.artifact_sha256)
                if found and self._rpc("eth_getCode", found["address"], "latest") not in ("0x", "0x0"):
                    continue
                if found:  # the chain lost it (anvil state deleted): the registry must not point at nothing
                    with conn.cursor() as cur:
                        cur.execute("DELETE FROM evm_deployments WHERE name = %s AND chain_id = %s"
                                    " AND artifact_sha256 = %s", (name, chain_id, artifact.artifact_sha256))
                    conn.commit()
                nonce = int(self._rpc("eth_getTransactionCount", account.address, "pending"), 16)
                signed = account.sign_transaction({
                    "nonce": nonce, "gas": 5_000_000, "gasPrice": 2 * int(self._rpc("eth_gasPrice"), 16),
                    "value": 0, "data": artifact.bytecode, "chainId": chain_id})
                tx_hash = self._rpc("eth_sendRawTransaction", "0x" + signed.raw_transaction.hex().removeprefix("0x"))
                receipt = None
                for _ in range(150):  # anvil mines at once; 30 s at most
                    receipt = self._rpc("eth_getTransactionReceipt", tx_hash)
                    if receipt:
                        break
                    time.sleep(0.2)
                if not receipt or int(receipt["status"], 16) != 1:
                    raise RuntimeError(f"EVM devnet: deploying {name} failed: {receipt}")
                address = to_checksum_address(receipt["contractAddress"])
                deployments.record(conn, name=name, chain_id=chain_id, artifact_sha256=artifact.artifact_sha256,
                                   address=address, tx_hash=tx_hash, deployer=account.address,
                                   block_number=int(receipt["blockNumber"], 16), constructor_args=[])
                done.append(f"{name} at {address}")
        finally:
            conn.close()
        return done


def _wait_for_port(port: int, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), 1):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} on port {port} not ready after {timeout:.0f}s: {exc}") from exc
            time.sleep(0.2)


@dataclass
class DidDevnet:
    datadir: Path
    pkarr_port: int
    web_port: int

    def command(self) -> list[str]:
        return [sys.executable, "-m", "devnets.did", "--pkarr-port", str(self.pkarr_port), "--web-port",
                str(self.web_port), "--state-dir", str(self.datadir)]

    def environ(self) -> dict[str, str]:
        return {"TRIBUTARY_PKARR_URL": f"http://127.0.0.1:{self.pkarr_port}",
                "TRIBUTARY_DID_CA_BUNDLE": str(self.datadir / "tls" / "ca.pem"),
                "TRIBUTARY_DID_WEB_ROOT": str(self.datadir / "www"),
                "TRIBUTARY_DID_STATUS_URL": f"https://127.0.0.1:{self.web_port}",
                # the did:web server is on loopback, which verification fetches refuse unless allow-listed
                "TRIBUTARY_DID_ALLOW_NETWORKS": "127.0.0.1/32"}

    def bootstrap(self, timeout: float = 60.0) -> str:
        _wait_for_port(self.pkarr_port, "pkarr relay", timeout)
        _wait_for_port(self.web_port, "did:web server", timeout)
        return (f"DID devnet: pkarr relay http://127.0.0.1:{self.pkarr_port}, did:web https://127.0.0.1:"
                f"{self.web_port} (CA {self.datadir / 'tls' / 'ca.pem'})")


@dataclass
class DwnDevnet:
    datadir: Path
    ports: tuple[int, int]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "devnets.dwn.process", "--count", "2", "--ports", *map(str, self.ports),
                "--data-dir", str(self.datadir)]

    def environ(self) -> dict[str, str]:
        source, target = (f"http://127.0.0.1:{port}" for port in self.ports)
        return {"TRIBUTARY_DWN_SOURCE_URL": source, "TRIBUTARY_DWN_TARGET_URL": target}

    def bootstrap(self, timeout: float = 120.0) -> str:
        import requests

        deadline = time.monotonic() + timeout
        for port in self.ports:
            while True:
                try:
                    if requests.get(f"http://127.0.0.1:{port}/health", timeout=5).ok:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"dwn-server on port {port} not ready after {timeout:.0f}s")
                time.sleep(0.3)
        return "DWN devnet: @web5/dwn-server on " + ", ".join(f"http://127.0.0.1:{p}" for p in self.ports)


@dataclass
class StacksDevnet:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return ["node", str(PROJECT_ROOT / "devnets" / "stacks" / "server.mjs"), "--host", "127.0.0.1",
                "--port", str(self.port)]

    def environ(self) -> dict[str, str]:
        return {"TRIBUTARY_STACKS_URL": self.url}

    def bootstrap(self, timeout: float = 90.0) -> str:
        import requests

        deadline = time.monotonic() + timeout
        while True:
            try:
                info = requests.get(f"{self.url}/v2/info", timeout=5).json()
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"stacks devnet on {self.url} not ready after {timeout:.0f}s: {exc}") from exc
                time.sleep(0.3)
        deployed = self.deploy_examples()
        return (f"stacks devnet (simnet) on {self.url}: network {info.get('network_id')}, "
                f"stacks tip {info.get('stacks_tip_height')}; example contracts: {', '.join(deployed) or 'none'}")

    def deploy_examples(self, key_hex: str | None = None) -> list[str]:
        """Deploy ``include/contracts/*.clar`` from the Connection's sender, so the DAG's defaults
        (``contract=counter``) work on a fresh devnet. The simnet keeps no state across restarts, so
        this runs at every start; a contract the sender already has is left alone."""
        import os

        import requests

        from tributary.stacks.transactions import PrivateKey, make_contract_deploy

        key = PrivateKey.from_hex(key_hex or os.environ.get("TRIBUTARY_STACKS_KEY") or STACKS_DEVNET_KEY)
        network = os.environ.get("TRIBUTARY_STACKS_NETWORK") or "testnet"
        sender = key.address(network)
        deployed = []
        for source in sorted((PROJECT_ROOT / "include" / "contracts").glob("*.clar")):
            name = source.stem
            if requests.get(f"{self.url}/v2/contracts/interface/{sender}/{name}", timeout=10).status_code == 200:
                continue
            nonce = int(requests.get(f"{self.url}/v2/accounts/{sender}?proof=0", timeout=10).json()["nonce"])
            tx = make_contract_deploy(key, network, contract_name=name, source=source.read_text(encoding="utf-8"),
                                      nonce=nonce, fee=10_000)
            answer = requests.post(f"{self.url}/v2/transactions", data=tx.raw,
                                   headers={"Content-Type": "application/octet-stream"}, timeout=30)
            if answer.status_code != 200:
                raise RuntimeError(f"stacks devnet: deploying {name} failed: {answer.status_code} {answer.text[:300]}")
            deployed.append(f"{sender}.{name}")
        return deployed


def _port(requested: int | None, default: int, name: str) -> int:
    if requested:
        return requested
    if port_is_free(default):
        return default
    port = free_port()
    log.warning("port %d is taken; the %s devnet listens on %d", default, name, port)
    return port


@dataclass
class LocalDevnets:
    """The devnets of one deployment: their environment, their commands, their first-start set-up."""

    bitcoin: BitcoinDevnet | None = None
    evm: EvmDevnet | None = None
    stacks: StacksDevnet | None = None
    did: DidDevnet | None = None
    dwn: DwnDevnet | None = None
    external: list[str] = field(default_factory=list)

    @classmethod
    def plan(cls, state_dir: Path, env: dict[str, str], bitcoin_port: int | None = None,
             stacks_port: int | None = None, evm_port: int | None = None,
             did_ports: tuple[int, int] | None = None, dwn_ports: tuple[int, int] | None = None,
             bitcoin_block_interval: float = BITCOIN_BLOCK_INTERVAL) -> LocalDevnets:
        devnets = cls()
        if env.get("TRIBUTARY_BITCOIN_HOST"):
            devnets.external.append(f"bitcoin: {env['TRIBUTARY_BITCOIN_HOST']}")
        else:
            devnets.bitcoin = BitcoinDevnet(state_dir / "bitcoin", _port(bitcoin_port, BITCOIN_DEFAULT_PORT, "bitcoin"),
                                            bitcoin_block_interval)
        if env.get("TRIBUTARY_EVM_URL"):
            devnets.external.append(f"evm: {env['TRIBUTARY_EVM_URL']}")
        else:
            devnets.evm = EvmDevnet(state_dir / "evm", _port(evm_port, EVM_DEFAULT_PORT, "evm"))
        if env.get("TRIBUTARY_PKARR_URL"):
            devnets.external.append(f"did: pkarr {env['TRIBUTARY_PKARR_URL']}")
        else:
            pkarr, web = did_ports or (None, None)
            devnets.did = DidDevnet(state_dir / "did", _port(pkarr, PKARR_DEFAULT_PORT, "pkarr"),
                                    _port(web, DID_WEB_DEFAULT_PORT, "did:web"))
        if env.get("TRIBUTARY_DWN_SOURCE_URL"):
            devnets.external.append(f"dwn: {env['TRIBUTARY_DWN_SOURCE_URL']}")
        else:
            first, second = dwn_ports or (None, None)
            devnets.dwn = DwnDevnet(state_dir / "dwn", (_port(first, DWN_DEFAULT_PORTS[0], "dwn source"),
                                                        _port(second, DWN_DEFAULT_PORTS[1], "dwn target")))
        if env.get("TRIBUTARY_STACKS_URL"):
            devnets.external.append(f"stacks: {env['TRIBUTARY_STACKS_URL']}")
        else:
            devnets.stacks = StacksDevnet(_port(stacks_port, STACKS_DEFAULT_PORT, "stacks"))
        return devnets

    def _running(self) -> list[Any]:
        return [d for d in (self.bitcoin, self.evm, self.stacks, self.did, self.dwn) if d is not None]

    def environ(self) -> dict[str, str]:
        return {k: v for devnet in self._running() for k, v in devnet.environ().items()}

    def commands(self) -> dict[str, list[str]]:
        names = {BitcoinDevnet: "bitcoin-devnet", EvmDevnet: "evm-devnet", StacksDevnet: "stacks-devnet",
                 DidDevnet: "did-devnet", DwnDevnet: "dwn-devnet"}
        return {names[type(devnet)]: devnet.command() for devnet in self._running()}

    def bootstrap(self, warehouse_dsn: str | None = None) -> list[str]:
        """Wait for each devnet and set it up for the DAGs' defaults; the EVM registry of deployed
        examples lives in the warehouse (``warehouse_dsn``)."""
        return [devnet.bootstrap(warehouse_dsn=warehouse_dsn) if isinstance(devnet, EvmDevnet) else devnet.bootstrap()
                for devnet in self._running()]


def main() -> int:  # python -m tributary.cli.devnets: the devnets a run command would start, as JSON
    import os

    from tributary.cli.env import LocalDeployment

    devnets = LocalDevnets.plan(LocalDeployment().state_dir, dict(os.environ))
    print(json.dumps({"commands": devnets.commands(), "environ": devnets.environ(), "external": devnets.external,
                      "project_root": str(PROJECT_ROOT)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
