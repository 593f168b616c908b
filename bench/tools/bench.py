#!/usr/bin/env python3
"""The HTTP benchmark driver behind bench/run.sh (Python standard library only).

For each scenario and server it starts a fresh server process on 127.0.0.1, prepares what
the scenario needs on a separate, earlier process (so logins made to obtain tokens do not
count in the measured process's memory or CPU), runs wrk against it, and reads the server's
/proc entries before and after. The scenarios measured against the hello ceiling (ROUNDED)
run every server side by side instead, in interleaved slices of load (see ROUNDED).
Results go to bench/out/results-<UTC time>.md (and .json), copied to bench/out/latest.md.

Run it through bench/run.sh, which builds the binaries, installs wrk and creates the venv.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
WRK_DIR = BENCH / "wrk"
CLK_TCK = os.sysconf("SC_CLK_TCK")

ADMIN_PASSWORD = "bench run bootstrap passphrase"
USER = "bench"
# Also in bench/peers/fastapi_app.py.
USER_PASSWORD = "quartz lantern under a staple moon"
HS256_SECRET = "bench-hs256-secret-0123456789abcdef0123456789"

SCENARIOS = ["users_me", "users_me_10k", "login", "refresh", "users_me_under_login", "startup"]
# Scenarios whose target is a ratio to the hello ceiling: their servers (Tessera and hello)
# run side by side, interleaved. All of them are started and warmed up first, then each gets
# a short slice of the same load in turn, round after round (hello, rs256, hs256, then the
# other way round), and a server's figure is the requests of all its slices over their time.
# On a shared 2-core machine throughput drifts by 10-30 % over tens of seconds (1 s runs of
# hello alone went from 45 k to 84 k req/s within a minute, and 10 s runs of the same binary
# a minute apart gave ratios from 0.64 to 1.17); slices of 2 s alternating for a minute put
# every server through the same drift, which then cancels in the ratio.
ROUNDED = {"users_me", "users_me_10k"}
SCENARIO_TITLES = {
    "users_me": "GET /users/me, one token",
    "users_me_10k": "GET /users/me, distinct tokens round-robin",
    "login": "POST /token, password grant",
    "refresh": "POST /token, refresh grant (rotating)",
    "users_me_under_login": "GET /users/me while logins saturate the CPU",
    "startup": "start to ready on an existing data dir, idle RSS",
}


@dataclass
class Settings:
    duration: int
    threads: int
    connections: int
    distinct_tokens: int
    quick: bool
    out: Path
    tessera: Path
    hello: Path
    argon2_time: Path
    rs256_sign_time: Path | None
    python: Path | None
    servers: list[str]
    perf: bool = False
    # Interleaved rounds for ROUNDED scenarios, and the seconds of each server's slice.
    rounds: int = 1
    slice: int = 2
    # Unmeasured seconds of the same load on each server before users_me / users_me_10k.
    warmup: int = 2


@dataclass
class Server:
    """A running server process."""

    name: str
    proc: subprocess.Popen
    base: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def host_port(self) -> tuple[str, int]:
        u = urllib.parse.urlparse(self.base)
        return u.hostname or "127.0.0.1", u.port or 80

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Row:
    scenario: str
    server: str
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int | None = None
    error_detail: str = ""
    requests: int | None = None
    seconds: float | None = None
    hwm_mib: float | None = None
    cpu_us_per_req: float | None = None
    load: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)
    # 1, 2, ... for scenarios run in alternating rounds (see ROUNDED); 0 otherwise.
    round: int = 0


# ---------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ---------------------------------------------------------------------------- HTTP helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(base: str, method: str, path: str, body: str | bytes | None = None,
            headers: dict | None = None, timeout: float = 30) -> tuple[int, bytes]:
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        res = conn.getresponse()
        return res.status, res.read()
    finally:
        conn.close()


def wait_ready(base: str, path: str, proc: subprocess.Popen, timeout: float = 60) -> float:
    """Polls `path` every millisecond until it answers 200; returns the seconds waited."""
    start = time.monotonic()
    u = urllib.parse.urlparse(base)
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return time.monotonic() - start
            conn.close()
        except OSError:
            pass
        time.sleep(0.001)
    raise RuntimeError(f"{base}{path} not ready after {timeout} s")


def form(**kv: str) -> str:
    return urllib.parse.urlencode(kv)


def password_grant(base: str, username: str, password: str) -> dict:
    status, body = request(base, "POST", "/token", form(username=username, password=password),
                           {"Content-Type": "application/x-www-form-urlencoded"})
    if status != 200:
        raise RuntimeError(f"login of {username} failed: {status} {body[:200]!r}")
    return json.loads(body)


# ---------------------------------------------------------------------------- servers


def tessera_env(variant: str) -> dict:
    """The environment of a Tessera server under test (`tessera-rs256` or `tessera-hs256`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env.update({
        "TESSERA_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        # One client address sends every login and refresh.
        "TESSERA_RATE_LIMITS__TOKEN_PER_MINUTE": "0",
        # Fixed, so tokens obtained from one process verify in the next (the default
        # issuer follows the listening port, which changes with every start).
        "TESSERA_ISSUER": "http://tessera.bench.test",
    })
    if variant == "tessera-hs256":
        env["TESSERA_SIGNING__ALG"] = "HS256"
        env["TESSERA_SIGNING__SECRET"] = HS256_SECRET
    return env


class Servers:
    def __init__(self, s: Settings):
        self.s = s
        self.work = s.out / "work"
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.prepared: dict[str, dict] = {}

    # -- Tessera

    def start_tessera(self, variant: str, tag: str) -> Server:
        data = self.work / f"data-{variant}"
        log = self.work / f"{variant}-{tag}.log"
        port = free_port()
        proc = subprocess.Popen(
            [str(self.s.tessera), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data)],
            env=tessera_env(variant), stdin=subprocess.DEVNULL,
            stdout=log.open("w"), stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, "/readyz", proc)
        return Server(variant, proc, base, log)

    def prepare_tessera(self, variant: str, needs: set[str]) -> dict:
        """On a separate process: the user, one access token, refresh tokens, many tokens."""
        p = self.prepared.setdefault(variant, {})
        todo = {"token"} | needs
        if "refresh_pool" in todo:
            p.pop("refresh_pool", None)  # single use: always fresh
        todo -= set(p)
        if not todo:
            return p
        server = self.start_tessera(variant, "prepare")
        try:
            base = server.base
            if "user" not in p:
                admin = password_grant(base, "admin", ADMIN_PASSWORD)["access_token"]
                status, body = request(base, "POST", "/admin/users", json.dumps(
                    {"username": USER, "password": USER_PASSWORD, "roles": ["user"]}),
                    {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
                if status not in (200, 201, 409):
                    raise RuntimeError(f"creating the bench user failed: {status} {body[:200]!r}")
                p["user"] = True
            if "token" in todo:
                p["token"] = password_grant(base, USER, USER_PASSWORD)["access_token"]
            if "refresh_pool" in todo:
                count = 2 * self.s.connections + 2 * self.s.threads + 4
                p["refresh_pool"] = self.login_many(base, count, f"{variant}-refresh-pool")
            if "tokens" in todo:
                p["tokens"] = self.harvest_tokens(variant, base)
        finally:
            server.stop()
        return p

    def login_many(self, base: str, count: int, name: str) -> Path:
        """`count` fresh sessions (password grants, 8 at a time); their refresh tokens."""
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            tokens = list(pool.map(lambda _: password_grant(base, USER, USER_PASSWORD)
                                   ["refresh_token"], range(count)))
        path = self.work / f"{name}.txt"
        path.write_text("\n".join(tokens) + "\n")
        return path

    def harvest_tokens(self, variant: str, base: str) -> Path:
        """Distinct valid access tokens from rotating refresh chains (wrk + refresh.lua)."""
        want = self.s.distinct_tokens
        path = self.work / f"{variant}-tokens.txt"
        seen: list[str] = []
        for attempt in range(6):
            pool = self.login_many(base, 2 * 16 + 4, f"{variant}-harvest-pool-{attempt}")
            prefix = self.work / f"{variant}-harvest-{attempt}"
            env = dict(os.environ, BENCH_WRK_DIR=str(WRK_DIR), BENCH_THREADS="1")
            secs = max(2, min(10, int(1.5 * (want - len(seen)) / 1500) + 1))
            subprocess.run(["wrk", "-t1", "-c16", f"-d{secs}s", "--timeout", "10s",
                            "-s", str(WRK_DIR / "refresh.lua"), f"{base}/token", "--",
                            str(pool), str(prefix)], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            for f in sorted(self.work.glob(f"{prefix.name}.*")):
                seen.extend(t for t in f.read_text().split() if t)
            seen = list(dict.fromkeys(seen))
            if len(seen) >= want:
                break
        if len(seen) < want:
            raise RuntimeError(f"harvested only {len(seen)} of {want} tokens")
        path.write_text("\n".join(seen[:want]) + "\n")
        return path

    # -- the hello-world ceiling

    def start_hello(self, tag: str) -> Server:
        log = self.work / f"hello-{tag}.log"
        port = free_port()
        proc = subprocess.Popen([str(self.s.hello), f"127.0.0.1:{port}"], stdin=subprocess.DEVNULL,
                                stdout=log.open("w"), stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, "/healthz", proc)
        return Server("hello", proc, base, log)

    # -- the seed's FastAPI app

    def start_fastapi(self, tag: str) -> Server:
        assert self.s.python is not None
        log = self.work / f"fastapi-{tag}.log"
        port = free_port()
        proc = subprocess.Popen(
            [str(self.s.python), "-m", "uvicorn", "fastapi_app:app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning", "--no-access-log"],
            cwd=BENCH / "peers", stdin=subprocess.DEVNULL, stdout=log.open("w"),
            stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, "/openapi.json", proc)
        return Server("fastapi", proc, base, log)

    def fastapi_tokens(self) -> dict:
        p = self.prepared.setdefault("fastapi", {})
        if "tokens" not in p:
            path = self.work / "fastapi-tokens.txt"
            subprocess.run([str(self.s.python), "fastapi_app.py", "mint",
                            str(self.s.distinct_tokens), str(path)], cwd=BENCH / "peers",
                           check=True)
            p["tokens"] = path
            p["token"] = path.read_text().split()[0]
        return p

    def start(self, name: str, tag: str) -> Server:
        if name.startswith("tessera"):
            return self.start_tessera(name, tag)
        if name == "hello":
            return self.start_hello(tag)
        return self.start_fastapi(tag)


# ---------------------------------------------------------------------------- wrk


def parse_wrk(output: str) -> dict:
    m = re.search(r"^BENCH (.*)$", output, re.M)
    if not m:
        raise RuntimeError("wrk printed no BENCH line:\n" + output[-2000:])
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def wrk_cmd(s: Settings, url: str, script: str, *args: str, threads: int | None = None,
            connections: int | None = None, headers: list[str] = (),
            duration: int | None = None) -> list[str]:
    cmd = ["wrk", f"-t{threads or s.threads}", f"-c{connections or s.connections}",
           f"-d{duration or s.duration}s", "--timeout", "10s", "-s", str(WRK_DIR / script)]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    if args:
        cmd += ["--", *args]
    return cmd


def fill(row: Row, r: dict) -> None:
    secs = r["duration_us"] / 1e6
    row.requests = r["requests"]
    row.seconds = secs
    row.rps = r["requests"] / secs if secs else 0
    row.p50_ms = r["p50_us"] / 1000
    row.p99_ms = r["p99_us"] / 1000
    socket_errors = r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"]
    row.errors = r["status_errors"] + socket_errors
    if row.errors:
        row.error_detail = (f"status {r['status_errors']}, connect {r['connect_errors']}, "
                            f"read {r['read_errors']}, write {r['write_errors']}, "
                            f"timeout {r['timeouts']}")


def measure(server: Server, runs: list[tuple[list[str], dict]],
            profile: Path | None = None) -> tuple[list[dict], float, float]:
    """Runs the wrk commands at once against `server`; returns their results, the server's CPU
    seconds over the run and its VmHWM in MiB. With `profile`, perf samples the server
    meanwhile and its flat profile is written there."""
    cpu0 = cpu_seconds(server.pid)
    perf = None
    if profile:
        duration = next(a for a in runs[0][0] if a.startswith("-d"))[2:-1]
        perf = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-p", str(server.pid),
                                 "-o", str(profile.with_suffix(".data")), "--", "sleep",
                                 duration], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for cmd, env in runs]
    outputs = [p.communicate()[0] for p in procs]
    cpu = cpu_seconds(server.pid) - cpu0
    if perf:
        perf.wait()
        with profile.open("w") as f:
            subprocess.run(["perf", "report", "-i", str(profile.with_suffix(".data")),
                            "--stdio", "--no-children", "--percent-limit", "0.7", "-g", "none",
                            "--sort", "dso,symbol"], stdout=f, stderr=subprocess.DEVNULL)
    if server.proc.poll() is not None:
        raise RuntimeError(f"{server.name} died during the run; see {server.log}")
    hwm = status_kib(server.pid, "VmHWM") / 1024
    return [parse_wrk(o) for o in outputs], cpu, hwm


# ---------------------------------------------------------------------------- scenarios


def servers_for(scenario: str, s: Settings) -> list[str]:
    wanted = {
        "users_me": ["tessera-rs256", "tessera-hs256", "hello", "fastapi"],
        "users_me_10k": ["tessera-rs256", "tessera-hs256", "hello", "fastapi"],
        "login": ["tessera-rs256", "tessera-hs256", "fastapi"],
        "refresh": ["tessera-rs256", "tessera-hs256"],
        "users_me_under_login": ["tessera-rs256", "fastapi"],
        "startup": ["tessera-rs256"],
    }[scenario]
    return [w for w in wanted if w in s.servers and (w != "fastapi" or s.python)]


def wrk_env(s: Settings) -> dict:
    return dict(os.environ, BENCH_WRK_DIR=str(WRK_DIR), BENCH_THREADS=str(s.threads))


def prepare(scenario: str, name: str, sv: Servers) -> dict:
    """What the scenario needs, obtained before the measured process starts."""
    if name.startswith("tessera"):
        needs = {"users_me_10k": {"tokens"}, "refresh": {"refresh_pool"}}.get(scenario, set())
        return sv.prepare_tessera(name, needs)
    if name == "fastapi":
        return sv.fastapi_tokens()
    # hello ignores the token; send Tessera's so the requests are the same
    return sv.prepare_tessera("tessera-rs256", {"tokens"} if scenario == "users_me_10k" else set())


def me_load(scenario: str, prep: dict) -> tuple[tuple[str, ...], dict]:
    """wrk script arguments and options of the users_me / users_me_10k load."""
    if scenario == "users_me":
        return ("fixed.lua",), {"headers": [f"Authorization: Bearer {prep['token']}"]}
    return ("tokens.lua", str(prep["tokens"])), {}


def run_interleaved(scenario: str, names: list[str], s: Settings, sv: Servers) -> list[Row]:
    """users_me / users_me_10k for every server side by side (see ROUNDED): one row per
    server and round, each from a slice of `s.slice` seconds."""
    env = wrk_env(s)
    servers: dict[str, tuple[Server, tuple, dict]] = {}
    rows: list[Row] = []
    try:
        for name in names:
            prep = prepare(scenario, name, sv)
            args, kw = me_load(scenario, prep)
            servers[name] = (sv.start(name, scenario), args, kw)
        # The same load, unmeasured, for WARMUP seconds first, for every server: the slices
        # measure the steady state. A fresh process faults its code and heap in, and Tessera
        # verifies each token's signature in full the first time it sees it (the
        # verified-token cache answers the later requests); for 10,000 RS256 tokens that
        # first pass is about 0.2 s of CPU.
        for server, args, kw in servers.values():
            subprocess.run(wrk_cmd(s, f"{server.base}/users/me", *args, duration=s.warmup, **kw),
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, check=True)
        for k in range(1, s.rounds + 1):
            # Forwards then backwards (A B C C B A ...): a steady drift favours no server.
            order = names if k % 2 else names[::-1]
            for name in order:
                server, args, kw = servers[name]
                row = Row(scenario, name, load=loadavg(), round=k)
                prof = (s.out / f"perf-{scenario}-{name}.txt"
                        if s.perf and k == s.rounds and name.startswith("tessera") else None)
                results, cpu, hwm = measure(server, profile=prof, runs=[
                    (wrk_cmd(s, f"{server.base}/users/me", *args, duration=s.slice, **kw), env)])
                fill(row, results[0])
                row.cpu_us_per_req = cpu * 1e6 / row.requests if row.requests else None
                row.hwm_mib = hwm
                if scenario == "users_me_10k":
                    row.note = f"{s.distinct_tokens} tokens"
                rows.append(row)
                print(f"    round {k} {name}: {fmt(row.rps, ',.0f')} req/s, p99 "
                      f"{fmt(row.p99_ms, '.2f')} ms, errors {row.errors}", flush=True)
    finally:
        for server, _, _ in servers.values():
            server.stop()
    return rows


def run_scenario(scenario: str, name: str, s: Settings, sv: Servers) -> Row:
    row = Row(scenario, name, load=loadavg())
    env = wrk_env(s)
    prep = prepare(scenario, name, sv)
    if scenario == "startup":
        return startup(name, s, sv, row)
    server = sv.start(name, scenario)
    prof = s.out / f"perf-{scenario}-{name}.txt" if s.perf else None
    try:
        me_url = f"{server.base}/users/me"
        bearer = [f"Authorization: Bearer {prep['token']}"]
        login_env = dict(env, BENCH_BODY=form(username=USER, password=USER_PASSWORD))
        if scenario == "login":
            results, cpu, hwm = measure(server, profile=prof, runs=[(wrk_cmd(s, f"{server.base}/token", "fixed.lua"), login_env)])
        elif scenario == "refresh":
            results, cpu, hwm = measure(server, profile=prof, runs=[(wrk_cmd(s, f"{server.base}/token", "refresh.lua",
                                                          str(prep["refresh_pool"])), env)])
        elif scenario == "users_me_under_login":
            me_conns = max(2, s.connections // 4)
            results, cpu, hwm = measure(server, profile=prof, runs=[
                (wrk_cmd(s, me_url, "fixed.lua", threads=1, connections=me_conns, headers=bearer), env),
                (wrk_cmd(s, f"{server.base}/token", "fixed.lua", threads=1), login_env),
            ])
            login = Row(scenario, name)
            fill(login, results[1])
            row.extra["login"] = results[1]
            row.note = (f"/users/me with {me_conns} connections; logins at the same time "
                        f"({s.connections} connections): {login.rps:.0f}/s, p99 "
                        f"{login.p99_ms:.0f} ms, {login.errors} errors")
        else:
            raise ValueError(scenario)
        fill(row, results[0])
        total = sum(r["requests"] for r in results)
        row.cpu_us_per_req = cpu * 1e6 / total if total else None
        row.hwm_mib = hwm
    finally:
        server.stop()
    return row


def startup(name: str, s: Settings, sv: Servers, row: Row) -> Row:
    """Start to ready on the existing data dir (5 starts, median), then idle VmRSS."""
    times, rss = [], []
    for i in range(3 if s.quick else 5):
        data = sv.work / f"data-{name}"
        port = free_port()
        log = sv.work / f"{name}-startup-{i}.log"
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [str(s.tessera), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data)],
            env=tessera_env(name), stdin=subprocess.DEVNULL, stdout=log.open("w"),
            stderr=subprocess.STDOUT)
        server = Server(name, proc, f"http://127.0.0.1:{port}", log)
        try:
            wait_ready(server.base, "/readyz", proc)
            times.append((time.monotonic() - t0) * 1000)
            time.sleep(2)
            rss.append(status_kib(proc.pid, "VmRSS") / 1024)
        finally:
            server.stop()
    row.extra = {"start_ms": times, "idle_rss_mib": rss}
    row.note = (f"start to ready: median {statistics.median(times):.0f} ms "
                f"(of {', '.join(f'{t:.0f}' for t in times)}); idle VmRSS 2 s after ready: "
                f"median {statistics.median(rss):.1f} MiB")
    return row


@dataclass
class HashTiming:
    """Argon2id at Tessera's cost: one hash alone (the target's unit), and `cores` hashes at
    once (what the cores deliver when the hashes share the memory bus and the cache)."""

    alone_ms: float
    parallel_ms: float | None = None
    parallel_rate: float | None = None


def argon2_timing(s: Settings) -> HashTiming | None:
    def run(*args: str) -> dict[str, float] | None:
        try:
            out = subprocess.run([str(s.argon2_time), *args], check=True, capture_output=True,
                                 text=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
        return {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", out)}

    n = "10" if s.quick else "30"
    alone = run(n)
    if not alone or "median_ms" not in alone:
        return None
    timing = HashTiming(alone["median_ms"])
    cores = os.cpu_count() or 1
    if cores > 1:
        par = run(n, str(cores))
        if par and "median_ms" in par and "rate_per_s" in par:
            timing.parallel_ms, timing.parallel_rate = par["median_ms"], par["rate_per_s"]
    return timing


def rs256_sign_us(s: Settings) -> float | None:
    if not s.rs256_sign_time:
        return None
    try:
        out = subprocess.run([str(s.rs256_sign_time), "300" if s.quick else "2000"], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"median_us=([0-9.]+)", out)
    return float(m.group(1)) if m else None


# ---------------------------------------------------------------------------- report


def fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def machine() -> dict:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = ""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    return {"nproc": os.cpu_count(), "cpu": model, "memory": mem, "kernel": os.uname().release,
            "wrk": wrk_version.strip()}


def ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or not b else f"{a / b:.2f}×"


def login_line(server: str, rate: float, row: Row, overall: HashTiming, cores: int) -> str:
    """The login target for one server's run: its rate against `cores` ÷ one hash, timed just
    before and just after that run (the whole scenario's mean if those are missing)."""
    around = [HashTiming(**t) for t in row.extra.get("argon2", [])]
    if len(around) == 2:
        alone = statistics.fmean(t.alone_ms for t in around)
        rates = [t.parallel_rate for t in around if t.parallel_rate]
        par_rate = statistics.fmean(rates) if len(rates) == 2 else None
        unit = (f"{cores} ÷ {alone:.1f} ms = {cores * 1000 / alone:.0f}/s, one hash timed at "
                f"{around[0].alone_ms:.1f} ms just before the run and {around[1].alone_ms:.1f} "
                "ms just after")
    else:
        alone, par_rate = overall.alone_ms, overall.parallel_rate
        unit = "that bound"
    par = f" ({rate / par_rate:.2f}× the {cores}-at-once rate)" if par_rate else ""
    return (f"- login, {server}: {rate:.0f}/s = {rate * alone / (cores * 1000):.2f}× {unit}"
            f"{par}; VmHWM {fmt(row.hwm_mib, '.0f')} MiB")


def report(rows: list[Row], s: Settings, hashing: HashTiming | None, sign_us: float | None,
           started: str, cmd: str) -> str:
    m = machine()
    cores = m["nproc"] or 1
    out = [f"# Tessera HTTP benchmark, {started} UTC", "",
           f"Command: `{cmd}`", "",
           f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memory']}, Linux {m['kernel']}; "
           f"{m['wrk']}.", "",
           f"wrk: -t{s.threads} -c{s.connections} -d{s.duration}s per run unless noted. "
           f"{', '.join(sorted(ROUNDED))}: Tessera, hello and FastAPI run side by side, "
           "interleaved: "
           f"all are started and get {s.warmup} s of the same load, unmeasured (the first "
           "request of each token is a full signature verification), then "
           f"{s.rounds} rounds in which each gets a {s.slice} s slice in turn (forwards, then "
           "backwards); a row is the requests of all its slices over their time, p50 the "
           "median of the slices' p50, p99 the highest slice p99. Every other run is a server "
           "process started for it alone. login: one Argon2id hash alone and "
           f"{cores} at once are timed just before and just after each server's run, and its "
           "bound uses the mean of those two timings. VmHWM is the "
           "server's peak resident memory over its life; CPU/req is the server's "
           "utime+stime over the run divided by the requests wrk completed (all wrk loads of "
           "the run). Errors: answers with status ≥ 400 plus socket errors and timeouts. "
           "Load: the 1/5/15-minute load average when the run started (other jobs share "
           "these cores).", "",
           "| scenario | server | req/s | p50 ms | p99 ms | errors | VmHWM MiB | CPU µs/req | load | note |",
           "|---|---|--:|--:|--:|--:|--:|--:|---|---|"]

    def aggregate(slices: list[Row]) -> Row:
        """One row for a server's interleaved slices."""
        done = [r for r in slices if r.requests and r.seconds]
        first = slices[0]
        if not done:
            return first
        req = sum(r.requests for r in done)
        cpu = [r.cpu_us_per_req * r.requests for r in done if r.cpu_us_per_req is not None]
        each = [r.rps for r in done]
        agg = Row(first.scenario, first.server, rps=req / sum(r.seconds for r in done),
                  p50_ms=statistics.median(r.p50_ms for r in done),
                  p99_ms=max(r.p99_ms for r in done), errors=sum(r.errors or 0 for r in done),
                  requests=req, hwm_mib=max(r.hwm_mib or 0 for r in done),
                  cpu_us_per_req=sum(cpu) / req if cpu else None, load=first.load)
        agg.error_detail = "; ".join(r.error_detail for r in done if r.error_detail)
        agg.note = (f"{len(done)} slices of {s.slice} s, interleaved; slices "
                    f"{min(each):,.0f}–{max(each):,.0f} req/s"
                    + (f"; {first.note}" if first.note else ""))
        return agg

    table: list[Row] = []
    for r in rows:
        if not r.round:
            table.append(r)
        elif r.round == 1:
            table.append(aggregate([x for x in rows if x.round and x.scenario == r.scenario
                                    and x.server == r.server]))
    for r in table:
        err = "—" if r.errors is None else (f"{r.errors} ({r.error_detail})" if r.errors else "0")
        out.append(f"| {r.scenario} | {r.server} | {fmt(r.rps, ',.0f')} | {fmt(r.p50_ms, '.2f')} | "
                   f"{fmt(r.p99_ms, '.2f')} | {err} | {fmt(r.hwm_mib, '.1f')} | "
                   f"{fmt(r.cpu_us_per_req, '.1f')} | {r.load} | {r.note} |")
    get = {(r.scenario, r.server): r for r in table}

    def rps(sc: str, sv: str) -> float | None:
        r = get.get((sc, sv))
        return r.rps if r else None

    def round_ratios(sc: str, sv: str, ref: str) -> list[float]:
        """sv / ref for each round both completed (slices of one round are adjacent)."""
        by_round: dict[int, dict[str, float]] = {}
        for r in rows:
            if r.scenario == sc and r.rps and r.round:
                by_round.setdefault(r.round, {})[r.server] = r.rps
        return [v[sv] / v[ref] for _, v in sorted(by_round.items()) if sv in v and ref in v]

    out += ["", "## Ratios and targets (same run)", ""]
    lines = []
    for sc in ("users_me", "users_me_10k"):
        for t in ("tessera-rs256", "tessera-hs256"):
            if rps(sc, t):
                each = round_ratios(sc, t, "hello")
                hello = f"{ratio(rps(sc, t), rps(sc, 'hello'))} the hello ceiling"
                if len(each) > 1:
                    hello += (f" (interleaved; the {len(each)} rounds' ratios: "
                              f"{', '.join(f'{x:.2f}' for x in each)})")
                lines.append(f"- {sc}, {t}: {hello}, "
                             f"{ratio(rps(sc, t), rps(sc, 'fastapi'))} FastAPI")
    if hashing:
        bound = cores * 1000 / hashing.alone_ms
        lines.append(f"- one Argon2id hash (m=19 MiB, t=2, p=1, argon2 crate, release; mean of "
                     f"the medians timed before, between and after the scenario's runs): "
                     f"{hashing.alone_ms:.1f} ms, so {cores} cores bound logins at {bound:.0f}/s")
        if hashing.parallel_rate:
            lines.append(f"- {cores} Argon2id hashes at once: {hashing.parallel_ms:.1f} ms each, "
                         f"{hashing.parallel_rate:.0f}/s in all (what the cores deliver when the "
                         "hashes share memory bandwidth and cache)")
        for t in ("tessera-rs256", "tessera-hs256", "fastapi"):
            if rps("login", t):
                lines.append(login_line(t, rps("login", t), get[("login", t)], hashing, cores))
    if sign_us:
        bound = cores * 1e6 / sign_us
        lines.append(f"- one RS256 signature (RSA-2048, aws-lc-rs, release; mean of the medians "
                     f"before and after the scenario): {sign_us:.0f} µs, "
                     f"so {cores} cores bound RS256 refreshes (one signature each) at "
                     f"{bound:,.0f}/s")
    for t in ("tessera-rs256", "tessera-hs256"):
        if rps("refresh", t):
            of_bound = (f" = {rps('refresh', t) * sign_us / (cores * 1e6):.2f}× that bound"
                        if sign_us and t == "tessera-rs256" else "")
            lines.append(f"- refresh, {t}: {rps('refresh', t):,.0f}/s{of_bound}")
    for t in ("tessera-rs256", "fastapi"):
        r = get.get(("users_me_under_login", t))
        if r and r.p99_ms is not None:
            lines.append(f"- /users/me p99 while logins saturate the CPU, {t}: {r.p99_ms:.2f} ms")
    r = get.get(("startup", "tessera-rs256"))
    if r:
        lines.append(f"- {r.note}")
    out += lines or ["(no ratios: run more servers)"]
    out += ["", "Scenarios: " + "; ".join(f"{k}: {v}" for k, v in SCENARIO_TITLES.items()), ""]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    ap.add_argument("--quick", action="store_true", help="3 s runs, 16 connections, 1,000 tokens")
    ap.add_argument("--duration", type=int, help="seconds per run (at most 15)")
    ap.add_argument("--servers", default="tessera-rs256,tessera-hs256,hello,fastapi")
    ap.add_argument("--tessera", required=True, type=Path)
    ap.add_argument("--hello", required=True, type=Path)
    ap.add_argument("--argon2-time", required=True, type=Path)
    ap.add_argument("--rs256-sign-time", type=Path,
                    help="bench/hello's rs256_sign_time binary (the refresh bound)")
    ap.add_argument("--python", type=Path, help="the venv's python (FastAPI peer)")
    ap.add_argument("--out", type=Path, default=BENCH / "out")
    ap.add_argument("--command", default="bench/run.sh", help="command line to print in the report")
    ap.add_argument("--rounds", type=int,
                    help=f"interleaved rounds for {', '.join(sorted(ROUNDED))} (1-30; default 8, "
                         "2 with --quick)")
    ap.add_argument("--slice", type=int,
                    help="seconds of each server's slice in those rounds (1-15; default 2, 1 with "
                         "--quick)")
    ap.add_argument("--perf", action="store_true",
                    help="sample each measured server with perf (for users_me and users_me_10k, "
                         "Tessera's slices of the last round); flat profiles in OUT/perf-*.txt")
    a = ap.parse_args()
    unknown = [x for x in a.scenarios if x not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}; choose from {SCENARIOS}")
    duration = a.duration or (3 if a.quick else 10)
    if not 1 <= duration <= 15:
        ap.error("--duration must be 1-15 seconds")
    if a.python:
        a.python = a.python.absolute()
    s = Settings(duration=duration, threads=2, connections=16 if a.quick else 64,
                 distinct_tokens=1000 if a.quick else 10_000, quick=a.quick, out=a.out,
                 tessera=a.tessera, hello=a.hello, argon2_time=a.argon2_time,
                 rs256_sign_time=a.rs256_sign_time, python=a.python,
                 servers=a.servers.split(","), perf=a.perf,
                 rounds=a.rounds or (2 if a.quick else 8), slice=a.slice or (1 if a.quick else 2),
                 warmup=1 if a.quick else 2)
    if not 1 <= s.rounds <= 30:
        ap.error("--rounds must be 1-30")
    if not 1 <= s.slice <= 15:
        ap.error("--slice must be 1-15 seconds")
    s.out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    sv = Servers(s)
    scenarios = a.scenarios or SCENARIOS
    # The units of the login and refresh bounds are timed just before the first run of the
    # scenario that needs them and again just after its last run, and the bound uses the
    # mean of the two: they see the machine as that scenario does (it drifts by tens of
    # percent within minutes here). The Argon2id hash is also timed between the login
    # scenario's runs, and each run's bound uses the timings just before and just after it:
    # on 2026-12-04 one hash took 14.3 ms before the three login runs and 18.5 ms after them.
    hash_samples: list[HashTiming] = []
    sign_samples: list[float] = []
    rows: list[Row] = []
    runs: list[tuple[str, list[str]]] = []
    for sc in scenarios:
        names = servers_for(sc, s)
        if sc in ROUNDED:
            # hello first: it is the reference every ratio divides by. FastAPI is in the
            # rounds too: one 10 s run of its own measured 3,766-4,603 req/s within minutes
            # on one guest (2026-12-04), which moved its ratio from 24x to 31x.
            runs.append((sc, sorted(names, key=lambda n: n != "hello")))
        else:
            runs += [(sc, [name]) for name in names]
    hash_scenario = next((sc for sc in ("login", "users_me_under_login") if sc in scenarios), None)
    last_of = {sc: i for i, (sc, _) in enumerate(runs)}

    def time_hash() -> None:
        t = argon2_timing(s)
        if t:
            hash_samples.append(t)
            print(f"==> Argon2id: {t.alone_ms:.1f} ms alone, {fmt(t.parallel_ms, '.1f')} ms "
                  f"each with {os.cpu_count()} at once", flush=True)

    def time_bounds(sc: str) -> None:
        if sc == hash_scenario:
            time_hash()
        if sc == "refresh":
            us = rs256_sign_us(s)
            if us:
                sign_samples.append(us)
                print(f"==> one RS256 signature: {us:.0f} µs", flush=True)

    def run_one(sc: str, names: list[str]) -> None:
        if sc in ROUNDED:
            print(f"==> {sc} / {', '.join(names)}: {s.rounds} interleaved rounds of {s.slice} s "
                  f"slices (load {loadavg()})", flush=True)
            try:
                rows.extend(run_interleaved(sc, names, s, sv))
            except Exception as e:  # noqa: BLE001 — report and go on with the next run
                print(f"    failed: {e}", file=sys.stderr, flush=True)
                rows.extend(Row(sc, name, load=loadavg(), note=f"FAILED: {e}") for name in names)
            return
        name = names[0]
        print(f"==> {sc} / {name} (load {loadavg()})", flush=True)
        try:
            row = run_scenario(sc, name, s, sv)
        except Exception as e:  # noqa: BLE001 — report and go on with the next run
            print(f"    failed: {e}", file=sys.stderr, flush=True)
            row = Row(sc, name, load=loadavg(), note=f"FAILED: {e}")
        rows.append(row)
        print(f"    {fmt(row.rps, ',.0f')} req/s, p50 {fmt(row.p50_ms, '.2f')} ms, "
              f"p99 {fmt(row.p99_ms, '.2f')} ms, errors {row.errors}, VmHWM "
              f"{fmt(row.hwm_mib, '.1f')} MiB, CPU {fmt(row.cpu_us_per_req, '.1f')} µs/req "
              f"{row.note}", flush=True)

    for i, (sc, names) in enumerate(runs):
        if i == 0 or runs[i - 1][0] != sc:
            time_bounds(sc)
        before = hash_samples[-1] if sc == hash_scenario and hash_samples else None
        first_row = len(rows)
        run_one(sc, names)
        if i == last_of[sc]:
            time_bounds(sc)
        elif sc == hash_scenario:
            time_hash()
        after = hash_samples[-1] if sc == hash_scenario and hash_samples else None
        if before and after and after is not before:
            for r in rows[first_row:]:
                r.extra["argon2"] = [before.__dict__, after.__dict__]
    hashing = None
    if hash_samples:
        par = [t for t in hash_samples if t.parallel_rate]
        hashing = HashTiming(
            statistics.fmean(t.alone_ms for t in hash_samples),
            statistics.fmean(t.parallel_ms for t in par) if par else None,
            statistics.fmean(t.parallel_rate for t in par) if par else None)
    sign_us = statistics.fmean(sign_samples) if sign_samples else None
    text = report(rows, s, hashing, sign_us, started, a.command)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    md = s.out / f"results-{stamp}.md"
    md.write_text(text)
    (s.out / f"results-{stamp}.json").write_text(json.dumps(
        {"started": started, "argon2": [t.__dict__ for t in hash_samples],
         "rs256_sign_us": sign_samples, "rows": [r.__dict__ for r in rows]}, indent=1))
    shutil.copyfile(md, s.out / "latest.md")
    print()
    print(text)
    print(f"==> written to {md}")
    return 1 if any(r.note.startswith("FAILED") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
