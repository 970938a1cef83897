//! `ferry promote` / `rollback` / `releases` with OCI registries: real `docker-registry`
//! processes on loopback (one behind Basic auth), images pushed by the test, and every tag
//! checked against the registry directly (not through ferry's client).

use std::path::Path;

use ferry_e2e::Outcome;
use ferry_e2e::registry::Registry;
use serde_json::Value;

/// A Monday (production's default freeze is Fri–Sun).
const MONDAY: &str = "2026-11-23T10:00:00Z";

/// `ferry.toml` with dev → staging → production in `reg_host`'s repositories (production may
/// be in another registry).
fn setup(dev_host: &str, prod_host: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir(p.join("docker")).unwrap();
    std::fs::write(
        p.join("ferry.toml"),
        format!(
            "[store]\nurl = \"file://{0}/central\"\n\
             [env.dev]\nartifacts = \"oci://{1}/app-dev\"\n\
             [env.staging]\nartifacts = \"oci://{1}/app-staging\"\nrequires = \"dev\"\n\
             [env.production]\nartifacts = \"oci://{2}/app-prod:live\"\nrequires = \"staging\"\n",
            p.display(),
            dev_host,
            prod_host
        ),
    )
    .unwrap();
    dir
}

fn ferry(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Outcome {
    let mut cmd = ferry_e2e::ferry(dir);
    cmd.env("FERRY_NOW", MONDAY)
        .env("FERRY_ACTOR", "ci-bot")
        // No developer credentials leak in: an empty docker configuration of the test's own.
        .env("DOCKER_CONFIG", dir.join("docker"))
        .env_remove("FERRY_REGISTRY_USERNAME")
        .env_remove("FERRY_REGISTRY_PASSWORD")
        .env_remove("FERRY_INSECURE_REGISTRIES");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .args(args)
        .args(["--output", "json"])
        .output()
        .expect("run ferry");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The environment's tag resolves to `digest`, with the very manifest bytes pushed.
fn assert_tag(reg: &Registry, repo: &str, tag: &str, digest: &str, manifest: &[u8]) {
    let (found, bytes) = reg
        .manifest(repo, tag)
        .unwrap_or_else(|| panic!("{repo}:{tag} does not exist"));
    assert_eq!(found, digest, "{repo}:{tag}");
    assert_eq!(bytes, manifest, "{repo}:{tag}: manifest bytes changed");
}

#[test]
fn promote_oci_through_three_environments_and_roll_back() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let host = reg.host();
    let dir = setup(&host, &host);
    let p = dir.path();
    let one = reg.push_image("app-build", "1.0.0", 64 * 1024);
    let two = reg.push_image("app-build", "1.1.0", 64 * 1024);
    let by_digest = format!("{host}/app-build@{}", one.digest);

    // Stage skipping is refused before anything is copied.
    let skip = ferry(p, &[], &["promote", &by_digest, "--to", "staging"]).expect_code(3);
    assert_eq!(skip.json()["error"]["kind"], "not_live_in_required");
    assert_eq!(reg.resolve("app-staging", "staging"), None);

    for (env, repo, tag) in [
        ("dev", "app-dev", "dev"),
        ("staging", "app-staging", "staging"),
        ("production", "app-prod", "live"),
    ] {
        let r = ferry(p, &[], &["promote", &by_digest, "--to", env])
            .expect_code(0)
            .json();
        assert_eq!(r["digest"], one.digest.as_str(), "{env}: {r}");
        assert_eq!(r["name"], "app-build");
        // Within one registry the blobs are mounted: no payload passes through ferry.
        assert_eq!(r["bytes_copied"], 0, "{env}: {r}");
        assert_tag(&reg, repo, tag, &one.digest, &one.manifest);
    }
    // Promoting what is live again records nothing (and re-applies the tag).
    let again = ferry(p, &[], &["promote", &by_digest, "--to", "dev"])
        .expect_code(0)
        .json();
    assert_eq!(again["changed"], false);

    // By tag: resolved to its digest once; the version is the tag.
    let by_tag = format!("{host}/app-build:1.1.0");
    for env in ["dev", "staging", "production"] {
        let r = ferry(p, &[], &["promote", &by_tag, "--to", env])
            .expect_code(0)
            .json();
        assert_eq!(r["digest"], two.digest.as_str(), "{env}: {r}");
        assert_eq!(r["version"], "1.1.0");
    }
    assert_tag(&reg, "app-prod", "live", &two.digest, &two.manifest);

    let rel = ferry(p, &[], &["releases", "--env", "production"])
        .expect_code(0)
        .json();
    assert_eq!(rel["live"]["digest"], two.digest.as_str());
    assert_eq!(rel["previous"]["digest"], one.digest.as_str());
    assert_eq!(rel["history"][1]["version"], &one.digest[7..19]);

    // Roll production back: the tag moves back to the first image, from what is stored.
    let rb = ferry(
        p,
        &[],
        &[
            "rollback",
            "--env",
            "production",
            "--reason",
            "error rate up",
        ],
    )
    .expect_code(0)
    .json();
    assert_eq!(rb["digest"], one.digest.as_str(), "{rb}");
    assert_eq!(rb["bytes_copied"], 0);
    assert_tag(&reg, "app-prod", "live", &one.digest, &one.manifest);
    let rel = ferry(p, &[], &["releases", "--env", "production"])
        .expect_code(0)
        .json();
    assert_eq!(rel["live"]["digest"], one.digest.as_str());
    assert_eq!(rel["history"][0]["action"], "rollback");
    assert_eq!(rel["history"][1]["status"], "bad");
    // The other environments were not touched.
    assert_tag(&reg, "app-staging", "staging", &two.digest, &two.manifest);

    // A digest the registry does not have is a clear error, and nothing is recorded.
    let missing = format!("{host}/app-build@sha256:{}", "0".repeat(64));
    let out = ferry(p, &[], &["promote", &missing, "--to", "dev"]).expect_code(2);
    assert!(out.stderr.contains("is not in oci://"), "{}", out.stderr);

    // Store references and image references do not mix.
    let out = ferry(p, &[], &["promote", "app@1.0.0", "--to", "dev"]).expect_code(2);
    assert!(out.stderr.contains("OCI registry"), "{}", out.stderr);

    // gc reports that it skipped the registries instead of silently ignoring them.
    let gc = ferry(p, &[], &["artifact", "gc", "--keep", "1"])
        .expect_code(0)
        .json();
    assert_eq!(gc["skipped"].as_array().map(Vec::len), Some(3), "{gc}");
}

#[test]
fn promote_oci_refuses_a_tampered_manifest() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let host = reg.host();
    let dir = setup(&host, &host);
    let p = dir.path();
    let image = reg.push_image("app-build", "1.0.0", 4096);
    reg.tamper_blob(&image.digest);
    let out = ferry(
        p,
        &[],
        &["promote", &format!("{host}/app-build:1.0.0"), "--to", "dev"],
    )
    .expect_code(3);
    assert_eq!(out.json()["error"]["kind"], "tampered", "{}", out.stderr);
    assert_eq!(reg.resolve("app-dev", "dev"), None);
    let rel = ferry(p, &[], &["releases", "--env", "dev"])
        .expect_code(0)
        .json();
    assert_eq!(rel["live"], Value::Null);
}

#[test]
fn promote_oci_with_basic_auth_from_env_and_docker_config() {
    let Some(reg) = Registry::start(Some(("deployer", "s3cret-pw"))) else {
        return;
    };
    let host = reg.host();
    let dir = setup(&host, &host);
    let p = dir.path();
    let image = reg.push_image("app-build", "1.0.0", 8192);
    let by_digest = format!("{host}/app-build@{}", image.digest);

    // No credentials: a clear error naming the way out, and the password never printed.
    let out = ferry(p, &[], &["promote", &by_digest, "--to", "dev"]).expect_code(2);
    assert_eq!(
        out.json()["error"]["kind"],
        "registry_auth",
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("FERRY_REGISTRY_USERNAME"),
        "{}",
        out.stderr
    );

    // Wrong credentials are refused.
    let wrong = [
        ("FERRY_REGISTRY_USERNAME", "deployer"),
        ("FERRY_REGISTRY_PASSWORD", "wrong"),
    ];
    let out = ferry(p, &wrong, &["promote", &by_digest, "--to", "dev"]).expect_code(2);
    assert!(!out.stderr.contains("wrong"), "{}", out.stderr);

    // Credentials from the environment.
    let creds = [
        ("FERRY_REGISTRY_USERNAME", "deployer"),
        ("FERRY_REGISTRY_PASSWORD", "s3cret-pw"),
    ];
    let out = ferry(p, &creds, &["promote", &by_digest, "--to", "dev"]).expect_code(0);
    assert!(!out.stdout.contains("s3cret") && !out.stderr.contains("s3cret"));
    assert_tag(&reg, "app-dev", "dev", &image.digest, &image.manifest);

    // Credentials from $DOCKER_CONFIG/config.json (`auth` is base64 of user:password).
    std::fs::write(
        p.join("docker/config.json"),
        format!(r#"{{"auths": {{"{host}": {{"auth": "ZGVwbG95ZXI6czNjcmV0LXB3"}}}}}}"#),
    )
    .unwrap();
    ferry(p, &[], &["promote", &by_digest, "--to", "staging"]).expect_code(0);
    assert_tag(
        &reg,
        "app-staging",
        "staging",
        &image.digest,
        &image.manifest,
    );
}

#[test]
fn promote_oci_between_two_registries_streams_the_blobs() {
    let (Some(a), Some(b)) = (Registry::start(None), Registry::start(None)) else {
        return;
    };
    let dir = setup(&a.host(), &b.host());
    let p = dir.path();
    let image = a.push_image("app-build", "1.0.0", 256 * 1024);
    let by_digest = format!("{}/app-build@{}", a.host(), image.digest);
    for env in ["dev", "staging"] {
        let r = ferry(p, &[], &["promote", &by_digest, "--to", env])
            .expect_code(0)
            .json();
        assert_eq!(
            r["bytes_copied"], 0,
            "{env}: mounted within registry a: {r}"
        );
    }
    let r = ferry(p, &[], &["promote", &by_digest, "--to", "production"])
        .expect_code(0)
        .json();
    // Config and layer streamed from a to b through ferry.
    let copied = r["bytes_copied"].as_u64().unwrap();
    assert!(copied > image.layer_size as u64, "{r}");
    assert_eq!(
        r["source"],
        format!("oci://{}/app-staging:staging", a.host())
    );
    assert_tag(&b, "app-prod", "live", &image.digest, &image.manifest);
    assert_eq!(a.resolve("app-prod", "live"), None);
}

/// Writes `docker-credential-ferrytest` into `bin`: it logs the host it is asked about to
/// `bin/asked` and answers `user`/`secret` for `host`, "not found" for anything else.
fn credential_helper(bin: &Path, host: &str, user: &str, secret: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(bin).unwrap();
    let script = bin.join("docker-credential-ferrytest");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             [ \"$1\" = get ] || exit 2\n\
             read -r host\n\
             echo \"$host\" >> '{asked}'\n\
             if [ \"$host\" = '{host}' ]; then\n\
               printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$host\"\n\
             else\n\
               echo 'credentials not found in native keychain'; exit 1\n\
             fi\n",
            asked = bin.join("asked").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `PATH` with `bin` first.
fn path_with(bin: &Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn promote_oci_with_credentials_from_a_docker_credential_helper() {
    let Some(reg) = Registry::start(Some(("deployer", "h3lper-pw"))) else {
        return;
    };
    let host = reg.host();
    let dir = setup(&host, &host);
    let p = dir.path();
    let image = reg.push_image("app-build", "1.0.0", 8192);
    let by_digest = format!("{host}/app-build@{}", image.digest);
    let bin = p.join("bin");
    credential_helper(&bin, &host, "deployer", "h3lper-pw");
    let path = path_with(&bin);
    let env = [("PATH", path.as_str()), ("RUST_LOG", "debug")];
    // Whatever ferry prints, with debug logs on, never holds the secret (nor its Basic form).
    let basic = "ZGVwbG95ZXI6aDNscGVyLXB3";
    let no_secret = |out: &Outcome| {
        for text in [&out.stdout, &out.stderr] {
            assert!(
                !text.contains("h3lper-pw") && !text.contains(basic),
                "a secret leaked:\n{text}"
            );
        }
    };

    // `credsStore`: the helper for every registry.
    std::fs::write(
        p.join("docker/config.json"),
        r#"{"auths": {}, "credsStore": "ferrytest"}"#,
    )
    .unwrap();
    let out = ferry(p, &env, &["promote", &by_digest, "--to", "dev"]).expect_code(0);
    no_secret(&out);
    assert_tag(&reg, "app-dev", "dev", &image.digest, &image.manifest);
    let asked = std::fs::read_to_string(bin.join("asked")).unwrap();
    assert!(asked.lines().all(|l| l == host), "{asked}");

    // `credHelpers.<host>` wins over `credsStore` (here a helper that does not exist).
    std::fs::write(
        p.join("docker/config.json"),
        format!(r#"{{"credsStore": "ferry-missing", "credHelpers": {{"{host}": "ferrytest"}}}}"#),
    )
    .unwrap();
    let out = ferry(p, &env, &["promote", &by_digest, "--to", "staging"]).expect_code(0);
    no_secret(&out);
    assert_tag(
        &reg,
        "app-staging",
        "staging",
        &image.digest,
        &image.manifest,
    );

    // A helper that is not installed: a clear error naming it and where it is configured.
    std::fs::write(
        p.join("docker/config.json"),
        r#"{"credsStore": "ferry-missing"}"#,
    )
    .unwrap();
    let out = ferry(p, &env, &["promote", &by_digest, "--to", "production"]).expect_code(2);
    let message = out.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("docker-credential-ferry-missing") && message.contains("credsStore"),
        "{message}"
    );

    // A helper with the wrong secret: refused (exit 2), and the wrong secret is not shown.
    credential_helper(&bin, &host, "deployer", "wr0ng-secret");
    std::fs::write(
        p.join("docker/config.json"),
        r#"{"credsStore": "ferrytest"}"#,
    )
    .unwrap();
    let out = ferry(p, &env, &["promote", &by_digest, "--to", "production"]).expect_code(2);
    assert_eq!(out.json()["error"]["kind"], "registry_auth");
    assert!(
        !out.stdout.contains("wr0ng-secret") && !out.stderr.contains("wr0ng-secret"),
        "{}",
        out.stderr
    );
    assert_eq!(reg.resolve("app-prod", "live"), None);
}

#[test]
fn an_identity_token_is_never_sent_as_basic_auth() {
    let Some(reg) = Registry::start(Some(("deployer", "s3cret-pw"))) else {
        return;
    };
    let host = reg.host();
    let dir = setup(&host, &host);
    let p = dir.path();
    let image = reg.push_image("app-build", "1.0.0", 8192);
    let by_digest = format!("{host}/app-build@{}", image.digest);
    let env = [("RUST_LOG", "debug")];
    // From `auths.<host>.identitytoken`, and from a helper's `<token>` user.
    std::fs::write(
        p.join("docker/config.json"),
        format!(r#"{{"auths": {{"{host}": {{"identitytoken": "1dent-t0ken"}}}}}}"#),
    )
    .unwrap();
    let bin = p.join("bin");
    credential_helper(&bin, &host, "<token>", "h3lper-t0ken");
    let path = path_with(&bin);
    for (config, env) in [
        (None, env.to_vec()),
        (
            Some(r#"{"credsStore": "ferrytest"}"#),
            vec![("RUST_LOG", "debug"), ("PATH", path.as_str())],
        ),
    ] {
        if let Some(config) = config {
            std::fs::write(p.join("docker/config.json"), config).unwrap();
        }
        // docker-registry with htpasswd asks for Basic auth, which a token cannot answer.
        let out = ferry(p, &env, &["promote", &by_digest, "--to", "dev"]).expect_code(2);
        let message = out.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains("identity token"), "{message}");
        for text in [&out.stdout, &out.stderr] {
            assert!(
                !text.contains("1dent-t0ken") && !text.contains("h3lper-t0ken"),
                "a token leaked:\n{text}"
            );
        }
    }
    assert_eq!(reg.resolve("app-dev", "dev"), None);
}
