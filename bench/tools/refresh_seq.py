#!/usr/bin/env python3
"""Server cost of one refresh grant, without load: sequential grants on one connection.

Starts `tessera serve` on a fresh data dir (SQLite), logs the bootstrap admin in once, then
chains refresh grants one after another over one keep-alive connection: `--warm` unmeasured,
then `--count` measured. Reports, per grant, the server's CPU (utime + stime of the whole
process, from /proc/PID/stat), its context switches (voluntary + involuntary, summed over
/proc/PID/task/*/status; threads that exit during the run are not counted) and the wall
time as seen by this client.

With no concurrent load the figures do not depend on how the two cores are shared, so two
binaries can be compared run after run (alternate them: the guest's speed drifts):

    python3 bench/tools/refresh_seq.py --tessera target/release/tessera --alg HS256
    python3 bench/tools/refresh_seq.py --tessera /tmp/old/tessera --alg HS256

Python standard library only; shares its settings with bench/tools/bench.py.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the settings and /proc helpers of the main driver)


def ctx_switches(pid: int) -> int:
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    total += int(line.split()[1])
        except OSError:  # the thread exited while we read
            pass
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tessera", type=Path, required=True, help="the tessera binary")
    ap.add_argument("--alg", choices=["HS256", "RS256"], default="HS256")
    ap.add_argument("--count", type=int, default=3000, help="measured grants")
    ap.add_argument("--warm", type=int, default=50, help="unmeasured grants first")
    ap.add_argument("--repeat", type=int, default=1, help="measured blocks, one line each")
    a = ap.parse_args()
    if a.count < 1 or a.warm < 0 or a.repeat < 1:
        ap.error("--count and --repeat must be at least 1, --warm at least 0")

    variant = "tessera-hs256" if a.alg == "HS256" else "tessera-rs256"
    env = bench.tessera_env(variant)
    with tempfile.TemporaryDirectory(prefix="refresh-seq-") as tmp:
        port = bench.free_port()
        log = Path(tmp) / "server.log"
        proc = subprocess.Popen(
            [str(a.tessera), "serve", "--listen", f"127.0.0.1:{port}",
             "--data-dir", str(Path(tmp) / "data")],
            env=env, stdin=subprocess.DEVNULL, stdout=log.open("w"),
            stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            bench.wait_ready(base, "/readyz", proc)
            refresh = bench.password_grant(base, "admin", bench.ADMIN_PASSWORD)["refresh_token"]
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            headers = {"Content-Type": "application/x-www-form-urlencoded"}

            def grant(token: str) -> str:
                conn.request("POST", "/token",
                             bench.form(grant_type="refresh_token", refresh_token=token),
                             headers)
                res = conn.getresponse()
                body = res.read()
                if res.status != 200:
                    raise RuntimeError(f"refresh failed: {res.status} {body[:200]!r}")
                return json.loads(body)["refresh_token"]

            for _ in range(a.warm):
                refresh = grant(refresh)
            print(f"{a.tessera} {a.alg}: per refresh grant, {a.count} sequential")
            for _ in range(a.repeat):
                cpu0, cs0, t0 = bench.cpu_seconds(proc.pid), ctx_switches(proc.pid), time.perf_counter()
                for _ in range(a.count):
                    refresh = grant(refresh)
                t1, cpu1, cs1 = time.perf_counter(), bench.cpu_seconds(proc.pid), ctx_switches(proc.pid)
                print(f"  server CPU {(cpu1 - cpu0) / a.count * 1e6:7.1f} µs"
                      f"  context switches {(cs1 - cs0) / a.count:5.2f}"
                      f"  wall {(t1 - t0) / a.count * 1e6:7.1f} µs")
            conn.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
