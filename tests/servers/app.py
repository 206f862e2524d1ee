"""A FastAPI service whose routes do known CPU work, for checking what monitor attributes per route.

Each handler measures its own work with time.thread_time_ns() around the work loop and adds it to
per-route totals: that is the ground truth the tests compare monitor's per-route CPU with. The
totals are served at GET /_stats (for this process only) and, when APP_STATS_DIR is set, also
written to APP_STATS_DIR/<pid>.json after each request (atomically, by rename), so that a test can
sum over gunicorn's worker processes, recycled ones included.

The two kinds of FastAPI endpoint run in different threads: a `def` endpoint on an anyio worker
thread (the event loop hands it over), an `async def` endpoint on the event-loop thread itself.

Environment: APP_WORK_ANALYSIS_MS (default 20), APP_WORK_ORDER_MS (5), APP_WORK_POST_MS (1): the
CPU each request of those routes burns; APP_STATS_DIR: where to write the per-process totals;
APP_MONITOR_ROUTES=1: wrap the app in integrations/python's MonitorRoutes middleware.

    uvicorn app:app --loop uvloop --http httptools      # or --loop asyncio --http h11
    gunicorn -k uvicorn.workers.UvicornWorker -w 2 app:app
"""

import contextlib
import json
import os
import threading
import time

from fastapi import FastAPI, Request


def _ms_env(name: str, default: float) -> int:
    return int(float(os.environ.get(name, default)) * 1_000_000)


WORK_ANALYSIS_NS = _ms_env("APP_WORK_ANALYSIS_MS", 20)
WORK_ORDER_NS = _ms_env("APP_WORK_ORDER_MS", 5)
WORK_POST_NS = _ms_env("APP_WORK_POST_MS", 1)
STATS_DIR = os.environ.get("APP_STATS_DIR")

ANALYSIS = "GET /api/analysis/{symbol}"
ORDER = "GET /api/orders/{order_id}"
POST_ORDER = "POST /api/orders"
HEALTH = "GET /health"
PING = "GET /ping"
ROUTES = (ANALYSIS, ORDER, POST_ORDER, HEALTH, PING)

_lock = threading.Lock()
_write_lock = threading.Lock()
_totals = {route: {"count": 0, "work_ns": 0} for route in ROUTES}


def burn(ns: int) -> tuple[int, int]:
    """Runs a pure-Python loop until this thread has used `ns` of CPU; returns (CPU ns, checksum)."""
    start = time.thread_time_ns()
    acc = 0
    if ns > 0:
        while True:
            for i in range(500):
                acc = (acc * 31 + i) & 0xFFFFFFFF
            if time.thread_time_ns() - start >= ns:
                break
    return time.thread_time_ns() - start, acc


def _snapshot() -> dict:
    with _lock:
        routes = {route: dict(t) for route, t in _totals.items()}
    return {"routes": routes, "pid": os.getpid()}


def _write_stats() -> None:
    if not STATS_DIR:
        return
    path = os.path.join(STATS_DIR, f"{os.getpid()}.json")
    # Snapshot and rename under one lock, so that the last file written holds the last totals
    # even when a def endpoint's worker threads finish at once.
    with _write_lock:
        with open(f"{path}.tmp", "w") as f:
            json.dump(_snapshot(), f)
        os.replace(f"{path}.tmp", path)


def record(route: str, work_ns: int) -> None:
    with _lock:
        t = _totals[route]
        t["count"] += 1
        t["work_ns"] += work_ns
    _write_stats()


@contextlib.asynccontextmanager
async def lifespan(_app: FastAPI):
    # Each worker announces itself (zero totals) before its first request.
    if STATS_DIR:
        os.makedirs(STATS_DIR, exist_ok=True)
        _write_stats()
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/api/analysis/{symbol}")
def analysis(symbol: str):
    work_ns, checksum = burn(WORK_ANALYSIS_NS)
    record(ANALYSIS, work_ns)
    return {"symbol": symbol, "score": checksum % 1000, "work_ns": work_ns}


@app.get("/api/orders/{order_id}")
async def get_order(order_id: int):
    work_ns, checksum = burn(WORK_ORDER_NS)
    record(ORDER, work_ns)
    return {"order_id": order_id, "status": "filled", "checksum": checksum, "work_ns": work_ns}


@app.post("/api/orders")
async def create_order(request: Request):
    order = await request.json()
    work_ns, checksum = burn(WORK_POST_NS)
    record(POST_ORDER, work_ns)
    items = order.get("items", []) if isinstance(order, dict) else []
    return {"accepted": True, "items": len(items), "checksum": checksum, "work_ns": work_ns}


@app.get("/health")
def health():
    record(HEALTH, 0)
    return {"ok": True}


@app.get("/ping")
async def ping():
    """The no-work async endpoint: its CPU per request is the framework's overhead for async
    routes, as /health's is for def routes."""
    record(PING, 0)
    return {"ok": True}


@app.get("/_stats")
def stats():
    return _snapshot()


if os.environ.get("APP_MONITOR_ROUTES"):
    # The repo's ASGI middleware: the app names its route templates itself (explicit tags).
    import sys

    sys.path.insert(
        0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "integrations", "python")
    )
    from monitor_tags import MonitorRoutes

    app = MonitorRoutes(app)
