# Tributary's Airflow image: the official Airflow 3.3.2 image plus the project's locked
# dependencies and the `tributary` package (registered as an Airflow provider, so its
# Connection types appear in the UI). DAGs, plugins and include/ are mounted by docker-compose.yaml.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:0 requirements.txt /opt/tributary/requirements.txt
RUN pip install --no-cache-dir -r /opt/tributary/requirements.txt

COPY --chown=airflow:0 pyproject.toml /opt/tributary/pyproject.toml
COPY --chown=airflow:0 plugins /opt/tributary/plugins
RUN pip install --no-cache-dir --no-deps -e /opt/tributary
# The regtest devnet (a test double of bitcoind) for the compose file's bitcoin-devnet service.
COPY --chown=airflow:0 devnets /opt/tributary/devnets
