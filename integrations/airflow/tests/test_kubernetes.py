"""project_token on the official kubernetes client's V1Pod."""

from __future__ import annotations

from kubernetes.client import ApiClient, V1Container, V1EnvVar, V1ObjectMeta, V1Pod, V1PodSpec, V1Volume, V1VolumeMount

from airgate_airflow.kubernetes import project_token


def pod() -> V1Pod:
    return V1Pod(
        metadata=V1ObjectMeta(name="task"),
        spec=V1PodSpec(
            containers=[
                V1Container(name="base", image="airflow", volume_mounts=[V1VolumeMount(name="logs", mount_path="/logs")]),
                V1Container(name="sidecar", image="proxy"),
            ],
            volumes=[V1Volume(name="logs", empty_dir={})],
        ),
    )


def test_projects_the_token_into_every_container_keeping_existing_volumes():
    out = ApiClient().sanitize_for_serialization(project_token(pod()))
    assert out["spec"]["volumes"] == [
        {"name": "logs", "emptyDir": {}},
        {
            "name": "airgate-token",
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"audience": "urn:airgate", "expirationSeconds": 3600, "path": "token"}}
                ]
            },
        },
    ]
    base, sidecar = out["spec"]["containers"]
    mount = {"name": "airgate-token", "mountPath": "/var/run/secrets/airgate", "readOnly": True}
    assert base["volumeMounts"] == [{"name": "logs", "mountPath": "/logs"}, mount]
    assert sidecar["volumeMounts"] == [mount]
    assert "env" not in base, "the default path needs no AIRGATE_TOKEN_FILE"


def test_is_idempotent():
    once = ApiClient().sanitize_for_serialization(project_token(pod()))
    twice = ApiClient().sanitize_for_serialization(project_token(project_token(pod())))
    assert once == twice


def test_options_and_a_non_default_path_set_airgate_token_file():
    p = pod()
    p.spec.containers[0].env = [V1EnvVar(name="KEEP", value="1")]
    out = ApiClient().sanitize_for_serialization(
        project_token(p, audience="api://airgate", expiration_seconds=7200, path="/airgate")
    )
    projection = out["spec"]["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"]
    assert projection == {"audience": "api://airgate", "expirationSeconds": 7200, "path": "token"}
    assert out["spec"]["containers"][0]["volumeMounts"][1]["mountPath"] == "/airgate"
    assert out["spec"]["containers"][0]["env"] == [
        {"name": "KEEP", "value": "1"},
        {"name": "AIRGATE_TOKEN_FILE", "value": "/airgate/token"},
    ]


def test_matches_the_pod_template_fragment_in_docker_k8s():
    # The fragment projects the same token for pod templates written by hand; when docker/k8s/
    # has one, the two must agree to the byte (same volume name, audience, lifetime, file name).
    import pathlib

    import yaml

    root = pathlib.Path(__file__).resolve().parents[3]
    ours = ApiClient().sanitize_for_serialization(project_token(pod()))["spec"]["volumes"][1]
    found = []
    for fragment in sorted((root / "docker" / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(fragment.read_text()):
            for volume in _volumes(doc):
                sources = (volume.get("projected") or {}).get("sources") or []
                tokens = [s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s]
                if volume.get("name") == "airgate-token" or any(t.get("audience") == "urn:airgate" for t in tokens):
                    found.append((fragment.name, volume))
    for name, volume in found:
        assert volume == ours, f"docker/k8s/{name} projects {volume}, project_token {ours}"
    if not found:
        # No fragment on this branch yet: hold project_token to the shape the fragment must have.
        assert ours == {
            "name": "airgate-token",
            "projected": {"sources": [{"serviceAccountToken": {"audience": "urn:airgate", "expirationSeconds": 3600, "path": "token"}}]},
        }


def _volumes(node):
    """Every `volumes` entry anywhere in a YAML document (pod, pod template, Deployment, ...)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "volumes" and isinstance(value, list):
                yield from (v for v in value if isinstance(v, dict))
            else:
                yield from _volumes(value)
    elif isinstance(node, list):
        for item in node:
            yield from _volumes(item)
