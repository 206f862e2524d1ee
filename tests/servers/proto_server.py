"""A small HTTP/1.1 server of our own, at the socket level, for the protocol cases of proto_client.py.

The frameworks decide for themselves how a request crosses the syscalls; this server makes the
awkward shapes on purpose and plainly: one thread per connection, `recv`/`sendall` on the socket,
keep-alive, pipelined requests answered in order, requests that arrive in pieces, `Expect:
100-continue`, large bodies read in many reads, a chunked response streamed in five writes 20 ms
apart (GET /stream), and connections that are not HTTP at all: a Redis-like line protocol (PING ->
+PONG, QUIT -> +OK) and binary garbage (400, then close). Everything else gets 200 and a small body.

It prints {"port": P, "pid": N} on start (--port 0 picks a free port), and on SIGTERM/SIGINT what
it answered: {"answered": {"GET /x": n, "GET /items/{n}": n, "PING": n, "garbage": n, ...}}
(all-digit path segments counted as {n}). Standard library only.

    python3 proto_server.py --port 0
"""

import argparse
import json
import os
import signal
import socket
import threading
import time

MAX_HEAD = 64 * 1024
RECV = 64 * 1024
METHODS = {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"}
PRINTABLE = set(range(0x20, 0x7F)) | {0x09, 0x0D, 0x0A}

_lock = threading.Lock()
_answered = {}


def count(key: str):
    with _lock:
        _answered[key] = _answered.get(key, 0) + 1


class Closed(Exception):
    """The peer closed the connection (or we decided to)."""


class Conn:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        self.http = False

    def fill(self):
        data = self.sock.recv(RECV)
        if not data:
            raise Closed
        self.buf += data

    def take(self, n: int) -> bytes:
        """The next n bytes, read in as many recvs as they take."""
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, data: bytes):
        self.sock.sendall(data)

    def respond(self, status: str, body: bytes, keep_alive: bool, head_only=False):
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        ).encode()
        self.send(head if head_only else head + body)

    def reject(self, what: str):
        """Answers 400 to what is not HTTP, then closes after the peer has finished sending (so that
        our close does not reset the connection before the peer reads the answer)."""
        count(what)
        try:
            self.respond("400 Bad Request", b"bad request\n", keep_alive=False)
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(2)
            while self.sock.recv(RECV):
                pass
        except OSError:
            pass
        raise Closed

    def line(self) -> bytes | None:
        """The next line (without its end), or None if the bytes so far cannot start one we take."""
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line, self.buf = self.buf[:end], self.buf[end + 1 :]
                return line.rstrip(b"\r")
            if any(b not in PRINTABLE for b in self.buf) or len(self.buf) > MAX_HEAD:
                return None
            self.fill()

    def serve(self):
        while True:
            line = self.line()
            if line is None or any(b not in PRINTABLE for b in line):
                self.reject("garbage")
            if line == b"":
                continue  # empty lines before a request line are allowed (RFC 9112 2.2)
            parts = line.split(b" ")
            if len(parts) == 3 and parts[0] in METHODS and parts[2].startswith(b"HTTP/1."):
                self.http = True
                self.request(parts[0].decode(), parts[1].decode(), parts[2].decode())
            elif not self.http:
                self.command(line)
            else:
                self.reject("bad request line")

    def command(self, line: bytes):
        """The Redis-like line protocol of a connection whose first line is not HTTP."""
        word = line.split(b" ", 1)[0].upper().decode()
        if word == "PING":
            count("PING")
            self.send(b"+PONG\r\n")
        elif word == "QUIT":
            count("QUIT")
            self.send(b"+OK\r\n")
            raise Closed
        else:
            count("unknown command")
            self.send(b"-ERR unknown command\r\n")

    def request(self, method: str, target: str, version: str):
        headers = {}
        size = 0
        while True:
            line = self.line()
            if line is None:
                self.reject("bad header")
            if line == b"":
                break
            size += len(line)
            name, sep, value = line.partition(b":")
            if not sep or size > MAX_HEAD:
                self.reject("bad header")
            headers[name.strip().lower().decode()] = value.strip().decode("latin-1")
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
        path = target.split("?", 1)[0]
        key = f"{method} {path}"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            count(f"{key} (chunked body)")
            self.respond("501 Not Implemented", b"chunked request bodies are not supported\n", False)
            raise Closed
        length = int(headers.get("content-length", "0") or 0)
        if length and headers.get("expect", "").lower() == "100-continue" and len(self.buf) < length:
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self.take(length) if length else b""
        # Counted by template: all-digit segments as {n} (the ids case sends 10,000 of them).
        count(f"{method} " + "/".join("{n}" if s.isdigit() else s for s in path.split("/")))
        if path == "/stream" and method == "GET":
            self.stream(keep_alive)
        else:
            text = f"ok {method} {path}" + (f" {len(body)} bytes" if length else "") + "\n"
            self.respond("200 OK", text.encode(), keep_alive, head_only=method == "HEAD")
        if not keep_alive:
            raise Closed

    def stream(self, keep_alive: bool):
        """A chunked response in five writes 20 ms apart, the head with the first chunk and the
        last chunk with the terminating one."""
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        ).encode()
        for i in range(5):
            data = f"part {i}\n".encode()
            chunk = f"{len(data):x}\r\n".encode() + data + b"\r\n"
            if i == 0:
                chunk = head + chunk
            else:
                time.sleep(0.02)
            if i == 4:
                chunk += b"0\r\n\r\n"
            self.send(chunk)


def handle(sock: socket.socket):
    conn = Conn(sock)
    try:
        conn.serve()
    except (Closed, OSError, UnicodeDecodeError, ValueError):
        pass
    finally:
        sock.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(128)

    def stop(_signum, _frame):
        with _lock:
            print(json.dumps({"answered": dict(sorted(_answered.items()))}), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(json.dumps({"port": listener.getsockname()[1], "pid": os.getpid()}), flush=True)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=handle, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()
