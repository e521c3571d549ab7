"""
### Bitcoin settlement

Pays a list of payouts with **one** wallet transaction (PSBT flow: `walletcreatefundedpsbt` ->
`walletprocesspsbt` -> `finalizepsbt` -> `sendrawtransaction`) and waits, deferred, for
`confirmations` blocks. Never pays twice: the settlement id is bound to its payouts in the ledger
(`btc_settlements`, `btc_settlement_events`), and the signed transaction is stored before it is
broadcast, so retries and re-triggers re-broadcast the same bytes.

1. `claim`: with `payouts`, registers `settlement_id` (or matches it against the ledger: other
   payouts under a known id fail with *settlement id reused with different payouts*); without,
   picks up `settlement_id` or up to `max_settlements` **pending** rows inserted by other systems.
   Addresses (for the node's network) and amounts (positive, <= 8 decimals, not dust, <= 21M BTC)
   are validated before anything is signed; a bad payout is a data error naming the reason.
2. `settle.sign_and_broadcast` (one mapped group per settlement): fund, sign, store, broadcast.
3. `settle.wait_for_confirmations`: deferrable; after `bump_after_minutes` unconfirmed it
   fee-bumps with RBF (`bumpfee`, within `fee_policy.max_fee_sats`) and follows the new txid (and
   still accepts the old one if it wins); a reorg sends the settlement back to `broadcast` and it is
   confirmed again (the stored transaction is re-broadcast when it left the mempool).
4. `report`: summary per settlement (XCom `return_value` and `summary`); fails when one failed.

* **Params**: `settlement_id`, `payouts` [{address, amount_btc}], `fee_policy` {conf_target | fee_rate
  (sat/vB), max_fee_sats}, `confirmations`, `bump_after_minutes`, `poll_interval_seconds`,
  `max_settlements`. See docs/bitcoin-settlement.md (REST example included).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task, task_group

from tributary.bitcoin import SYSTEM
from tributary.bitcoin.operators import SettlementConfirmationOperator
from tributary.bitcoin.settlement import SETTLEMENT_ID_PATTERN
from tributary.core.defaults import default_args
from tributary.core.failfast import classified

# Amounts and addresses are checked by tributary.bitcoin.settlement (with the reason, in the ledger).
# The REST API refuses a malformed amount with a 400 before any run exists; the run itself re-checks
# every amount (also those of table rows): at most 8 decimals, not dust, not above 21M BTC.
AMOUNT = {"type": ["string", "number"], "pattern": r"^[0-9]{1,8}(\.[0-9]{1,8})?$", "exclusiveMinimum": 0}


@dag(
    dag_id="bitcoin_settlement",
    schedule="*/10 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=8,
    tags=["bitcoin", "settlement", "payments"],
    doc_md=__doc__,
    render_template_as_native_obj=True,
    default_args=default_args(SYSTEM, retries=3, retry_delay=timedelta(seconds=15),
                              max_retry_delay=timedelta(minutes=5), execution_timeout=timedelta(minutes=10)),
    params={
        "settlement_id": Param(None, type=["null", "string"], pattern=SETTLEMENT_ID_PATTERN,
                               description="Idempotency key: one id pays its payouts once, ever."),
        "payouts": Param([], type="array", maxItems=1000,
                         items={"type": "object", "required": ["address", "amount_btc"],
                                "additionalProperties": False,
                                "properties": {"address": {"type": "string", "maxLength": 200},
                                               "amount_btc": AMOUNT}},
                         description="[{address, amount_btc}] (amount as a string for exact decimals). "
                                     "Empty: pick up pending rows of btc_settlements."),
        "fee_policy": Param({"conf_target": 6, "max_fee_sats": 100000}, type="object", additionalProperties=False,
                            properties={"conf_target": {"type": ["null", "integer"], "minimum": 1, "maximum": 1008},
                                        "fee_rate": {"type": ["null", "number"], "minimum": 1, "maximum": 10000},
                                        "max_fee_sats": {"type": "integer", "minimum": 1}},
                            description="conf_target (blocks) OR fee_rate (sat/vB); max_fee_sats caps the fee, "
                                        "also after fee bumps."),
        "confirmations": Param(1, type="integer", minimum=1, maximum=100,
                               description="Blocks on top (incl. its own) before the settlement is confirmed."),
        "bump_after_minutes": Param(60, type=["null", "number"], minimum=0,
                                    description="RBF fee bump when still unconfirmed after this long (0/null: never)."),
        "poll_interval_seconds": Param(30, type="number", minimum=0.1, maximum=3600,
                                       description="How often the deferred wait polls the node."),
        "max_settlements": Param(50, type="integer", minimum=1, maximum=500,
                                 description="Pending rows picked up per run when no payouts are given."),
    },
)
def bitcoin_settlement():
    @task
    @classified(SYSTEM)
    def claim(params: dict | None = None) -> list[str]:
        from tributary.bitcoin.settlement import SettlementConfig
        from tributary.bitcoin.settlement import claim as claim_settlements
        from tributary.core.errors import classify

        context = get_current_context()
        ti = context["ti"]
        if params.get("settlement_id"):
            ti.xcom_push(key="settlement_ids", value=[params["settlement_id"]])
        try:
            ids, rejected = claim_settlements(params, run_id=context["run_id"], config=SettlementConfig())
        except Exception as exc:  # tell `report`, which runs anyway, why nothing was settled
            ti.xcom_push(key="claim_error", value={"error_class": str(classify(exc).error_class),
                                                   "message": f"{type(exc).__name__}: {exc}"[:2000]})
            raise
        ti.xcom_push(key="settlement_ids", value=ids + [r["settlement_id"] for r in rejected])
        ti.xcom_push(key="rejected", value=rejected)
        return ids

    @task_group
    def settle(settlement_id: str):
        @task
        @classified(SYSTEM)
        def sign_and_broadcast(settlement_id: str) -> dict:
            from tributary.bitcoin.settlement import SettlementConfig
            from tributary.bitcoin.settlement import sign_and_broadcast as run

            return run(settlement_id, run_id=get_current_context()["run_id"], config=SettlementConfig())

        broadcast = sign_and_broadcast(settlement_id)
        wait = SettlementConfirmationOperator(task_id="wait_for_confirmations", settlement_id=settlement_id,
                                              retries=3)
        broadcast >> wait

    @task(trigger_rule="all_done")
    @classified(SYSTEM)
    def report() -> list[dict]:
        from tributary.bitcoin.settlement import SettlementConfig, run_outcome, summaries

        ti = get_current_context()["ti"]
        rejected = ti.xcom_pull(task_ids="claim", key="rejected") or []
        result = summaries(ti.xcom_pull(task_ids="claim", key="settlement_ids") or [], SettlementConfig())
        ti.xcom_push(key="summary", value=result)  # readable over REST even when the run fails
        run_outcome(result, rejected, ti.xcom_pull(task_ids="claim", key="claim_error"))
        return result

    claimed = claim()
    settle.expand(settlement_id=claimed) >> report()


bitcoin_settlement()
