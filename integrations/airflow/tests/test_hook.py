"""AirgateHook: retries within max_wait, AirgateError for airgate's refusals, upstream pass-through."""

from __future__ import annotations

import time

import pytest
from airflow.exceptions import AirflowException

from airgate_airflow import AirgateError, AirgateHook
from conftest import Answer, problem


def hook(fake_clock, **kwargs) -> AirgateHook:
    return AirgateHook(method="GET", sleep=fake_clock.sleep, clock=fake_clock.clock, **kwargs)


def test_defaults():
    h = AirgateHook()
    assert h.http_conn_id == "airgate_default"
    assert h.conn_type == "airgate"
    assert h.max_wait == 60


def test_calls_with_the_connection_token_and_no_extras_as_headers(loopback, airgate_conn, fake_clock):
    response = hook(fake_clock).run("/sales/orders")
    assert response.status_code == 200
    seen = loopback.seen[0]
    assert seen.path == "/sales/orders"
    assert seen.headers["authorization"] == "Bearer first-token"
    assert "token_file" not in seen.headers


def test_waits_as_retry_after_says_then_succeeds(loopback, airgate_conn, fake_clock, token_file):
    loopback.answers = [problem(429, "rate_limited", retry_after="2"), problem(429, "rate_limited", retry_after="3")]
    token_file.write_text("rotated")  # the resend carries the token as it is now
    response = hook(fake_clock).run("/x")
    assert response.status_code == 200
    assert fake_clock.sleeps == [2.0, 3.0]
    assert len(loopback.seen) == 3


def test_503_with_retry_after_is_retried_and_without_it_raises(loopback, airgate_conn, fake_clock):
    loopback.answers = [problem(503, "credential_unavailable", retry_after="1")]
    assert hook(fake_clock).run("/x").status_code == 200
    loopback.answers = [problem(503, "draining")]
    with pytest.raises(AirgateError) as e:
        hook(fake_clock).run("/x")
    assert e.value.status == 503
    assert fake_clock.sleeps == [1.0]


def test_raises_at_once_when_the_next_wait_would_pass_max_wait(loopback, airgate_conn, fake_clock):
    loopback.answers = [problem(429, "rate_limited", retry_after="4", request_id=f"r{i}") for i in range(5)]
    with pytest.raises(AirgateError) as e:
        hook(fake_clock, max_wait=10).run("/x")
    assert fake_clock.sleeps == [4.0, 4.0], "4 + 4 fit in 10 s, a third 4 would not"
    err = e.value
    assert (err.status, err.type, err.request_id) == (429, "urn:airgate:problem:rate_limited", "r2")
    assert err.detail == "rate_limited for this test"
    assert "max_wait" in str(err)
    assert isinstance(err, AirflowException)
    assert len(loopback.seen) == 3


def test_real_waiting_honours_retry_after(loopback, airgate_conn):
    loopback.answers = [problem(429, "rate_limited", retry_after="1")]
    start = time.monotonic()
    AirgateHook(method="GET", max_wait=5).run("/x")
    assert 1.0 <= time.monotonic() - start < 4.0


def test_other_airgate_refusals_raise_at_once_with_their_fields(loopback, airgate_conn, fake_clock):
    loopback.answers = [problem(403, "forbidden", request_id="abc")]
    with pytest.raises(AirgateError) as e:
        hook(fake_clock).run("/x")
    assert (e.value.status, e.value.type, e.value.request_id) == (403, "urn:airgate:problem:forbidden", "abc")
    assert "forbidden for this test" in str(e.value)
    assert fake_clock.sleeps == []


def test_upstream_answers_are_handled_as_httphook_does(loopback, airgate_conn, fake_clock):
    # An upstream 429 (not airgate's problem type) is not waited out: HttpHook raises as usual.
    loopback.answers = [Answer(429, b"slow down", {"Content-Type": "text/plain", "Retry-After": "1"})]
    with pytest.raises(AirflowException) as e:
        hook(fake_clock).run("/x")
    assert not isinstance(e.value, AirgateError)
    assert str(e.value).startswith("429:")
    # Upstream problem+json with another type is the upstream's too; check_response=False passes it.
    body = b'{"type": "https://example.com/oops", "status": 409}'
    loopback.answers = [Answer(409, body, {"Content-Type": "application/problem+json"})]
    response = hook(fake_clock).run("/x", extra_options={"check_response": False})
    assert (response.status_code, response.content) == (409, body)
    assert fake_clock.sleeps == []
