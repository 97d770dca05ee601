"""`AirgateAuth`: the caller's airgate token and the running task's `X-Airflow-*` assertions."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.exceptions import AirflowException
from requests.auth import AuthBase

if TYPE_CHECKING:
    from requests import PreparedRequest

#: Where the token is read when neither `token_file` nor `AIRGATE_TOKEN_FILE` says otherwise: the
#: file that `airgate_airflow.kubernetes.project_token` projects into KubernetesExecutor pods.
DEFAULT_TOKEN_FILE = "/var/run/secrets/airgate/token"

#: Environment variable naming the token file.
TOKEN_FILE_ENV = "AIRGATE_TOKEN_FILE"

# An Entra token is fetched again this long before it expires.
_AZURE_REFRESH_AHEAD_S = 300


class AirgateTokenError(AirflowException):
    """No usable token: the file is missing or empty, or the Entra identity gave none."""


class AirgateAuth(AuthBase):
    """Sets `Authorization: Bearer <token>` and, inside a task, the `X-Airflow-*` assertions.

    Exactly one token source is used: a literal `token` (tests), `azure_scope` (the worker's
    Entra identity through `azure-identity`, extra `airgate-airflow[azure]`: team-level trust), or
    `token_file` (default: `$AIRGATE_TOKEN_FILE`, else `/var/run/secrets/airgate/token`), which
    is read again on every request because the kubelet rotates it.

    Positional arguments are accepted and ignored, so that `HttpHook(auth_type=AirgateAuth)`
    works with a connection that has a login.
    """

    def __init__(
        self,
        *_ignored: Any,
        token_file: str | os.PathLike[str] | None = None,
        token: str | None = None,
        azure_scope: str | None = None,
        credential: Any = None,
    ) -> None:
        sources = [s for s in (token_file, token, azure_scope) if s]
        if len(sources) > 1:
            raise ValueError("AirgateAuth takes one of token_file, token or azure_scope, not several")
        self._token = token.strip() if token else None
        self._azure_scope = azure_scope or None
        self._credential = credential
        self._azure_token: tuple[str, float] | None = None
        self._lock = threading.Lock()
        if token_file:
            self._token_file: Path | None = Path(token_file)
        elif self._token is None and self._azure_scope is None:
            self._token_file = Path(os.environ.get(TOKEN_FILE_ENV) or DEFAULT_TOKEN_FILE)
        else:
            self._token_file = None

    @property
    def token_file(self) -> Path | None:
        """The file the token is read from, when that is the source."""
        return self._token_file

    def __call__(self, r: PreparedRequest) -> PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.current_token()}"
        for name, value in task_assertions().items():
            r.headers[name] = value
        return r

    def current_token(self) -> str:
        """The token to send now (read from its source each time; Entra tokens are cached)."""
        if self._token is not None:
            return self._token
        if self._azure_scope is not None:
            return self._entra_token(self._azure_scope)
        assert self._token_file is not None
        return _read_token_file(self._token_file)

    def _entra_token(self, scope: str) -> str:
        with self._lock:
            cached = self._azure_token
            if cached is not None and cached[1] - _AZURE_REFRESH_AHEAD_S > time.time():
                return cached[0]
            if self._credential is None:
                try:
                    from azure.identity import DefaultAzureCredential
                except ImportError as e:
                    raise AirgateTokenError(
                        "azure_scope needs azure-identity: pip install 'airgate-airflow[azure]'"
                    ) from e
                self._credential = DefaultAzureCredential()
            try:
                access = self._credential.get_token(scope)
            except Exception as e:  # azure-identity raises its own ClientAuthenticationError family
                raise AirgateTokenError(
                    f"no airgate token: the worker's Entra identity gave no token for scope {scope!r} "
                    f"({type(e).__name__})"
                ) from e
            self._azure_token = (access.token, float(access.expires_on))
            return access.token


def _read_token_file(path: Path) -> str:
    hint = (
        f"set the connection extra token_file, ${TOKEN_FILE_ENV}, or token/azure_scope; on "
        "Kubernetes add airgate_airflow.kubernetes.project_token to pod_mutation_hook"
    )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AirgateTokenError(f"no airgate token: {path} does not exist ({hint})") from None
    except OSError as e:
        raise AirgateTokenError(f"no airgate token: cannot read {path}: {e.strerror} ({hint})") from None
    token = text.strip()
    if not token:
        raise AirgateTokenError(f"no airgate token: {path} is empty ({hint})")
    return token


def task_assertions() -> dict[str, str | bytes]:
    """`X-Airflow-*` headers naming the running task instance; empty outside a task."""
    ti = _running_task_instance()
    if ti is None:
        return {}
    headers: dict[str, str | bytes] = {}
    for name, value in (
        ("X-Airflow-Dag-Id", getattr(ti, "dag_id", None)),
        ("X-Airflow-Task-Id", getattr(ti, "task_id", None)),
        ("X-Airflow-Run-Id", getattr(ti, "run_id", None)),
        ("X-Airflow-Try-Number", getattr(ti, "try_number", None)),
    ):
        if value is not None:
            headers[name] = _header_value(value)
    map_index = getattr(ti, "map_index", None)
    if isinstance(map_index, int) and map_index >= 0:
        headers["X-Airflow-Map-Index"] = str(map_index)
    return headers


def _header_value(value: object) -> str | bytes:
    # The gateway compares the raw bytes with the token's claim; non-ASCII run ids go as UTF-8.
    text = str(value)
    return text if text.isascii() else text.encode("utf-8")


def _running_task_instance() -> Any:
    # Airflow 3's task runner keeps the running task's context; outside a task it raises.
    from airflow.sdk import get_current_context

    try:
        context = get_current_context()
    except RuntimeError:
        return None
    return context.get("ti")
