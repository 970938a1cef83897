#!/usr/bin/env python3
"""A tiny example host for `ferry deploy`: an HTTP server on 127.0.0.1:PORT that "runs" whatever
examples/app/deploy.sh installed in .ferry/hosts/NAME/. GET /health answers 200 while the
installed artifact says `healthy = true` (500 otherwise); GET /version answers its version.

    python3 examples/app/host.py NAME PORT [--bind ADDRESS]   (default 127.0.0.1)
"""
import http.server
import os
import sys

name, port = sys.argv[1], int(sys.argv[2])
bind = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--bind" else "127.0.0.1"
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".ferry", "hosts", name)


def installed():
    try:
        with open(os.path.join(root, "app.txt")) as f:
            return dict(
                (k.strip(), v.strip())
                for k, v in (l.split("=", 1) for l in f if "=" in l and not l.startswith("#"))
            )
    except FileNotFoundError:
        return {}


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        app = installed()
        if self.path.startswith("/health"):
            ok = app.get("healthy", "true") == "true"
            code, body = (200, b"ok") if ok else (500, b"unhealthy")
        elif self.path.startswith("/version"):
            code, body = 200, app.get("version", "none").encode()
        else:
            code, body = 404, b"not found"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.ThreadingHTTPServer((bind, port), Handler).serve_forever()
