-- did_issuance: the deployment's issuer DID per tributary_did Connection, and one row per issuance request
-- (idempotency key request_id). Claims are not stored here: only a fingerprint of the request's params.

CREATE TABLE IF NOT EXISTS did_issuers (
    conn_id      text PRIMARY KEY,                  -- the tributary_did Connection that publishes it
    did          text NOT NULL,                     -- keys in did_keys, document in did_registry
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS did_issuance_requests (
    request_id              text PRIMARY KEY,
    params_sha256           text NOT NULL,          -- same request_id with other params: refused
    method                  text NOT NULL,
    subject_did             text NOT NULL,          -- keys in did_keys (encrypted), document in did_registry
    issuer                  text,
    credential_id           text NOT NULL,          -- urn:uuid, fixed when the request is first seen
    credential_sha256       text,                   -- of the VC-JWT stored in the DWN
    status_list_id          text,                   -- with_status: the revocation entry
    status_index            integer,
    dwn_tenant              text,
    did_document_record_id  text,
    credential_record_id    text,
    status                  text NOT NULL DEFAULT 'created'
                            CHECK (status IN ('created', 'published', 'issued', 'stored', 'completed')),
    created_at              timestamptz NOT NULL DEFAULT now(),
    published_at            timestamptz,
    issued_at               timestamptz,
    stored_at               timestamptz,
    completed_at            timestamptz
);

CREATE INDEX IF NOT EXISTS did_issuance_requests_subject_idx ON did_issuance_requests (subject_did);
