-- Exactly-once sends under faults (issue 11 §1).
-- generation: the lease token of the attempt that owns a 'preparing' row. Taking a stale row over
-- (or re-signing after the nonce was proven used by another transaction) increments it, and every
-- later write of an attempt is conditioned on the generation it claimed: a superseded attempt
-- stops before it signs or sends.
ALTER TABLE evm_transactions ADD COLUMN IF NOT EXISTS generation bigint NOT NULL DEFAULT 1;
-- Hashes this key signed before whose nonce was proven used by another transaction (audit trail:
-- none of them can ever be mined).
ALTER TABLE evm_transactions ADD COLUMN IF NOT EXISTS superseded_tx_hashes text[] NOT NULL DEFAULT '{}';
