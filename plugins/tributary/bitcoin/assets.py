"""The Airflow Assets of the Bitcoin warehouse tables, for DAGs downstream of the chain sync and block watch.

``btc_blocks`` (``tributary://warehouse/public/btc_blocks``) gets an event whenever
``bitcoin_chain_sync`` stored new blocks or rolled back a reorg. Its ``extra``:

* ``chain``        the stored chain (Core's chain name, or the run's ``chain_label``)
* ``from_height``  the lowest height that changed (after a reorg: fork height + 1)
* ``to_height``    the highest height stored by the run
* ``tip_hash``     the block hash at ``to_height``
* ``blocks``       blocks loaded by the run
* ``reorg``        null, or ``{"fork_height", "depth", "old_tip", "new_tip"}``: rows above
  ``fork_height`` derived downstream are stale and must be recomputed.

``btc_block_stats`` (``tributary://warehouse/public/btc_block_stats``) gets an event whenever
``bitcoin_block_watch`` brought the per-block statistics up to a new tip (no ``extra``).
"""

from __future__ import annotations

from airflow.sdk import Asset

BTC_BLOCKS_URI = "tributary://warehouse/public/btc_blocks"
BTC_BLOCK_STATS_URI = "tributary://warehouse/public/btc_block_stats"


def btc_blocks_asset() -> Asset:
    return Asset(name="btc_blocks", uri=BTC_BLOCKS_URI)


def btc_block_stats_asset() -> Asset:
    return Asset(name="btc_block_stats", uri=BTC_BLOCK_STATS_URI)
