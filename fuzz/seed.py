#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/corpus/<target>/ from the repository's
own fixtures (migration directories, SQL, ferry.toml) plus a few hand-written documents.
Run once before the first fuzzing run; `run.sh` does it when a corpus directory is missing."""
import hashlib
import json
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / ("seed-" + hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


def sql_files():
    for base in ["migrations", "crates/ferry-migrate/tests/fixtures", "crates/ferry-compat/tests/fixtures"]:
        for p in sorted((ROOT / base).rglob("*.sql")):
            if p.stat().st_size <= 4096:
                yield p


# sql_split: real migration scripts and the tricky constructs.
for p in sql_files():
    put("sql_split", p.read_bytes())
for s in [
    "SELECT 'it''s; fine'; SELECT 2",
    "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql; SELECT $$;$$;",
    "/* block; /* nested; */ */ SELECT 1; -- c; d\nSELECT \"we;ird\"",
    "INSERT INTO t VALUES ('a\\'; b'); SELECT `x;y` FROM t # comment; here\n;",
    "SELECT E'\\';'; SELECT 1 AS x$y$; SELECT 2 AS z$y$;",
    "-- only a comment\n;\n;  ;",
]:
    put("sql_split", s)

# migration_dir: every fixture directory in the `== path` format (migration_dir.rs).
fixtures = ROOT / "crates/ferry-migrate/tests/fixtures"
for d in sorted(p for p in fixtures.iterdir() if p.is_dir()):
    out = []
    for f in sorted(d.rglob("*")):
        rel = f.relative_to(d).as_posix()
        if f.is_dir():
            if not any(f.iterdir()):
                out.append(f"==/ {rel}\n")
            continue
        out.append(f"== {rel}\n")
        text = f.read_bytes().decode("utf-8", "replace")
        out.append(text if text.endswith("\n") or not text else text + "\n")
    put("migration_dir", "".join(out))
put("migration_dir", "== 1_a.sql\n-- ferry:no-transaction\n-- migrate:up transaction:false\nSELECT 1;\n-- migrate:down\n")
put("migration_dir", "== 1_a/up.sql\nSELECT 1;\n== 1_a/metadata.toml\nrun_in_transaction = false\n== 1_a/down.sql\n-- nothing\n")

# config: the example ferry.toml and the shapes the tests use.
put("config", (ROOT / "ferry.toml").read_bytes())
put("config", '# env: prod\ndefault_env = "dev"\n[migrations]\ndir = "m"\nlock_timeout = "2m"\n'
    '[store]\nurl = "s3://b/p"\nendpoint = "http://127.0.0.1:9000"\nregion = "us-east-1"\n'
    '[env.dev]\ndatabase_url = "sqlite:dev.db"\n'
    '[env.prod]\ndatabase_url = "postgres://app:${PW}@db:5432/app"\nartifacts = "oci://r.example/app"\nrequires = "dev"\n'
    'freeze = [{ days = ["fri"], from = "18:00", to = "06:00", tz = "Europe/Berlin" }]\n')
put("config", '# env: staging\n[env.staging]\ndatabase_url = "mysql://u:${PWS}@h/db?x=$$1"\n[env."a.b"]\ndatabase_url = "${UNSET_lower}"\n')

# backup_manifest: a manifest as ferry writes it.
manifest = {
    "id": "20261123T093012Z-1a2b3c", "created_at": "2026-11-23T09:30:12Z", "engine": "postgres",
    "server_version": "15.19", "database": "app", "url": "postgres://u:***@h/app", "schema_version": 3,
    "label": None, "tool": "pg_dump 15.19", "ferry_version": "0.0.0", "raw_bytes": 10,
    "compressed_bytes": 5, "sha256": "ab" * 32, "duration_ms": 7, "tables": [{"name": "public.t", "rows": 1}],
}
put("backup_manifest", json.dumps(manifest, indent=2))
second = dict(manifest, id="20261124T000000Z-000001", created_at="2026-11-24T00:00:00.123456789+02:00", label="before release", schema_version=None, tables=[])
put("backup_manifest", json.dumps(manifest).encode() + b"\xff" + json.dumps(second).encode())

# release_records: a history with a rollback.
def rec(seq, d, action, prev):
    return {"seq": seq, "digest": "sha256:" + d * 64, "name": "app", "version": "1.0." + str(seq),
            "previous": None if prev is None else "sha256:" + prev * 64, "action": action,
            "actor": "ci@runner", "at": "2026-11-2%dT10:00:00Z" % seq, "reason": None}
recs = [rec(1, "a", "promote", None), rec(2, "b", "promote", "a"), rec(3, "c", "promote", "b"), rec(4, "b", "rollback", "c")]
put("release_records", b"\xff".join(json.dumps(r, indent=2).encode() for r in recs))
put("release_records", json.dumps(rec(1, "f", "promote", None)))

# image_ref
for s in [
    "registry.example.com:5000/team/app:1.2.3",
    "localhost/app@sha256:" + "ab" * 32,
    "127.0.0.1:5000/a/b:tag@sha256:" + "AB" * 32,
    "[::1]:5000/app:latest",
    "app@1.2.3+build", "app:1.0", "app@sha256:" + "0" * 64, "sha256:" + "f" * 64,
    "oci://registry.example.com/team/app-prod:prod", "oci://localhost:5000/x/",
]:
    put("image_ref", s)
