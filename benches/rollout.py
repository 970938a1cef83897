#!/usr/bin/env python3
"""Rollout benchmark (run by hand, not a test): ferry's own overhead on a rollout.

Issue 13's case: HOSTS (default 40) local hosts (the test fleet's `host.py`, real HTTP servers
with /_status and /version), batches of BATCH (default 10), settle 0, and a deploy command that
sleeps 200 ms and writes the version the host then reports. The floor of a batch is its slowest
deploy command (each command records its own start and end); a rollout cannot be faster than
the sum of those floors. It reports, for each of ROUNDS rounds (a new version each round):

  wall     the whole `ferry rollout` command (process start, promotion, gather, batches,
           final check, history record), from outside
  floors   the sum of the per-batch floors
  ratio    wall / floors        (target <= 1.10)
  shell    beside it, a bare shell loop running the same commands in the same batches with no
           checks at all (`cmd & ... wait`), timed the same way: what starting the commands
           costs on this machine, which the floors leave out; and wall / shell

and ferry's peak RSS (wait4's ru_maxrss) for a rollout of 10 hosts and of HOSTS hosts, which
should be flat. With HAPROXY=1 (and haproxy installed) the hosts sit behind a real HAProxy and
ferry drains them through its Runtime API. Figures go to benches/results/rollout-<time>.json.

    cargo build --release -p ferry-cli
    python3 benches/rollout.py                     # HOSTS=40 BATCH=10 ROUNDS=5
    HAPROXY=1 python3 benches/rollout.py
    FAST_HOSTS=1 python3 benches/rollout.py        # the hosts answer as an event-driven server does
    RUST_LOG=ferry_rollout=debug ROLLOUT_LOG=/tmp/r.log python3 benches/rollout.py
"""

import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST_PY = os.path.join(ROOT, "crates", "ferry-testkit", "fleet", "host.py")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/ferry-target"))
FERRY = os.environ.get("FERRY_BIN", os.path.join(TARGET, "release", "ferry"))
HOSTS = int(os.environ.get("HOSTS", "40"))
BATCH = int(os.environ.get("BATCH", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
HAPROXY = os.environ.get("HAPROXY") == "1"
FAST = os.environ.get("FAST_HOSTS") == "1"
SLEEP = 0.2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, what, deadline=20):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    sys.exit(f"{what} did not listen on {port}")


class Fleet:
    def __init__(self, root, n):
        self.root, self.procs, self.hosts = root, [], []
        for i in range(1, n + 1):
            name, port = f"h{i}", free_port()
            state = os.path.join(root, name)
            os.makedirs(state)
            open(os.path.join(state, "port"), "w").write(str(port))
            open(os.path.join(state, "version"), "w").write("0\n")
            self.hosts.append((name, port))
        self.start()
        for name, port in self.hosts:
            wait_listening(port, name)

    def start(self):
        """One `host.py serve` per host (the test fleet)."""
        for name, _ in self.hosts:
            self.procs.append(subprocess.Popen([sys.executable, HOST_PY, "serve", os.path.join(self.root, name)],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()


class FastFleet(Fleet):
    """FAST_HOSTS=1: the same hosts (a port, a state directory and a version file each, /_status
    and /version) served by one event-driven process, as Go's net/http, nginx or hyper serve,
    instead of a Python thread per connection. A thread per connection on a machine of two
    cores answers a burst of requests (the gather's 80, a batch's checks) in tens of
    milliseconds, which the figures would charge to ferry; this fleet answers them at about the
    speed of the client asking. The deploy command is the same, and so are the floors."""

    def start(self):
        spec = ",".join(f"{n}={p}" for n, p in self.hosts)
        self.procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", self.root, spec],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def serve_fast(root, spec):
    import asyncio

    async def handle(name, reader, writer):
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                if path == "/_status":
                    code, body = 200, "ok"
                elif path == "/version":
                    code, body = 200, open(os.path.join(root, name, "version")).read().strip()
                else:
                    code, body = 404, "not found"
                data = (body + "\n").encode()
                writer.write(f"HTTP/1.1 {code} {'OK' if code == 200 else 'Not Found'}\r\n"
                             f"Content-Type: text/plain\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        servers = []
        for item in spec.split(","):
            name, port = item.split("=")
            servers.append(await asyncio.start_server(
                lambda r, w, name=name: handle(name, r, w), "127.0.0.1", int(port), backlog=256))
        await asyncio.Event().wait()

    asyncio.run(main())


def start_haproxy(root, fleet):
    port, admin = free_port(), os.path.join(root, "admin.sock")
    servers = "".join(f"    server {n} 127.0.0.1:{p}\n" for n, p in fleet.hosts)
    cfg = os.path.join(root, "haproxy.cfg")
    open(cfg, "w").write(
        f"global\n    stats socket {admin} mode 600 level admin\n"
        f"defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n"
        f"    option http-server-close\n"
        f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend app\n"
        f"backend app\n    option httpchk GET /_status\n    default-server check inter 500ms\n{servers}")
    proc = subprocess.Popen(["haproxy", "-f", cfg, "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, "haproxy")
    wait_all_up(admin, len(fleet.hosts))  # no server starts the run DOWN or in its first check
    return proc, admin


def wait_all_up(admin, n, deadline=30):
    """Until HAProxy's first health checks have marked all n servers of `app` UP."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(admin)
                s.sendall(b"show stat app 4 -1\n")
                out = b""
                while chunk := s.recv(65536):
                    out += chunk
        except OSError:
            out = b""
        rows = [l.split(",") for l in out.decode().splitlines()[1:] if l]
        if sum(1 for r in rows if len(r) > 17 and r[17] == "UP") == n:
            return
        time.sleep(0.05)
    sys.exit(f"haproxy did not report all {n} servers UP")


def deploy_command(root, version="{version}"):
    """The deploy command (with ferry's `{host}` placeholder): sleeps, writes the version the
    host then reports, and records its own start and end."""
    return (f"s=$(date +%s%N); sleep {SLEEP}; echo {version} > {root}/{{host}}/version; "
            f"echo $s $(date +%s%N) > {root}/{{host}}/timing")


def config(root, fleet, batch, admin):
    deploy = deploy_command(root)
    hosts = "".join(
        f"[[env.bench.hosts]]\nname = \"{n}\"\nhealth_url = \"http://127.0.0.1:{p}/_status\"\n"
        f"version_url = \"http://127.0.0.1:{p}/version\"\n" for n, p in fleet.hosts)
    lb = (f"[env.bench.load_balancer]\nkind = \"haproxy\"\nadmin = \"unix://{admin}\"\nbackend = \"app\"\n"
          if admin else "")
    return (f"[store]\nurl = \"file://{root}/store\"\n"
            f"[env.bench]\ndeploy_command = {json.dumps(deploy)}\nbatch_size = {batch}\n"
            f"settle_seconds = 0\nhealth_timeout_seconds = 5\n{lb}{hosts}")


def rollout_round(root, fleet, batch, version):
    art = os.path.join(root, f"app-{version}.bin")
    open(art, "w").write(f"release {version}\n")
    subprocess.run([FERRY, "artifact", "push", art, "--name", "app", "--version", version],
                   cwd=root, check=True, capture_output=True)
    args = ["rollout", "--env", "bench", "--artifact", f"app@{version}", "--output", "json"]
    t0 = time.monotonic()
    p = subprocess.Popen([FERRY, *args], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait4 on this one child: its own peak RSS (and that of the commands it waited for).
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    # ROLLOUT_LOG=FILE (with RUST_LOG=ferry_rollout=debug): where each round's time went.
    if os.environ.get("ROLLOUT_LOG"):
        with open(os.environ["ROLLOUT_LOG"], "ab") as f:
            f.write(f"--- round {version}, wall {wall:.3f}s\n".encode() + err)
    if p.returncode != 0:
        sys.exit(f"ferry rollout exited {p.returncode}:\n{out.decode()}\n{err.decode()}")
    report = json.loads(out)
    assert report["status"] == "succeeded", report
    assert all(h["status"] == "deployed" for h in report["hosts"]), report
    spans = {}
    for name, _ in fleet.hosts:
        s, e = map(int, open(os.path.join(root, name, "timing")).read().split())
        spans[name] = (e - s) / 1e9
    names = [n for n, _ in fleet.hosts]
    floors = sum(max(spans[n] for n in names[i:i + batch]) for i in range(0, len(names), batch))
    shell = shell_loop(root, fleet, batch, version)
    return {"wall_s": round(wall, 3), "floors_s": round(floors, 3), "ratio": round(wall / floors, 3),
            "shell_s": round(shell, 3), "shell_ratio": round(wall / shell, 3),
            "max_rss_kib": usage.ru_maxrss}


def shell_loop(root, fleet, batch, version):
    """The bare alternative, timed from outside like ferry: one shell that starts each batch's
    deploy commands at once and waits for them (`cmd & ... wait`), batch after batch, with no
    health, version or load balancer step. It pays what any tool pays to start the commands
    (fork and exec of `sh` on this machine), which the floors leave out. It deploys the version
    ferry just deployed, so the hosts end as they were."""
    deploy = deploy_command(root, version)
    names = [n for n, _ in fleet.hosts]
    lines = []
    for i in range(0, len(names), batch):
        for n in names[i:i + batch]:
            lines.append(f"sh -c {shlex.quote(deploy.replace('{host}', n))} &")
        lines.append("wait")
    script = os.path.join(root, "shell-loop.sh")
    open(script, "w").write("\n".join(lines) + "\n")
    t0 = time.monotonic()
    subprocess.run(["sh", script], check=True)
    return time.monotonic() - t0


def bench(n, batch, rounds):
    root = tempfile.mkdtemp(prefix="ferry-rollout-bench.")
    fleet = (FastFleet if FAST else Fleet)(root, n)
    hp = None
    try:
        admin = None
        if HAPROXY:
            if not shutil.which("haproxy"):
                sys.exit("HAPROXY=1 but haproxy is not installed (apt-get install -y haproxy)")
            hp, admin = start_haproxy(root, fleet)
        open(os.path.join(root, "ferry.toml"), "w").write(config(root, fleet, batch, admin))
        return [rollout_round(root, fleet, batch, f"1.0.{r}") for r in range(rounds)]
    finally:
        if hp:
            hp.kill()
            hp.wait()
        fleet.stop()
        shutil.rmtree(root, ignore_errors=True)


def main():
    if not os.path.exists(FERRY):
        sys.exit(f"no ferry at {FERRY}: cargo build --release -p ferry-cli (or set FERRY_BIN)")
    load_start = os.getloadavg()[0]
    big = bench(HOSTS, BATCH, ROUNDS)
    small = bench(10, BATCH, ROUNDS)
    load_end = os.getloadavg()[0]
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    result = {
        "hosts": HOSTS, "batch": BATCH, "rounds": ROUNDS, "haproxy": HAPROXY, "fast_hosts": FAST,
        "deploy_sleep_s": SLEEP,
        "ferry": FERRY,
        # On a machine shared with builds the figures are noisy: say how busy it was.
        "load_average_start": load_start, "load_average_end": load_end,
        f"rounds_{HOSTS}": big, "rounds_10": small,
        "median_ratio": med(big, "ratio"), "median_wall_s": med(big, "wall_s"),
        "median_floors_s": med(big, "floors_s"),
        "median_shell_s": med(big, "shell_s"), "median_shell_ratio": med(big, "shell_ratio"),
        "max_rss_kib_10": max(r["max_rss_kib"] for r in small),
        f"max_rss_kib_{HOSTS}": max(r["max_rss_kib"] for r in big),
    }
    print(f"{HOSTS} hosts, batches of {BATCH}, settle 0, deploy sleeps {SLEEP}s"
          f"{', behind HAProxy' if HAPROXY else ', no load balancer'}"
          f"{', one event-driven process serving the hosts' if FAST else ', a Python thread per connection on each host'}:")
    for r in big:
        print(f"  wall {r['wall_s']:.3f}s  floors {r['floors_s']:.3f}s  ratio {r['ratio']:.3f}"
              f"  shell loop {r['shell_s']:.3f}s (ferry / shell {r['shell_ratio']:.3f})  rss {r['max_rss_kib']} KiB")
    print(f"median ratio {result['median_ratio']:.3f} (target <= 1.10); median ferry / shell loop "
          f"{result['median_shell_ratio']:.3f}; load average {load_start:.1f} -> {load_end:.1f}")
    print(f"peak RSS: 10 hosts {result['max_rss_kib_10']} KiB, {HOSTS} hosts {result[f'max_rss_kib_{HOSTS}']} KiB")
    os.makedirs(os.path.join(ROOT, "benches", "results"), exist_ok=True)
    path = os.path.join(ROOT, "benches", "results", time.strftime("rollout-%Y-%m-%dT%H%M%SZ.json", time.gmtime()))
    json.dump(result, open(path, "w"), indent=2)
    print(f"written to {path}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve_fast(sys.argv[2], sys.argv[3])
    else:
        main()
