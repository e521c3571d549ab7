-- Block statistics, mempool snapshots, fee estimates and watched transactions
-- (tributary.bitcoin.watch / .mempool; DAGs bitcoin_block_watch and bitcoin_mempool).
--
-- `chain` as in 001_chain.sql: the node's chain name or a label chosen by the caller. Amounts are
-- satoshis, fee rates sat/vB (fee / (weight / 4)). Percentile columns are weighted by transaction
-- weight (blocks) or vsize (mempool), as Bitcoin Core's getblockstats computes feerate_percentiles.

CREATE TABLE IF NOT EXISTS btc_block_stats (
    chain            text        NOT NULL,
    hash             text        NOT NULL,
    height           integer     NOT NULL,
    prev_hash        text,
    time             timestamptz NOT NULL,   -- header timestamp
    median_time      timestamptz,
    tx_count         integer     NOT NULL,   -- coinbase included
    size             integer     NOT NULL,
    stripped_size    integer,
    weight           integer     NOT NULL,
    input_count      integer     NOT NULL,   -- coinbase input excluded
    output_count     integer     NOT NULL,
    total_out        bigint      NOT NULL,   -- value of all outputs but the coinbase's
    total_fee        bigint,                 -- NULL when the node did not report every fee
    min_feerate      numeric(20, 3),
    max_feerate      numeric(20, 3),
    avg_feerate      numeric(20, 3),         -- total_fee / (weight of the non-coinbase txs / 4)
    feerate_p10      numeric(20, 3),
    feerate_p25      numeric(20, 3),
    feerate_p50      numeric(20, 3),
    feerate_p75      numeric(20, 3),
    feerate_p90      numeric(20, 3),
    in_active_chain  boolean     NOT NULL DEFAULT true,
    orphaned_at      timestamptz,            -- when a reorg took the block out of the active chain
    computed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, hash)
);
-- One active block per height; orphans keep their row (in_active_chain = false) for analysis.
CREATE UNIQUE INDEX IF NOT EXISTS btc_block_stats_active_height
    ON btc_block_stats (chain, height) WHERE in_active_chain;

CREATE TABLE IF NOT EXISTS btc_mempool_snapshots (
    chain            text        NOT NULL,
    snapshot_key     text        NOT NULL,   -- the DAG run id: a re-run replaces its snapshot
    taken_at         timestamptz NOT NULL,
    tip_height       integer,
    tip_hash         text,
    tx_count         integer     NOT NULL,
    vsize_total      bigint      NOT NULL,
    fee_total        bigint      NOT NULL,
    min_feerate      numeric(20, 3),
    max_feerate      numeric(20, 3),
    feerate_p10      numeric(20, 3),
    feerate_p25      numeric(20, 3),
    feerate_p50      numeric(20, 3),
    feerate_p75      numeric(20, 3),
    feerate_p90      numeric(20, 3),
    -- [{"min": sat/vB, "max": sat/vB | null, "count": n, "vsize": vB, "fee": sat}, ...], empty bins left out
    feerate_histogram jsonb      NOT NULL DEFAULT '[]'::jsonb,
    PRIMARY KEY (chain, snapshot_key)
);
CREATE INDEX IF NOT EXISTS btc_mempool_snapshots_time ON btc_mempool_snapshots (chain, taken_at);

CREATE TABLE IF NOT EXISTS btc_fee_estimates (
    chain            text        NOT NULL,
    snapshot_key     text        NOT NULL,
    conf_target      integer     NOT NULL,
    estimate_mode    text        NOT NULL,   -- conservative | economical
    estimated_at     timestamptz NOT NULL,
    feerate_sat_vb   numeric(20, 3),         -- NULL when the node has no estimate (see errors)
    blocks           integer,                -- the target the estimate is actually for
    errors           text,
    PRIMARY KEY (chain, snapshot_key, conf_target, estimate_mode)
);
CREATE INDEX IF NOT EXISTS btc_fee_estimates_time ON btc_fee_estimates (chain, conf_target, estimated_at);

CREATE TABLE IF NOT EXISTS btc_watched_txs (
    chain            text        NOT NULL,
    txid             text        NOT NULL,
    label            text,
    status           text        NOT NULL DEFAULT 'unseen'
                     CHECK (status IN ('unseen', 'mempool', 'confirmed', 'dropped', 'replaced')),
    first_seen       timestamptz,            -- first run that found it (mempool or chain)
    last_seen        timestamptz,            -- last run that found it
    seen_height      integer,                -- node tip when last found: where a spender search starts
    confirmations    integer     NOT NULL DEFAULT 0,
    block_hash       text,
    block_height     integer,
    replaced_by      text,                   -- the txid that spends one of its inputs instead
    inputs           text[],                 -- outpoints 'txid:vout' recorded when first seen
    fee              bigint,
    vsize            integer,
    added_at         timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, txid)
);
CREATE INDEX IF NOT EXISTS btc_watched_txs_status ON btc_watched_txs (chain, status);
