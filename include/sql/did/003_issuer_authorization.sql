-- Issuer authorization (issue 11 §2): only registered issuers sign credentials.
-- did_issuers becomes the registry of issuers, one row per DID: the deployment's own issuer of a
-- tributary_did Connection (conn_id set, one per Connection) and issuers registered by an operator
-- (conn_id null). Keys carry a role: the keys of a request's subject DID are 'subject' and are never
-- accepted as issuer keys, whatever is registered.

ALTER TABLE did_issuers RENAME COLUMN created_at TO registered_at;
ALTER TABLE did_issuers ADD COLUMN note text;
ALTER TABLE did_issuers DROP CONSTRAINT did_issuers_pkey;
ALTER TABLE did_issuers ALTER COLUMN conn_id DROP NOT NULL;
ALTER TABLE did_issuers ADD PRIMARY KEY (did);
CREATE UNIQUE INDEX did_issuers_conn_id_key ON did_issuers (conn_id) WHERE conn_id IS NOT NULL;
UPDATE did_issuers SET note = 'deployment issuer of Connection ' || conn_id WHERE note IS NULL;

ALTER TABLE did_keys ADD COLUMN role text NOT NULL DEFAULT 'general'
    CHECK (role IN ('general', 'subject', 'issuer'));
UPDATE did_keys SET role = 'subject' WHERE did IN (SELECT subject_did FROM did_issuance_requests);
UPDATE did_keys SET role = 'issuer' WHERE role = 'general' AND did IN (SELECT did FROM did_issuers);
