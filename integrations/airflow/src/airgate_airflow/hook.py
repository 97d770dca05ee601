"""`AirgateHook`: an `HttpHook` that calls through airgate and waits out its rate limits."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.providers.http.hooks.http import HttpHook

from airgate_airflow.auth import AirgateAuth
from airgate_airflow.errors import AirgateError, Problem, airgate_problem

if TYPE_CHECKING:
    from requests import PreparedRequest, Response, Session

#: Connection extras this package reads; they are not sent as headers.
CONNECTION_EXTRAS = ("token_file", "azure_scope")


class AirgateHook(HttpHook):
    """Calls an API through airgate: connection type `airgate`, host = the gateway URL.

    The token comes from the connection extras `token_file` or `azure_scope` (else
    `AirgateAuth`'s default file). On airgate's own 429, and its 503 with `Retry-After`, the hook
    waits as told and sends again, for at most `max_wait` seconds in all; when the next wait would
    pass that budget it raises `AirgateError` at once. Any other answer of airgate's own raises
    `AirgateError` at once; the upstream's answers are handled as `HttpHook` handles them.

    `sleep` and `clock` exist so tests can run the waits on a fake clock.
    """

    conn_name_attr = "http_conn_id"
    default_conn_name = "airgate_default"
    conn_type = "airgate"
    hook_name = "airgate"

    def __init__(
        self,
        method: str = "GET",
        http_conn_id: str = default_conn_name,
        *,
        max_wait: float = 60,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        super().__init__(method=method, http_conn_id=http_conn_id, **kwargs)
        self.max_wait = float(max_wait)
        self._sleep = sleep
        self._clock = clock

    def get_conn(
        self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None
    ) -> Session:
        """A `requests.Session` with `AirgateAuth` built from the connection's extras."""
        session = super().get_conn(headers, extra_options)
        # HttpHook sends unknown extras as headers; these two configure the token instead.
        for name in CONNECTION_EXTRAS:
            session.headers.pop(name, None)
        if isinstance(self._auth_type, type) and not issubclass(self._auth_type, AirgateAuth):
            return session  # the caller chose another auth on purpose
        extra = self.get_connection(self.http_conn_id).extra_dejson
        session.auth = AirgateAuth(
            token_file=extra.get("token_file") or None,
            azure_scope=extra.get("azure_scope") or None,
        )
        return session

    def run_and_check(
        self,
        session: Session,
        prepped_request: PreparedRequest,
        extra_options: dict[Any, Any],
    ) -> Any:
        """Sends; on airgate's 429/503-with-`Retry-After` waits and resends within `max_wait`."""
        check = extra_options.get("check_response", True)
        unchecked = {**extra_options, "check_response": False}
        start = self._clock()
        while True:
            response: Response = super().run_and_check(session, prepped_request, unchecked)
            problem = airgate_problem(response)
            if problem is None:
                if check:
                    self.check_response(response)
                return response
            wait = _retry_after(response) if _retryable(problem) else None
            if wait is None:
                raise AirgateError(problem)
            spent = self._clock() - start
            if spent + wait > self.max_wait:
                raise AirgateError(
                    problem,
                    note=f"waiting {wait:g} s more would pass max_wait={self.max_wait:g} s "
                    f"({spent:.1f} s spent)",
                )
            self.log.info(
                "airgate answered %s (%s, request_id %s); retrying in %g s",
                problem.status,
                problem.type,
                problem.request_id,
                wait,
            )
            response.close()
            self._sleep(wait)
            if callable(session.auth):
                # A fresh token for the resend: the projected file may have rotated meanwhile.
                prepped_request = session.auth(prepped_request.copy())


def _retryable(problem: Problem) -> bool:
    return problem.status in (429, 503)


def _retry_after(response: Response) -> float | None:
    """`Retry-After` in seconds (delta-seconds or an HTTP date); `None` when absent or bad."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
