#!/usr/bin/env python3
"""Promotion benchmark (run by hand, not a test).

Promotes one artifact of SIZE_MB (default 1024) MiB between two locations held by one server and
compares it, in the same run, with what a user would do instead: download the artifact and
upload it again. For each contender it reports the wall time and the bytes that went through it:

  io      read + write bytes of the process (rchar/wchar from /proc: files and sockets alike),
  lo      bytes that crossed the loopback interface while it ran (the network traffic).

Cases (each skipped with a note when its server is not installed):
  file    two directories on one filesystem:  ferry promote  vs  cat (read + write)  vs  cp
  moto    two buckets of one moto server (computes copy checksums, as AWS S3 does)
  s3s-fs  two buckets of one s3s-fs server (no copy checksums: ferry re-reads the copy)
  oci     two repositories of one registry (docker-registry): ferry promote (blob mount)
          vs  a download and an upload of the image's blobs through the registry API

Issue 5's target: promoting within one store or registry moves no payload bytes through ferry.
Results go to benches/results/promote-<time>.json.

    SIZE_MB=1024 python3 benches/promote.py
"""

import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE_MB = int(os.environ.get("SIZE_MB", "1024"))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/ferry-target"))
FERRY = os.path.join(TARGET, "release", "ferry")
ACCESS, SECRET = "ferrybenchaccess", "ferrybenchsecret"


def proc_io():
    fields = {}
    with open("/proc/self/io") as f:
        for line in f:
            k, v = line.split(":")
            fields[k] = int(v)
    return fields["rchar"] + fields["wchar"]


def lo_bytes():
    with open("/sys/class/net/lo/statistics/rx_bytes") as f:
        return int(f.read())


def measure(name, argv, env=None, cwd=None):
    """Runs argv; the I/O of reaped children is added to ours, so the delta is the child's."""
    io0, lo0, t0 = proc_io(), lo_bytes(), time.monotonic()
    out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    t1, lo1, io1 = time.monotonic(), lo_bytes(), proc_io()
    if out.returncode != 0:
        sys.exit(f"{name} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    row = {"contender": name, "seconds": round(t1 - t0, 3), "io_bytes": io1 - io0, "lo_bytes": lo1 - lo0}
    try:
        row["json"] = json.loads(out.stdout)
    except ValueError:
        pass
    return row


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} did not listen on {port}")


def write_artifact(path):
    # Random bytes, so that no layer of the stack can compress or deduplicate them.
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(SIZE_MB):
            chunk = os.urandom(1 << 20)
            h.update(chunk)
            f.write(chunk)
    return "sha256:" + h.hexdigest()


def ferry_env(extra=None):
    env = dict(os.environ, FERRY_NOW="2026-11-18T10:00:00Z", NO_COLOR="1")
    env.update(extra or {})
    return env


def write_config(work, central, dev_location):
    path = os.path.join(work, "ferry.toml")
    with open(path, "w") as f:
        f.write(f'[store]\nurl = "{central}"\n\n[env.dev]\nartifacts = "{dev_location}"\nfreeze = []\n')
    return path


def promote_case(name, work, artifact, central, dev, env, baseline):
    """Pushes `artifact` to `central`, then measures `ferry promote` to `dev` and the baseline."""
    config = write_config(work, central, dev)
    base = [FERRY, "--config", config, "--output", "json"]
    push = subprocess.run(base + ["artifact", "push", artifact, "--name", "bench", "--version", name],
                          env=env, capture_output=True, text=True)
    if push.returncode != 0:
        sys.exit(f"push failed:\n{push.stderr}")
    ferry = measure(f"ferry promote ({name})", base + ["promote", f"bench@{name}", "--to", "dev"], env=env)
    rows = [ferry] + [measure(label, argv, env=env) for label, argv in baseline]
    j = ferry.get("json", {})
    for key in ("bytes_copied", "bytes_verified", "server_side"):
        ferry[key] = j.get(key)
    return rows


def file_case(work, artifact, digest):
    central, dev = os.path.join(work, "central"), os.path.join(work, "dev")
    hexd = digest.split(":")[1]
    src = os.path.join(central, "artifacts", "sha256", hexd)
    os.makedirs(os.path.join(work, "copies"), exist_ok=True)
    baseline = [
        ("cat src > dest (read + write)", ["sh", "-c", f'cat "{src}" > "{work}/copies/cat"']),
        ("cp src dest", ["cp", src, f"{work}/copies/cp"]),
    ]
    return promote_case("file", work, artifact, f"file://{central}", f"file://{dev}", ferry_env(), baseline)


def s3_server(kind, work):
    port = free_port()
    log = open(os.path.join(work, f"{kind}.log"), "w")
    if kind == "moto":
        exe = shutil.which("moto_server")
        if not exe:
            return None, None, "moto_server not installed (pip install 'moto[server]>=5.2.5')"
        argv = [exe, "-H", "127.0.0.1", "-p", str(port)]
    else:
        exe = shutil.which("s3s-fs") or os.path.expanduser("~/.cargo/bin/s3s-fs")
        if not os.path.exists(exe):
            return None, None, "s3s-fs not installed (cargo install s3s-fs@0.14.1 --locked --features binary)"
        data = os.path.join(work, "s3data")
        os.makedirs(data)
        argv = [exe, "--host", "127.0.0.1", "--port", str(port), "--access-key", ACCESS, "--secret-key", SECRET, data]
    proc = subprocess.Popen(argv, stdout=log, stderr=log)
    wait_port(port, proc, kind)
    return proc, f"http://127.0.0.1:{port}", None


BOTO_COPY = """
import boto3, sys, tempfile
s3 = boto3.client("s3")
with tempfile.TemporaryFile() as f:
    s3.download_fileobj(sys.argv[1], sys.argv[2], f)
    f.seek(0)
    s3.upload_fileobj(f, sys.argv[3], sys.argv[4])
"""


def s3_case(kind, work, artifact, digest):
    proc, endpoint, why = s3_server(kind, work)
    if proc is None:
        return None, why
    try:
        env = ferry_env({"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET,
                         "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint})
        for bucket in ("central", "dev", "copies"):
            subprocess.run([sys.executable, "-c",
                            f"import boto3; boto3.client('s3').create_bucket(Bucket='{bucket}')"],
                           env=env, check=True)
        hexd = digest.split(":")[1]
        baseline = [("download + upload (boto3)",
                     [sys.executable, "-c", BOTO_COPY, "central", f"ferry/artifacts/sha256/{hexd}", "copies", "x"])]
        return promote_case(kind, work, artifact, "s3://central/ferry", "s3://dev/app", env, baseline), None
    finally:
        proc.terminate()
        proc.wait()


REGISTRY_COPY = """
import http.client, json, os, sys, tempfile
host, port = sys.argv[1].split(":")
src, dst, digest = sys.argv[2], sys.argv[3], sys.argv[4]
def conn():
    return http.client.HTTPConnection(host, int(port), timeout=600)
# Download the blob to a file, as `docker pull` does...
with tempfile.TemporaryFile() as f:
    c = conn(); c.request("GET", f"/v2/{src}/blobs/{digest}"); r = c.getresponse()
    while r.status in (301, 302, 303, 307):
        loc = r.getheader("Location"); r.read(); c.close(); c = conn(); c.request("GET", loc); r = c.getresponse()
    assert r.status == 200, r.status
    size = 0
    while chunk := r.read(1 << 20):
        f.write(chunk); size += len(chunk)
    c.close()
    # ...and upload it again, as `docker push` does (one monolithic PUT).
    c = conn(); c.request("POST", f"/v2/{dst}/blobs/uploads/"); r = c.getresponse(); r.read()
    assert r.status == 202, r.status
    loc = r.getheader("Location"); sep = "&" if "?" in loc else "?"
    f.seek(0)
    c = conn(); c.request("PUT", f"{loc}{sep}digest={digest}", body=f,
                          headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
    r = c.getresponse(); r.read()
    assert r.status == 201, r.status
"""


def registry_push_image(port, repo, artifact, digest):
    """Pushes a one-layer image whose layer is the artifact; returns the manifest digest."""
    import http.client

    def upload(data_path, data_bytes, blob_digest):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        c.request("POST", f"/v2/{repo}/blobs/uploads/")
        r = c.getresponse()
        r.read()
        loc = r.getheader("Location")
        sep = "&" if "?" in loc else "?"
        if data_path:
            size = os.path.getsize(data_path)
            with open(data_path, "rb") as f:
                c.request("PUT", f"{loc}{sep}digest={blob_digest}", body=f,
                          headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
                r = c.getresponse()
        else:
            c.request("PUT", f"{loc}{sep}digest={blob_digest}", body=data_bytes,
                      headers={"Content-Type": "application/octet-stream"})
            r = c.getresponse()
        r.read()
        if r.status != 201:
            sys.exit(f"registry refused blob {blob_digest}: {r.status}")

    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [digest]}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    upload(None, config, config_digest)
    upload(artifact, None, digest)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest,
                    "size": os.path.getsize(artifact)}],
    }).encode()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("PUT", f"/v2/{repo}/manifests/bench", body=manifest,
              headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    r = c.getresponse()
    r.read()
    if r.status != 201:
        sys.exit(f"registry refused the manifest: {r.status}")
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def oci_case(work, artifact, digest):
    exe = shutil.which("docker-registry")
    if not exe:
        return None, "docker-registry not installed (apt-get install docker-registry)"
    port = free_port()
    data = os.path.join(work, "registry")
    os.makedirs(data)
    config = os.path.join(work, "registry.yml")
    with open(config, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {data}\n"
                f"http:\n  addr: 127.0.0.1:{port}\n  secret: bench\n")
    log = open(os.path.join(work, "registry.log"), "w")
    proc = subprocess.Popen([exe, "serve", config], stdout=log, stderr=log)
    try:
        wait_port(port, proc, "docker-registry")
        reg = f"127.0.0.1:{port}"
        manifest = registry_push_image(port, "app-build", artifact, digest)
        cfg = os.path.join(work, "ferry.toml")
        with open(cfg, "w") as f:
            f.write(f'[store]\nurl = "file://{work}/central"\n\n[env.dev]\nartifacts = "oci://{reg}/app-dev"\nfreeze = []\n')
        env = ferry_env()
        ferry = measure("ferry promote (oci)", [FERRY, "--config", cfg, "--output", "json", "promote",
                                                f"{reg}/app-build@{manifest}", "--to", "dev"], env=env)
        j = ferry.get("json", {})
        for key in ("bytes_copied", "bytes_verified", "server_side"):
            ferry[key] = j.get(key)
        baseline = measure("download + upload (registry API)",
                           [sys.executable, "-c", REGISTRY_COPY, reg, "app-build", "app-copy", digest], env=env)
        return [ferry, baseline], None
    finally:
        proc.terminate()
        proc.wait()


def main():
    if not os.path.exists("/sys/class/net/lo/statistics/rx_bytes"):
        sys.exit("needs Linux (/proc/self/io and /sys/class/net/lo)")
    print("== building ferry (release)", flush=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "ferry-cli"], cwd=ROOT, check=True)
    results, notes = {}, []
    with tempfile.TemporaryDirectory(prefix="ferry-bench-promote.") as work:
        artifact = os.path.join(work, "artifact.bin")
        print(f"== writing a {SIZE_MB} MiB artifact", flush=True)
        digest = write_artifact(artifact)
        cases = [("file", lambda w: (file_case(w, artifact, digest), None))]
        cases += [(k, lambda w, k=k: s3_case(k, w, artifact, digest)) for k in ("moto", "s3s-fs")]
        cases += [("oci", lambda w: oci_case(w, artifact, digest))]
        for name, run in cases:
            print(f"== {name}", flush=True)
            case_dir = os.path.join(work, name)
            os.makedirs(case_dir)
            rows, why = run(case_dir)
            if rows is None:
                notes.append(f"{name}: skipped: {why}")
                print(f"   skipped: {why}")
                continue
            results[name] = rows

    mib = 1 << 20
    print(f"\n{'contender':<34} {'seconds':>8} {'io MiB':>9} {'loopback MiB':>13}")
    for name, rows in results.items():
        for r in rows:
            print(f"{r['contender']:<34} {r['seconds']:>8.2f} {r['io_bytes'] / mib:>9.1f} {r['lo_bytes'] / mib:>13.1f}")
        f = rows[0]
        print(f"   ferry: bytes_copied={f['bytes_copied']} bytes_verified={f['bytes_verified']} "
              f"server_side={f['server_side']}; time ferry/{rows[1]['contender']} = "
              f"{f['seconds'] / rows[1]['seconds']:.3f}")
    for n in notes:
        print(n)
    for rows in results.values():
        for r in rows:
            r.pop("json", None)
    os.makedirs(os.path.join(ROOT, "benches", "results"), exist_ok=True)
    out = os.path.join(ROOT, "benches", "results", time.strftime("promote-%Y-%m-%dT%H%M%SZ.json", time.gmtime()))
    with open(out, "w") as f:
        json.dump({"size_mib": SIZE_MB, "load": open("/proc/loadavg").read().split()[:3],
                   "cases": results, "notes": notes}, f, indent=1)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
