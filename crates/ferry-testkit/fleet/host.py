#!/usr/bin/env python3
"""A fleet host for ferry's rollout tests: a small real HTTP server on a loopback port, and the
deploy script that "releases" a version to it by restarting it.

    host.py serve  STATE_DIR            serve until killed
    host.py deploy STATE_DIR VERSION    the deploy command: record, write the version, restart

STATE_DIR holds `port`, `version` (what /version answers), `pid`, `deploys.log` (one line per
deploy command received) and optional switches a test writes:
    unhealthy         /_status answers 500
    warmup_ms         after a (re)start every request answers 503 for this long
    fail_deploy       the deploy command exits with the status written in it
    break_on_deploy   holds a version: deploying it leaves the host unhealthy (that release is
                      broken), deploying any other makes it healthy again

Endpoints: /_status (200 "ok"), /version, / (200 "NAME VERSION"), /slow?ms=N (answers after N ms,
with the version read at the end, so a test sees whether a deploy happened meanwhile).
A restart is real: the old process is killed (SIGKILL, in-flight requests die with it) and a new
one is started on the same port.
"""
import http.server
import os
import signal
import socket
import subprocess
import sys
import time


def read(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def serve(state):
    port = int(read(os.path.join(state, "port")))
    name = os.path.basename(state.rstrip("/"))
    warmup = float(read(os.path.join(state, "warmup_ms"), "0") or 0) / 1000.0
    started = time.monotonic()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # TCP_NODELAY, as Go's net/http, hyper and nginx set it. http.server writes the headers
        # and the body in two send()s; with Nagle the body waits for the client's delayed ACK
        # of the headers (40 ms on Linux) on every request of a kept-alive connection, which a
        # client that reuses its connections would be charged for.
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def answer(self, code, body):
            data = (body + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            path, _, query = self.path.partition("?")
            version = read(os.path.join(state, "version"), "none")
            if time.monotonic() - started < warmup:
                return self.answer(503, "restarting")
            if path == "/_status":
                if os.path.exists(os.path.join(state, "unhealthy")):
                    return self.answer(500, "unhealthy")
                return self.answer(200, "ok")
            if path == "/version":
                return self.answer(200, version)
            if path == "/slow":
                ms = 1000
                for kv in query.split("&"):
                    k, _, v = kv.partition("=")
                    if k == "ms":
                        ms = int(v)
                time.sleep(ms / 1000.0)
                return self.answer(200, name + " " + read(os.path.join(state, "version"), "none"))
            if path == "/":
                return self.answer(200, name + " " + version)
            return self.answer(404, "not found")

    class Server(http.server.ThreadingHTTPServer):
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = 128

    deadline = time.monotonic() + 10
    while True:
        try:
            server = Server(("127.0.0.1", port), Handler)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    with open(os.path.join(state, "pid.tmp"), "w") as f:
        f.write(str(os.getpid()))
    os.replace(os.path.join(state, "pid.tmp"), os.path.join(state, "pid"))
    server.serve_forever()


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def deploy(state, version):
    with open(os.path.join(state, "deploys.log"), "a") as f:
        f.write(version + "\n")
    if read(os.path.join(state, "block_deploy")) == version:
        open(os.path.join(state, "blocked"), "w").close()
        while os.path.exists(os.path.join(state, "block_deploy")):
            time.sleep(0.02)
        print("deploy of " + version + " was held and let go without releasing", file=sys.stderr)
        sys.exit(1)
    code = read(os.path.join(state, "fail_deploy"))
    if code:
        print("unpacking release " + version, flush=True)
        print("deploy failed on purpose: disk full", file=sys.stderr, flush=True)
        sys.exit(int(code))
    port = int(read(os.path.join(state, "port")))
    old = read(os.path.join(state, "pid"))
    if old:
        try:
            os.kill(int(old), signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while listening(port) and time.monotonic() < deadline:
            time.sleep(0.01)
    with open(os.path.join(state, "version"), "w") as f:
        f.write(version + "\n")
    broken = read(os.path.join(state, "break_on_deploy"))
    if broken:
        if broken == version:
            open(os.path.join(state, "unhealthy"), "w").close()
        elif os.path.exists(os.path.join(state, "unhealthy")):
            os.remove(os.path.join(state, "unhealthy"))
    log = open(os.path.join(state, "log"), "a")
    subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve", state],
                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 20
    while not listening(port):
        if time.monotonic() > deadline:
            print("the restarted host did not listen on port %d" % port, file=sys.stderr)
            sys.exit(1)
        time.sleep(0.01)
    print("released " + version, flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "deploy":
        deploy(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
