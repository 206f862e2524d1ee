"""Drives one protocol case against proto_server.py and tells what it sent and what came back.

Each case makes one shape of traffic that a per-request attribution must get right (or survive):

    keepalive  20 GETs on one connection
    pipelined  three GETs in one send, then their three responses
    split      a request line split across two sends 50 ms apart
    continue   a POST with Expect: 100-continue: the body only after the server's 100 Continue
    chunked    GET /stream (a chunked response in 5 writes 20 ms apart), then a GET on the same connection
    bigpost    a 1 MiB POST body (the server reads it in many reads)
    fdreuse    connect, GET, close, 50 times (the server reuses fd numbers)
    garbage    random binary bytes on a connection, then close (then a GET, to see the server lives)
    nonhttp    a Redis-like line protocol: PING three times (+PONG), QUIT (+OK)
    ids        10,000 GETs /items/<n> on one keep-alive connection
    cap        300 distinct static paths /page-<word>, words of letters only

For each case it prints one JSON line, {"case": c, "requests": {"GET /x": n, ...}, "responses":
{"200": n, ...}}: requests by method and path (ids by template, GET /items/{n}), responses by
status (or the line-protocol reply). It checks every answer and exits 1 on the first wrong one.
Standard library only.

    python3 proto_client.py --port P keepalive      # or several cases, or all
"""

import argparse
import json
import random
import socket
import sys
import time

CASES = [
    "keepalive", "pipelined", "split", "continue", "chunked", "bigpost",
    "fdreuse", "garbage", "nonhttp", "ids", "cap",
]


class Wrong(Exception):
    pass


class Client:
    """One connection, with a reader of HTTP/1.1 responses (Content-Length or chunked)."""

    def __init__(self, host: str, port: int, timeout: float):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise Wrong(f"connection closed by the server (unread: {self.buf[:80]!r})")
        self.buf += data

    def until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            self.fill()
        out, self.buf = self.buf.split(sep, 1)
        return out

    def take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self) -> tuple[int, dict, bytes]:
        head = self.until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(head[0].split(" ")[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status == 100:
            return status, headers, b""
        if "chunked" in headers.get("transfer-encoding", ""):
            body = b""
            while True:
                size = int(self.until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self.until(b"\r\n")
                    break
                body += self.take(size)
                self.until(b"\r\n")
            return status, headers, body
        return status, headers, self.take(int(headers.get("content-length", "0")))


class Case:
    def __init__(self, name: str, args):
        self.name = name
        self.args = args
        self.requests = {}
        self.responses = {}

    def connect(self) -> Client:
        return Client(self.args.host, self.args.port, self.args.timeout)

    def sent(self, key: str):
        self.requests[key] = self.requests.get(key, 0) + 1

    def got(self, key):
        self.responses[str(key)] = self.responses.get(str(key), 0) + 1

    def get(self, c: Client, path: str, key: str | None = None, close=False):
        """Sends GET path and reads its 200 response."""
        conn = "close" if close else "keep-alive"
        c.send(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: {conn}\r\n\r\n".encode())
        self.sent(key or f"GET {path}")
        self.expect(c, 200, f"ok GET {path}\n".encode())

    def expect(self, c: Client, status: int, body: bytes | None = None) -> bytes:
        got_status, _, got_body = c.response()
        self.got(got_status)
        if got_status != status or (body is not None and got_body != body):
            raise Wrong(f"expected {status} {body!r}, got {got_status} {got_body[:200]!r}")
        return got_body

    def report(self) -> dict:
        return {"case": self.name, "requests": self.requests, "responses": self.responses}


def keepalive(t: Case):
    c = t.connect()
    for _ in range(20):
        t.get(c, "/x")
    c.close()


def pipelined(t: Case):
    c = t.connect()
    paths = ["/p1", "/p2", "/p3"]
    c.send(b"".join(f"GET {p} HTTP/1.1\r\nHost: test\r\n\r\n".encode() for p in paths))
    for p in paths:
        t.sent(f"GET {p}")
    for p in paths:
        t.expect(c, 200, f"ok GET {p}\n".encode())
    c.close()


def split(t: Case):
    c = t.connect()
    c.send(b"GET /sp")
    time.sleep(0.05)
    c.send(b"lit HTTP/1.1\r\nHost: test\r\n\r\n")
    t.sent("GET /split")
    t.expect(c, 200, b"ok GET /split\n")
    c.close()


def continue_(t: Case):
    c = t.connect()
    body = json.dumps({"order": 1, "items": ["a", "b"]}).encode()
    c.send(
        f"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    t.sent("POST /upload")
    t.expect(c, 100)
    c.send(body)
    t.expect(c, 200, f"ok POST /upload {len(body)} bytes\n".encode())
    c.close()


def chunked(t: Case):
    c = t.connect()
    c.send(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
    t.sent("GET /stream")
    t.expect(c, 200, b"".join(f"part {i}\n".encode() for i in range(5)))
    t.get(c, "/after-stream")
    c.close()


def bigpost(t: Case):
    c = t.connect()
    body = random.Random(1).randbytes(1 << 20)
    c.send(
        f"POST /big HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    for i in range(0, len(body), 16384):
        c.send(body[i : i + 16384])
    t.sent("POST /big")
    t.expect(c, 200, f"ok POST /big {len(body)} bytes\n".encode())
    c.close()


def fdreuse(t: Case):
    for _ in range(50):
        c = t.connect()
        t.get(c, "/fd", close=True)
        c.close()


def garbage(t: Case):
    c = t.connect()
    data = bytes([0x16, 0x03, 0x01]) + random.Random(2).randbytes(4096)  # a TLS-ish start
    c.send(data)
    c.sock.shutdown(socket.SHUT_WR)
    t.sent("garbage")
    t.expect(c, 400)
    try:
        if c.sock.recv(1):
            raise Wrong("the server sent more after its 400")
    except ConnectionResetError:
        pass
    c.close()
    c = t.connect()
    t.get(c, "/after-garbage")
    c.close()


def nonhttp(t: Case):
    c = t.connect()
    for _ in range(3):
        c.send(b"PING\r\n")
        t.sent("PING")
        reply = c.until(b"\r\n").decode()
        t.got(reply)
        if reply != "+PONG":
            raise Wrong(f"PING answered {reply!r}")
    c.send(b"QUIT\r\n")
    t.sent("QUIT")
    reply = c.until(b"\r\n").decode()
    t.got(reply)
    if reply != "+OK":
        raise Wrong(f"QUIT answered {reply!r}")
    c.close()


def ids(t: Case):
    c = t.connect()
    for n in range(10_000):
        t.get(c, f"/items/{n}", key="GET /items/{n}")
    c.close()


# Each syllable has a letter past f, so no word reads as a hex id.
SYLLABLES = ["ka", "lo", "mi", "nu", "ro", "se", "ti", "vu", "za", "po", "ge", "hu"]


def word(i: int) -> str:
    n = len(SYLLABLES)
    return SYLLABLES[i // (n * n) % n] + SYLLABLES[i // n % n] + SYLLABLES[i % n]


def cap(t: Case):
    c = t.connect()
    for i in range(300):
        t.get(c, f"/page-{word(i)}")
    c.close()


RUN = {name: globals()[name if name != "continue" else "continue_"] for name in CASES}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("cases", nargs="+", choices=CASES + ["all"])
    args = p.parse_args()
    names = CASES if "all" in args.cases else args.cases
    for name in names:
        t = Case(name, args)
        try:
            RUN[name](t)
        except (Wrong, OSError, ValueError) as e:
            print(json.dumps(t.report()), flush=True)
            print(f"proto_client: case {name}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        print(json.dumps(t.report()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
