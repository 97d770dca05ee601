#!/usr/bin/env python3
"""RSS of a proxy holding N idle keep-alive client connections.

Usage: idle_conns.py PORT PATH TOKEN PID [N=1000]

Opens N connections to 127.0.0.1:PORT in batches of 100, sends one authorised GET on each and reads
the answer, keeps every connection open (idle keep-alive), then prints the VmRSS of PID in KiB.
"""
import asyncio
import sys


async def one(port, path, token):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {token}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")), 0)
    await reader.readexactly(length)
    return reader, writer


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS:")).split()[1])


async def main():
    port, path, token, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
    conns = []
    for _ in range(n // 100):
        conns += await asyncio.gather(*[one(port, path, token) for _ in range(100)])
    await asyncio.sleep(0.5)
    print(rss_kib(pid))
    for _, writer in conns:
        writer.close()


asyncio.run(main())
