"""ML platform: data pipelines (collect, validate, process, store, analyze) and the model lifecycle."""

SYSTEM = "ml"  # the name in error events, alerts and classifications
