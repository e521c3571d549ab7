"""
### Bitcoin: mempool

Every 5 minutes: a snapshot of the node's mempool, fee-rate estimates, and the status of watched
transactions. See docs/bitcoin-watch.md.

1. `register_watches`: txids in `watch_txids` are added to `btc_watched_txs` (status `unseen` until
   found; `watch_label` labels them), txids in `unwatch_txids` are removed. A malformed txid is
   refused when the run is created (typed param, pattern `^[0-9a-f]{64}$`).
2. `snapshot_mempool`: `getrawmempool true` -> `btc_mempool_snapshots` (tx count, total vsize, total
   fee, min/max and vsize-weighted fee-rate percentiles, fee-rate histogram), one row per run.
3. `estimate_fees`: `estimatesmartfee` for each of `fee_targets` (`fee_estimate_mode`) ->
   `btc_fee_estimates` (sat/vB; a target without an estimate is stored with the node's errors).
4. `track_watched_txs`: each watched tx not yet `final_confirmations` deep is looked up:
   `unseen` -> `mempool` -> `confirmed` (with confirmations and block); gone from the mempool
   unconfirmed -> `replaced` when another transaction spends one of the inputs recorded when it was
   first seen (`replaced_by`), else `dropped`. Reorgs move confirmed transactions back.

Failures are classified (node or database unreachable -> transient and retried; bad conf ->
permanent; malformed node answers -> data). Every write is an upsert keyed by (chain, run id) or
(chain, txid): re-running a run replaces its rows.

* **Params**: `watch_txids`, `watch_label`, `unwatch_txids`, `fee_targets`, `fee_estimate_mode`,
  `final_confirmations`, `scan_blocks`, `chain_label`, `conn_id`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from tributary.bitcoin import SYSTEM
from tributary.bitcoin.mempool import DEFAULT_FEE_TARGETS, TXID_PATTERN
from tributary.core.defaults import default_args
from tributary.core.failfast import classified
from tributary.core.params import conn_id_param

TXIDS = {"type": "array", "items": {"type": "string", "pattern": TXID_PATTERN}, "uniqueItems": True,
         "maxItems": 1000}


@dag(
    dag_id="bitcoin_mempool",
    schedule="*/5 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["bitcoin", "mempool", "fees"],
    doc_md=__doc__,
    render_template_as_native_obj=True,
    default_args=default_args(SYSTEM, retries=3, retry_delay=timedelta(seconds=10),
                              max_retry_delay=timedelta(minutes=2), execution_timeout=timedelta(minutes=10)),
    params={
        "watch_txids": Param([], **TXIDS, description="Txids (64 lowercase hex) to start watching."),
        "watch_label": Param(None, type=["null", "string"], maxLength=200,
                             description="Label stored with the txids of `watch_txids`."),
        "unwatch_txids": Param([], **TXIDS, description="Txids to stop watching."),
        "fee_targets": Param(list(DEFAULT_FEE_TARGETS), type="array", minItems=1, maxItems=20, uniqueItems=True,
                             items={"type": "integer", "minimum": 1, "maximum": 1008},
                             description="estimatesmartfee confirmation targets (blocks)."),
        "fee_estimate_mode": Param("conservative", type="string", enum=["conservative", "economical"]),
        "final_confirmations": Param(6, type="integer", minimum=1, maximum=10_000,
                                     description="Confirmed this deep: no longer checked."),
        "scan_blocks": Param(144, type="integer", minimum=1, maximum=2016,
                             description="Recent blocks searched for a conflicting spend of a vanished tx."),
        "chain_label": Param(None, type=["null", "string"], pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
                             description="Stored `chain` value. Null: the node's chain name (main, regtest...)."),
        "conn_id": conn_id_param("tributary_bitcoin",
                         description="Connection of the Bitcoin Core node."),
    },
)
def bitcoin_mempool():
    @task
    @classified(SYSTEM)
    def register_watches(params: dict | None = None) -> dict:
        from tributary.bitcoin.mempool import register_watches_step

        return register_watches_step(params["conn_id"], chain_label=params["chain_label"],
                                     watch=params["watch_txids"], unwatch=params["unwatch_txids"],
                                     label=params["watch_label"])

    @task
    @classified(SYSTEM)
    def snapshot_mempool(registered: dict, params: dict | None = None) -> dict:
        from tributary.bitcoin.mempool import snapshot_step

        return snapshot_step(params["conn_id"], chain=registered["chain"], key=get_current_context()["run_id"])

    @task
    @classified(SYSTEM)
    def estimate_fees(registered: dict, params: dict | None = None) -> dict:
        from tributary.bitcoin.mempool import fee_estimates_step

        return fee_estimates_step(params["conn_id"], chain=registered["chain"], key=get_current_context()["run_id"],
                                  targets=params["fee_targets"], mode=params["fee_estimate_mode"])

    @task
    @classified(SYSTEM)
    def track_watched_txs(registered: dict, params: dict | None = None) -> dict:
        from tributary.bitcoin.mempool import track_watched_step

        return track_watched_step(params["conn_id"], chain=registered["chain"],
                                  final_confirmations=params["final_confirmations"], scan_blocks=params["scan_blocks"])

    registered = register_watches()
    snapshot = snapshot_mempool(registered)
    estimate_fees(registered)
    snapshot >> track_watched_txs(registered)


bitcoin_mempool()
