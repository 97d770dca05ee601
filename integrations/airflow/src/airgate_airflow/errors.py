"""`AirgateError` and telling airgate's own problem+json answers from the upstream's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow.exceptions import AirflowException

if TYPE_CHECKING:
    from requests import Response

#: Every problem `type` airgate writes starts with this (contract §3).
PROBLEM_TYPE_PREFIX = "urn:airgate:problem:"


@dataclass(frozen=True)
class Problem:
    """An answer airgate made itself (RFC 9457 fields it always sends)."""

    status: int
    type: str
    title: str | None
    detail: str | None
    request_id: str | None


def airgate_problem(response: Response) -> Problem | None:
    """The problem when `response` is airgate's own answer; `None` for the upstream's."""
    content_type = response.headers.get("Content-Type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/problem+json":
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    kind = body.get("type")
    if not isinstance(kind, str) or not kind.startswith(PROBLEM_TYPE_PREFIX):
        return None
    request_id = body.get("request_id") or response.headers.get("X-Request-Id")
    return Problem(
        status=response.status_code,
        type=kind,
        title=_text(body.get("title")),
        detail=_text(body.get("detail")),
        request_id=_text(request_id),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


class AirgateError(AirflowException):
    """airgate refused the call: its `status`, problem `type`, `detail` and `request_id`.

    Raised at once for any refusal of airgate's own, and for 429 (and 503 with `Retry-After`)
    once `AirgateHook`'s `max_wait` budget would be passed.
    """

    def __init__(self, problem: Problem, *, note: str | None = None) -> None:
        self.problem = problem
        self.status = problem.status
        self.type = problem.type
        self.title = problem.title
        self.detail = problem.detail
        self.request_id = problem.request_id
        message = f"airgate refused the call: {problem.status} {problem.type}"
        if problem.detail:
            message += f": {problem.detail}"
        if problem.request_id:
            message += f" (request_id {problem.request_id})"
        if note:
            message += f"; {note}"
        super().__init__(message)
