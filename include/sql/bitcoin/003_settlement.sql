-- Bitcoin settlements (tributary.bitcoin.settlement, DAG bitcoin_settlement): one row per settlement,
-- paid by ONE wallet transaction, plus an append-only ledger of everything that happened to it.
--
-- Other systems may INSERT rows with status 'pending' (id, payouts, optionally fee_policy,
-- confirmations_required, bump_after_minutes); the DAG picks them up. `payouts` is what was asked
-- ([{"address", "amount_btc"}]); once validated it is rewritten in normalised form
-- ([{"address", "amount_btc", "amount_sats"}]) and `payouts_sha256` fingerprints it: a settlement id
-- is bound to one set of payouts forever (a re-trigger with other payouts is refused).
-- The signed transaction (`raw_tx`, `txid`) is stored BEFORE it is broadcast, so a retry re-broadcasts
-- the same bytes and can never pay twice. Amounts are satoshis.

CREATE TABLE IF NOT EXISTS btc_settlements (
    id                     text        PRIMARY KEY,
    status                 text        NOT NULL DEFAULT 'pending'
                           CHECK (status IN ('pending', 'signed', 'broadcast', 'confirmed', 'failed')),
    network                text,                      -- Core chain name, set when validated
    wallet                 text,                      -- the wallet that funded and signed
    payouts                jsonb       NOT NULL,
    payouts_sha256         text,                      -- NULL until validated
    total_sats             bigint,
    fee_policy             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    confirmations_required integer     NOT NULL DEFAULT 1 CHECK (confirmations_required >= 1),
    bump_after_minutes     double precision,          -- NULL or 0: never fee-bump
    txid                   text,                      -- the transaction the settlement currently waits for
    raw_tx                 text,                      -- its signed serialisation (hex)
    replaced_txids         text[]      NOT NULL DEFAULT '{}',  -- earlier txids, replaced by RBF
    fee_sats               bigint,
    confirmations          integer     NOT NULL DEFAULT 0,
    block_hash             text,
    block_height           integer,
    source                 text        NOT NULL DEFAULT 'table',  -- rest | table
    dag_run_id             text,                      -- the last run that worked on it
    last_error             text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    signed_at              timestamptz,
    broadcast_at           timestamptz,
    last_bump_at           timestamptz,
    confirmed_at           timestamptz
);
CREATE INDEX IF NOT EXISTS btc_settlements_pending ON btc_settlements (created_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS btc_settlements_txid ON btc_settlements (txid);

CREATE TABLE IF NOT EXISTS btc_settlement_events (
    id            bigserial   PRIMARY KEY,
    settlement_id text        NOT NULL REFERENCES btc_settlements (id) ON DELETE CASCADE,
    event         text        NOT NULL,   -- registered, rejected, signed, broadcast, rebroadcast, bumped,
                                          -- replaced, confirmed, reorged, already_settled, failed, ...
    status        text,                   -- the settlement's status after the event
    txid          text,
    detail        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    dag_run_id    text,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS btc_settlement_events_settlement ON btc_settlement_events (settlement_id, id);
