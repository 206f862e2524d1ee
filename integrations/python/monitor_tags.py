"""Explicit tags for monitor: name your own units of work, at the cost of one failing syscall.

monitor's kernel programs watch the target's writes to file descriptor -1. Such a write fails
at once with EBADF, touching nothing, so it is safe with or without monitor running; when
monitor watches the process, it reads the bytes and books the thread's CPU and syscalls to the
named work. No library, socket or agent is involved: this file is a convenience, copy it.

Markers (ASCII, names without spaces, at most 128 bytes):
    monitor:begin NAME     a unit of work named NAME starts on this thread
    monitor:end [STATUS]   the innermost unit open on this thread ends (STATUS: 0-999)
    monitor:route TEMPLATE the application's path template, e.g. /api/orders/{order_id}

Usage:
    from monitor_tags import tag, announce_route, MonitorRoutes

    with tag("nightly-report"):          # or @tag("nightly-report") on a function
        build_report()

    app = MonitorRoutes(app)             # ASGI: announces each request's route template

A span belongs to the thread that opened it: in asyncio code, keep the body free of awaits
(the event loop would run other tasks inside the span); route announcements have no such
limit. Tagged work shows in app_requests_total{method="TAG",route=NAME} and its siblings.
"""

import functools
import os
import time

__all__ = ["tag", "begin", "end", "announce_route", "MonitorRoutes"]

_FD = -1


def _write(marker: bytes) -> None:
    try:
        os.write(_FD, marker)
    except OSError:
        pass  # EBADF, always: the kernel program has already seen the bytes.


def begin(name: str) -> None:
    """Marks the start of a unit of work named `name` on this thread."""
    _write(b"monitor:begin " + name.encode("ascii"))


def end(status: int = 0) -> None:
    """Marks the end of the innermost unit of work open on this thread."""
    _write(b"monitor:end %d" % status if status else b"monitor:end")


class tag:
    """Context manager and decorator: the block (or each call) is one unit of work.

    An exception ends the unit with status 500 (counted under status="500"); otherwise 0.
    """

    def __init__(self, name: str):
        self._begin = b"monitor:begin " + name.encode("ascii")

    def __enter__(self):
        _write(self._begin)
        return self

    def __exit__(self, exc_type, exc, tb):
        _write(b"monitor:end 500" if exc_type is not None else b"monitor:end")
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with self:
                return fn(*args, **kwargs)

        return wrapped


_announced: dict = {}
_REANNOUNCE_S = 10.0


def announce_route(template: str) -> None:
    """Tells monitor that paths like `template` are one route (`/api/orders/{order_id}`).

    Each template is written at most once every 10 s per process, so that a monitor started
    later learns it too while a busy route costs nothing more.
    """
    now = time.monotonic()
    last = _announced.get(template)
    if last is not None and now - last < _REANNOUNCE_S:
        return
    _announced[template] = now
    _write(b"monitor:route " + template.encode("ascii", "replace"))


class MonitorRoutes:
    """ASGI middleware: announces the template of the route each HTTP request matched.

    Works with Starlette and FastAPI (the router puts the matched route in scope["route"]);
    for other frameworks, pass `template_of(scope) -> str | None`.
    """

    def __init__(self, app, template_of=None):
        self.app = app
        self.template_of = template_of or _starlette_template

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http":
            return await self.app(scope, receive, send)

        async def send_announcing(message):
            if message.get("type") == "http.response.start":
                template = self.template_of(scope)
                if template:
                    announce_route(template)
            await send(message)

        return await self.app(scope, receive, send_announcing)


def _starlette_template(scope):
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path.startswith("/") else None
