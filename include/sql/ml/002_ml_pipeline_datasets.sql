-- Tables of the default ML pipelines (include/pipelines/*.yaml), written by their `store` step:
-- one row per (logical date, record key); a re-run of a date upserts its rows and deletes the rows
-- it no longer has. Generated with `python -m tributary.ml.pipeline.specs ddl <name>`; a new
-- pipeline gets its own migration file.

CREATE TABLE IF NOT EXISTS ml_dataset_iris (
    ds          date NOT NULL,
    record_key  text NOT NULL,
    sepal_length double precision,
    sepal_width double precision,
    petal_length double precision,
    petal_width double precision,
    target bigint,
    petal_ratio double precision,
    sepal_area double precision,
    species text,
    run_id      text NOT NULL,
    loaded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ds, record_key)
);

CREATE TABLE IF NOT EXISTS ml_dataset_breast_cancer (
    ds          date NOT NULL,
    record_key  text NOT NULL,
    mean_radius double precision,
    mean_texture double precision,
    mean_perimeter double precision,
    mean_area double precision,
    mean_smoothness double precision,
    mean_compactness double precision,
    mean_concavity double precision,
    mean_concave_points double precision,
    mean_symmetry double precision,
    mean_fractal_dimension double precision,
    radius_error double precision,
    texture_error double precision,
    perimeter_error double precision,
    area_error double precision,
    smoothness_error double precision,
    compactness_error double precision,
    concavity_error double precision,
    concave_points_error double precision,
    symmetry_error double precision,
    fractal_dimension_error double precision,
    worst_radius double precision,
    worst_texture double precision,
    worst_perimeter double precision,
    worst_area double precision,
    worst_smoothness double precision,
    worst_compactness double precision,
    worst_concavity double precision,
    worst_concave_points double precision,
    worst_symmetry double precision,
    worst_fractal_dimension double precision,
    target bigint,
    log_mean_area double precision,
    run_id      text NOT NULL,
    loaded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ds, record_key)
);
