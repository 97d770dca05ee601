"""airgate-airflow: call APIs through the airgate gateway from Apache Airflow 3 tasks."""

from __future__ import annotations

from airgate_airflow._version import __version__
from airgate_airflow.auth import AirgateAuth, AirgateTokenError
from airgate_airflow.errors import AirgateError
from airgate_airflow.hook import AirgateHook

__all__ = ["AirgateAuth", "AirgateError", "AirgateHook", "AirgateTokenError", "__version__"]
