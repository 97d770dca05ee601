"""The kube-apiserver stand-in of airgate's Rust tests, read with the official `kubernetes` client.

airgate's pod lookups (contract §9) are tested against a loopback stand-in of the API server
(`tests/kube_api/mod.rs`). These tests check that stand-in against the real client library: the
pods it serves deserialize into `V1Pod` with the fields airgate reads (uid, annotations, phase), its
refusals are `v1.Status` bodies the client raises as `ApiException`, and its OIDC discovery and JWKS
endpoints answer the client's own calls. `tests/airflow.rs` starts the stand-in with the task-pod
fixtures and passes its address in `AIRGATE_KUBE_STANDIN_*`; without them these tests fail.
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "kubernetes"


def standin(token: str | None = None) -> client.ApiClient:
    try:
        url = os.environ["AIRGATE_KUBE_STANDIN_URL"]
        ca = os.environ["AIRGATE_KUBE_STANDIN_CA"]
        token = token or os.environ["AIRGATE_KUBE_STANDIN_TOKEN"]
    except KeyError as missing:
        pytest.fail(f"{missing} is not set: run these tests through `cargo nextest run` (tests/airflow.rs)")
    cfg = client.Configuration()
    cfg.host = url
    cfg.ssl_ca_cert = ca
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(cfg)


def fixtures() -> list[dict]:
    pods = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("pod_*.json"))]
    assert len(pods) == 3, f"expected the three task-pod fixtures in {FIXTURES}"
    return pods


def test_task_pods_deserialize_with_the_fields_airgate_reads():
    api = client.CoreV1Api(standin())
    for want in fixtures():
        meta = want["metadata"]
        pod = api.read_namespaced_pod(meta["name"], meta["namespace"])
        assert isinstance(pod, client.V1Pod)
        assert pod.metadata.uid == meta["uid"]
        assert pod.metadata.annotations == meta["annotations"]
        assert pod.metadata.annotations["dag_id"] == meta["annotations"]["dag_id"]
        assert pod.status.phase == want["status"]["phase"]
        assert pod.spec.service_account_name == want["spec"]["serviceAccountName"]


def test_a_missing_pod_is_a_v1_status_404():
    api = client.CoreV1Api(standin())
    namespace = fixtures()[0]["metadata"]["namespace"]
    with pytest.raises(ApiException) as err:
        api.read_namespaced_pod("no-such-pod", namespace)
    assert err.value.status == 404
    status = json.loads(err.value.body)
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "NotFound", 404)
    assert status["details"] == {"name": "no-such-pod", "kind": "pods"}


def test_a_wrong_token_is_a_v1_status_401():
    api = client.CoreV1Api(standin(token="not-the-reader-token"))
    meta = fixtures()[0]["metadata"]
    with pytest.raises(ApiException) as err:
        api.read_namespaced_pod(meta["name"], meta["namespace"])
    assert err.value.status == 401
    assert json.loads(err.value.body)["reason"] == "Unauthorized"


def test_service_account_issuer_discovery_and_keys():
    api = standin()
    # The client types both documents as `str` and would hand back a Python repr: read the raw body.
    raw = client.WellKnownApi(api).get_service_account_issuer_open_id_configuration(_preload_content=False)
    discovery = json.loads(raw.data)
    assert discovery["jwks_uri"].startswith(os.environ["AIRGATE_KUBE_STANDIN_URL"])
    assert "RS256" in discovery["id_token_signing_alg_values_supported"]
    keys = json.loads(client.OpenidApi(api).get_service_account_issuer_open_id_keyset(_preload_content=False).data)
    assert keys["keys"] and all("kty" in k for k in keys["keys"])
