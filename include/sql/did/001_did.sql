-- DIDs held by the project, their keys (private part encrypted with AES-256-GCM under the key-encryption
-- key of the tributary_did Connection), the status lists of issued credentials, and verification verdicts.

CREATE TABLE IF NOT EXISTS did_registry (
    did          text PRIMARY KEY,
    method       text NOT NULL,
    document     jsonb NOT NULL,
    version      bigint NOT NULL DEFAULT 0,         -- did:dht: the BEP44 seq last published
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS did_keys (
    did              text NOT NULL,
    key_id           text NOT NULL,                 -- JWK thumbprint (RFC 7638)
    public_jwk       jsonb NOT NULL,
    private_jwk_enc  bytea NOT NULL,                -- 12-byte nonce || AES-GCM(ciphertext || tag), AAD = did|key_id
    status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retiring', 'retired')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    retire_after     timestamptz,                   -- retiring: still verifies until then
    PRIMARY KEY (did, key_id)
);

CREATE TABLE IF NOT EXISTS vc_status_lists (
    list_id      text PRIMARY KEY,
    issuer       text NOT NULL,
    purpose      text NOT NULL DEFAULT 'revocation',
    url          text NOT NULL,                     -- where the status list credential is served
    size_bits    integer NOT NULL,
    bits         bytea NOT NULL,
    next_index   integer NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS vc_verifications (
    run_id        text PRIMARY KEY,                 -- the DAG run (re-runs of a task upsert the same row)
    credential_sha256 text NOT NULL,
    valid         boolean NOT NULL,
    reasons       jsonb NOT NULL,
    issuer        text,
    subject       text,
    types         jsonb NOT NULL DEFAULT '[]',
    checked       jsonb NOT NULL DEFAULT '[]',
    verified_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS vc_verifications_issuer_idx ON vc_verifications (issuer, verified_at);
