-- The deployment this warehouse database belongs to: one row, written by the run command at the
-- first start and compared with <home>/tributary/deployment.json at every start, so a second
-- deployment (another home, or a re-created one) never runs on the first one's chain, keys and
-- ledgers (tributary.cli.deployment).
CREATE TABLE IF NOT EXISTS tributary_deployment (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    deployment_id  text NOT NULL,
    home           text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
