//! A password with `+`, `%2B`, `@`, `:` and `/` reaches every connection and every dump and
//! restore tool intact: `migrate up`, `backup create`, `backup verify --restore-check`,
//! `compat check` and `backup restore`, through the real binary, as a role that must really
//! authenticate.
//!
//! The local PostgreSQL trusts loopback connections, where a wrong password would pass
//! unnoticed; members of the role `ferry_pw_login` must authenticate with SCRAM instead (a
//! `pg_hba.conf` line that `.ci/run` adds, see DEVELOPERS.md). The test first proves that a wrong
//! password is refused. MariaDB users always authenticate.

use ferry_core::DatabaseUrl;
use ferry_e2e::{Kind, Outcome, TestDb, run, write_migration};
use sqlx::{AssertSqlSafe, Connection};

per_engine!([postgres, mysql] every_command_logs_in_with_the_password_intact);

/// The password as the server stores it: `+` raw, a literal `%2B`, and `@`, `:`, `/`.
const PASSWORD: &str = "p+a%2Bs@s:w/d";
/// [`PASSWORD`] in a URL's user info: `%`, `@`, `:` and `/` escaped, `+` left raw (legal there,
/// and it means `+`).
const PASSWORD_IN_URL: &str = "p+a%252Bs%40s%3Aw%2Fd";

/// The group whose members `pg_hba.conf` makes authenticate (DEVELOPERS.md).
const PG_LOGIN_GROUP: &str = "ferry_pw_login";

fn hba_hint() -> String {
    format!(
        "add `host all +{PG_LOGIN_GROUP} 127.0.0.1/32 scram-sha-256` at the top of pg_hba.conf \
         (`SHOW hba_file`) and `SELECT pg_reload_conf()`, as .ci/run does"
    )
}

/// A login with [`PASSWORD`] that owns (PostgreSQL) or may use (MariaDB) the test's database,
/// and the URL ferry is given for it.
struct Login {
    user: String,
    url: String,
}

async fn admin_exec(db: &TestDb, sql: &str) -> Result<(), sqlx::Error> {
    let mut c = db.connect().await;
    let r = sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(&mut c)
        .await
        .map(drop);
    let _ = c.close().await;
    r
}

impl Login {
    async fn create(db: &TestDb) -> Login {
        let parts = DatabaseUrl::parse(&db.url).unwrap().parts().unwrap();
        let user = format!("ferry_pw_{}", parts.database.trim_start_matches("ferry_t_"));
        let host = parts.host.clone().unwrap_or_else(|| "127.0.0.1".into());
        let port = parts.port.map(|p| format!(":{p}")).unwrap_or_default();
        let scheme = if db.kind == Kind::Postgres {
            "postgres"
        } else {
            "mysql"
        };
        match db.kind {
            Kind::Postgres => {
                // Concurrent tests may both create the group; the loser's error is harmless.
                let _ = admin_exec(db, &format!("CREATE ROLE {PG_LOGIN_GROUP} NOLOGIN")).await;
                admin_exec(
                    db,
                    &format!(
                        "CREATE ROLE {user} LOGIN CREATEDB PASSWORD '{PASSWORD}' IN ROLE {PG_LOGIN_GROUP};
                         ALTER DATABASE {} OWNER TO {user}",
                        parts.database
                    ),
                )
                .await
                .expect("create the login role");
            }
            _ => admin_exec(
                db,
                &format!(
                    "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';
                     GRANT ALL PRIVILEGES ON *.* TO '{user}'@'127.0.0.1'"
                ),
            )
            .await
            .expect("create the login user"),
        }
        Login {
            url: format!(
                "{scheme}://{user}:{PASSWORD_IN_URL}@{host}{port}/{}",
                parts.database
            ),
            user,
        }
    }

    /// Whether the server refuses this login with a wrong password (it must, or the test
    /// proves nothing).
    async fn wrong_password_refused(&self, kind: Kind) -> bool {
        let wrong = self.url.replace(PASSWORD_IN_URL, "wrong");
        match kind {
            Kind::Postgres => sqlx::PgConnection::connect(&wrong).await.is_err(),
            _ => sqlx::MySqlConnection::connect(&wrong).await.is_err(),
        }
    }

    /// Drops the login (the test database goes when `db` is dropped).
    async fn remove(self, db: &TestDb) {
        let database = DatabaseUrl::parse(&db.url).unwrap().database_name();
        let sql = match db.kind {
            Kind::Postgres => format!(
                "ALTER DATABASE {database} OWNER TO CURRENT_USER; DROP OWNED BY {user}; DROP ROLE {user}",
                user = self.user
            ),
            _ => format!("DROP USER IF EXISTS '{}'@'127.0.0.1'", self.user),
        };
        if let Err(e) = admin_exec(db, &sql).await {
            eprintln!("could not drop test login {}: {e}", self.user);
        }
    }
}

fn ferry(db: &TestDb, login: &Login, rest: &[&str]) -> Outcome {
    let m = db.path().join("migrations");
    let store = format!("file://{}/store", db.path().display());
    let mut args = rest.to_vec();
    args.extend([
        "--database-url",
        &login.url,
        "--migrations",
        m.to_str().unwrap(),
        "--store",
        &store,
        "--output",
        "json",
    ]);
    let out = run(db.path(), &args);
    assert!(
        !out.stdout.contains(PASSWORD_IN_URL) && !out.stderr.contains(PASSWORD_IN_URL),
        "the password leaked: {out:?}"
    );
    out
}

async fn every_command_logs_in_with_the_password_intact(db: TestDb) {
    let login = Login::create(&db).await;
    if !login.wrong_password_refused(db.kind).await {
        let msg = format!(
            "the {:?} test server accepts {} with a wrong password, so this test would prove \
             nothing: {}",
            db.kind,
            login.user,
            hba_hint()
        );
        login.remove(&db).await;
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED (server does not authenticate): {msg}");
        return;
    }

    let p = db.path();
    write_migration(
        p,
        1,
        "accounts",
        "CREATE TABLE accounts (id INT PRIMARY KEY, note VARCHAR(50));\n",
        "DROP TABLE accounts;\n",
    );
    let up = ferry(&db, &login, &["migrate", "up"]).expect_code(0).json();
    assert_eq!(up["current_version"], 1, "{up}");
    db.exec("INSERT INTO accounts (id, note) VALUES (1, 'kept'), (2, 'kept too')")
        .await;

    let manifest = ferry(&db, &login, &["backup", "create"])
        .expect_code(0)
        .json();
    assert_eq!(manifest["schema_version"], 1, "{manifest}");
    let id = manifest["id"].as_str().unwrap().to_string();

    let check = ferry(&db, &login, &["backup", "verify", &id, "--restore-check"])
        .expect_code(0)
        .json();
    assert!(
        check["restore_check"]["tables"].as_array().unwrap().len() >= 2,
        "{check}"
    );

    write_migration(
        p,
        2,
        "add_flag",
        "ALTER TABLE accounts ADD COLUMN flag INT NULL;\n",
        "ALTER TABLE accounts DROP COLUMN flag;\n",
    );
    let compat = ferry(&db, &login, &["compat", "check"])
        .expect_code(0)
        .json();
    assert_eq!(compat["compatible"], true, "{compat}");
    assert_eq!(
        compat["migrations"].as_array().unwrap().len(),
        1,
        "{compat}"
    );

    db.exec("DELETE FROM accounts").await;
    ferry(&db, &login, &["backup", "restore", &id, "--yes"]).expect_code(0);
    let mut c = db.connect().await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
        .fetch_one(&mut c)
        .await
        .expect("count restored rows");
    let _ = c.close().await;
    assert_eq!(rows, 2, "the restore brought the rows back");

    login.remove(&db).await;
}
