"""A real Airflow 3 run: `airflow dags test` of the example DAGs through a running airgate.

airgate (the binary in $AIRGATE_BIN) sits in front of a loopback upstream that records what it
saw. The caller's token is minted with `airgate token` (development setup, docs/airflow.md). The
first run makes two calls on a route limited to 1/s with burst 1: the second is refused with 429,
AirgateHook waits as told and succeeds. The second run shows each map index in the audit trail.
"""

from __future__ import annotations

import json
import os
import pathlib
import queue
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from conftest import Loopback

PACKAGE = pathlib.Path(__file__).resolve().parents[1]
UPSTREAM_TOKEN = "gateway-static-credential-" + secrets.token_hex(8)

CONFIG = """
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[audit]
sink = "file"
path = "{audit}"

# Development issuer (docs/airflow.md, setup 3): `airgate token` mints for it. The token names
# the DAG and task; run, try and map index come from AirgateAuth's headers (team-level trust).
[[issuers]]
name = "dev"
issuer = "https://airflow.dev.local"
audiences = ["urn:airgate"]
shared_secret = "env:AIRGATE_E2E_SECRET"
required_scope = "egress"
pipeline_from_header = true
principal_pipelines = {{ "airflow/airgate_example/call_api" = ["airgate_example"], "airflow/airgate_mapped_example/call_region" = ["airgate_mapped_example"] }}

[[upstreams]]
name = "api"
url = "{upstream}"
[upstreams.credential]
kind = "static"
token = "env:AIRGATE_E2E_UPSTREAM_TOKEN"

[[routes]]
name = "example"
path_prefix = "/example/"
upstream = "api"
rate_limit = "tight"
allow = {{ pipelines = ["airgate_*"] }}

[[routes]]
name = "regions"
path_prefix = "/example/regions/"
upstream = "api"
allow = {{ pipelines = ["airgate_mapped_example"] }}

[[rate_limits.policies]]
name = "tight"
rate = "1/s"
burst = 1
"""


def _airgate_bin() -> str:
    path = os.environ.get("AIRGATE_BIN", "")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"AIRGATE_BIN must name the built airgate binary (got {path!r}); run-tests.sh sets it")
    return path


class Gateway:
    def __init__(self, tmp: pathlib.Path, upstream: str) -> None:
        self.bin = _airgate_bin()
        self.audit = tmp / "audit.jsonl"
        self.config = tmp / "airgate.toml"
        self.config.write_text(CONFIG.format(audit=self.audit, upstream=upstream))
        self.env = {
            **os.environ,
            "AIRGATE_E2E_SECRET": secrets.token_hex(32),
            "AIRGATE_E2E_UPSTREAM_TOKEN": UPSTREAM_TOKEN,
        }
        self.proc = subprocess.Popen(
            [self.bin, "--log-format", "json", "run", "--config", str(self.config)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        lines: queue.Queue[str] = queue.Queue()

        def drain() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log.append(line)
                lines.put(line)

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + 30
        self.url = ""
        while not self.url:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"airgate did not start: {''.join(self.log)}")
            try:
                record = json.loads(lines.get(timeout=0.5))
            except (queue.Empty, ValueError):
                continue
            if record.get("message") == "proxy listening":
                self.url = f"http://{record['listen']}"

    def mint(self, dag: str, task: str, path: pathlib.Path) -> str:
        out = subprocess.run(
            [self.bin, "token", "--config", str(self.config), "--issuer", "dev", "--dag", dag, "--task", task, "--ttl", "10m"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        token = out.stdout.strip()
        path.write_text(token + "\n")
        return token

    def records(self) -> list[dict]:
        # The audit writer batches; give it a moment to flush the last record.
        deadline = time.monotonic() + 10
        text = ""
        while time.monotonic() < deadline:
            text = self.audit.read_text() if self.audit.exists() else ""
            if text.endswith("\n"):
                time.sleep(0.3)
                if self.audit.read_text() == text:
                    break
            time.sleep(0.1)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[tuple[Gateway, Loopback, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("e2e")
    upstream = Loopback()
    gateway = Gateway(tmp, upstream.url)
    home = tmp / "airflow_home"
    home.mkdir()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PACKAGE / "example_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }
    env.pop("AIRGATE_TOKEN_FILE", None)
    airflow(env, "db", "migrate")
    try:
        yield gateway, upstream, env
    finally:
        gateway.stop()
        upstream.close()


def airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    exe = pathlib.Path(sys.executable).with_name("airflow")
    out = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"airflow {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out


def test_a_dag_calls_through_airgate_and_waits_out_a_429(stack, tmp_path):
    gateway, upstream, env = stack
    token_file = tmp_path / "token"
    caller_token = gateway.mint("airgate_example", "call_api", token_file)
    conn = {"conn_type": "airgate", "host": gateway.url, "extra": {"token_file": str(token_file)}}
    run_env = {**env, "AIRFLOW_CONN_AIRGATE_DEFAULT": json.dumps(conn)}
    before = len(upstream.seen)

    out = airflow(run_env, "dags", "test", "airgate_example", "--conf", json.dumps({"calls": 2}))
    logs = out.stdout + out.stderr
    assert "state=success" in logs, logs

    seen = upstream.seen[before:]
    assert len(seen) == 2, "both calls arrived; the refused one never reached the upstream"
    run_id = seen[0].headers["x-airflow-run-id"]
    assert run_id.startswith("manual__")
    for s in seen:
        assert s.path == "/example/orders"
        assert s.headers["authorization"] == f"Bearer {UPSTREAM_TOKEN}", "the gateway's credential, not the caller's"
        assert caller_token not in json.dumps(s.headers)
        assert (s.headers["x-airflow-dag-id"], s.headers["x-airflow-task-id"]) == ("airgate_example", "call_api")
        assert (s.headers["x-airflow-run-id"], s.headers["x-airflow-try-number"]) == (run_id, "1")
        assert "x-airflow-map-index" not in s.headers

    records = [r for r in gateway.records() if r.get("route") == "example"]
    assert [r["outcome"] for r in records] == ["allowed", "rate_limited", "allowed"], records
    assert records[1]["status"] == 429
    for r in records:
        assert (r["pipeline"], r["task"], r["run_id"], str(r["try_number"])) == ("airgate_example", "call_api", run_id, "1")
        assert r.get("map_index") is None
        assert caller_token not in json.dumps(r)
    assert "retrying in 1 s" in logs, "AirgateHook waited as Retry-After said"


def test_each_map_index_is_attributed(stack, tmp_path):
    gateway, upstream, env = stack
    token_file = tmp_path / "token"
    gateway.mint("airgate_mapped_example", "call_region", token_file)
    conn = {"conn_type": "airgate", "host": gateway.url}
    # This run finds its token through AIRGATE_TOKEN_FILE rather than the connection.
    run_env = {**env, "AIRFLOW_CONN_AIRGATE_DEFAULT": json.dumps(conn), "AIRGATE_TOKEN_FILE": str(token_file)}
    before = len(upstream.seen)

    out = airflow(run_env, "dags", "test", "airgate_mapped_example")
    assert "state=success" in out.stdout + out.stderr

    by_path = {s.path: s.headers.get("x-airflow-map-index") for s in upstream.seen[before:]}
    assert by_path == {"/example/regions/emea": "0", "/example/regions/amer": "1", "/example/regions/apac": "2"}
    records = [r for r in gateway.records() if r.get("route") == "regions"]
    assert sorted((r["path"], str(r["map_index"])) for r in records) == sorted(by_path.items())
    assert {(r["pipeline"], r["task"], r["outcome"]) for r in records} == {("airgate_mapped_example", "call_region", "allowed")}
