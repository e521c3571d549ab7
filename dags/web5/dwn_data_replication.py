"""
### DWN data replication

Copies one tenant's records of one protocol from a **source** Decentralized Web Node to a **target**
(new, updated and deleted records), incrementally and resumably.

1. `check_peers`: both Connections answer (`GET /info`) and sign as the same tenant DID.
2. `replicate`: reads the source's event log (`MessagesQuery` on the protocol) after the stored
   checkpoint, fetches each message with its data (`MessagesRead`), verifies its JWS against the
   author's did:key and its data against `dataCid`, and sends the original signed message to the target.
   Newest-wins on conflicts (later `messageTimestamp`, then the larger CID); deletes replicate as the
   original `RecordsDelete`. The checkpoint (`dwn_replication_state`) is written after every batch, so a
   failed run resumes without duplicates; counts and lag per run go to `dwn_replication_runs`.
   Messages that fail verification are never written and fail the run (security class).
3. `verify_convergence` (when `verify`): the target's records of the protocol equal the source's.

* **Params**: `source_conn_id`, `target_conn_id` (`tributary_dwn` Connections), `tenant` (optional check),
  `protocol`, `batch_size`, `max_batches` (null: until caught up), `verify`.
  See docs/web5-dwn.md (REST example included).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from tributary.core.defaults import default_args
from tributary.core.failfast import classified
from tributary.core.params import conn_id_param
from tributary.dwn import SYSTEM


@dag(
    dag_id="dwn_data_replication",
    schedule="*/15 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # one writer per checkpoint
    tags=["web5", "dwn", "replication"],
    doc_md=__doc__,
    default_args=default_args(SYSTEM, retries=3, retry_delay=timedelta(seconds=10),
                              max_retry_delay=timedelta(minutes=5), execution_timeout=timedelta(minutes=30)),
    params={
        "source_conn_id": conn_id_param("tributary_dwn_source",
                                        description="tributary_dwn Connection of the DWN to copy from."),
        "target_conn_id": conn_id_param("tributary_dwn_target",
                                        description="tributary_dwn Connection of the DWN to copy to."),
        "tenant": Param(None, type=["null", "string"], pattern=r"^did:[a-z0-9]+:.+$",
                        description="Tenant DID; both Connections must sign as it (default: theirs)."),
        "protocol": Param("https://tributary.example/protocols/notes", type="string", minLength=1,
                          description="Protocol URI whose records are replicated."),
        "batch_size": Param(100, type="integer", minimum=1, maximum=1000,
                            description="Messages per batch; the checkpoint is written after each."),
        "max_batches": Param(None, type=["null", "integer"], minimum=1,
                             description="Stop after this many batches (null: until caught up)."),
        "verify": Param(True, type="boolean",
                        description="Compare the target's records with the source's at the end."),
    },
)
def dwn_data_replication():
    @task
    @classified(SYSTEM)
    def check_peers(params: dict | None = None) -> dict:
        from tributary.dwn.replication import check_peers as run

        return run(params["source_conn_id"], params["target_conn_id"], params.get("tenant"))

    @task
    @classified(SYSTEM)
    def replicate(peers: dict, params: dict | None = None) -> dict:
        from tributary.dwn.replication import run_replication

        return run_replication(params["source_conn_id"], params["target_conn_id"], protocol=params["protocol"],
                               batch_size=params["batch_size"], max_batches=params.get("max_batches"),
                               run_id=get_current_context()["run_id"])

    @task
    @classified(SYSTEM)
    def verify_convergence(counts: dict, params: dict | None = None) -> dict:
        from tributary.dwn.replication import verify_convergence as run

        if not params.get("verify") or params.get("max_batches"):
            return {"verified": False, **counts}
        return {"verified": True, **counts, **run(params["source_conn_id"], params["target_conn_id"],
                                                  params["protocol"])}

    verify_convergence(replicate(check_peers()))


dwn_data_replication()
