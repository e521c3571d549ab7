-- Ledger of Stacks contract executions requested through stacks_contract_execution, one row per
-- request id: the signed transaction is stored before it is broadcast, so a retried task re-sends the
-- same bytes (same txid) instead of signing a second transaction.
CREATE TABLE IF NOT EXISTS stacks_transactions (
    request_id     text PRIMARY KEY,
    action         text NOT NULL CHECK (action IN ('deploy', 'call')),
    network        text NOT NULL,
    sender         text NOT NULL,
    contract_id    text NOT NULL,
    function_name  text,
    args           jsonb NOT NULL DEFAULT '[]'::jsonb,
    nonce          bigint NOT NULL,
    fee            bigint NOT NULL,
    txid           text NOT NULL UNIQUE,
    raw_tx         bytea NOT NULL,
    -- signed -> broadcast -> confirmed | failed (in a block, aborted) ; rejected (the node refused it)
    status         text NOT NULL CHECK (status IN ('signed', 'broadcast', 'confirmed', 'failed', 'rejected')),
    tx_status      text,
    result         jsonb,
    result_repr    text,
    block_height   bigint,
    index_block_hash text,
    error          text,
    dag_run_id     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS stacks_transactions_sender_nonce ON stacks_transactions (sender, nonce);
CREATE INDEX IF NOT EXISTS stacks_transactions_status ON stacks_transactions (status) WHERE status IN ('signed', 'broadcast');
