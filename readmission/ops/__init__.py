"""Operations: what runs the platform rather than what it computes.

`localstack` (the embedded local mode), `monitoring` (Prometheus and Grafana as code),
`credentials` (the password rules of the deployments) and `orchestration` (what the
Airflow DAG files share). Nothing in the life-cycle modules imports from here.
"""
