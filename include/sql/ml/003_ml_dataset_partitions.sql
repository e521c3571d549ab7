-- The pipeline tables become PARTITION BY LIST (ds): the store step then loads a date into a fresh
-- table, builds its primary key in one sort and swaps it in (see ml/pipeline/storage.py), instead
-- of upserting every row into one large index in random key order.
-- tributary_partition_by_ds(table) converts a plain table created by an earlier migration (keeping
-- its rows, one partition per stored date); it does nothing when the table is already partitioned
-- or does not exist, so later pipeline migrations can call it too.

CREATE OR REPLACE FUNCTION tributary_partition_by_ds(target text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    kind "char";
    legacy text := target || '_unpartitioned';
    day date;
    pkey text;
BEGIN
    SELECT relkind INTO kind FROM pg_class WHERE oid = to_regclass(target);
    IF kind IS NULL OR kind = 'p' THEN
        RETURN;
    END IF;
    EXECUTE format('ALTER TABLE %I RENAME TO %I', target, legacy);
    -- Free the primary key's name (<table>_pkey) for the new table's.
    SELECT conname INTO pkey FROM pg_constraint WHERE conrelid = to_regclass(legacy) AND contype = 'p';
    IF pkey IS NOT NULL THEN
        EXECUTE format('ALTER TABLE %I RENAME CONSTRAINT %I TO %I', legacy, pkey, legacy || '_pkey');
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS, PRIMARY KEY (ds, record_key))'
                   ' PARTITION BY LIST (ds)', target, legacy);
    FOR day IN EXECUTE format('SELECT DISTINCT ds FROM %I ORDER BY ds', legacy) LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES IN (%L)',
                       target || '_p' || to_char(day, 'YYYYMMDD'), target, day);
    END LOOP;
    EXECUTE format('INSERT INTO %I SELECT * FROM %I', target, legacy);
    EXECUTE format('DROP TABLE %I', legacy);
END;
$$;

SELECT tributary_partition_by_ds('ml_dataset_iris');
SELECT tributary_partition_by_ds('ml_dataset_breast_cancer');
