"""`project_token`: projects an airgate service-account token into KubernetesExecutor pods."""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

from airgate_airflow.auth import DEFAULT_TOKEN_FILE, TOKEN_FILE_ENV

if TYPE_CHECKING:
    from kubernetes.client import V1Pod

#: Name of the projected volume (the same as in docker/k8s/'s pod-template fragment).
VOLUME_NAME = "airgate-token"
#: File name of the token inside the mounted directory.
TOKEN_FILE_NAME = "token"


def project_token(
    pod: V1Pod,
    audience: str = "urn:airgate",
    expiration_seconds: int = 3600,
    path: str = "/var/run/secrets/airgate",
) -> V1Pod:
    """Adds the projected token volume and, in every container, its read-only mount at `path`.

    Meant for `pod_mutation_hook` in `airflow_local_settings.py`. Existing volumes and mounts are
    kept; calling it again replaces its own volume and mount rather than adding a second one. When
    `path` is not the default directory, each container also gets `AIRGATE_TOKEN_FILE` pointing
    at the token, so `AirgateAuth` finds it. Returns the pod (changed in place).
    """
    from kubernetes.client import (
        V1EnvVar,
        V1PodSpec,
        V1ProjectedVolumeSource,
        V1ServiceAccountTokenProjection,
        V1Volume,
        V1VolumeMount,
        V1VolumeProjection,
    )

    if pod.spec is None:
        pod.spec = V1PodSpec(containers=[])
    volume = V1Volume(
        name=VOLUME_NAME,
        projected=V1ProjectedVolumeSource(
            sources=[
                V1VolumeProjection(
                    service_account_token=V1ServiceAccountTokenProjection(
                        audience=audience,
                        expiration_seconds=expiration_seconds,
                        path=TOKEN_FILE_NAME,
                    )
                )
            ]
        ),
    )
    pod.spec.volumes = [v for v in pod.spec.volumes or [] if v.name != VOLUME_NAME] + [volume]
    token_file = posixpath.join(path, TOKEN_FILE_NAME)
    for container in pod.spec.containers or []:
        mount = V1VolumeMount(name=VOLUME_NAME, mount_path=path, read_only=True)
        mounts = [m for m in container.volume_mounts or [] if m.name != VOLUME_NAME]
        container.volume_mounts = mounts + [mount]
        env = [e for e in container.env or [] if e.name != TOKEN_FILE_ENV]
        if token_file != DEFAULT_TOKEN_FILE:
            env.append(V1EnvVar(name=TOKEN_FILE_ENV, value=token_file))
        if container.env or env:
            container.env = env
    return pod
