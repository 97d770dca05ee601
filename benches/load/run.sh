#!/usr/bin/env bash
# benches/load/run.sh — side-by-side load benchmark: airgate vs nginx vs HAProxy (issue 6).
#
# One run measures, with interleaved rounds (every round visits every target, in a rotated order)
# and reports medians over the rounds:
#
#   direct         wrk -> a fast loopback upstream (a separate nginx, `return 200 "ok"`)
#   nginx          nginx plain proxy_pass, keep-alive upstream pool, worker_processes 1
#   haproxy        HAProxy plain, nbthread 1
#   haproxy_jwt    HAProxy + jwt_verify ES256 + iss/aud/scope/exp/iat/nbf/lifetime/dag_id checks + stick-table rate
#                  limit keyed on dag_id (never triggers) + static upstream Authorization header;
#                  driven with a new token on every request (HAProxy has no verification cache)
#   airgate_warm   airgate full policy (ES256 issuer, allow on `bench_*`, local rate limit that never
#                  triggers, static upstream credential, metrics on, audit to a file), same token
#                  on every request (warm token cache)
#   airgate_new    the same, a new token on every request (wrk Lua cycling through NTOKENS
#                  pre-minted tokens; the process is restarted before each visit so its cache is
#                  empty and no token repeats within a visit unless a visit completes > NTOKENS)
#   airgate_rs256  airgate full policy, RS256 issuer, warm cache
#   airgate_eddsa  airgate full policy, EdDSA issuer, warm cache
#   nginx_2w       scale check: nginx plain proxy_pass with worker_processes 2 on both cores
#   airgate_2c     scale check: airgate_warm on both cores (the multi-thread runtime sizes itself
#                  from the affinity mask: 2 workers). wrk and the upstream share those cores, so
#                  read the req/s against the 1-core rows of the same run: what a second core buys.
#
# Besides CONNS, every round measures nginx and airgate_warm at WIDE_CONNS (default 1000)
# connections, for the p99 with many clients (issue 13).
#
# Method: the proxy under test runs on core PROXY_CPU (taskset), wrk and the upstream on core
# LOAD_CPU; every proxy has one worker (nginx worker_processes 1, HAProxy nbthread 1, airgate's
# tokio runtime sizes itself from the affinity mask = 1 core). Proxy CPU per request comes from the
# proxy's own accounting: utime+stime of its processes in /proc/<pid>/stat before and after each
# wrk run, divided by the requests wrk completed. Latency p50/p99 from `wrk --latency`. Each visit
# is measured at every connection count in CONNS (default "16 64"; the p99 ratio uses 64).
# Tokens are minted before any timed part (the minting time is reported).
#
# Usage:   benches/load/run.sh                       (from anywhere inside the repository)
# Env:     DURATION=10s ROUNDS=3 CONNS="16 64" THREADS=1 WARMUP=2s NTOKENS=200000
#          RSS_CONNS=1000 (memory with that many client connections; 0 skips it)
#          WIDE_CONNS=1000 (nginx and airgate_warm only; empty skips it)
#          TARGETS="direct nginx haproxy haproxy_jwt airgate_warm airgate_new airgate_rs256 airgate_eddsa nginx_2w airgate_2c"
#          PROXY_CPU=1 LOAD_CPU=0 AIRGATE_BIN=/path/to/airgate (skips the cargo build)
#          SKIP_INSTALL=1 (never call apt-get) KEEP_TMP=1 (keep configs, logs, tokens)
#          RESULTS=path.md (default benches/load/results-<UTC date-time>.md)
# Needs:   root or sudo-less apt for the installs (nginx-light|nginx, haproxy >= 2.5, wrk, openssl,
#          curl, python3 with `cryptography`), cargo for airgate. Servers listen on 127.0.0.1 only,
#          on free ports, and are all stopped on exit. Every wrk run is bounded by DURATION.
# Output:  a Markdown report on stdout, also written to RESULTS; raw per-round numbers included.
set -euo pipefail
# The whole script is one { ... } block: bash parses it completely before running it, so editing
# this file while a run is in progress cannot change what that run executes.
{
PATH=$PATH:/usr/sbin:/sbin   # nginx and haproxy live in /usr/sbin

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-"16 64"}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-2s}
NTOKENS=${NTOKENS:-200000}
RSS_CONNS=${RSS_CONNS:-1000}
WIDE_CONNS=${WIDE_CONNS-1000}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
ALL_TARGETS="direct nginx haproxy haproxy_jwt airgate_warm airgate_new airgate_rs256 airgate_eddsa nginx_2w airgate_2c"
TARGETS=${TARGETS:-$ALL_TARGETS}
BENCH_PATH=/bench/ok
ISS_BASE=https://bench.airgate.invalid
AUD=urn:airgate-bench
DAG=bench_pipeline
TOKEN_TTL=${TOKEN_TTL:-7200}   # seconds; airgate issuers get max_lifetime = 3h to match

log() { printf '[run.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf '[run.sh] ERROR: %s\n' "$*" >&2; exit 1; }

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
STAMP=$(date -u +%Y-%m-%d-%H%M)
RESULTS=${RESULTS:-$SCRIPT_DIR/results-$STAMP.md}

for t in $TARGETS; do
    case " $ALL_TARGETS " in *" $t "*) ;; *) die "unknown target '$t' (known: $ALL_TARGETS)" ;; esac
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
want() { case " $TARGETS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
want_airgate() { case " $TARGETS " in *" airgate_"*) return 0 ;; *) return 1 ;; esac; }
[[ $(nproc --all) -ge 2 ]] || die "needs at least 2 cores (proxy on one, load generator on the other)"

# ---------------------------------------------------------------- temp dir, process tracking, trap
TMP=$(mktemp -d /tmp/airgate-bench.XXXXXX)
declare -a STARTED=()       # every pid this script started
declare -A PID=()           # target/role -> pid
cleanup() {
    local rc=$?
    set +e
    for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${STARTED[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    done
    if [[ -n ${KEEP_TMP:-} ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- installs
apt_updated=
SUDO=; [[ $(id -u) -eq 0 ]] || SUDO=sudo
apt_update() { # once per run
    [[ -z ${SKIP_INSTALL:-} ]] || die "missing: $* (SKIP_INSTALL is set)"
    [[ -n $apt_updated ]] && return 0
    log "apt-get update"; $SUDO apt-get update -qq >&2; apt_updated=1
}
apt_install() {
    apt_update "$@"
    log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >&2
}
# (grep without -q: -q stops reading early, and under pipefail the writer's SIGPIPE would count as failure)
pkg_exists() { apt-cache policy "$1" 2>/dev/null | grep 'Candidate: [0-9]' >/dev/null; }
ensure_tools() {
    local missing=()
    command -v openssl >/dev/null || missing+=(openssl)
    command -v curl >/dev/null || missing+=(curl)
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || missing+=(NGINX)   # always: the upstream is an nginx
    if want haproxy || want haproxy_jwt; then command -v haproxy >/dev/null || missing+=(haproxy); fi
    if [[ ${#missing[@]} -gt 0 ]]; then
        if [[ " ${missing[*]} " == *" NGINX "* ]]; then
            # nginx-light is gone from newer Debian releases; take whichever exists.
            apt_update nginx
            local ng=nginx; pkg_exists nginx-light && ng=nginx-light
            missing=("${missing[@]/NGINX/$ng}")
        fi
        apt_install "${missing[@]}"
        # Debian starts the packaged services on install (nginx on port 80); this benchmark runs
        # its own instances, so stop the ones it just installed where systemd runs them.
        if [[ -d /run/systemd/system ]]; then
            local svc
            for svc in nginx haproxy; do
                [[ " ${missing[*]} " == *" $svc"* ]] && $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
            done
        fi
    fi
    PY=python3
    if ! $PY -c 'import cryptography' 2>/dev/null; then
        if /usr/bin/python3 -c 'import cryptography' 2>/dev/null; then PY=/usr/bin/python3
        else apt_install python3-cryptography; PY=/usr/bin/python3; fi
    fi
    if want haproxy || want haproxy_jwt; then
        # (sed, not head: head would close the pipe early and pipefail would end the script)
        local v; v=$(haproxy -v 2>/dev/null | sed -n '1s/^HAProxy version \([0-9]*\.[0-9]*\).*/\1/p')
        if want haproxy_jwt; then
            awk -v v="$v" 'BEGIN { split(v, a, "."); exit !(a[1] > 2 || (a[1] == 2 && a[2] >= 5)) }' \
                || die "haproxy $v has no jwt_verify (needs >= 2.5); drop haproxy_jwt from TARGETS"
        fi
    fi
}

# ---------------------------------------------------------------- airgate build
AIRGATE=
build_airgate() {
    want_airgate || return 0
    if [[ -n ${AIRGATE_BIN:-} ]]; then
        [[ -x $AIRGATE_BIN ]] || die "AIRGATE_BIN=$AIRGATE_BIN is not an executable"
        AIRGATE=$AIRGATE_BIN; return 0
    fi
    command -v cargo >/dev/null || die "cargo not found: cannot build target/release/airgate (set AIRGATE_BIN, or drop the airgate_* TARGETS)"
    local tdir=${CARGO_TARGET_DIR:-$REPO/target}
    [[ $tdir == /* ]] || tdir=$REPO/$tdir
    log "cargo build --release (log: $TMP/cargo-build.log)"
    if ! (cd "$REPO" && cargo build --release --bin airgate) >"$TMP/cargo-build.log" 2>&1; then
        tail -n 30 "$TMP/cargo-build.log" >&2
        die "cannot build target/release/airgate: 'cargo build --release' failed (last lines above). Fix the build, set AIRGATE_BIN, or run without the airgate rows: TARGETS=\"direct nginx haproxy haproxy_jwt\""
    fi
    AIRGATE=$tdir/release/airgate
    [[ -x $AIRGATE ]] || die "cargo build succeeded but $AIRGATE does not exist"
}

# ---------------------------------------------------------------- helpers
# N free TCP ports on 127.0.0.1, all bound at once so they are distinct.
free_ports() {
    $PY - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# Wait until URL answers with the expected status (default 200); bounded to ~10 s.
wait_http() {
    local url=$1 want=${2:-200} code
    for _ in $(seq 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
        [[ $code == "$want" ]] && return 0
        sleep 0.1
    done
    return 1
}

# Resident set (KiB) of a process and its direct children.
rss_kib() {
    local root=$1 total=0 p v
    for p in $root $(ps -o pid= --ppid "$root" 2>/dev/null); do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || continue
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# CPU ticks (utime+stime) of a process and its direct children (nginx master + worker).
cpu_ticks() {
    local root=$1 total=0 p f
    for p in $root $(ps -o pid= --ppid "$root" 2>/dev/null); do
        f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        f=${f##*) }                     # drop "pid (comm) "; comm may contain spaces
        read -r -a a <<<"$f"
        total=$((total + a[11] + a[12])) # fields 14 and 15 of stat
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# Busy ticks (everything but idle and iowait) of one CPU, from /proc/stat: lets the report show how
# much of the proxy's core other processes took during a run (this machine is shared).
core_busy() {
    awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true   # wrk and the proxies need an fd per connection

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }

expect_code() { # label want url [curl args...]
    local label=$1 want=$2 url=$3; shift 3
    local got; got=$(http_code "$@" "$url")
    if [[ " $want " == *" $got "* ]]; then log "preflight ok: $label -> $got"
    else die "preflight failed: $label: expected $want, got $got ($url)"; fi
}

# ---------------------------------------------------------------- keys and tokens
make_keys() {
    log "generating keys with openssl"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TMP/es256.key.pem" 2>/dev/null
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/rs256.key.pem" 2>/dev/null
    openssl genpkey -algorithm ED25519 -out "$TMP/eddsa.key.pem" 2>/dev/null
    for k in es256 rs256 eddsa; do
        openssl pkey -in "$TMP/$k.key.pem" -pubout -out "$TMP/$k.pub.pem" 2>/dev/null
    done
    chmod 600 "$TMP"/*.key.pem
}

cat >"$TMP/mint.py" <<'EOF'
# Mints airgate pipeline identity tokens (JWS compact) with a PKCS#8 PEM key.
# usage: mint.py KEY ALG ISS AUD TTL KIND [COUNT OUT]
#   KIND: valid | bad_sig | forged_claims | wrong_aud | expired | not_yet_valid | too_long | wrong_dag
#         | many (COUNT lines to OUT)
import base64, json, sys, time
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

key_path, alg, iss, aud, ttl, kind = sys.argv[1:7]
ttl = int(ttl)
with open(key_path, "rb") as f:
    key = serialization.load_pem_private_key(f.read(), password=None)

def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")

def sign(msg):
    if alg == "ES256":
        r, s = utils.decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if alg == "RS256":
        return key.sign(msg, padding.PKCS1v15(), hashes.SHA256())
    if alg == "EdDSA":
        return key.sign(msg)
    raise SystemExit("unknown alg " + alg)

header = b64(json.dumps({"alg": alg, "typ": "JWT"}, separators=(",", ":")).encode())

def claims(i, now, dag="bench_pipeline", a=aud, exp=None):
    return {"iss": iss, "aud": a, "sub": "bench-scheduler", "iat": now, "nbf": now,
            "exp": exp if exp is not None else now + ttl, "jti": "bench-%d-%d" % (now, i),
            "scope": "egress", "dag_id": dag, "task_id": "load", "run_id": "bench_run",
            "try_number": 1, "map_index": -1}

def token(c):
    body = header + b"." + b64(json.dumps(c, separators=(",", ":")).encode())
    return (body + b"." + b64(sign(body))).decode()

now = int(time.time())
if kind == "many":
    count, out = int(sys.argv[7]), sys.argv[8]
    with open(out, "w") as f:
        for i in range(count):
            f.write(token(claims(i, now)) + "\n")
elif kind == "valid":
    print(token(claims(0, now)))
elif kind == "bad_sig":
    h, p, s = token(claims(1, now)).split(".")
    mid = len(s) // 2  # flip a middle character: every bit there is significant
    print(h + "." + p + "." + s[:mid] + ("A" if s[mid] != "A" else "B") + s[mid + 1:])
elif kind == "forged_claims":
    h, _, s = token(claims(2, now)).split(".")
    print(h + "." + b64(json.dumps(claims(2, now, dag="bench_other"), separators=(",", ":")).encode()).decode() + "." + s)
elif kind == "wrong_aud":
    print(token(claims(3, now, a="urn:someone-else")))
elif kind == "expired":
    print(token(claims(4, now - 3600, exp=now - 1800)))
elif kind == "not_yet_valid":
    c = claims(6, now); c["nbf"] = now + 600; c["exp"] = now + 1200
    print(token(c))
elif kind == "too_long":
    print(token(claims(7, now, exp=now + 4 * 3600)))
elif kind == "wrong_dag":
    print(token(claims(5, now, dag="finance_daily")))
else:
    raise SystemExit("unknown kind " + kind)
EOF

mint() { $PY "$TMP/mint.py" "$@"; }

# wrk script: a new token on every request, cycling through a file of tokens.
cat >"$TMP/newtoken.lua" <<'EOF'
-- usage: wrk ... -s newtoken.lua URL -- TOKENS_FILE
local threads, counter = {}, 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  tokens = {}
  for line in io.lines(args[1]) do tokens[#tokens + 1] = "Bearer " .. line end
  nthreads = counter
  -- threads take interleaved slices so no two threads send the same token
  idx = id + 1
  stride = math.max(nthreads, 1)
  wrapped = 0
end
function request()
  local t = tokens[idx]
  idx = idx + stride
  if idx > #tokens then idx = id + 1; wrapped = wrapped + 1 end
  return wrk.format("GET", nil, { ["Authorization"] = t })
end
function done(summary, latency, requests)
  local w = 0
  for _, t in ipairs(threads) do w = w + (t:get("wrapped") or 0) end
  io.write(string.format("TOKENS_WRAPPED %d\n", w))
end
EOF

# ---------------------------------------------------------------- servers
nginx_common() { # prefix [workers]
    cat <<EOF
worker_processes ${2:-1};
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
EOF
}

start_bg() { # role cpu logfile cmd...
    local role=$1 cpu=$2 logf=$3; shift 3
    taskset -c "$cpu" "$@" >"$logf" 2>&1 &
    local p=$!
    STARTED+=("$p"); PID[$role]=$p
}

start_upstream() {
    local d=$TMP/upstream; mkdir -p "$d"
    { nginx_common "$d"; cat <<EOF
    server {
        listen 127.0.0.1:$UP_PORT;
        location / { return 200 "ok"; }
        # preflight only: shows the Authorization header the proxy sent upstream
        location = /bench/_upstream_auth { return 200 "\$http_authorization"; }
    }
}
EOF
    } >"$d/nginx.conf"
    start_bg upstream "$LOAD_CPU" "$d/stdout.log" nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf" -g 'daemon off;'
    wait_http "http://127.0.0.1:$UP_PORT/" || die "upstream nginx did not start: $(cat "$d/error.log")"
}

start_nginx_proxy() { # [role port cpu workers]
    local role=${1:-nginx} port=${2:-$NGINX_PORT} cpu=${3:-$PROXY_CPU} workers=${4:-1}
    local d=$TMP/$role; mkdir -p "$d"
    { nginx_common "$d" "$workers"; cat <<EOF
    upstream up {
        server 127.0.0.1:$UP_PORT;
        keepalive 256;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    } >"$d/nginx.conf"
    start_bg "$role" "$cpu" "$d/stdout.log" nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf" -g 'daemon off;'
    wait_http "http://127.0.0.1:$port$BENCH_PATH" || die "nginx proxy ($role) did not start: $(cat "$d/error.log")"
}

start_haproxy() { # role port jwt(0|1)
    local role=$1 port=$2 jwt=$3 d=$TMP/$1; mkdir -p "$d"
    {
        cat <<EOF
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s

backend rl_per_dag
    # the equivalent of airgate's per-pipeline policy: rate per dag_id, never reached
    stick-table type string len 128 size 100k expire 60s store http_req_rate(1s)

backend be
    server up 127.0.0.1:$UP_PORT maxconn 1000

frontend fe
    bind 127.0.0.1:$port
    default_backend be
EOF
        if [[ $jwt == 1 ]]; then cat <<EOF
    http-request deny deny_status 401 unless { req.hdr_cnt(authorization) eq 1 } { req.hdr(authorization) -m beg "Bearer " }
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
    http-request deny deny_status 401 unless { var(txn.alg) -m str ES256 }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"$TMP/es256.pub.pem") -m int 1 }
    http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('\$.iss')
    http-request set-var(txn.aud) var(txn.bearer),jwt_payload_query('\$.aud')
    http-request set-var(txn.scope) var(txn.bearer),jwt_payload_query('\$.scope')
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
    http-request set-var(txn.dag) var(txn.bearer),jwt_payload_query('\$.dag_id')
    http-request set-var(txn.iat) var(txn.bearer),jwt_payload_query('\$.iat','int')
    http-request set-var(txn.nbf) var(txn.bearer),jwt_payload_query('\$.nbf','int')
    http-request set-var(txn.now) date()
    http-request deny deny_status 401 unless { var(txn.iss) -m str "$ISS_BASE/es256" }
    http-request deny deny_status 401 unless { var(txn.aud) -m str "$AUD" }
    http-request deny deny_status 401 unless { var(txn.scope) -m str egress }
    http-request deny deny_status 401 unless { var(txn.exp),sub(txn.now) -m int gt 0 }
    http-request deny deny_status 401 unless { var(txn.iat) -m found }
    # nbf honoured with airgate's default leeway (10 s); lifetime at most max_lifetime (3 h here)
    http-request deny deny_status 401 if { var(txn.nbf),sub(txn.now) -m int gt 10 }
    http-request deny deny_status 401 unless { var(txn.exp),sub(txn.iat) -m int le 10800 }
    http-request deny deny_status 401 unless { var(txn.dag) -m found }
    http-request deny deny_status 403 unless { var(txn.dag) -m beg bench_ }
    http-request track-sc0 var(txn.dag) table rl_per_dag
    http-request deny deny_status 429 if { sc_http_req_rate(0,rl_per_dag) gt 1000000 }
    http-request del-header x-airflow-dag-id
    http-request set-header X-Airflow-Dag-Id %[var(txn.dag)]
    http-request set-header Authorization "Bearer \${BENCH_UPSTREAM_TOKEN}"
EOF
        fi
    } >"$d/haproxy.cfg"
    haproxy -c -q -f "$d/haproxy.cfg" >&2 || die "haproxy rejected $d/haproxy.cfg"
    start_bg "$role" "$PROXY_CPU" "$d/stdout.log" haproxy -db -f "$d/haproxy.cfg"
    local hdr=(); [[ $jwt == 1 ]] && hdr=(-H "Authorization: Bearer $TOK_es256")
    for _ in $(seq 100); do [[ $(http_code "${hdr[@]}" "http://127.0.0.1:$port$BENCH_PATH") == 200 ]] && return 0; sleep 0.1; done
    die "haproxy ($role) did not start: $(cat "$d/stdout.log")"
}

airgate_config() { # role alg port admin_port -> prints config path
    local role=$1 alg=$2 port=$3 admin=$4 d=$TMP/$1 k
    case $alg in ES256) k=es256 ;; RS256) k=rs256 ;; EdDSA) k=eddsa ;; esac
    mkdir -p "$d"
    cat >"$d/airgate.toml" <<EOF
# generated by benches/load/run.sh for target $role
[server]
listen = "127.0.0.1:$port"

[admin]
listen = "127.0.0.1:$admin"

[audit]
sink = "file"
path = "$d/audit.jsonl"

[[issuers]]
name = "bench-$k"
issuer = "$ISS_BASE/$k"
audiences = ["$AUD"]
algorithms = ["$alg"]
signing_key = "file:$TMP/$k.key.pem"
required_scope = "egress"
max_lifetime = "3h"

[[upstreams]]
name = "bench-upstream"
url = "http://127.0.0.1:$UP_PORT"
[upstreams.credential]
kind = "static"
token = "env:BENCH_UPSTREAM_TOKEN"

[[routes]]
name = "bench"
path_prefix = "/bench/"
upstream = "bench-upstream"
rate_limit = "bench-never"
allow = { pipelines = ["bench_*"] }

[rate_limits]
backend = "local"

[[rate_limits.policies]]
name = "bench-never"
key = "pipeline"
rate = "1000000/s"
burst = 1000000

[metrics]
max_pipelines = 1000
EOF
    echo "$d/airgate.toml"
}

declare -A AG_ALG=([airgate_warm]=ES256 [airgate_new]=ES256 [airgate_rs256]=RS256 [airgate_eddsa]=EdDSA [airgate_2c]=ES256)
declare -A AG_KEY=([airgate_warm]=es256 [airgate_new]=es256 [airgate_rs256]=rs256 [airgate_eddsa]=eddsa [airgate_2c]=es256)
declare -A PORT=() ADMIN_PORT=()

start_airgate() { # role
    local role=$1 d=$TMP/$1 cfg
    cfg=$(airgate_config "$role" "${AG_ALG[$role]}" "${PORT[$role]}" "${ADMIN_PORT[$role]}")
    local cpu=$PROXY_CPU; [[ $role == airgate_2c ]] && cpu=$PROXY_CPU,$LOAD_CPU
    BENCH_UPSTREAM_TOKEN=$BENCH_UPSTREAM_TOKEN start_bg "$role" "$cpu" "$d/airgate.log" \
        "$AIRGATE" run --config "$cfg"
    if ! wait_http "http://127.0.0.1:${ADMIN_PORT[$role]}/readyz"; then
        tail -n 30 "$d/airgate.log" >&2
        die "airgate ($role) not ready: GET http://127.0.0.1:${ADMIN_PORT[$role]}/readyz never returned 200 (log above; config $cfg)"
    fi
}

stop_role() {
    local p=${PID[$1]:-}
    [[ -n $p ]] || return 0
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    unset "PID[$1]"
}

# ---------------------------------------------------------------- preflight
preflight_jwt() { # label url key
    local label=$1 url=$2 k=$3 alg=${AG_ALG_OF_KEY[$3]} iss=$ISS_BASE/$3
    expect_code "$label valid token" "200" "$url" -H "Authorization: Bearer $(mint "$TMP/$k.key.pem" "$alg" "$iss" "$AUD" 600 valid)"
    expect_code "$label no token" "401" "$url"
    expect_code "$label tampered signature" "401" "$url" -H "Authorization: Bearer $(mint "$TMP/$k.key.pem" "$alg" "$iss" "$AUD" 600 bad_sig)"
    expect_code "$label forged claims" "401" "$url" -H "Authorization: Bearer $(mint "$TMP/$k.key.pem" "$alg" "$iss" "$AUD" 600 forged_claims)"
    expect_code "$label wrong audience" "401" "$url" -H "Authorization: Bearer $(mint "$TMP/$k.key.pem" "$alg" "$iss" "$AUD" 600 wrong_aud)"
    expect_code "$label expired" "401" "$url" -H "Authorization: Bearer $(mint "$TMP/$k.key.pem" "$alg" "$iss" "$AUD" 600 expired)"
    expect_code "$label not yet valid (nbf)" "401" "$url" -H "Authorization: Bearer $(mint "$TMP/$k.key.pem" "$alg" "$iss" "$AUD" 600 not_yet_valid)"
    expect_code "$label lifetime over max_lifetime" "401" "$url" -H "Authorization: Bearer $(mint "$TMP/$k.key.pem" "$alg" "$iss" "$AUD" 600 too_long)"
    expect_code "$label pipeline not allowed" "403" "$url" -H "Authorization: Bearer $(mint "$TMP/$k.key.pem" "$alg" "$iss" "$AUD" 600 wrong_dag)"
}
declare -A AG_ALG_OF_KEY=([es256]=ES256 [rs256]=RS256 [eddsa]=EdDSA)

# ---------------------------------------------------------------- measurement
RAW=$TMP/raw.tsv
printf 'target\tconns\tround\trps\tp50_us\tp99_us\tcpu_us_per_req\trequests\tnon2xx\tsocket_errors\ttokens_wrapped\tproxy_core_pct\tothers_core_pct\taudit_lines\n' >"$RAW"

# Lines the target's audit file got during the visit (airgate only; "-" otherwise), then empty it so
# the benchmark does not fill the disk. The gateway writes audit records after the response, so wait
# a moment for the tail.
audit_lines() {
    local f=$TMP/$1/audit.jsonl n
    [[ $1 == airgate_* ]] || { echo -; return 0; }
    sleep 0.5
    n=$(wc -l <"$f" 2>/dev/null || echo 0)
    : >"$f" 2>/dev/null || true
    echo "$n"
}

proc_of() { case $1 in direct) echo "${PID[upstream]}" ;; *) echo "${PID[$1]}" ;; esac; }
url_of() { echo "http://127.0.0.1:${PORT[$1]}$BENCH_PATH"; }

wrk_args() { # target -> extra args for wrk
    case $1 in
        haproxy_jwt | airgate_new) printf '%s\n' -s "$TMP/newtoken.lua" ;;
        *) printf '%s\n' -H "Authorization: Bearer $(warm_token "$1")" ;;
    esac
}
warm_token() { case $1 in airgate_rs256) echo "$TOK_rs256" ;; airgate_eddsa) echo "$TOK_eddsa" ;; *) echo "$TOK_es256" ;; esac; }

run_wrk() { # target conns duration outfile -> wrk output in outfile; "proxy_ticks core_ticks" on stdout
    local t=$1 c=$2 dur=$3 out=$4 pid before after core0 core1
    local -a extra; mapfile -t extra < <(wrk_args "$t")
    local -a tail_args=(); [[ $t == haproxy_jwt || $t == airgate_new ]] && tail_args=(-- "$TMP/tokens-es256.txt")
    pid=$(proc_of "$t")
    local cpu=$PROXY_CPU; [[ $t == direct ]] && cpu=$LOAD_CPU  # direct: the "proxy" is the upstream
    before=$(cpu_ticks "$pid"); core0=$(core_busy "$cpu")
    taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$c" -d"$dur" --timeout 5s --latency "${extra[@]}" "$(url_of "$t")" "${tail_args[@]}" >"$out" 2>&1 \
        || { cat "$out" >&2; die "wrk failed against $t"; }
    after=$(cpu_ticks "$pid"); core1=$(core_busy "$cpu")
    kill -0 "$pid" 2>/dev/null || die "$t (pid $pid) exited during the run; its log and config are in $TMP/$t/ (set KEEP_TMP=1 to keep them)"
    echo "$((after - before)) $((core1 - core0))"
}

parse_wrk() { # outfile proxy_ticks core_ticks target conns round audit_lines -> appends a raw row
    $PY - "$@" "$CLK_TCK" >>"$RAW" <<'EOF'
import re, sys
path, ticks, core_ticks, target, conns, rnd, audit, clk = sys.argv[1:9]
text = open(path).read()
def us(v, unit):
    return float(v) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[unit]
def pct(p):
    m = re.search(r"^\s*%s%%\s+([\d.]+)(us|ms|s|m)\s*$" % p, text, re.M)
    return us(*m.groups()) if m else float("nan")
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
reqs = int(re.search(r"(\d+) requests in", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
wrapped = re.search(r"TOKENS_WRAPPED (\d+)", text)
cpu = int(ticks) * 1e6 / int(clk) / reqs if reqs else float("nan")
secs = reqs / rps if rps else float("nan")
proxy_busy = 100.0 * int(ticks) / int(clk) / secs          # % of the proxy core used by the proxy
others = min(100.0, max(0.0, 100.0 * (int(core_ticks) - int(ticks)) / int(clk) / secs))  # % used by anything else
print("\t".join(str(x) for x in (target, conns, rnd, "%.1f" % rps, "%.1f" % pct(50), "%.1f" % pct(99),
      "%.2f" % cpu, reqs, int(non2xx.group(1)) if non2xx else 0,
      sum(int(g) for g in sock.groups()) if sock else 0, int(wrapped.group(1)) if wrapped else 0,
      "%.0f" % proxy_busy, "%.0f" % others, audit)))
EOF
}

# ---------------------------------------------------------------- main
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
ensure_tools
build_airgate

make_keys
BENCH_UPSTREAM_TOKEN="bench-upstream-$(openssl rand -hex 16)"
export BENCH_UPSTREAM_TOKEN
TOK_es256=$(mint "$TMP/es256.key.pem" ES256 "$ISS_BASE/es256" "$AUD" "$TOKEN_TTL" valid)
TOK_rs256=$(mint "$TMP/rs256.key.pem" RS256 "$ISS_BASE/rs256" "$AUD" "$TOKEN_TTL" valid)
TOK_eddsa=$(mint "$TMP/eddsa.key.pem" EdDSA "$ISS_BASE/eddsa" "$AUD" "$TOKEN_TTL" valid)
MINT_NOTE="not needed (no new-token target)"
if want haproxy_jwt || want airgate_new; then
    log "minting $NTOKENS distinct ES256 tokens (outside the timed part)"
    m0=$(date +%s.%N)
    mint "$TMP/es256.key.pem" ES256 "$ISS_BASE/es256" "$AUD" "$TOKEN_TTL" many "$NTOKENS" "$TMP/tokens-es256.txt"
    m1=$(date +%s.%N)
    MINT_NOTE=$(awk -v a="$m0" -v b="$m1" -v n="$NTOKENS" 'BEGIN { printf "%d ES256 tokens in %.1f s (%.0f us/token, python cryptography), before and outside the timed part", n, b - a, (b - a) * 1e6 / n }')
    log "$MINT_NOTE"
fi

read -r UP_PORT NGINX_PORT HAPROXY_PORT HAPROXY_JWT_PORT P1 P2 P3 P4 A1 A2 A3 A4 NGINX2_PORT P5 A5 < <(free_ports 15)
PORT=([direct]=$UP_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT [haproxy_jwt]=$HAPROXY_JWT_PORT
      [airgate_warm]=$P1 [airgate_new]=$P2 [airgate_rs256]=$P3 [airgate_eddsa]=$P4 [nginx_2w]=$NGINX2_PORT [airgate_2c]=$P5)
ADMIN_PORT=([airgate_warm]=$A1 [airgate_new]=$A2 [airgate_rs256]=$A3 [airgate_eddsa]=$A4 [airgate_2c]=$A5)

log "starting servers (proxies on cpu $PROXY_CPU, wrk + upstream on cpu $LOAD_CPU)"
start_upstream
want nginx && start_nginx_proxy
want nginx_2w && start_nginx_proxy nginx_2w "$NGINX2_PORT" "$PROXY_CPU,$LOAD_CPU" 2
want haproxy && start_haproxy haproxy "$HAPROXY_PORT" 0
want haproxy_jwt && start_haproxy haproxy_jwt "$HAPROXY_JWT_PORT" 1
for t in airgate_warm airgate_new airgate_rs256 airgate_eddsa airgate_2c; do want "$t" && start_airgate "$t"; done
declare -A RSS_IDLE=()
for t in $TARGETS; do RSS_IDLE[$t]=$(rss_kib "$(proc_of "$t")"); done

# Preflight: every target answers 200 to the request wrk sends; the policy-enforcing ones reject bad tokens.
for t in $TARGETS; do expect_code "$t" 200 "$(url_of "$t")" -H "Authorization: Bearer $(warm_token "$t")"; done
want haproxy_jwt && preflight_jwt "haproxy_jwt" "$(url_of haproxy_jwt)" es256
# The policy-enforcing proxies must swap the caller's token for the static upstream credential.
expect_upstream_auth() { # target
    local got
    got=$(curl -s --max-time 5 -H "Authorization: Bearer $(warm_token "$1")" "http://127.0.0.1:${PORT[$1]}/bench/_upstream_auth" || true)
    [[ $got == "Bearer $BENCH_UPSTREAM_TOKEN" ]] \
        || die "preflight failed: $1 did not send the static upstream credential upstream (upstream saw Authorization: '${got:0:24}...')"
    log "preflight ok: $1 sends the static upstream credential, not the caller's token"
}
want haproxy_jwt && expect_upstream_auth haproxy_jwt
want haproxy_jwt && expect_code "haproxy_jwt first pre-minted token" 200 "$(url_of haproxy_jwt)" -H "Authorization: Bearer $(head -1 "$TMP/tokens-es256.txt")"
for t in airgate_warm airgate_new airgate_rs256 airgate_eddsa airgate_2c; do
    want "$t" || continue
    preflight_jwt "$t" "$(url_of "$t")" "${AG_KEY[$t]}"
    expect_upstream_auth "$t"
    # `airgate token` must mint a token the gateway accepts (same key, the contract's CLI)
    # (a warning, not fatal: the measurement itself uses the tokens minted above)
    if cli_tok=$("$AIRGATE" token --config "$TMP/$t/airgate.toml" --issuer "bench-${AG_KEY[$t]}" --dag "$DAG" --task load --ttl 15m 2>"$TMP/$t/token-cli.err"); then
        code=$(http_code -H "Authorization: Bearer $cli_tok" "$(url_of "$t")")
        if [[ $code == 200 ]]; then log "preflight ok: $t token from 'airgate token' -> 200"
        else log "WARNING: $t: a token from 'airgate token' got $code, expected 200"; fi
    else
        log "WARNING: 'airgate token' failed for $t: $(head -c 300 "$TMP/$t/token-cli.err")"
    fi
    expect_code "$t admin /metrics" 200 "http://127.0.0.1:${ADMIN_PORT[$t]}/metrics"
    for _ in $(seq 20); do grep -q . "$TMP/$t/audit.jsonl" 2>/dev/null && break; sleep 0.1; done
    grep -q . "$TMP/$t/audit.jsonl" 2>/dev/null || log "WARNING: $t: audit file $TMP/$t/audit.jsonl is still empty 2 s after the preflight"
done
# the preflight's own tokens must not warm airgate_new's cache before its first visit
want airgate_new && { stop_role airgate_new; start_airgate airgate_new; }

log "warm-up: $WARMUP per target"
for t in $TARGETS; do
    [[ $t == airgate_new ]] && continue  # its cache must stay cold; it is restarted before every visit
    run_wrk "$t" "${CONNS%% *}" "$WARMUP" "$TMP/warmup-$t.txt" >/dev/null
done

read -r -a TLIST <<<"$TARGETS"
n=${#TLIST[@]}
log "measuring: $ROUNDS rounds x conns {$CONNS} x $n targets x $DURATION"
for ((r = 1; r <= ROUNDS; r++)); do
    for c in $CONNS; do
        for ((i = 0; i < n; i++)); do
            t=${TLIST[$(((i + r - 1) % n))]}   # rotate the order every round
            if [[ $t == airgate_new ]]; then stop_role airgate_new; start_airgate airgate_new; fi
            out=$TMP/wrk-$t-c$c-r$r.txt
            [[ $t == airgate_* ]] && : >"$TMP/$t/audit.jsonl"   # count only this visit's records
            read -r ticks core_ticks < <(run_wrk "$t" "$c" "$DURATION" "$out")
            [[ -n ${core_ticks:-} ]] || die "measurement against $t failed"
            parse_wrk "$out" "$ticks" "$core_ticks" "$t" "$c" "$r" "$(audit_lines "$t")"
            log "round $r c=$c $(tail -n 1 "$RAW" | cut -f1,4-7 | tr '\t' ' ')"
        done
    done
    # Many clients: p99 of nginx and airgate_warm only (issue 13 reports it; every target would
    # multiply the run time).
    for t in nginx airgate_warm; do
        [[ -n $WIDE_CONNS ]] && want "$t" || continue
        out=$TMP/wrk-$t-c$WIDE_CONNS-r$r.txt
        [[ $t == airgate_* ]] && : >"$TMP/$t/audit.jsonl"
        read -r ticks core_ticks < <(run_wrk "$t" "$WIDE_CONNS" "$DURATION" "$out")
        [[ -n ${core_ticks:-} ]] || die "measurement against $t failed"
        parse_wrk "$out" "$ticks" "$core_ticks" "$t" "$WIDE_CONNS" "$r" "$(audit_lines "$t")"
        log "round $r c=$WIDE_CONNS $(tail -n 1 "$RAW" | cut -f1,4-7 | tr '\t' ' ')"
    done
done

# Memory: resident set of each proxy idle (just after start) and while RSS_CONNS keep-alive client
# connections are busy (sampled in the middle of a short run); not timed, not part of the medians.
RSS=$TMP/rss.tsv
printf 'target\tidle_kib\tloaded_kib\n' >"$RSS"
if [[ $RSS_CONNS -gt 0 ]]; then
    log "memory: RSS idle and with $RSS_CONNS connections"
    for t in $TARGETS; do
        [[ $t == airgate_new ]] && { stop_role airgate_new; start_airgate airgate_new; }
        run_wrk "$t" "$RSS_CONNS" 4s "$TMP/rss-$t.txt" >/dev/null &
        wp=$!
        sleep 3
        loaded=$(rss_kib "$(proc_of "$t")")
        wait "$wp" || die "memory run against $t failed"
        printf '%s\t%s\t%s\n' "$t" "${RSS_IDLE[$t]}" "$loaded" >>"$RSS"
    done
fi

# ---------------------------------------------------------------- report
AIRGATE_VERSION=none
[[ -n $AIRGATE ]] && { AIRGATE_VERSION=$("$AIRGATE" --version 2>/dev/null | sed -n 1p || true); : "${AIRGATE_VERSION:=unknown}"; }
NGINX_V=$(nginx -v 2>&1 | sed -n '1s/.*: //p' || true)
HAPROXY_V=$(haproxy -v 2>/dev/null | sed -n '1s/^HAProxy version \([^ ]*\).*/haproxy \1/p' || true)
WRK_V=$(wrk -v 2>&1 | sed -n '1s/^\(wrk [^ ]*\).*/\1/p' || true)
CPU_MODEL=$(sed -n '/^model name/{s/^[^:]*: //p;q}' /proc/cpuinfo)
$PY - "$RAW" "$TARGETS" "$CONNS $WIDE_CONNS" "$RSS" >"$TMP/report.md" <<EOF
import csv, statistics, sys
raw, targets, conns = sys.argv[1], sys.argv[2].split(), [int(c) for c in sys.argv[3].split()]
rss = list(csv.DictReader(open(sys.argv[4]), delimiter="\t"))
rows = list(csv.DictReader(open(raw), delimiter="\t"))
def med(t, c, k):
    v = [float(r[k]) for r in rows if r["target"] == t and int(r["conns"]) == c]
    return statistics.median(v) if v else float("nan")
def tot(t, c, k):
    return sum(int(r[k]) for r in rows if r["target"] == t and int(r["conns"]) == c)
def ratio(a, b):
    return "%.2fx" % (a / b) if b and b == b and a == a else "n/a"
label = {
    "direct": "direct to upstream (nginx return 200)",
    "nginx": "nginx plain proxy_pass",
    "haproxy": "HAProxy plain",
    "haproxy_jwt": "HAProxy + jwt_verify ES256 + stick-table (new token/request)",
    "airgate_warm": "airgate full policy, ES256, warm token cache",
    "airgate_new": "airgate full policy, ES256, new token/request",
    "airgate_rs256": "airgate full policy, RS256, warm",
    "airgate_eddsa": "airgate full policy, EdDSA, warm",
    "nginx_2w": "nginx plain proxy_pass, 2 workers on 2 cores",
    "airgate_2c": "airgate full policy, ES256, warm, multi-thread runtime on 2 cores",
}
def measured(t, c):
    return any(r["target"] == t and int(r["conns"]) == c for r in rows)
print("# airgate load benchmark — $STAMP UTC\n")
print("Command: \`DURATION=$DURATION ROUNDS=$ROUNDS CONNS=\"$CONNS\" THREADS=$THREADS TARGETS=\"$TARGETS\" benches/load/run.sh\`\n")
print("Machine: $(nproc) cores ($CPU_MODEL), kernel $(uname -r), shared with other work: "
      "read medians and ratios, not absolute numbers. Proxy pinned to cpu $PROXY_CPU, wrk ($THREADS thread) + upstream to cpu $LOAD_CPU. "
      "Load average at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg).\n")
print("Versions: ${NGINX_V:-nginx n/a}; ${HAPROXY_V:-haproxy n/a}; ${WRK_V:-wrk n/a}; airgate: $AIRGATE_VERSION\n")
print("Token minting: $MINT_NOTE.\n")
for c in conns:
    base_cpu, base_p99 = med("nginx", c, "cpu_us_per_req"), med("nginx", c, "p99_us")
    print("## %d connections — medians of %d rounds\n" % (c, $ROUNDS))
    print("| target | req/s | p50 µs | p99 µs | CPU µs/req | req/s per core (10⁶/CPU µs) | CPU/req vs nginx | p99 vs nginx | proxy core: proxy % / others % | non-2xx | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in [t for t in targets if measured(t, c)]:
        print("| %s | %.0f | %.0f | %.0f | %.1f | %.0f | %s | %s | %.0f / %.0f | %d | %d |" % (label[t], med(t, c, "rps"), med(t, c, "p50_us"),
              med(t, c, "p99_us"), med(t, c, "cpu_us_per_req"), 1e6 / med(t, c, "cpu_us_per_req"), ratio(med(t, c, "cpu_us_per_req"), base_cpu),
              ratio(med(t, c, "p99_us"), base_p99), med(t, c, "proxy_core_pct"), med(t, c, "others_core_pct"),
              tot(t, c, "non2xx"), tot(t, c, "socket_errors")))
    print()
    w = tot("haproxy_jwt", c, "tokens_wrapped") + tot("airgate_new", c, "tokens_wrapped")
    if w:
        print("Warning: the token list wrapped %d times at %d connections; raise NTOKENS.\n" % (w, c))
c0, c64 = conns[0], (64 if 64 in conns else conns[-1])
print("## Issue 6 targets\n")
print("| measure | target | floor | measured |")
print("|---|---|---|---|")
print("| proxy CPU/request, airgate warm vs nginx plain (%d conns) | ≤ 1.0× | ≤ 1.3× | %s |" % (c0, ratio(med("airgate_warm", c0, "cpu_us_per_req"), med("nginx", c0, "cpu_us_per_req"))))
print("| throughput, airgate new token/request vs HAProxy + jwt_verify ES256 (%d conns), measured req/s | ≥ 2× | ≥ 1.5× | %s |" % (c0, ratio(med("airgate_new", c0, "rps"), med("haproxy_jwt", c0, "rps"))))
print("| the same from CPU/request (one core's capacity; robust when the machine is shared) | ≥ 2× | ≥ 1.5× | %s |" % ratio(med("haproxy_jwt", c0, "cpu_us_per_req"), med("airgate_new", c0, "cpu_us_per_req")))
print("| p99 at %d connections, airgate warm vs nginx plain | ≤ 1.0× | ≤ 1.3× | %s |" % (c64, ratio(med("airgate_warm", c64, "p99_us"), med("nginx", c64, "p99_us"))))
print()
def num(v, fmt):
    return fmt % v if v == v else "n/a"
def met(ok):
    return "n/a" if ok is None else ("yes" if ok else "**no**")
def row(figure, base, ours, r, floor, ok, fmt="%.1f"):
    print("| %s | %s | %s | %s | %s | %s |" % (figure, num(base, fmt), num(ours, fmt), num(r, "%.2fx"), floor, met(ok)))
wide = conns[-1] if len(conns) > 1 and conns[-1] not in conns[:-1] and conns[-1] > c64 else None
print("## Issue 13 targets (%d connections unless named)\n" % c64)
print("| figure | nginx / HAProxy | airgate | ratio | floor | met? |")
print("|---|---:|---:|---:|---|---|")
n_cpu, a_cpu = med("nginx", c64, "cpu_us_per_req"), med("airgate_warm", c64, "cpu_us_per_req")
r = a_cpu / n_cpu if n_cpu == n_cpu and a_cpu == a_cpu else float("nan")
row("CPU µs/request, warm token cache (vs nginx plain)", n_cpu, a_cpu, r, "≤ 1.30×", None if r != r else r <= 1.3)
h_cpu, g_cpu = med("haproxy_jwt", c64, "cpu_us_per_req"), med("airgate_new", c64, "cpu_us_per_req")
r = h_cpu / g_cpu if h_cpu == h_cpu and g_cpu == g_cpu else float("nan")
row("CPU µs/request, new ES256 token each request (HAProxy + jwt_verify ÷ airgate: × ahead)", h_cpu, g_cpu, r, "≥ 1.35× ahead", None if r != r else r >= 1.35)
n_p99, a_p99 = med("nginx", c64, "p99_us"), med("airgate_warm", c64, "p99_us")
r = a_p99 / n_p99 if n_p99 == n_p99 and a_p99 == a_p99 else float("nan")
row("p99 µs, warm (vs nginx plain)", n_p99, a_p99, r, "≤ 1.0×", None if r != r else r <= 1.0, "%.0f")
if wide:
    n_p99, a_p99 = med("nginx", wide, "p99_us"), med("airgate_warm", wide, "p99_us")
    r = a_p99 / n_p99 if n_p99 == n_p99 and a_p99 == a_p99 else float("nan")
    row("p99 µs at %d connections, warm (vs nginx plain)" % wide, n_p99, a_p99, r, "reported", None, "%.0f")
n2, a2 = med("nginx_2w", c64, "rps"), med("airgate_2c", c64, "rps")
r = a2 / n2 if n2 == n2 and a2 == a2 else float("nan")
row("2-core scale: req/s, airgate multi-thread on 2 cores vs nginx 2 workers (1 core: nginx %s, airgate %s)"
    % (num(med("nginx", c64, "rps"), "%.0f"), num(med("airgate_warm", c64, "rps"), "%.0f")), n2, a2, r, "reported", None, "%.0f")
print()
print("CPU figures are the proxy's own utime+stime per request; p99 and req/s depend on what else the machine runs "
      "(see the *others %* column). On 2 cores the scale rows share both cores with wrk and the upstream.\n")
if rss:
    print("## Memory (resident set, whole proxy: nginx master + worker)\n")
    print("| target | idle MiB | with $RSS_CONNS connections MiB |")
    print("|---|---:|---:|")
    for r in rss:
        print("| %s | %.1f | %.1f |" % (label[r["target"]], int(r["idle_kib"]) / 1024, int(r["loaded_kib"]) / 1024))
    print()
    print("issue 6: airgate ≤ 20 MiB idle, ≤ 64 MiB with 1 000 keep-alive client connections. "
          "*direct* is the upstream nginx itself.\n")
print("## Raw rounds\n")
print("| target | conns | round | req/s | p50 µs | p99 µs | CPU µs/req | requests | non-2xx | errors | proxy core % | others % | audit lines |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (r["target"], r["conns"], r["round"], r["rps"], r["p50_us"],
          r["p99_us"], r["cpu_us_per_req"], r["requests"], r["non2xx"], r["socket_errors"], r["proxy_core_pct"],
          r["others_core_pct"], r["audit_lines"]))
print()
print("*proxy core %*: share of the proxy's core (for *direct*: the upstream on the load core) that the proxy used during the run (from its own CPU accounting); "
      "*others %*: the rest of that core's busy time (/proc/stat), i.e. other processes on this shared machine "
      "plus a little kernel network work not charged to the proxy. "
      "A proxy near 100 % is the bottleneck; a large *others* share means the run was disturbed. "
      "*audit lines*: records the gateway wrote to its audit file during the run (should equal *requests*, "
      "give or take the records still in flight when the run ended).")
EOF
cp "$TMP/report.md" "$RESULTS"
cat "$TMP/report.md"
log "report written to $RESULTS"
bad=$(awk -F'\t' 'NR > 1 && ($9 > 0 || $10 > 0) { n++ } END { print n + 0 }' "$RAW")
[[ $bad -eq 0 ]] || log "WARNING: $bad runs had non-2xx responses or socket errors (see the table)"
exit 0
}
