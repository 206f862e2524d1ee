"""Background jobs marked with monitor_tags, whose work is known: the ground truth for tags.

Two job threads run units of work under tags (`report-a`: CPU work and getppid calls,
`report-b`: CPU work only, a third of them failing), then the main thread burns untagged CPU.
They run one after the other: threads contending for the GIL would add futex calls to the
blocks, which no count of the script's own could include.
Each unit's CPU is measured by its own thread (time.thread_time_ns around the tagged block,
which holds the tag writes too), and its syscalls are known by construction: the work loop
makes none, the getppid calls one each, and the end marker's write one. Prints, as one JSON
line: {"TAG report-a": {"count", "cpu_seconds", "syscalls", "failed"}, ..., "untagged_cpu_seconds"}.

    python tagged_jobs.py UNITS
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "integrations", "python"))
from monitor_tags import tag  # noqa: E402

UNITS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
GETPPID_PER_UNIT = 2000


def spin(iterations: int) -> int:
    acc = 0
    for i in range(iterations):
        acc = (acc * 31 + i) & 0xFFFFFFFF
    return acc


truth = {}
lock = threading.Lock()


def note(name: str, cpu_ns: int, syscalls: int, failed: bool) -> None:
    with lock:
        t = truth.setdefault(name, {"count": 0, "cpu_seconds": 0.0, "syscalls": 0, "failed": 0})
        t["count"] += 1
        t["cpu_seconds"] += cpu_ns / 1e9
        t["syscalls"] += syscalls
        t["failed"] += int(failed)


def report_a() -> None:
    for _ in range(UNITS):
        start = time.thread_time_ns()
        with tag("report-a"):
            spin(200_000)
            for _ in range(GETPPID_PER_UNIT):
                os.getppid()
        note("TAG report-a", time.thread_time_ns() - start, GETPPID_PER_UNIT + 1, False)
        time.sleep(0.005)


def report_b() -> None:
    for i in range(UNITS):
        failed = i % 3 == 2
        start = time.thread_time_ns()
        try:
            with tag("report-b"):
                spin(100_000)
                if failed:
                    raise ValueError("a failing unit")
        except ValueError:
            pass
        note("TAG report-b", time.thread_time_ns() - start, 1, failed)
        time.sleep(0.005)


for job in (report_a, report_b):
    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
main_start = time.thread_time_ns()
spin(3_000_000)
truth["untagged_cpu_seconds"] = (time.thread_time_ns() - main_start) / 1e9
print(json.dumps(truth), flush=True)
