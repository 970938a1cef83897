//! PostgreSQL restores in the all-or-nothing shape: a new database, loaded in parallel and
//! checked, swapped in by renames. Every failure must leave the target exactly as it was and no
//! `ferry_new_…`/`ferry_old_…` database behind.

use std::time::{Duration, Instant};

use ferry_backup::{BackupError, Manifest, RestoreOptions};
use ferry_core::DatabaseUrl;
use ferry_testkit::db::{Kind, TestDb};
use sqlx::{Connection, PgConnection};

use crate::harness::{Store, quiet, store};

/// A connection to another database of the test (never the target, which must be free of
/// sessions for the swap).
async fn observer(db: &TestDb) -> PgConnection {
    let url = db.sibling("watch").await;
    PgConnection::connect(&url.for_driver()).await.unwrap()
}

/// Databases a restore of `target` made and left behind.
async fn leftovers(conn: &mut PgConnection, target: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT datname::text FROM pg_database \
         WHERE datname ~ '^ferry_(new|old)_[0-9a-f]{6}_' AND substr(datname, 18) = $1",
    )
    .bind(target)
    .fetch_all(conn)
    .await
    .unwrap()
}

/// Asserts that no restore of the test's database left a database behind.
async fn assert_nothing_left(db: &TestDb) {
    let mut watch = observer(db).await;
    let left = leftovers(&mut watch, &name(db)).await;
    let _ = watch.close().await;
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn name(db: &TestDb) -> String {
    db.database_url().database_name()
}

/// A store holding one backup of the test's database.
async fn backed_up(db: &TestDb) -> (Store, Manifest) {
    let s = store().await;
    let m = s
        .backups
        .create(&db.database_url(), None, &quiet())
        .await
        .unwrap();
    (s, m)
}

fn options() -> RestoreOptions {
    RestoreOptions {
        jobs: Some(3),
        end_sessions: true,
        ..RestoreOptions::default()
    }
}

/// Rows that COPY text escapes: newlines, tabs, CR, backslashes, `\.` alone, NULLs, non-ASCII;
/// enough of them (about 6 MiB) for several batches across three streams.
const AWKWARD: &str = r"
CREATE TABLE awkward (id int PRIMARY KEY, t text, b bytea, n text);
INSERT INTO awkward
SELECT g,
       CASE g % 7
         WHEN 0 THEN E'line one\nline two\n'
         WHEN 1 THEN E'tab\there\tand\\backslash\\'
         WHEN 2 THEN E'\\.'
         WHEN 3 THEN E'cr\r\nlf'
         WHEN 4 THEN NULL
         WHEN 5 THEN 'héllo 日本語 🚀 ' || repeat('x', g % 300)
         ELSE E'\\N is not null'
       END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
       CASE WHEN g % 3 = 0 THEN NULL ELSE E'\\' END
FROM generate_series(1, 60000) g;
CREATE INDEX awkward_t ON awkward (t);
CREATE TABLE small (k text PRIMARY KEY);
INSERT INTO small VALUES (E'a\tb'), (E'c\nd');
";

const AWKWARD_SUM: &str = "SELECT md5(string_agg(concat_ws('|', id, coalesce(t, '<null>'), coalesce(encode(b, 'hex'), '<null>'), coalesce(n, '<null>')), '#' ORDER BY id)) FROM awkward";

#[tokio::test]
async fn rows_with_newlines_tabs_backslashes_and_nulls_survive_parallel_loading() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    db.exec(AWKWARD).await;
    let before = db.texts(AWKWARD_SUM).await;
    let small = db
        .texts("SELECT string_agg(k, '|' ORDER BY k) FROM small")
        .await;
    let (s, m) = backed_up(&db).await;
    assert!(m.raw_bytes > 4 * 1024 * 1024, "{} raw bytes", m.raw_bytes);
    db.exec("DELETE FROM awkward WHERE id % 2 = 0; CREATE TABLE later (x int);")
        .await;
    let report = s
        .backups
        .restore_with(&m.id, &db.database_url(), &options(), &quiet())
        .await
        .unwrap();
    assert_eq!(report.jobs, 3);
    assert_eq!(report.kept_old, None);
    assert_eq!(db.texts(AWKWARD_SUM).await, before);
    assert_eq!(
        db.texts("SELECT string_agg(k, '|' ORDER BY k) FROM small")
            .await,
        small
    );
    assert_eq!(
        db.texts("SELECT to_regclass('public.later')::text").await,
        vec![None]
    );
    // Indexes and keys were built after the data.
    assert_eq!(
        db.texts(
            "SELECT string_agg(indexname::text, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename IN ('awkward', 'small')"
        )
        .await,
        vec![Some("awkward_pkey,awkward_t,small_pkey".into())]
    );
    let mut watch = observer(&db).await;
    assert!(leftovers(&mut watch, &name(&db)).await.is_empty());
    // The restore check loads the same way into its scratch database.
    s.backups
        .verify_restore_check(&m.id, &db.database_url(), &quiet())
        .await
        .unwrap();
    let _ = watch.close().await;
}

/// A database whose backup restores its data but fails building an index: the function the
/// unique index uses claims to be immutable and is not (it reads a table restored with data).
const LYING_INDEX: &str = r"
CREATE TABLE cfg (v int);
CREATE FUNCTION public.bucket(x int) RETURNS int LANGUAGE sql IMMUTABLE
  AS $$ SELECT coalesce((SELECT v FROM public.cfg LIMIT 1), x) $$;
CREATE TABLE items (id int);
INSERT INTO items SELECT generate_series(1, 1000);
CREATE UNIQUE INDEX items_bucket ON items (public.bucket(id));
INSERT INTO cfg VALUES (1);
";

#[tokio::test]
async fn a_failing_constraint_leaves_the_target_as_it_was_and_nothing_behind() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    db.exec(LYING_INDEX).await;
    let (s, m) = backed_up(&db).await;
    db.exec("CREATE TABLE after_backup (y int); INSERT INTO after_backup VALUES (7);")
        .await;
    let err = s
        .backups
        .restore_with(&m.id, &db.database_url(), &options(), &quiet())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BackupError::RestoreFailed { .. }), "{text}");
    assert!(text.contains("items_bucket"), "{text}");
    assert!(text.contains("the target was left unchanged"), "{text}");
    assert_eq!(
        db.texts("SELECT count(*)::text FROM after_backup").await,
        vec![Some("1".into())]
    );
    assert_eq!(
        db.texts("SELECT count(*)::text FROM items").await,
        vec![Some("1000".into())]
    );
    assert_nothing_left(&db).await;
}

#[tokio::test]
async fn a_killed_loading_backend_leaves_the_target_as_it_was_and_nothing_behind() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    db.exec(
        "CREATE TABLE big (id bigint PRIMARY KEY, pad text);
         INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 400000) g;",
    )
    .await;
    let (s, m) = backed_up(&db).await;
    db.exec("CREATE TABLE after_backup (y int); INSERT INTO after_backup VALUES (7);")
        .await;
    let mut watch = observer(&db).await;
    let target = db.database_url();
    let restore = {
        let backups = s.backups;
        let id = m.id.clone();
        tokio::spawn(async move {
            let r = backups
                .restore_with(&id, &target, &options(), &quiet())
                .await;
            (r, backups)
        })
    };
    // Wait for a loading COPY in the new database, and kill its backend.
    let started = Instant::now();
    let killed = loop {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE 'COPY %' \
             AND datname ~ '^ferry_new_[0-9a-f]{6}_' AND substr(datname, 18) = $1",
        )
        .bind(name(&db))
        .fetch_all(&mut watch)
        .await
        .unwrap();
        if let Some(pid) = pids.first() {
            let _: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .fetch_one(&mut watch)
                .await
                .unwrap();
            break true;
        }
        if restore.is_finished() || started.elapsed() > Duration::from_secs(120) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (result, _backups) = restore.await.unwrap();
    assert!(
        killed,
        "no loading COPY was seen; the restore ended with {result:?}"
    );
    let err = result.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BackupError::RestoreFailed { .. }), "{text}");
    assert!(text.contains("the target was left unchanged"), "{text}");
    assert_eq!(
        db.texts("SELECT count(*)::text FROM after_backup").await,
        vec![Some("1".into())]
    );
    assert_eq!(
        db.texts("SELECT count(*)::text FROM big").await,
        vec![Some("400000".into())]
    );
    assert!(leftovers(&mut watch, &name(&db)).await.is_empty());
    let _ = watch.close().await;
}

#[tokio::test]
async fn sessions_on_the_target_are_ended_with_yes_and_refused_without() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    db.exec("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2);")
        .await;
    let (s, m) = backed_up(&db).await;
    db.exec("INSERT INTO t VALUES (3);").await;
    let url = db.database_url();
    let mut app = PgConnection::connect(&url.for_driver()).await.unwrap();
    sqlx::query("SET application_name = 'the_app'")
        .execute(&mut app)
        .await
        .unwrap();

    let refuse = RestoreOptions {
        end_sessions: false,
        ..options()
    };
    let err = s
        .backups
        .restore_with(&m.id, &url, &refuse, &quiet())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BackupError::SessionsOpen { .. }), "{text}");
    assert!(text.contains("the_app") && text.contains("--yes"), "{text}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&mut app)
        .await
        .unwrap();
    assert_eq!(n, 3, "the refused restore touched the target");

    let report = s
        .backups
        .restore_with(&m.id, &url, &options(), &quiet())
        .await
        .unwrap();
    assert!(report.sessions_ended >= 1, "{report:?}");
    assert!(
        sqlx::query("SELECT 1").execute(&mut app).await.is_err(),
        "the application's session should have been ended"
    );
    assert_eq!(
        db.texts("SELECT count(*)::text FROM t").await,
        vec![Some("2".into())]
    );
    assert_nothing_left(&db).await;
}

#[tokio::test]
async fn keep_old_keeps_the_replaced_database_and_settings_carry_over() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    let name = name(&db);
    db.exec("CREATE TABLE t (x int); INSERT INTO t VALUES (1);")
        .await;
    db.exec(&format!(
        "ALTER DATABASE \"{name}\" SET work_mem = '7MB'; COMMENT ON DATABASE \"{name}\" IS 'the app''s db'"
    ))
    .await;
    let (s, m) = backed_up(&db).await;
    db.exec("INSERT INTO t VALUES (2);").await;
    let keep = RestoreOptions {
        keep_old: true,
        ..options()
    };
    let report = s
        .backups
        .restore_with(&m.id, &db.database_url(), &keep, &quiet())
        .await
        .unwrap();
    let old = report.kept_old.clone().expect("the old database is kept");
    assert!(old.starts_with("ferry_old_"), "{old}");
    let old_url = DatabaseUrl::parse(&db.database_url().expose().replace(&name, &old)).unwrap();
    let mut conn = PgConnection::connect(&old_url.for_driver()).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 2, "the kept database is the one replaced");
    let _ = conn.close().await;
    assert_eq!(
        db.texts("SELECT count(*)::text FROM t").await,
        vec![Some("1".into())]
    );
    assert_eq!(
        db.texts("SELECT current_setting('work_mem')").await,
        vec![Some("7MB".into())]
    );
    assert_eq!(
        db.texts("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()")
            .await,
        vec![Some("the app's db".into())]
    );
    ferry_core::scratch::drop_database(&db.database_url(), &old)
        .await
        .unwrap();
}

#[tokio::test]
async fn no_owner_and_role_restore_into_a_server_without_the_backups_roles() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    let name = name(&db);
    let (owner, restorer) = (format!("{name}_own"), format!("{name}_rst"));
    db.exec(&format!(
        "CREATE ROLE \"{owner}\" NOLOGIN; CREATE ROLE \"{restorer}\" NOLOGIN;
         ALTER DATABASE \"{name}\" OWNER TO \"{restorer}\";
         CREATE TABLE t (x int); INSERT INTO t VALUES (1); ALTER TABLE t OWNER TO \"{owner}\";"
    ))
    .await;
    let (s, m) = backed_up(&db).await;
    let owner_of_t = "SELECT tableowner::text FROM pg_tables WHERE tablename = 't'";
    assert_eq!(db.texts(owner_of_t).await, vec![Some(owner.clone())]);
    // The backup's role is gone, as on another server.
    db.exec(&format!("DROP TABLE t; DROP ROLE \"{owner}\";"))
        .await;
    let err = s
        .backups
        .restore_with(&m.id, &db.database_url(), &options(), &quiet())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&owner), "{err}");
    let as_restorer = RestoreOptions {
        no_owner: true,
        role: Some(restorer.clone()),
        ..options()
    };
    s.backups
        .restore_with(&m.id, &db.database_url(), &as_restorer, &quiet())
        .await
        .unwrap();
    assert_eq!(db.texts(owner_of_t).await, vec![Some(restorer.clone())]);
    assert_eq!(
        db.texts("SELECT count(*)::text FROM t").await,
        vec![Some("1".into())]
    );
    assert_nothing_left(&db).await;
    drop(db);
    // Roles are global: drop the test's own once its databases are gone.
    let server = DatabaseUrl::parse(
        &std::env::var("FERRY_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
    )
    .unwrap();
    let mut admin = PgConnection::connect(&server.for_driver()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP ROLE IF EXISTS \"{restorer}\""
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let _ = admin.close().await;
}

#[tokio::test]
async fn large_objects_take_the_single_pg_restore_path_and_come_back() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    db.exec(
        "CREATE TABLE docs (id int PRIMARY KEY, body oid);
         INSERT INTO docs VALUES (1, lo_from_bytea(0, '\\x00ff0a5c'::bytea));",
    )
    .await;
    let (s, m) = backed_up(&db).await;
    db.exec("DELETE FROM docs;").await;
    let report = s
        .backups
        .restore_with(&m.id, &db.database_url(), &options(), &quiet())
        .await
        .unwrap();
    assert_eq!(report.jobs, 1, "large objects are not loaded in parallel");
    assert_eq!(
        db.texts("SELECT encode(lo_get(body), 'hex') FROM docs")
            .await,
        vec![Some("00ff0a5c".into())]
    );
}

/// Post-data of many shapes: keys and unique constraints (built by ferry as unique indexes,
/// then attached), the shapes it leaves to `pg_restore` (INCLUDE, DEFERRABLE, NULLS NOT
/// DISTINCT, a partitioned table's key, an inherited one), partial and expression indexes, a
/// comment on an index, CLUSTER ON, a foreign key, a materialized view with a unique index, and
/// names that need quotes.
const POST_DATA: &str = r#"
CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, region text);
INSERT INTO accounts SELECT g, 'u' || g || '@example.com', 'r' || (g % 5) FROM generate_series(1, 3000) g;
CREATE INDEX accounts_lower_email ON accounts (lower(email));
COMMENT ON INDEX accounts_lower_email IS 'for logins';
ALTER TABLE accounts CLUSTER ON accounts_pkey;
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Odd ""Name""" ("Key" int, v text, CONSTRAINT "Odd pk" PRIMARY KEY ("Key"));
INSERT INTO "Odd Schema"."Odd ""Name""" SELECT g, md5(g::text) FROM generate_series(1, 500) g;
CREATE TABLE orders (
  id int, account_id bigint NOT NULL REFERENCES accounts (id), n int,
  CONSTRAINT orders_pk PRIMARY KEY (id) INCLUDE (n),
  CONSTRAINT orders_n_uq UNIQUE (n) DEFERRABLE INITIALLY DEFERRED
);
INSERT INTO orders SELECT g, 1 + g % 3000, g FROM generate_series(1, 5000) g;
CREATE INDEX orders_account ON orders (account_id) WHERE n > 0;
CREATE TABLE measures (at date NOT NULL, v int, PRIMARY KEY (at)) PARTITION BY RANGE (at);
CREATE TABLE measures_2026 PARTITION OF measures FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO measures SELECT date '2026-01-01' + g, g FROM generate_series(0, 300) g;
CREATE INDEX measures_v ON measures (v);
CREATE TABLE parent_t (id int PRIMARY KEY, x int);
CREATE TABLE child_t (y int) INHERITS (parent_t);
ALTER TABLE child_t ADD PRIMARY KEY (id);
INSERT INTO parent_t SELECT g, g FROM generate_series(1, 100) g;
INSERT INTO child_t SELECT g, g, g FROM generate_series(101, 250) g;
CREATE TABLE nulls_nd (a int, CONSTRAINT nulls_nd_a UNIQUE NULLS NOT DISTINCT (a));
INSERT INTO nulls_nd VALUES (1), (NULL);
CREATE MATERIALIZED VIEW account_regions AS SELECT region, count(*) AS n FROM accounts GROUP BY region;
CREATE UNIQUE INDEX account_regions_region ON account_regions (region);
"#;

/// The schema as `pg_dump --schema-only` writes it.
fn schema_of(db: &TestDb) -> String {
    let out = std::process::Command::new("pg_dump")
        .args(["--schema-only", "--no-password"])
        .arg(format!("--dbname={}", db.database_url().expose()))
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `\restrict KEY` (and its `\unrestrict`) carries a random key per dump.
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn post_data_of_every_shape_comes_back_as_it_was_dumped() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    db.exec(POST_DATA).await;
    let before = schema_of(&db);
    let counts = "SELECT concat_ws(',', (SELECT count(*) FROM accounts), (SELECT count(*) FROM orders), \
        (SELECT count(*) FROM measures), (SELECT count(*) FROM parent_t), (SELECT count(*) FROM ONLY parent_t), \
        (SELECT count(*) FROM account_regions), (SELECT count(*) FROM \"Odd Schema\".\"Odd \"\"Name\"\"\"))";
    let rows = db.texts(counts).await;
    let (s, m) = backed_up(&db).await;
    db.exec("DROP TABLE orders; DROP MATERIALIZED VIEW account_regions; ALTER TABLE accounts DROP CONSTRAINT accounts_email_key;")
        .await;
    s.backups
        .restore_with(&m.id, &db.database_url(), &options(), &quiet())
        .await
        .unwrap();
    let after = schema_of(&db);
    let (b, a): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    if let Some(i) = (0..b.len().max(a.len())).find(|&i| b.get(i) != a.get(i)) {
        let around = |l: &[&str]| l[i.saturating_sub(3)..(i + 4).min(l.len())].join("\n");
        panic!(
            "the restored schema differs from the dumped one at line {}:\n--- dumped\n{}\n--- restored\n{}",
            i + 1,
            around(&b),
            around(&a)
        );
    }
    assert_eq!(db.texts(counts).await, rows);
    // The keys ferry built itself are real constraints on their indexes.
    assert_eq!(
        db.texts(
            "SELECT string_agg(conname || ':' || contype::text || ':' || conindid::regclass::text, ',' ORDER BY conname) \
             FROM pg_constraint WHERE conname IN ('accounts_pkey', 'accounts_email_key', 'Odd pk')"
        )
        .await,
        vec![Some(
            "Odd pk:p:\"Odd Schema\".\"Odd pk\",accounts_email_key:u:accounts_email_key,accounts_pkey:p:accounts_pkey"
                .into()
        )]
    );
    assert_nothing_left(&db).await;
}
