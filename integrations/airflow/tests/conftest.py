"""Shared fixtures: a scripted loopback HTTP server and an `airgate` connection pointing at it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Answer:
    status: int = 200
    body: bytes = b'{"ok": true}'
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})


def problem(status: int, slug: str, *, retry_after: str | None = None, request_id: str = "req-1") -> Answer:
    """An answer shaped like airgate's own (RFC 9457, `urn:airgate:problem:` type)."""
    body = {
        "type": f"urn:airgate:problem:{slug}",
        "title": slug.replace("_", " "),
        "status": status,
        "detail": f"{slug} for this test",
        "request_id": request_id,
    }
    headers = {"Content-Type": "application/problem+json", "X-Request-Id": request_id}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return Answer(status, json.dumps(body).encode(), headers)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class Loopback:
    """Answers with the queued answers in order (then 200), recording every request."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.seen: list[Seen] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                outer.seen.append(Seen("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))
                answer = outer.answers.pop(0) if outer.answers else Answer()
                self.send_response(answer.status)
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    server = Loopback()
    yield server
    server.close()


@pytest.fixture
def token_file(tmp_path, monkeypatch):
    path = tmp_path / "token"
    path.write_text("first-token\n")
    monkeypatch.delenv("AIRGATE_TOKEN_FILE", raising=False)
    return path


@pytest.fixture
def airgate_conn(loopback, token_file, monkeypatch):
    """`airgate_default` (type `airgate`) at the loopback server, token from `token_file`."""
    conn = {"conn_type": "airgate", "host": loopback.url, "extra": {"token_file": str(token_file)}}
    monkeypatch.setenv("AIRFLOW_CONN_AIRGATE_DEFAULT", json.dumps(conn))
    return conn


class FakeClock:
    """`clock` and `sleep` for AirgateHook: sleeping advances the clock, nothing really waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
