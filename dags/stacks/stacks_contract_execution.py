"""
### Stacks: contract execution

Deploys a Clarity contract, calls a public function in a signed transaction, or runs a read-only
function, on the node of the `tributary_stacks` Connection. Triggered from the UI or the REST API with
typed params; see docs/stacks.md.

1. `validate_request` checks the params; for `call` / `read` it reads the contract's interface from the
   node and checks the function's access and every argument's type (typed Clarity JSON such as
   `{"type": "uint", "value": "5"}`). Nothing is signed before this passes. For `deploy` the source is
   `include/contracts/<source_file>` (default `<contract>.clar`).
2. `execute`: a `read` returns the decoded value. A `call` / `deploy` takes the sender's nonce from
   `/v2/accounts`, builds and signs the SIP-005 transaction with the Connection's key, records it in
   `stacks_transactions` (keyed by `request_id`) **before** broadcasting it, then posts it to
   `/v2/transactions`. A retry or a second run with the same `request_id` re-sends the same signed
   bytes (same txid) or returns the recorded outcome: never a second transaction.
3. `await_confirmation` (`AwaitStacksTransactionOperator`, deferrable) checks `/v3/transaction/{txid}`
   once; while the transaction is not in a block (and `wait` is on) it defers to
   `StacksTransactionTrigger`, which polls in the triggerer without holding a worker slot. Then it
   stores the result in the ledger and returns it; a confirmed but aborted transaction
   (`abort_by_response`) fails the task.

The same three steps as `evm_contract_execution` (validate, execute, await in the triggerer).

Failures are classified: node unreachable or not mined in time -> transient (retried); invalid params,
unknown contract or function, argument type mismatch, node rejections (BadNonce, SignatureValidation,
...) and aborted transactions -> permanent (no retry).

* **Params**: `action` (read | call | deploy), `contract` (name deployed by the sender, or
  `ADDRESS.name`), `function`, `args`, `source_file`, `clarity_version`, `fee`, `post_condition_mode`,
  `wait`, `wait_timeout`, `request_id` (null: the run id), `conn_id`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from tributary.core.defaults import default_args
from tributary.core.failfast import classified
from tributary.core.params import conn_id_param
from tributary.stacks import SYSTEM
from tributary.stacks.operators import AwaitStacksTransactionOperator


@dag(
    dag_id="stacks_contract_execution",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["stacks", "clarity", "contracts"],
    doc_md=__doc__,
    default_args=default_args(SYSTEM, retries=3, retry_delay=timedelta(seconds=10),
                              max_retry_delay=timedelta(minutes=2), execution_timeout=timedelta(minutes=30)),
    params={
        "action": Param("read", type="string", enum=["read", "call", "deploy"],
                        description="read: read-only function; call: public function in a transaction; "
                                    "deploy: publish include/contracts/<source_file>."),
        "contract": Param("counter", type="string", pattern=r"^([A-Z0-9]{28,41}\.)?[a-zA-Z][a-zA-Z0-9_-]{0,127}$",
                          description="Contract name deployed by the Connection's sender, or ADDRESS.name."),
        "function": Param("get-count", type=["null", "string"], maxLength=128,
                          description="Function to call (read / call); ignored by deploy."),
        "args": Param([], type="array", items={"type": "object", "required": ["type"]},
                      description='Typed Clarity arguments, e.g. [{"type": "uint", "value": "5"}].'),
        "source_file": Param(None, type=["null", "string"], pattern=r"^[A-Za-z0-9_-]+\.clar$",
                             description="Deploy: file in include/contracts. Null: <contract>.clar."),
        "clarity_version": Param(None, type=["null", "integer"], minimum=1, maximum=4,
                                 description="Deploy: Clarity version. Null: the node's default for its epoch."),
        "fee": Param(None, type=["null", "integer"], minimum=0,
                     description="Fee in micro-STX. Null: the Connection's extra fee, else 10000."),
        "post_condition_mode": Param("deny", type="string", enum=["deny", "allow"],
                                     description="deny: the transaction may not move the sender's assets."),
        "wait": Param(True, type="boolean", description="Wait until the transaction is in a block."),
        "wait_timeout": Param(120, type="integer", minimum=1, maximum=3600,
                              description="Seconds to wait per try before the wait is retried."),
        "request_id": Param(None, type=["null", "string"], pattern=r"^[A-Za-z0-9_.:+-]{1,200}$",
                            description="Idempotency key. Null: this run's id."),
        "conn_id": conn_id_param("tributary_stacks",
                         description="Connection of the Stacks node and the signing key."),
    },
)
def stacks_contract_execution():
    @task
    @classified(SYSTEM)
    def validate_request(params: dict | None = None) -> dict:
        from tributary.stacks import execution
        from tributary.stacks.hook import StacksHook

        request = execution.ExecutionRequest.from_params(params)
        return execution.validate(request, StacksHook(request.conn_id),
                                  default_request_id=get_current_context()["run_id"])

    @task
    @classified(SYSTEM)
    def execute(plan: dict, params: dict | None = None) -> dict:
        from tributary.stacks import execution
        from tributary.stacks.hook import StacksHook

        request = execution.ExecutionRequest.from_params(params)
        return execution.execute(plan, request, StacksHook(request.conn_id),
                                 dag_run_id=get_current_context()["run_id"])

    AwaitStacksTransactionOperator(task_id="await_confirmation", outcome=execute(validate_request()))


stacks_contract_execution()
