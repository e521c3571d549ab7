"""
### Bitcoin: chain sync

Copies the node's blocks, transactions, inputs and outputs into the warehouse (`btc_blocks`,
`btc_transactions`, `btc_inputs`, `btc_outputs`), every 10 minutes from the checkpoint, or over a
height range given in the conf (backfill). See docs/bitcoin-sync.md.

1. `check_reorg` validates the conf, reads the node (`tributary_bitcoin` Connection) and compares the
   top stored hashes with the node's. Orphaned blocks (above the fork point) are deleted with all rows
   derived from them, the checkpoint moves back, and the reorg is logged and recorded in `btc_reorgs`.
   A reorg deeper than `max_reorg_depth` fails with a **security** alert and deletes nothing.
2. `plan_ranges` picks the heights (checkpoint + 1 .. node tip, at most `max_blocks_per_run`; or
   `start_height` .. `end_height`) and cuts them into ranges of `range_size`.
3. `sync_range` (one mapped task per range, parallel-safe): batched `getblockhash` / `getblock`
   RPC, python-bitcoinlib parsing, COPY + upsert, one transaction per `batch_size` blocks; progress
   (heights, blocks/s, rows/s) in the task log.
4. `finalize` fills fees whose spent outputs another range stored, and moves the checkpoint to the end
   of the contiguous stored heights.
5. `verify_continuity` (no gaps, every `prev_hash` links) and `verify_tip_lag` (synced height within
   `max_tip_lag` of the node; a warning only for backfills and capped catch-up runs).
6. `publish` emits the Asset `btc_blocks` with `extra` {chain, from_height, to_height, tip_hash,
   blocks, reorg}; it skips (no event) when nothing changed.

Failures are classified: node or database unreachable -> transient (retried with backoff);
bad conf -> permanent; broken continuity or stale data -> data; a too deep reorg -> security.
Re-runs are idempotent (upserts on natural keys; the checkpoint is derived from what is stored).

* **Params**: `start_height`, `end_height` (null: checkpoint / node tip), `batch_size`,
  `rpc_batch_size`, `range_size`, `max_blocks_per_run`, `max_reorg_depth` (null: Variable
  `tributary_bitcoin_max_reorg_depth`, else 6 on main, 100 on regtest), `max_tip_lag`,
  `chain_label`, `conn_id`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, XComArg, dag, get_current_context, task

from tributary.bitcoin import SYSTEM
from tributary.bitcoin.assets import btc_blocks_asset
from tributary.core.defaults import default_args
from tributary.core.failfast import classified
from tributary.core.params import conn_id_param

NULLABLE_HEIGHT = {"type": ["null", "integer"], "minimum": 0}


@dag(
    dag_id="bitcoin_chain_sync",
    schedule="*/10 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["bitcoin", "chain", "sync"],
    doc_md=__doc__,
    render_template_as_native_obj=True,
    default_args=default_args(SYSTEM, retries=3, retry_delay=timedelta(seconds=15),
                              max_retry_delay=timedelta(minutes=5), execution_timeout=timedelta(hours=2)),
    params={
        "start_height": Param(None, **NULLABLE_HEIGHT,
                              description="First height to sync (backfill). Null: the checkpoint + 1."),
        "end_height": Param(None, **NULLABLE_HEIGHT,
                            description="Last height to sync (inclusive). Null: the node's tip."),
        "batch_size": Param(50, type="integer", minimum=1, maximum=2000,
                            description="Blocks per getblock batch and per load transaction."),
        "rpc_batch_size": Param(20, type="integer", minimum=1, maximum=500,
                                description="getblock calls per HTTP request (blocks are up to 4 MB)."),
        "range_size": Param(1000, type="integer", minimum=1, maximum=1_000_000,
                            description="Heights per mapped sync_range task."),
        "max_blocks_per_run": Param(10_000, type="integer", minimum=1,
                                    description="Cap of a run without an explicit range; the next run continues."),
        "max_reorg_depth": Param(None, type=["null", "integer"], minimum=0,
                                 description="Deepest reorg rolled back automatically. Null: the Variable"
                                             " tributary_bitcoin_max_reorg_depth, else 6 on main, 100 on regtest."),
        "max_tip_lag": Param(6, type="integer", minimum=0,
                             description="Blocks the synced height may lag the node's tip after a run."),
        "chain_label": Param(None, type=["null", "string"], pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
                             description="Stored `chain` value. Null: the node's chain name (main, regtest...)."),
        "conn_id": conn_id_param("tributary_bitcoin",
                         description="Connection of the Bitcoin Core node."),
    },
)
def bitcoin_chain_sync():
    @task
    @classified(SYSTEM)
    def check_reorg(params: dict | None = None) -> dict:
        from airflow.sdk import Variable

        from tributary.bitcoin import sync

        return sync.check_reorg_step(params, run_id=get_current_context()["run_id"],
                                     max_reorg_depth_variable=Variable.get(sync.MAX_REORG_DEPTH_VARIABLE, default=None))

    @task
    @classified(SYSTEM)
    def plan_ranges(state: dict, params: dict | None = None) -> list[dict]:
        """The ranges to map ``sync_range`` over; the whole plan goes to the XCom key ``plan``."""
        from tributary.bitcoin import sync

        ranges, summary = sync.plan_step(state, params)
        get_current_context()["ti"].xcom_push(key="plan", value=summary)
        return ranges

    # At most 4 ranges at once per run: parallel-safe, but one node serves them all.
    @task(map_index_template="{{ block_range['start'] }}..{{ block_range['stop'] }}", max_active_tis_per_dagrun=4)
    @classified(SYSTEM)
    def sync_range(block_range: dict) -> dict:
        from tributary.bitcoin import sync

        return sync.sync_range_step(block_range)

    @task(trigger_rule="none_failed")
    @classified(SYSTEM)
    def finalize(plan: dict) -> dict:
        from tributary.bitcoin import sync

        return sync.finalize_step(plan)

    @task
    @classified(SYSTEM)
    def verify_continuity(plan: dict) -> dict:
        from tributary.bitcoin import sync

        return sync.continuity_step(plan)

    @task
    @classified(SYSTEM)
    def verify_tip_lag(plan: dict, finalized: dict) -> dict:
        from tributary.bitcoin import sync

        return sync.tip_lag_step(plan, finalized)

    @task(outlets=[btc_blocks_asset()])
    @classified(SYSTEM)
    def publish(plan: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from tributary.bitcoin import sync

        extra = sync.publish_step(plan)
        if extra is None:
            raise AirflowSkipException("no new blocks and no reorg: no btc_blocks event")
        get_current_context()["outlet_events"][btc_blocks_asset()].extra = extra
        print(f"btc_blocks event: {extra}")
        return extra

    ranges = plan_ranges(check_reorg())
    plan = XComArg(ranges.operator, key="plan")
    synced = sync_range.expand(block_range=ranges)
    finalized = finalize(plan)
    synced >> finalized
    continuity = verify_continuity(plan)
    finalized >> continuity
    lag = verify_tip_lag(plan, finalized)
    [continuity, lag] >> publish(plan)


bitcoin_chain_sync()
