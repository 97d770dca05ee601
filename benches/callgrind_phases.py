#!/usr/bin/env python3
"""Instructions per request by phase from one callgrind output of benches/callgrind.rs.

usage: callgrind_phases.py CALLGRIND_OUT N            the phase table
       callgrind_phases.py --total CALLGRIND_OUT N    instructions per request only

Inclusive costs (callgrind_annotate --inclusive=yes) per function, divided by N — except the
audit encoding: it is collected on the writer thread for every record, the WARMUP ones too, so it
is divided by the records encoded (N + WARMUP, as in benches/callgrind.rs), and the total is the
measured section / N plus that. callgrind_annotate
lists a function once per source file its inlined parts come from, and the outer part's inclusive
cost already holds the others, so the largest of them is the function's. Phases overlap where one calls another (the upstream forward includes
the header rewrite), so they do not add up to the total.
"""
import re
import subprocess
import sys
from collections import defaultdict

WARMUP = 20  # benches/callgrind.rs
AUDIT = r"^airgate::audit::record::encode$"

PHASES = [
    ("total (measured section + audit encoding)", [r"^callgrind::callgrind_measured$", r"^airgate::audit::record::encode$"]),
    ("harness: raw client + raw upstream", [r"^callgrind::Conn::call::\{\{closure\}\}$", r"^callgrind::upstream::\{\{closure\}\}::\{\{closure\}\}::\{\{closure\}\}$"]),
    ("tokio: park (epoll, timer wheel)", [r"^tokio::runtime::scheduler::current_thread::Context::park$"]),
    ("server: hyper h1 server connection (all of a request on airgate's client side)", [r"^airgate::server::serve_conn::\{\{closure\}\}$"]),
    ("  Gateway::handle (phases, response, audit hand-off)", [r"^airgate::stack::Gateway::handle::\{\{closure\}\}$"]),
    ("    route", [r"^airgate::route::RouteTable::find$"]),
    ("    identity: bearer extraction", [r"^airgate::identity::bearer::extract$"]),
    ("    identity: verification (cache miss)", [r"^airgate::identity::verify::<impl airgate::identity::Authenticator>::verify(::\{\{closure\}\})?$"]),
    ("      signature check", [r"^jsonwebtoken::crypto::verify$", r"^airgate::identity::signature::PreparedKey::verify$"]),
    ("      JOSE parse (split, base64, strict JSON)", [r"^airgate::identity::jose::parse$"]),
    ("    identity: cache lookup", [r"^airgate::identity::Authenticator::cached$"]),
    ("    identity: cache insert", [r"^airgate::identity::cache::TokenCache::insert$"]),
    ("    policy", [r"^airgate::policy::authorize$"]),
    ("    rate limit (bucket key, decision, quota headers)", [r"^airgate::ratelimit::bucket_key$", r"^airgate::ratelimit::local::Bucket<C>::decide$", r"^airgate::ratelimit::Quota::apply$"]),
    ("    upstream: forward (URI, headers, credential, transport send, response headers)", [r"^airgate::upstream::Upstream::forward::\{\{closure\}\}$"]),
    ("      upstream headers (the rewrite decided; applied as the head is encoded)", [r"^airgate::upstream::headers::Rewrite::new$"]),
    ("      hyper-util client send_request (TLS/HTTP/2 transport)", [r"^hyper_util::client::legacy::client::Client<C,B>::send_request::\{\{closure\}\}$"]),
    ("      upstream h1: send (encode the head, write, read and parse the response head)", [r"^airgate::h1::Conn::send::\{\{closure\}\}$"]),
    ("        encode request head (the client's fields through the rewrite, then the gateway's)", [r"^airgate::h1::encode_head$"]),
    ("        parse response head (httparse, framing rules, header map)", [r"^airgate::h1::framing::parse_head$", r"^airgate::h1::framing::Head::into_parts$"]),
    ("  hyper server: read and parse request head", [r"^hyper::proto::h1::conn::Conn<I,B,T>::poll_read_head$"]),
    ("  hyper server: encode response head", [r"^<hyper::proto::h1::role::Server as hyper::proto::h1::Http1Transaction>::encode$"]),
    ("  upstream h1: response body (read from the socket as hyper's server writes it)", [r"^<airgate::h1::body::ResponseBody as http_body::Body>::poll_frame$"]),
    ("audit: record encoding (writer thread, per record)", [AUDIT]),
    ("malloc + free (everywhere; glibc's, or mimalloc's since it is the global allocator)", [r"^(malloc|free|_int_malloc|_int_free|realloc|_int_realloc|malloc_consolidate|unlink_chunk\.constprop\.0|cfree@GLIBC_2\.2\.5)$", r"^mi_(malloc|zalloc|realloc|free)(_aligned)?$"]),
]

def main():
    total_only = sys.argv[1] == "--total"
    out, n = sys.argv[1 + total_only], int(sys.argv[2 + total_only])
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--auto=no", "--threshold=100", out],
        capture_output=True, text=True, check=True,
    ).stdout
    cost = defaultdict(int)
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\([^)]*\)\s+(?:[^:\s]*:)?(.*?)(?:\s+\[[^\]]*\])?$", line)
        if m:
            cost[m.group(2)] = max(cost[m.group(2)], int(m.group(1).replace(",", "")))
    def phase(patterns):
        # A phase is one function or a few disjoint ones (malloc & co. are leaves).
        return sum(c for f, c in cost.items() if any(re.search(p, f) for p in patterns))

    audit = phase([AUDIT])
    records = n + WARMUP if audit else 1
    measured = phase([r"^callgrind::callgrind_measured$"])
    if total_only:
        print(measured // n + audit // records)
        return
    print("| phase | instructions/request |\n|---|---:|")
    for name, patterns in PHASES:
        if patterns == [AUDIT]:
            per = audit // records
        elif name.startswith("total"):
            per = measured // n + audit // records
        else:
            per = phase(patterns) // n
        print(f"| {name} | {per:,} |")

main()
