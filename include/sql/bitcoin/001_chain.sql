-- Bitcoin chain data: blocks and everything parsed from them (tributary.bitcoin.parse / .store).
--
-- `chain` names the data set: Bitcoin Core's chain name (main, test, testnet4, signet, regtest) or
-- a label of the loader's choosing when two peers of one network are stored apart (every regtest
-- node starts from the same genesis block). Hashes and txids are hex in display order, amounts are
-- satoshis. Rows belong to their block: deleting a block (an orphan after a reorg) removes its
-- transactions, inputs and outputs through ON DELETE CASCADE. One block per height and chain: a
-- different block at a stored height must come after rolling back with store.delete_from_height.

CREATE TABLE IF NOT EXISTS btc_blocks (
    chain          text        NOT NULL,
    hash           text        NOT NULL,
    height         integer,                -- NULL when loaded from a file without a known height
    prev_hash      text        NOT NULL,
    merkle_root    text        NOT NULL,
    time           timestamptz NOT NULL,   -- header timestamp
    version        integer     NOT NULL,
    bits           bigint      NOT NULL,
    nonce          bigint      NOT NULL,
    size           integer     NOT NULL,
    stripped_size  integer     NOT NULL,
    weight         integer     NOT NULL,
    tx_count       integer     NOT NULL,
    loaded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, hash),
    CONSTRAINT btc_blocks_one_per_height UNIQUE (chain, height)
);
CREATE INDEX IF NOT EXISTS btc_blocks_prev ON btc_blocks (chain, prev_hash);

CREATE TABLE IF NOT EXISTS btc_transactions (
    chain          text     NOT NULL,
    block_hash     text     NOT NULL,
    txid           text     NOT NULL,
    wtxid          text     NOT NULL,
    idx            integer  NOT NULL,      -- position in the block
    is_coinbase    boolean  NOT NULL,
    has_witness    boolean  NOT NULL,
    version        integer  NOT NULL,
    locktime       bigint   NOT NULL,
    size           integer  NOT NULL,
    vsize          integer  NOT NULL,
    weight         integer  NOT NULL,
    input_count    integer  NOT NULL,
    output_count   integer  NOT NULL,
    output_value   bigint   NOT NULL,
    fee            bigint,                 -- NULL for coinbases and when a spent output's value is unknown
    -- (block, txid): a txid can appear in two blocks (BIP30 duplicate coinbases; a reorg in progress).
    PRIMARY KEY (chain, block_hash, txid),
    FOREIGN KEY (chain, block_hash) REFERENCES btc_blocks (chain, hash) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS btc_transactions_txid ON btc_transactions (txid);

CREATE TABLE IF NOT EXISTS btc_inputs (
    chain          text     NOT NULL,
    block_hash     text     NOT NULL,
    txid           text     NOT NULL,
    idx            integer  NOT NULL,
    prev_txid      text,                   -- NULL for the coinbase input
    prev_vout      bigint,
    script_sig     text     NOT NULL,      -- hex
    witness        text[],                 -- hex stack items; NULL when the transaction has no witness
    sequence       bigint   NOT NULL,
    value          bigint,                 -- value of the spent output, when known
    PRIMARY KEY (chain, block_hash, txid, idx),
    FOREIGN KEY (chain, block_hash) REFERENCES btc_blocks (chain, hash) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS btc_inputs_prevout ON btc_inputs (prev_txid, prev_vout) WHERE prev_txid IS NOT NULL;

CREATE TABLE IF NOT EXISTS btc_outputs (
    chain          text     NOT NULL,
    block_hash     text     NOT NULL,
    txid           text     NOT NULL,
    idx            integer  NOT NULL,
    value          bigint   NOT NULL,
    script_pubkey  text     NOT NULL,      -- hex
    script_type    text     NOT NULL,      -- Core's names: p2pkh, p2sh, p2wpkh, p2wsh, p2tr, nulldata, ...
    address        text,                   -- for the chain's network; NULL when the script has none
    PRIMARY KEY (chain, block_hash, txid, idx),
    FOREIGN KEY (chain, block_hash) REFERENCES btc_blocks (chain, hash) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS btc_outputs_outpoint ON btc_outputs (txid, idx);
CREATE INDEX IF NOT EXISTS btc_outputs_address ON btc_outputs (address) WHERE address IS NOT NULL;

-- How far a sync got, per chain and Connection; rolled back with the blocks by delete_from_height.
CREATE TABLE IF NOT EXISTS btc_sync_checkpoint (
    chain          text        NOT NULL,
    conn_id        text        NOT NULL,
    height         integer     NOT NULL,
    hash           text        NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, conn_id)
);
