"""The platform itself: Airflow REST API client, integration health and error-analysis reports."""

SYSTEM = "platform"  # the name in error events, alerts and classifications
