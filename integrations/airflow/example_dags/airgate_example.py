"""One API call through airgate with AirgateHook.

The `airgate_default` connection (type `airgate`) names the gateway; the token comes from the
file that the KubernetesExecutor pod has projected (or the connection's `token_file`). airgate
checks which task is calling, applies the route's rate limit, and swaps the token for the API's
own credential. A 429 from airgate is waited out (at most `max_wait` seconds); a refusal raises
`AirgateError` with airgate's `type`, `detail` and `request_id`.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from airgate_airflow import AirgateHook


@dag(
    dag_id="airgate_example",
    schedule=None,
    catchup=False,
    params={
        "endpoint": Param("/example/orders", type="string"),
        "calls": Param(1, type="integer", minimum=1, maximum=20),
    },
    tags=["airgate"],
)
def airgate_example() -> None:
    @task
    def call_api(params: dict | None = None) -> list[dict]:
        assert params is not None
        hook = AirgateHook(method="GET", max_wait=30)
        answers = []
        for _ in range(params["calls"]):
            response = hook.run(params["endpoint"])
            answers.append({"status": response.status_code, "request_id": response.headers.get("X-Request-Id")})
        return answers

    call_api()


airgate_example()
