#!/usr/bin/env python3
"""Instructions per request by phase from one callgrind output of benches/callgrind.rs.

usage: callgrind_phases.py CALLGRIND_OUT N

Inclusive costs (callgrind_annotate --inclusive=yes) per function, divided by N. callgrind_annotate
lists a function once per source file its inlined parts come from, and the outer part's inclusive
cost already holds the others, so the largest of them is the function's. Phases overlap where one calls another (identity includes
the SHA-256 of the token; upstream includes hyper's client), so they do not add up to the total.
"""
import re
import subprocess
import sys
from collections import defaultdict

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
    ("    upstream headers", [r"^airgate::upstream::headers::to_upstream$"]),
    ("    upstream: hyper client send_request", [r"^hyper_util::client::legacy::client::Client<C,B>::send_request::\{\{closure\}\}$"]),
    ("  hyper server: read and parse request head", [r"^hyper::proto::h1::conn::Conn<I,B,T>::poll_read_head$"]),
    ("  hyper server: encode response head", [r"^<hyper::proto::h1::role::Server as hyper::proto::h1::Http1Transaction>::encode$"]),
    ("audit: record encoding (writer thread)", [r"^airgate::audit::record::encode$"]),
    ("malloc + free (everywhere)", [r"^(malloc|free|_int_malloc|_int_free|realloc|_int_realloc|malloc_consolidate|unlink_chunk\.constprop\.0|cfree@GLIBC_2\.2\.5)$"]),
]

def main():
    out, n = sys.argv[1], int(sys.argv[2])
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--auto=no", "--threshold=100", out],
        capture_output=True, text=True, check=True,
    ).stdout
    cost = defaultdict(int)
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\([^)]*\)\s+(?:[^:\s]*:)?(.*?)(?:\s+\[[^\]]*\])?$", line)
        if m:
            cost[m.group(2)] = max(cost[m.group(2)], int(m.group(1).replace(",", "")))
    print("| phase | instructions/request |\n|---|---:|")
    for name, patterns in PHASES:
        # A phase is one function or a few disjoint ones (malloc & co. are leaves).
        total = sum(c for f, c in cost.items() if any(re.search(p, f) for p in patterns))
        print(f"| {name} | {total // n:,} |")

main()
