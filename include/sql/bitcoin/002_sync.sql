-- Chain sync (tributary.bitcoin.sync, DAG bitcoin_chain_sync): the reorg log, and what the fee fill
-- after parallel ranges needs.

-- Every reorg the sync detected: rolled back (orphans deleted, checkpoint moved back) or refused
-- because it was deeper than the limit (nothing deleted; a SecurityError alerted someone).
CREATE TABLE IF NOT EXISTS btc_reorgs (
    id              bigserial   PRIMARY KEY,
    chain           text        NOT NULL,
    conn_id         text        NOT NULL,
    detected_at     timestamptz NOT NULL DEFAULT now(),
    fork_height     integer     NOT NULL,   -- last height the stored chain and the node agree on
    depth           integer     NOT NULL,   -- old_tip_height - fork_height
    exact           boolean     NOT NULL DEFAULT true,  -- false: the fork is at or below fork_height
    old_tip_height  integer     NOT NULL,
    old_tip         text        NOT NULL,
    new_tip_height  integer     NOT NULL,
    new_tip         text        NOT NULL,
    max_depth       integer     NOT NULL,
    action          text        NOT NULL CHECK (action IN ('rolled_back', 'refused')),
    removed         jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- rows deleted per table
    dag_run_id      text
);
CREATE INDEX IF NOT EXISTS btc_reorgs_chain_detected ON btc_reorgs (chain, detected_at);

-- Inputs whose spent output was not stored yet when they were loaded (parallel ranges): only those
-- rows are indexed, so filling them in later costs what is missing, not the table size.
CREATE INDEX IF NOT EXISTS btc_inputs_value_missing ON btc_inputs (chain, prev_txid, prev_vout)
    WHERE value IS NULL AND prev_txid IS NOT NULL;
