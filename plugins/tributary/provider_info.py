"""Tributary as an Airflow provider: its Connection types and their form fields.

Wired through the ``apache_airflow_provider`` entry point in pyproject.toml. This is the
equivalent of a provider's ``provider.yaml``: plain data, no imports (Airflow reads it while its
own configuration is still loading, so importing hook modules here would be circular). Each hook
class names its ``conn_type``; ``tests/platform/test_provider_info.py`` checks the two agree.
"""

from __future__ import annotations

from typing import Any

CONNECTION_TYPES: list[dict[str, Any]] = [
    {
        "connection-type": "tributary_airflow_api",
        "hook-class-name": "tributary.platform.hook.AirflowApiHook",
        "hook-name": "Tributary: Airflow REST API",
        "conn-fields": {
            "timeout": {"label": "Timeout (s)", "schema": {"type": ["number", "null"], "default": 30}},
        },
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "port"],
            "relabeling": {"host": "API base URL", "login": "Username"},
            "placeholders": {"host": "http://127.0.0.1:8080", "login": "ops"},
        },
    },
    {
        "connection-type": "tributary_webhook",
        "hook-class-name": "tributary.core.webhook.WebhookHook",
        "hook-name": "Tributary: Webhook",
        "conn-fields": {
            "format": {
                "label": "Payload format",
                "description": "json (generic document) or slack (incoming-webhook blocks)",
                "schema": {"type": ["string", "null"], "enum": ["json", "slack", None], "default": "json"},
            },
            "timeout": {"label": "Timeout (s)", "schema": {"type": ["number", "null"], "default": 10}},
        },
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "port", "login"],
            "relabeling": {"host": "Webhook URL", "password": "Bearer token (optional)"},
            "placeholders": {"host": "https://hooks.slack.com/services/T000/B000/XXXX"},
        },
    },
    {
        "connection-type": "tributary_mlflow",
        "hook-class-name": "tributary.ml.hook.MlflowHook",
        "hook-name": "Tributary: MLflow",
        "conn-fields": {
            "registry_uri": {"label": "Registry URI", "description": "defaults to the tracking URI",
                             "schema": {"type": ["string", "null"]}},
            "artifact_location": {"label": "Artifact location",
                                  "description": "folder or URI for new experiments' artifacts",
                                  "schema": {"type": ["string", "null"]}},
            "timeout": {"label": "Timeout (s)", "schema": {"type": ["number", "null"], "default": 30}},
        },
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "port"],
            "relabeling": {"host": "Tracking URI", "login": "Username (optional)",
                           "password": "Password or token (optional)"},
            "placeholders": {"host": "http://mlflow:5000 or sqlite:////path/mlflow.db"},
        },
    },
    {
        "connection-type": "tributary_bitcoin",
        "hook-class-name": "tributary.bitcoin.hook.BitcoinCoreHook",
        "hook-name": "Tributary: Bitcoin Core",
        "conn-fields": {
            "network": {
                "label": "Network",
                "description": "chain the node must be on (checked by Test): main, test, testnet4, signet, regtest",
                "schema": {"type": ["string", "null"],
                           "enum": ["main", "test", "testnet4", "signet", "regtest", None]},
            },
            "wallet": {"label": "Wallet", "description": "default wallet: calls go to /wallet/<name>",
                       "schema": {"type": ["string", "null"]}},
            "cookie_file": {"label": "Cookie file",
                            "description": "path of bitcoind's .cookie, used when RPC user is empty",
                            "schema": {"type": ["string", "null"]}},
            "timeout": {"label": "Timeout (s)", "schema": {"type": ["number", "null"], "default": 30}},
        },
        "ui-field-behaviour": {
            "hidden-fields": ["schema"],
            "relabeling": {"host": "RPC host or URL", "port": "RPC port", "login": "RPC user (optional)",
                           "password": "RPC password (optional)"},
            "placeholders": {"host": "127.0.0.1 or http://bitcoind:18443", "port": "18443 (regtest), 8332 (main)",
                             "login": "empty: use the cookie file"},
        },
    },
    {
        "connection-type": "tributary_evm",
        "hook-class-name": "tributary.evm.hook.EvmHook",
        "hook-name": "Tributary: EVM JSON-RPC",
        "conn-fields": {
            "chain_id": {"label": "Chain id", "description": "the node must be on this chain (checked before signing)",
                         "schema": {"type": ["integer", "null"], "minimum": 1}},
            "confirmations": {"label": "Confirmations", "description": "blocks on top of a receipt before it is final",
                              "schema": {"type": ["integer", "null"], "minimum": 1, "default": 1}},
            "gas_margin": {"label": "Gas margin", "description": "multiplier on eth_estimateGas",
                           "schema": {"type": ["number", "null"], "minimum": 1, "default": 1.2}},
            "priority_fee_wei": {"label": "Priority fee (wei)", "description": "empty: eth_maxPriorityFeePerGas",
                                 "schema": {"type": ["integer", "null"], "minimum": 0}},
            "base_fee_multiplier": {"label": "Base fee multiplier", "description": "max fee = base fee x this + tip",
                                    "schema": {"type": ["number", "null"], "minimum": 1, "default": 2}},
            "max_fee_cap_wei": {"label": "Max fee cap (wei)", "description": "never sign above this max fee per gas",
                                "schema": {"type": ["integer", "null"], "minimum": 0}},
            "timeout": {"label": "Timeout (s)", "schema": {"type": ["number", "null"], "default": 30}},
            "poll_interval": {"label": "Receipt poll interval (s)",
                              "schema": {"type": ["number", "null"], "default": 1}},
            "logs_chunk_size": {"label": "eth_getLogs blocks per request",
                                "schema": {"type": ["integer", "null"], "minimum": 1, "default": 2000}},
        },
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "login"],
            "relabeling": {"host": "JSON-RPC URL", "port": "Port (if not in the URL)",
                           "password": "Private key (hex; empty: read-only)"},
            "placeholders": {"host": "http://127.0.0.1:8545", "password": "0x..."},
        },
    },
    {
        "connection-type": "tributary_stacks",
        "hook-class-name": "tributary.stacks.hook.StacksHook",
        "hook-name": "Tributary: Stacks node",
        "conn-fields": {
            "network": {
                "label": "Network",
                "description": "mainnet or testnet: tx version, chain id, address version (checked by Test)",
                "schema": {"type": ["string", "null"], "enum": ["mainnet", "testnet", None], "default": "testnet"},
            },
            "chain_id": {"label": "Chain id (optional)", "description": "override, e.g. 0x80000000",
                         "schema": {"type": ["string", "null"]}},
            "fee": {"label": "Default fee (micro-STX)", "schema": {"type": ["integer", "null"], "default": 10000}},
            "timeout": {"label": "Timeout (s)", "schema": {"type": ["number", "null"], "default": 30}},
        },
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "login"],
            "relabeling": {"host": "Node RPC URL", "port": "RPC port", "password": "Sender private key (hex)"},
            "placeholders": {"host": "http://127.0.0.1:20443", "port": "20443",
                             "password": "66 hex chars ending in 01 (compressed key)"},
        },
    },
    {
        "connection-type": "tributary_did",
        "hook-class-name": "tributary.did.hook.DidHook",
        "hook-name": "Tributary: DID resolver and key store",
        "conn-fields": {
            "ca_bundle": {"label": "CA bundle (PEM path)", "description": "CAs trusted for did:web and status lists",
                          "schema": {"type": ["string", "null"]}},
            "web_root": {"label": "did:web document root", "description": "folder served by the did:web server",
                         "schema": {"type": ["string", "null"]}},
            "status_base_url": {"label": "Status list base URL", "description": "https URL serving the document root",
                                "schema": {"type": ["string", "null"]}},
            "timeout": {"label": "Timeout (s)", "description": "total deadline of one did:web / status list fetch",
                        "schema": {"type": ["number", "null"], "default": 10}},
            "allow_networks": {"label": "Allowed private networks",
                               "description": "comma-separated IPs/CIDRs (e.g. 127.0.0.1/32) that did:web documents "
                                              "and status lists may be fetched from; empty: public addresses only",
                               "schema": {"type": ["string", "null"]}},
            "allow_http_loopback": {"label": "Allow plain HTTP to loopback",
                                    "description": "fetch http:// URLs on loopback addresses (test doubles only)",
                                    "schema": {"type": ["boolean", "null"], "default": False}},
            "fetch_max_bytes": {"label": "Max response bytes", "description": "cap on a fetched document (2 MiB)",
                                "schema": {"type": ["integer", "null"], "default": 2097152}},
            "fetch_max_decompressed_bytes": {"label": "Max decompressed bytes",
                                             "description": "cap on gzip-inflated data: HTTP bodies, status lists "
                                                            "(16 MiB)",
                                             "schema": {"type": ["integer", "null"], "default": 16777216}},
            "cache_ttl": {"label": "Cache TTL (s)", "description": "how long one resolver reuses a fetched document",
                          "schema": {"type": ["number", "null"], "default": 300}},
        },
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "port", "login"],
            "relabeling": {"host": "Pkarr relay URL (did:dht)", "password": "Key-encryption key"},
            "placeholders": {"host": "http://127.0.0.1:8787", "password": "at least 16 random characters"},
        },
    },
    {
        "connection-type": "tributary_dwn",
        "hook-class-name": "tributary.dwn.hook.DwnHook",
        "hook-name": "Tributary: Decentralized Web Node",
        "conn-fields": {
            "tenant": {"label": "Tenant DID", "description": "did:key the password's key belongs to (checked)",
                       "schema": {"type": ["string", "null"]}},
            "timeout": {"label": "Timeout (s)", "schema": {"type": ["number", "null"], "default": 30}},
        },
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "login", "port"],
            "relabeling": {"host": "DWN URL", "password": "Tenant private key (Ed25519 hex or JWK)"},
            "placeholders": {"host": "http://127.0.0.1:3001",
                             "password": "64 hex chars (seed) or {\"kty\":\"OKP\",\"crv\":\"Ed25519\",...}"},
        },
    },
]


def connection_type(conn_type: str) -> dict[str, Any]:
    for entry in CONNECTION_TYPES:
        if entry["connection-type"] == conn_type:
            return entry
    raise KeyError(conn_type)


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "tributary",
        "name": "Tributary",
        "description": "Integration layer: ML platform, Bitcoin-family and smart-contract chains, Web5.",
        "versions": ["0.1.0"],
        "hooks": [{"integration-name": "Tributary",
                   "python-modules": sorted({e["hook-class-name"].rpartition(".")[0] for e in CONNECTION_TYPES})}],
        "connection-types": CONNECTION_TYPES,
    }
