"""
### EVM: event indexing

Copies contract event logs into the warehouse table `evm_event_logs` (decoded with the ABIs of
`include/contracts/build`), every 5 minutes from the indexer's checkpoint.

1. `index_logs` re-checks the hashes of the last `reorg_window` indexed blocks against the node;
   from the first block that changed, the logs of removed blocks are deleted, the checkpoint moves
   back and the reorg is recorded in `evm_index_reorgs`. Then `eth_getLogs` pulls block ranges of
   `chunk_size` (halved when the node caps results) from the checkpoint to the tip minus `lag`,
   loaded with COPY + upsert, one transaction and checkpoint per chunk (idempotent re-runs).
   A reorg deeper than the window fails with a **security** alert and deletes nothing.
2. `publish` emits the Asset `evm_event_logs` with `extra` {indexer, chain_id, from_block, to_block,
   logs, reorg}; it skips (no event) when nothing changed.

`addresses` empty: the registered deployments of `contracts` on the chain (`evm_deployments`).

* **Params**: `indexer`, `contracts`, `addresses`, `start_block`, `chunk_size`, `reorg_window`, `lag`,
  `max_blocks_per_run`, `conn_id`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from tributary.core.defaults import default_args
from tributary.core.failfast import classified
from tributary.core.params import conn_id_param
from tributary.evm import SYSTEM
from tributary.evm.assets import evm_event_logs_asset
from tributary.evm.errors import translate


@dag(
    dag_id="evm_event_indexing",
    schedule="*/5 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["evm", "chain", "indexing"],
    doc_md=__doc__,
    render_template_as_native_obj=True,
    default_args=default_args(SYSTEM, retries=3, retry_delay=timedelta(seconds=15),
                              max_retry_delay=timedelta(minutes=5), execution_timeout=timedelta(hours=1)),
    params={
        "indexer": Param("default", type="string", pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
                         description="Name of this filter's checkpoint and rows."),
        "contracts": Param(["Registry", "TributaryToken"], type="array", items={"type": "string"},
                           description="Registered contracts whose logs are indexed (when addresses is empty)."),
        "addresses": Param([], type="array", items={"type": "string", "pattern": r"^0x[0-9a-fA-F]{40}$"},
                           description="Explicit contract addresses; overrides contracts."),
        "start_block": Param(0, type="integer", minimum=0, description="First block when there is no checkpoint."),
        "chunk_size": Param(2000, type="integer", minimum=1, maximum=100_000,
                            description="Blocks per eth_getLogs request."),
        "reorg_window": Param(64, type="integer", minimum=1, maximum=10_000,
                              description="Recent blocks whose hashes are re-checked every run."),
        "lag": Param(0, type="integer", minimum=0, description="Stay this many blocks behind the tip."),
        "max_blocks_per_run": Param(100_000, type="integer", minimum=1,
                                    description="Cap of one run; the next run continues."),
        "conn_id": conn_id_param("tributary_evm",
                         description="Connection of the EVM node."),
    },
)
def evm_event_indexing():
    @task
    @classified(SYSTEM, translate=translate)
    def index_logs(params: dict | None = None) -> dict:
        from tributary.evm.hook import EvmHook
        from tributary.evm.indexer import index_deployed

        return index_deployed(EvmHook(params["conn_id"]), indexer=params["indexer"], contracts=params["contracts"],
                              addresses=params["addresses"], start_block=params["start_block"],
                              chunk_size=params["chunk_size"], reorg_window=params["reorg_window"],
                              lag=params["lag"], max_blocks=params["max_blocks_per_run"])

    @task(outlets=[evm_event_logs_asset()])
    def publish(result: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from tributary.evm.indexer import asset_extra

        extra = asset_extra(result)
        if extra is None:
            raise AirflowSkipException("no new logs and no reorg: no evm_event_logs event")
        get_current_context()["outlet_events"][evm_event_logs_asset()].extra = extra
        return extra

    publish(index_logs())


evm_event_indexing()
