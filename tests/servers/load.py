"""A keep-alive load client for app.py, standard library only, that tells what it sent.

Each of --clients threads holds one keep-alive connection (http.client) and sends --requests
requests, round robin over --mix (kind=weight: analysis, order, post, health, ping), with distinct ids
and symbols. A connection the server resets or closes (gunicorn recycling a worker after
--max-requests) is reopened and the request sent again. At the end it prints one JSON line:

    {"routes": {"GET /api/analysis/{symbol}": {"sent": n, "status": {"200": n}}, ...},
     "reconnects": n, "failed": n, "errors": {"ConnectionResetError": n}, "wall_s": s}

`sent` counts requests (a resent one once); `failed` those that got no response after retries;
`errors` what the dropped connections raised. It exits 1 when a request failed.

    python3 load.py --port 8000 --clients 4 --requests 200 --mix analysis=1,order=2,health=1
"""

import argparse
import http.client
import json
import threading
import time

KINDS = {
    "analysis": ("GET /api/analysis/{symbol}", "GET", lambda c, i: f"/api/analysis/SYM{c}N{i}", None),
    "order": ("GET /api/orders/{order_id}", "GET", lambda c, i: f"/api/orders/{c * 1_000_000 + i}", None),
    "post": (
        "POST /api/orders",
        "POST",
        lambda c, i: "/api/orders",
        lambda c, i: json.dumps({"client": c, "seq": i, "items": [{"sku": f"SKU{i}", "qty": 1}]}),
    ),
    "health": ("GET /health", "GET", lambda c, i: "/health", None),
    "ping": ("GET /ping", "GET", lambda c, i: "/ping", None),
}

RETRIES = 5
# What a connection the server dropped (or a timed-out socket) raises.
DROPPED = (OSError, http.client.HTTPException)


def parse_mix(text: str) -> list[str]:
    order = []
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        kind = kind.strip()
        if kind not in KINDS:
            raise SystemExit(f"unknown kind {kind!r} in --mix (known: {', '.join(KINDS)})")
        order.extend([kind] * int(weight or 1))
    if not order:
        raise SystemExit("--mix is empty")
    return order


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.routes = {}
        self.reconnects = 0
        self.failed = 0
        self.errors = {}

    def add(self, route: str, status):
        with self.lock:
            r = self.routes.setdefault(route, {"sent": 0, "status": {}})
            r["sent"] += 1
            if status is None:
                self.failed += 1
            else:
                r["status"][str(status)] = r["status"].get(str(status), 0) + 1


def client(args, client_id: int, mix: list[str], tally: Tally):
    def connect():
        return http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)

    conn = connect()
    for i in range(args.requests):
        kind = mix[i % len(mix)]
        route, method, path_of, body_of = KINDS[kind]
        path = path_of(client_id, i)
        body = body_of(client_id, i) if body_of else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        status = None
        for _attempt in range(RETRIES):
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                if resp.will_close:
                    conn.close()
                    conn = connect()
                break
            except DROPPED as e:
                conn.close()
                conn = connect()
                with tally.lock:
                    tally.reconnects += 1
                    name = type(e).__name__
                    tally.errors[name] = tally.errors.get(name, 0) + 1
                time.sleep(0.01 * (_attempt + 1))
        tally.add(route, status)
    conn.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--requests", type=int, default=100, help="requests per client")
    p.add_argument("--mix", default="analysis=1,order=2,health=1")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per socket operation")
    args = p.parse_args()
    mix = parse_mix(args.mix)
    tally = Tally()
    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(args, c, mix, tally)) for c in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    print(
        json.dumps(
            {
                "routes": tally.routes,
                "reconnects": tally.reconnects,
                "failed": tally.failed,
                "errors": tally.errors,
                "wall_s": round(wall, 3),
            }
        ),
        flush=True,
    )
    return 1 if tally.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
