"""
### Bitcoin: block watch

Waits for a new chain tip **without holding a worker slot**, then keeps per-block statistics in
`btc_block_stats`. See docs/bitcoin-watch.md.

1. `wait_for_new_tip` (`WaitForNewTipOperator`): the last seen tip is `last_tip` when given, else
   the highest active block of `btc_block_stats`. When the node is already past it the task returns
   at once; otherwise it **defers** to `NewTipTrigger`, which polls `getbestblockhash` every
   `poll_interval` seconds in the triggerer (transient RPC errors are polled again there).
   No new block within `wait_timeout` seconds: the task and the stats step are *skipped*.
2. `compute_block_stats`: for every block from the last stored one up to the node's tip (at most
   `max_blocks`), `getblock` verbosity 2 -> tx count, size, weight, inputs/outputs, total fee,
   min/avg/max fee rate and weight-weighted fee-rate percentiles (10/25/50/75/90, sat/vB), upserted
   by (chain, hash). After a reorg the stored blocks that left the active chain are kept with
   `in_active_chain = false`; one deeper than `max_reorg_depth` fails with a **security** alert.
   Emits the Asset `btc_block_stats`.

**Schedule `@continuous`, `max_active_runs=1`**: a run starts when the previous one ends, so one
run is always waiting for the next block (in the triggerer: a coroutine, not a worker). Runs
that fail back to back pause the DAG (`max_consecutive_failed_dag_runs`), so a permanent error
(bad credentials) cannot spin. The **triggerer must be running** (the project's run command
starts one). Manual / REST runs with a conf are queued behind the waiting run.

Failures are classified: node or database unreachable -> transient (retried with backoff);
bad conf or credentials -> permanent; malformed node answers -> data; too deep reorg -> security.

* **Params**: `wait_timeout`, `poll_interval`, `last_tip`, `max_blocks`, `max_reorg_depth`,
  `chain_label`, `conn_id`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from tributary.bitcoin import SYSTEM
from tributary.bitcoin.assets import btc_block_stats_asset
from tributary.bitcoin.operators import WaitForNewTipOperator
from tributary.core.defaults import default_args
from tributary.core.failfast import classified
from tributary.core.params import conn_id_param


@dag(
    dag_id="bitcoin_block_watch",
    schedule="@continuous",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=5,
    tags=["bitcoin", "blocks", "deferrable"],
    doc_md=__doc__,
    render_template_as_native_obj=True,
    default_args=default_args(SYSTEM, retries=3, retry_delay=timedelta(seconds=15),
                              max_retry_delay=timedelta(minutes=5), execution_timeout=timedelta(minutes=30)),
    params={
        "wait_timeout": Param(1800, type="integer", minimum=0, maximum=86_400,
                              description="Seconds to wait for a new block before the run skips."),
        "poll_interval": Param(15, type="number", minimum=0.1, maximum=3600,
                               description="Seconds between getbestblockhash polls in the triggerer."),
        "last_tip": Param(None, type=["null", "string"], pattern=r"^[0-9a-f]{64}$",
                          description="Wait for a tip other than this block hash. Null: the last stored one."),
        "max_blocks": Param(144, type="integer", minimum=1, maximum=10_000,
                            description="At most this many (newest) blocks get stats per run."),
        "max_reorg_depth": Param(100, type="integer", minimum=1, maximum=10_000,
                                 description="Deeper reorgs of the stored stats fail as a security error."),
        "chain_label": Param(None, type=["null", "string"], pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
                             description="Stored `chain` value. Null: the node's chain name (main, regtest...)."),
        "conn_id": conn_id_param("tributary_bitcoin",
                         description="Connection of the Bitcoin Core node."),
    },
)
def bitcoin_block_watch():
    new_tip = WaitForNewTipOperator(
        task_id="wait_for_new_tip",
        conn_id="{{ params.conn_id }}",
        last_tip="{{ params.last_tip }}",
        chain_label="{{ params.chain_label }}",
        poll_interval="{{ params.poll_interval }}",
        timeout="{{ params.wait_timeout }}",
    )

    @task(outlets=[btc_block_stats_asset()])
    @classified(SYSTEM)
    def compute_block_stats(tip: dict, params: dict | None = None) -> dict:
        from dataclasses import asdict

        from tributary.bitcoin.block_stats import update_block_stats

        print(f"new tip {tip['height']} {tip['hash']} (waited: {tip['waited']})")
        report = update_block_stats(params["conn_id"], chain_label=params["chain_label"],
                                    max_blocks=params["max_blocks"], max_reorg_depth=params["max_reorg_depth"])
        print(f"{len(report.computed)} block(s) computed, {len(report.orphaned)} orphaned,"
              f" tip {report.tip_height} {report.tip_hash}")
        return asdict(report)

    compute_block_stats(new_tip.output)


bitcoin_block_watch()
