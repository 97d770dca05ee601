"""Airflow provider registration: the `airgate` connection type and its fields in the UI."""

from __future__ import annotations

from typing import Any

from airgate_airflow._version import __version__


def get_provider_info() -> dict[str, Any]:
    """What the `apache_airflow_provider` entry point tells Airflow's providers manager."""
    return {
        "package-name": "airgate-airflow",
        "name": "airgate",
        "description": "Calls through the airgate egress gateway: pipeline identity, "
        "X-Airflow-* assertions, rate-limit-aware retries.",
        "versions": [__version__],
        "hooks": [{"integration-name": "airgate", "python-modules": ["airgate_airflow.hook"]}],
        "connection-types": [
            {
                "hook-class-name": "airgate_airflow.hook.AirgateHook",
                "hook-name": "airgate",
                "connection-type": "airgate",
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "password", "schema"],
                    "relabeling": {"host": "Gateway URL"},
                    "placeholders": {"host": "https://airgate.airgate.svc"},
                },
                "conn-fields": {
                    "token_file": {
                        "label": "Token file",
                        "description": "File holding the caller's airgate token, read on every "
                        "request (default: $AIRGATE_TOKEN_FILE, else /var/run/secrets/airgate/token).",
                        "schema": {"type": ["string", "null"]},
                    },
                    "azure_scope": {
                        "label": "Entra scope",
                        "description": "Get the token from the worker's Entra identity for this "
                        "scope instead (team-level trust; needs airgate-airflow[azure]).",
                        "schema": {"type": ["string", "null"]},
                    },
                },
            }
        ],
    }
