"""Mapped tasks through airgate: every map index is its own caller in the audit trail.

`call_region` is expanded over three regions, so Airflow runs three task instances of one task,
with map indexes 0, 1 and 2. `AirgateAuth` sends `X-Airflow-Map-Index` for each (and none for an
unmapped task); airgate checks it against the verified identity (on Kubernetes: the pod's
`map_index` annotation) and writes it into the audit record's `map_index` field and the
upstream's `X-Airflow-Map-Index` header, so `map_index = 1` answers "which region's call was it?".
"""

from __future__ import annotations

from airflow.sdk import dag, task

from airgate_airflow import AirgateHook


@dag(dag_id="airgate_mapped_example", schedule=None, catchup=False, tags=["airgate"])
def airgate_mapped_example() -> None:
    @task
    def regions() -> list[str]:
        return ["emea", "amer", "apac"]

    @task
    def call_region(region: str) -> int:
        response = AirgateHook(method="GET").run(f"/example/regions/{region}")
        return response.status_code

    call_region.expand(region=regions())


airgate_mapped_example()
