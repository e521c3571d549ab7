"""The Asset of the indexed EVM event logs (``tributary://warehouse/public/evm_event_logs``).

``evm_event_indexing`` emits an event after each run that stored logs or rolled back a reorg; its
``extra``: ``indexer``, ``chain_id``, ``from_block``, ``to_block``, ``logs`` and ``reorg`` (null or
``{"fork_block", "old_tip", "depth", "logs_removed"}``: rows above ``fork_block`` changed).
"""

from __future__ import annotations

from airflow.sdk import Asset

EVM_EVENT_LOGS_URI = "tributary://warehouse/public/evm_event_logs"


def evm_event_logs_asset() -> Asset:
    return Asset(name="evm_event_logs", uri=EVM_EVENT_LOGS_URI)
