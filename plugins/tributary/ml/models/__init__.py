"""Model lifecycle: train a grid, gate, register, promote, serve, roll back, batch-score.

Modules, in the order data flows through them:

* ``datasets``    where rows come from (``DatasetSource``: sklearn bundled data, Parquet, PostgreSQL) and
                  the deterministic holdout every model is judged on
* ``training``    the scikit-learn pipeline, the hyperparameter grid, one MLflow run per grid point
* ``evaluation``  metrics and the gate: thresholds, then a comparison with the champion on the same holdout
* ``registry``    MLflow Model Registry: versions, the aliases ``champion`` / ``challenger`` /
                  ``previous-champion``, promotion and rollback
* ``serving``     MLflow's scoring server as a managed subprocess, and its smoke test
* ``scoring``     batch predictions into the warehouse, replaced per (model, dataset, date)
* ``operators``   the Airflow operators the ``ml_*`` DAGs use (lineage included)

Nothing here imports pandas, scikit-learn or MLflow at module level except the modules that need them
(``operators`` stays light so DAG files parse fast).
"""

ALIAS_CHAMPION = "champion"
ALIAS_CHALLENGER = "challenger"
ALIAS_PREVIOUS = "previous-champion"
