//! `ferry backup` with an S3 store on a real S3-compatible server (s3s-fs, which checks SigV4
//! signatures), including the server dying in the middle of an upload.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use ferry_e2e::s3::{Kind as S3Kind, Server};
use ferry_e2e::{Kind, TestDb, example_migrations, ferry};

fn ferry_s3(db: &TestDb, server: &Server, args: &[&str]) -> ferry_e2e::Outcome {
    let m = example_migrations();
    let mut cmd = ferry(db.path());
    cmd.envs(server.env()).args(args).args([
        "--database-url",
        &db.url,
        "--migrations",
        m.to_str().unwrap(),
        "--output",
        "json",
    ]);
    let out = cmd.output().expect("run ferry");
    ferry_e2e::Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_to_s3_and_restore_from_it() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    let Some(server) = Server::start(S3Kind::S3sFs) else {
        return;
    };
    server.create_bucket("backups").await;
    let store = "s3://backups/team/app";
    ferry_s3(&db, &server, &["migrate", "up"]).expect_code(0);
    db.exec("INSERT INTO users (id, email) VALUES (1, 'ada@example.com')")
        .await;
    let m = ferry_s3(&db, &server, &["backup", "create", "--store", store])
        .expect_code(0)
        .json();
    let id = m["id"].as_str().unwrap().to_string();
    let list = ferry_s3(&db, &server, &["backup", "list", "--store", store])
        .expect_code(0)
        .json();
    assert_eq!(list["backups"][0]["id"], id.as_str());
    ferry_s3(&db, &server, &["backup", "verify", &id, "--store", store]).expect_code(0);
    db.exec("DROP TABLE orders").await;
    ferry_s3(
        &db,
        &server,
        &["backup", "restore", &id, "--yes", "--store", store],
    )
    .expect_code(0);
    assert!(db.has_table("orders").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_server_killed_mid_upload_fails_the_command_and_lists_no_backup() {
    let Some(db) = TestDb::new(Kind::Sqlite).await else {
        return;
    };
    let Some(mut server) = Server::start(S3Kind::S3sFs) else {
        return;
    };
    server.create_bucket("backups").await;
    let store = "s3://backups/app";
    // ~24 MiB of random bytes: incompressible, so the upload takes several 8 MiB parts.
    db.exec("CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB NOT NULL)")
        .await;
    db.exec("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 24) INSERT INTO blobs SELECT i, randomblob(1048576) FROM n").await;

    let mut child = std::process::Command::new(ferry_e2e::ferry_bin())
        .current_dir(db.path())
        .envs(server.env())
        .env("RUST_LOG", "ferry_store=debug")
        .args([
            "backup",
            "create",
            "--store",
            store,
            "--database-url",
            &db.url,
            "--output",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry");
    // Wait for the first part to land, then kill the server in the middle of the upload.
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("stderr");
        let first_part = line.contains("uploaded part");
        seen.push(line);
        if first_part {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("uploaded part")),
        "ferry never uploaded a part: {seen:#?}"
    );
    server.kill_handle().kill();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait for ferry");
    assert_eq!(status.code(), Some(1), "the command must fail: {rest:#?}");

    server.restart();
    let list = ferry_s3(&db, &server, &["backup", "list", "--store", store])
        .expect_code(0)
        .json();
    assert!(
        list["backups"].as_array().unwrap().is_empty(),
        "a backup is listed: {list}"
    );
}
