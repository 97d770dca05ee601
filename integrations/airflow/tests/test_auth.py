"""AirgateAuth: token sources, re-reading the file, and the running task's assertions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import requests
from airflow.sdk.execution_time.context import set_current_context

from airgate_airflow import AirgateAuth, AirgateTokenError
from airgate_airflow.auth import DEFAULT_TOKEN_FILE


def running_ti(map_index: int | None = -1, run_id: str = "manual__2025-01-01T00:00:00+00:00"):
    return SimpleNamespace(dag_id="sales_daily", task_id="load", run_id=run_id, try_number=2, map_index=map_index)


def test_token_file_is_read_again_on_every_request(loopback, token_file):
    auth = AirgateAuth(token_file=token_file)
    requests.get(loopback.url + "/a", auth=auth, timeout=5)
    token_file.write_text("  second-token \n")  # the kubelet rotated it
    requests.get(loopback.url + "/b", auth=auth, timeout=5)
    assert [s.headers["authorization"] for s in loopback.seen] == ["Bearer first-token", "Bearer second-token"]


def test_default_file_comes_from_the_environment_then_the_projected_path(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRGATE_TOKEN_FILE", str(tmp_path / "t"))
    assert AirgateAuth().token_file == tmp_path / "t"
    monkeypatch.delenv("AIRGATE_TOKEN_FILE")
    assert str(AirgateAuth().token_file) == DEFAULT_TOKEN_FILE == "/var/run/secrets/airgate/token"


def test_a_missing_or_empty_file_is_a_clear_error(tmp_path):
    with pytest.raises(AirgateTokenError, match=r"no airgate token: .*/absent does not exist .*project_token"):
        AirgateAuth(token_file=tmp_path / "absent").current_token()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(AirgateTokenError, match="is empty"):
        AirgateAuth(token_file=tmp_path / "empty").current_token()


def test_only_one_token_source():
    with pytest.raises(ValueError, match="one of"):
        AirgateAuth(token="x", azure_scope="api://airgate/.default")


def test_a_literal_token_and_no_assertions_outside_a_task(loopback):
    requests.get(loopback.url, auth=AirgateAuth(token="lit"), timeout=5)
    headers = loopback.seen[0].headers
    assert headers["authorization"] == "Bearer lit"
    assert not [h for h in headers if h.startswith("x-airflow-")]


def test_assertions_come_from_the_running_task_instance(loopback):
    with set_current_context({"ti": running_ti()}):
        requests.get(loopback.url, auth=AirgateAuth(token="t"), timeout=5)
    headers = loopback.seen[0].headers
    assert headers["x-airflow-dag-id"] == "sales_daily"
    assert headers["x-airflow-task-id"] == "load"
    assert headers["x-airflow-run-id"] == "manual__2025-01-01T00:00:00+00:00"
    assert headers["x-airflow-try-number"] == "2"
    assert "x-airflow-map-index" not in headers, "an unmapped task (-1) sends no map index"


@pytest.mark.parametrize(("map_index", "sent"), [(0, "0"), (7, "7"), (None, None), (-1, None)])
def test_map_index_only_for_mapped_tasks(loopback, map_index, sent):
    with set_current_context({"ti": running_ti(map_index)}):
        requests.get(loopback.url, auth=AirgateAuth(token="t"), timeout=5)
    assert loopback.seen[0].headers.get("x-airflow-map-index") == sent


def test_azure_scope_asks_the_credential_and_caches_until_near_expiry(loopback):
    import time

    calls = []

    class Credential:
        def get_token(self, scope):
            calls.append(scope)
            return SimpleNamespace(token=f"entra-{len(calls)}", expires_on=int(time.time()) + 3600)

    auth = AirgateAuth(azure_scope="api://airgate/.default", credential=Credential())
    requests.get(loopback.url, auth=auth, timeout=5)
    requests.get(loopback.url, auth=auth, timeout=5)
    assert calls == ["api://airgate/.default"]
    assert loopback.seen[1].headers["authorization"] == "Bearer entra-1"


def test_a_failing_entra_identity_is_a_clear_error():
    class Broken:
        def get_token(self, scope):
            raise RuntimeError("no identity endpoint")

    with pytest.raises(AirgateTokenError, match="Entra identity gave no token"):
        AirgateAuth(azure_scope="api://airgate/.default", credential=Broken()).current_token()
