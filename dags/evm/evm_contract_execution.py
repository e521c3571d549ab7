"""
### EVM: contract execution

Runs one action on a compiled contract (`include/contracts/build/<Name>.json`) through the
`tributary_evm` Connection (JSON-RPC URL, private key in the password, `chain_id` in extra). Meant to
be triggered from the UI or the REST API; see docs/evm.md for an example call.

* `action=call` and a **view/pure** function: an `eth_call`; the decoded `result` is returned.
* `action=call` and any other function: a **transaction**, signed locally, nonce-managed (safe with
  many concurrent runs on one account), sent once per `idempotency_key` (default: the run and task),
  then the receipt is awaited `confirmations` blocks deep by a **deferrable trigger**; a receipt lost
  in a reorg sends the transaction back to pending and the same signed bytes are broadcast again.
* `action=deploy`: deploys the build with constructor `args`, recorded in `evm_deployments`;
  deploying the same build again on the same chain is a no-op that returns the address.

One task, `execute` (`EvmContractOperator`), takes the steps of every contract execution (as
`stacks_contract_execution` does in three tasks): validate the request against the ABI, execute it,
then await the receipt deferred in the triggerer. `args` are checked against the ABI before anything
is signed (integers may be strings; bytes and addresses are 0x hex). Failures are classified: node
unreachable -> transient (retried with backoff); bad args, revert, insufficient funds, wrong chain ->
permanent with the reason.
The result (XCom `return_value` of `execute`, readable via REST) holds the result or the receipt
summary and decoded events; never the key.

* **Params**: `contract`, `function`, `args`, `value_wei`, `action`, `address`, `idempotency_key`,
  `confirmations`, `conn_id`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag

from tributary.core.defaults import default_args
from tributary.core.params import conn_id_param
from tributary.evm import SYSTEM
from tributary.evm.operators import EvmContractOperator


@dag(
    dag_id="evm_contract_execution",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=16,
    tags=["evm", "chain", "contracts"],
    doc_md=__doc__,
    render_template_as_native_obj=True,
    default_args=default_args(SYSTEM, retries=3, retry_delay=timedelta(seconds=10),
                              max_retry_delay=timedelta(minutes=5), execution_timeout=timedelta(minutes=30)),
    params={
        "contract": Param("Registry", type="string", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$",
                          description="Compiled contract name (include/contracts/build/<Name>.json)."),
        "function": Param("increment", type=["null", "string"], pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$",
                          description="Function to call (action=call)."),
        "args": Param([], type="array", description="Arguments, in ABI order (JSON: numbers or strings)."),
        "value_wei": Param("0", type=["string", "integer"], pattern=r"^[0-9]{1,78}$",
                           description="Ether sent with the call, in wei (payable functions only)."),
        "action": Param("call", type="string", enum=["call", "deploy"]),
        "address": Param(None, type=["null", "string"], pattern=r"^0x[0-9a-fA-F]{40}$",
                         description="Contract address. Null: the newest registered deployment."),
        "idempotency_key": Param(None, type=["null", "string"], minLength=1, maxLength=200,
                                 description="Same key = same transaction, never sent twice. Null: per run."),
        "confirmations": Param(None, type=["null", "integer"], minimum=1, maximum=100,
                               description="Blocks on top of the receipt. Null: the Connection's setting."),
        "conn_id": conn_id_param("tributary_evm",
                         description="Connection of the EVM node."),
    },
)
def evm_contract_execution():
    EvmContractOperator(
        task_id="execute",
        contract="{{ params.contract }}",
        function="{{ params.function }}",
        args="{{ params.args }}",
        value_wei="{{ params.value_wei }}",
        action="{{ params.action }}",
        address="{{ params.address }}",
        idempotency_key="{{ params.idempotency_key }}",
        confirmations="{{ params.confirmations }}",
        conn_id="{{ params.conn_id }}",
    )


evm_contract_execution()
