-- EVM chains: contract deployments, the transaction ledger, nonce allocation, indexed event logs.
-- Addresses are stored checksummed (EIP-55) as sent by the hook; hashes as 0x-prefixed lowercase hex.

-- One row per contract build deployed on a chain: deploying the same artifact again is a no-op.
CREATE TABLE IF NOT EXISTS evm_deployments (
    name             text        NOT NULL,
    chain_id         bigint      NOT NULL,
    artifact_sha256  text        NOT NULL,
    address          text        NOT NULL,
    tx_hash          text,
    deployer         text,
    block_number     bigint,
    constructor_args jsonb       NOT NULL DEFAULT '[]'::jsonb,
    deployed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, chain_id, artifact_sha256)
);

-- Every state-changing transaction, keyed by its idempotency key: a retried task finds its row and
-- never signs a second transaction for the same key. raw_tx is the signed transaction (public data
-- once broadcast, no secret): after a reorg or a drop the same bytes are broadcast again.
CREATE TABLE IF NOT EXISTS evm_transactions (
    chain_id                 bigint      NOT NULL,
    idempotency_key          text        NOT NULL,
    request_sha256           text        NOT NULL,
    kind                     text        NOT NULL CHECK (kind IN ('call', 'deploy', 'transfer')),
    contract_name            text,
    function_name            text,
    args                     jsonb       NOT NULL DEFAULT '[]'::jsonb,
    from_address             text        NOT NULL,
    to_address               text,
    value_wei                numeric(78, 0) NOT NULL DEFAULT 0,
    nonce                    bigint,
    gas_limit                bigint,
    max_fee_per_gas          numeric(78, 0),
    max_priority_fee_per_gas numeric(78, 0),
    tx_hash                  text,
    raw_tx                   text,
    status                   text        NOT NULL
        CHECK (status IN ('preparing', 'signed', 'sent', 'mined', 'confirmed', 'failed', 'rejected')),
    block_number             bigint,
    block_hash               text,
    gas_used                 bigint,
    effective_gas_price      numeric(78, 0),
    receipt_status           smallint,
    contract_address         text,
    confirmations            integer,
    reorgs                   integer     NOT NULL DEFAULT 0,
    broadcasts               integer     NOT NULL DEFAULT 0,
    error                    text,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, idempotency_key)
);
CREATE UNIQUE INDEX IF NOT EXISTS evm_transactions_tx_hash ON evm_transactions (tx_hash) WHERE tx_hash IS NOT NULL;
CREATE INDEX IF NOT EXISTS evm_transactions_sender_nonce ON evm_transactions (chain_id, from_address, nonce);
CREATE INDEX IF NOT EXISTS evm_transactions_status ON evm_transactions (status) WHERE status IN ('signed', 'sent', 'mined');

-- Nonce allocation per sender: the row is locked (SELECT ... FOR UPDATE) while a nonce is chosen.
CREATE TABLE IF NOT EXISTS evm_nonces (
    chain_id   bigint      NOT NULL,
    address    text        NOT NULL,
    next_nonce bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, address)
);

-- Nonces handed out but not yet accepted by the node ('leased'), or given back because their send
-- failed before reaching the node ('released': the next allocation reuses the lowest one).
CREATE TABLE IF NOT EXISTS evm_nonce_leases (
    chain_id  bigint      NOT NULL,
    address   text        NOT NULL,
    nonce     bigint      NOT NULL,
    state     text        NOT NULL CHECK (state IN ('leased', 'released')),
    holder    text,
    leased_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, address, nonce)
);

-- Event logs, one row per log of the canonical chain, per indexer (a named address/topic filter).
CREATE TABLE IF NOT EXISTS evm_event_logs (
    indexer      text        NOT NULL,
    chain_id     bigint      NOT NULL,
    block_number bigint      NOT NULL,
    log_index    integer     NOT NULL,
    block_hash   text        NOT NULL,
    tx_hash      text        NOT NULL,
    tx_index     integer     NOT NULL,
    address      text        NOT NULL,
    topic0       text,
    topics       text[]      NOT NULL,
    data         text        NOT NULL,
    event_name   text,
    args         jsonb,
    indexed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (indexer, chain_id, block_number, log_index)
);
CREATE INDEX IF NOT EXISTS evm_event_logs_event ON evm_event_logs (chain_id, address, event_name, block_number);
CREATE INDEX IF NOT EXISTS evm_event_logs_tx ON evm_event_logs (tx_hash);

-- Indexer progress: the last block fully indexed and its hash.
CREATE TABLE IF NOT EXISTS evm_index_checkpoints (
    indexer      text        NOT NULL,
    chain_id     bigint      NOT NULL,
    block_number bigint      NOT NULL,
    block_hash   text        NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (indexer, chain_id)
);

-- Hashes of the most recent indexed blocks (the reorg window), re-checked at every run.
CREATE TABLE IF NOT EXISTS evm_index_blocks (
    indexer      text   NOT NULL,
    chain_id     bigint NOT NULL,
    block_number bigint NOT NULL,
    block_hash   text   NOT NULL,
    PRIMARY KEY (indexer, chain_id, block_number)
);

-- Reorgs the indexer rolled back (audit trail).
CREATE TABLE IF NOT EXISTS evm_index_reorgs (
    id           bigserial   PRIMARY KEY,
    indexer      text        NOT NULL,
    chain_id     bigint      NOT NULL,
    fork_block   bigint      NOT NULL,
    old_tip      bigint      NOT NULL,
    logs_removed integer     NOT NULL,
    detected_at  timestamptz NOT NULL DEFAULT now()
);
