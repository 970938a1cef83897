//! Push, promote through dev → staging → production, roll back, freeze windows, races,
//! tampering and gc, each on real stores.

use chrono::Duration;
use ferry_promote::{
    Action, GcRequest, Planned, PromoteError, PromoteRequest, Promoter, PushRequest,
    RollbackRequest, RollbackTarget, Status,
};

use crate::harness::{FRIDAY, MONDAY, Setup, at, sha256};
use crate::on_every_store;

/// No freeze, so that the scenarios that are not about freezes can run any day.
const NO_FREEZE: &str = "freeze = []";
const BERLIN_WEEKEND: &str = r#"freeze = [{ days = ["fri", "sat", "sun"], from = "00:00", to = "24:00", tz = "Europe/Berlin" }]"#;

fn promote(reference: &str, to: &str, now: &str) -> PromoteRequest {
    PromoteRequest {
        reference: reference.into(),
        to: to.into(),
        reason: None,
        override_freeze: false,
        actor: "tester@ci".into(),
        now: at(now),
    }
}

fn rollback(env: &str, to: Option<RollbackTarget>, now: &str) -> RollbackRequest {
    RollbackRequest {
        env: env.into(),
        to,
        reason: Some("error rate up".into()),
        actor: "oncall@laptop".into(),
        now: at(now),
    }
}

async fn live(p: &Promoter, env: &str) -> Option<String> {
    p.releases(env)
        .await
        .unwrap()
        .live
        .map(|r| r.digest.to_string())
}

on_every_store!(promotes_through_three_environments);
async fn promotes_through_three_environments(s: Setup) {
    let p = s.promoter(NO_FREEZE).await;
    let v1 = b"app build 1\n".repeat(1000);
    let r1 = s.push(&p, "1.0.0", &v1, MONDAY).await;
    let d1 = sha256(&v1);

    // Pushing the same bytes again stores nothing new; the same version with other bytes is
    // refused.
    let again = p
        .push(PushRequest {
            path: s.artifact("copy.bin", &v1),
            name: "app".into(),
            version: "1.0.0".into(),
            actor: "t".into(),
            now: at(MONDAY),
        })
        .await
        .unwrap();
    assert!(!again.stored);
    let other = p
        .push(PushRequest {
            path: s.artifact("other.bin", b"other bytes"),
            name: "app".into(),
            version: "1.0.0".into(),
            actor: "t".into(),
            now: at(MONDAY),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(other, PromoteError::VersionTaken { .. }) && other.is_refusal(),
        "{other}"
    );

    // Every spelling of the reference resolves to the same digest.
    for reference in [&r1, &d1, &"app@1.0.0".to_string(), &"app:1.0.0".to_string()] {
        let a = p.resolve(reference).await.unwrap();
        assert_eq!(a.digest.to_string(), d1, "{reference}");
        assert_eq!(a.version.as_deref(), Some("1.0.0"), "{reference}");
    }

    // Stage skipping is refused, and nothing is copied or recorded.
    let skip = p
        .promote(promote(&r1, "staging", MONDAY))
        .await
        .unwrap_err();
    assert!(
        matches!(&skip, PromoteError::NotLiveInRequired { required, .. } if required == "dev")
            && skip.is_refusal(),
        "{skip}"
    );
    assert!(s.stored(&s.staging_url, &d1).await.is_none());

    // dev (from the central store), staging (from dev), production (from staging).
    for (env, url, from) in [
        ("dev", &s.dev_url, &s.central_url),
        ("staging", &s.staging_url, &s.dev_url),
        ("production", &s.production_url, &s.staging_url),
    ] {
        let report = p.promote(promote("app@1.0.0", env, MONDAY)).await.unwrap();
        assert_eq!(report.release.digest.to_string(), d1, "{env}");
        assert_eq!((report.release.seq, report.changed), (1, true), "{env}");
        assert_eq!(report.source.as_deref(), Some(from.as_str()), "{env}");
        // Every location is on one server: copied server-side, no payload through ferry,
        // and read back only when the server does not prove the copy's SHA-256 itself.
        assert!(report.server_side, "{env}");
        assert_eq!(report.bytes_copied, 0, "{env}");
        let read_back = if s.server_checksums {
            0
        } else {
            v1.len() as u64
        };
        assert_eq!(report.bytes_verified, read_back, "{env}");
        assert_eq!(s.stored(url, &d1).await.as_deref(), Some(&v1[..]), "{env}");
        assert_eq!(live(&p, env).await.as_deref(), Some(d1.as_str()), "{env}");
    }
    // Promoting what is already live records nothing.
    let same = p.promote(promote(&d1, "production", MONDAY)).await.unwrap();
    assert!(!same.changed);

    // Version 2 through all three, then production rolls back (on a Friday: never frozen).
    let v2 = b"app build 2\n".repeat(1000);
    let r2 = s.push(&p, "2.0.0", &v2, MONDAY).await;
    let d2 = sha256(&v2);
    for env in ["dev", "staging", "production"] {
        let report = p.promote(promote(&r2, env, MONDAY)).await.unwrap();
        assert_eq!(report.release.digest.to_string(), d2);
        assert_eq!(report.previous.map(|d| d.to_string()), Some(d1.clone()));
    }
    let before = p.releases("production").await.unwrap();
    assert_eq!(before.previous.as_ref().unwrap().digest.to_string(), d1);

    let back = p
        .rollback(rollback("production", None, FRIDAY))
        .await
        .unwrap();
    assert_eq!(
        (
            back.release.digest.to_string(),
            back.release.action,
            back.release.seq
        ),
        (d1.clone(), Action::Rollback, 3)
    );
    assert_eq!(back.bytes_copied, 0, "the artifact was still in place");
    let prod = p.releases("production").await.unwrap();
    assert_eq!(prod.env, "production");
    let got: Vec<(u64, String, Action, Status)> = prod
        .history
        .iter()
        .map(|r| (r.seq, r.digest.to_string(), r.action, r.status))
        .collect();
    assert_eq!(
        got,
        [
            (3, d1.clone(), Action::Rollback, Status::Live),
            (2, d2.clone(), Action::Promote, Status::Bad),
            (1, d1.clone(), Action::Promote, Status::Superseded),
        ]
    );
    assert_eq!(prod.history[0].reason.as_deref(), Some("error rate up"));
    assert_eq!(prod.history[0].actor, "oncall@laptop");
    assert_eq!(prod.history[0].version.as_deref(), Some("1.0.0"));
    // Nothing earlier is good and different any more.
    assert!(prod.previous.is_none());
    let none = p
        .rollback(rollback("production", None, FRIDAY))
        .await
        .unwrap_err();
    assert!(matches!(none, PromoteError::NothingToRollBack(_)), "{none}");
    let to_bad = p
        .rollback(rollback("production", Some(RollbackTarget::Seq(2)), FRIDAY))
        .await
        .unwrap_err();
    assert!(
        matches!(to_bad, PromoteError::RollbackToBad { seq: 2, .. }),
        "{to_bad}"
    );

    // The JSON is the issue's contract.
    let json = serde_json::to_value(&prod).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(keys, ["env", "history", "live", "previous"]);
    let mut keys: Vec<&str> = json["history"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "action", "actor", "at", "digest", "name", "reason", "seq", "status", "version"
        ]
    );
    assert_eq!(json["live"]["digest"], d1.as_str());
    assert_eq!(json["history"][1]["status"], "bad");
    assert_eq!(json["history"][0]["action"], "rollback");

    // Version 3 reaches staging, is rolled back there (by version), and so may not go on.
    let v3 = b"app build 3\n".repeat(1000);
    let r3 = s.push(&p, "3.0.0", &v3, MONDAY).await;
    p.promote(promote(&r3, "dev", MONDAY)).await.unwrap();
    p.promote(promote(&r3, "staging", MONDAY)).await.unwrap();
    let back = p
        .rollback(rollback(
            "staging",
            Some(RollbackTarget::Version("2.0.0".into())),
            MONDAY,
        ))
        .await
        .unwrap();
    assert_eq!(back.release.digest.to_string(), d2);
    let refused = p
        .promote(promote(&r3, "production", MONDAY))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, PromoteError::BadInRequired { required, .. } if required == "staging")
            && refused.is_refusal(),
        "{refused}"
    );
    assert_eq!(live(&p, "production").await, Some(d1.clone()));
}

on_every_store!(freeze_windows_with_a_pinned_clock);
async fn freeze_windows_with_a_pinned_clock(s: Setup) {
    let p = s.promoter(BERLIN_WEEKEND).await;
    let v1 = b"frozen v1".to_vec();
    let v2 = b"frozen v2".to_vec();
    let r1 = s.push(&p, "1", &v1, MONDAY).await;
    let r2 = s.push(&p, "2", &v2, MONDAY).await;
    for r in [&r1, &r2] {
        p.promote(promote(r, "dev", FRIDAY)).await.unwrap();
        p.promote(promote(r, "staging", FRIDAY)).await.unwrap();
    }

    // A Monday is open.
    p.promote(promote(&r1, "production", MONDAY)).await.unwrap();

    // A Friday is frozen, also just after midnight in Berlin (still Thursday in UTC).
    for now in [FRIDAY, "2026-11-26T23:30:00Z"] {
        let err = p
            .promote(promote(&r2, "production", now))
            .await
            .unwrap_err();
        assert!(
            matches!(err, PromoteError::Frozen { .. }) && err.is_refusal(),
            "{now}: {err}"
        );
        assert!(err.to_string().contains("Europe/Berlin"), "{err}");
    }
    // Thursday evening in Berlin is not.
    let thursday = p
        .plan_promotion(promote(&r2, "production", "2026-11-26T22:30:00Z"))
        .await
        .unwrap();
    assert!(matches!(thursday, Planned::Ready(_)));
    assert_eq!(
        s.stored(&s.production_url, &sha256(&v2)).await.as_deref(),
        Some(&v2[..])
    );

    // An override needs a reason, and records it.
    let mut req = promote(&r2, "production", FRIDAY);
    req.override_freeze = true;
    let err = p.promote(req.clone()).await.unwrap_err();
    assert!(matches!(err, PromoteError::Invalid(_)), "{err}");
    req.reason = Some("security fix CVE-2026-1234".into());
    let report = p.promote(req).await.unwrap();
    let reason = report.release.reason.unwrap();
    assert!(
        reason.starts_with("freeze override (fri,sat,sun 00:00-24:00 Europe/Berlin)")
            && reason.ends_with("security fix CVE-2026-1234"),
        "{reason}"
    );

    // A rollback on a Friday is never blocked.
    let back = p
        .rollback(rollback("production", None, FRIDAY))
        .await
        .unwrap();
    assert_eq!(back.release.digest.to_string(), sha256(&v1));

    // Without a freeze key, `production` is frozen Friday to Sunday by default; `freeze = []`
    // (the other scenarios) turns that off.
    let default = s.promoter("").await;
    let v3 = b"frozen v3".to_vec();
    let r3 = s.push(&default, "3", &v3, MONDAY).await;
    default.promote(promote(&r3, "dev", MONDAY)).await.unwrap();
    default
        .promote(promote(&r3, "staging", MONDAY))
        .await
        .unwrap();
    let err = default
        .promote(promote(&r3, "production", "2026-11-29T23:59:00Z"))
        .await
        .unwrap_err();
    assert!(matches!(err, PromoteError::Frozen { .. }), "{err}");
    default
        .promote(promote(&r3, "production", "2026-11-30T00:00:00Z"))
        .await
        .unwrap();
}

// Conditional create is atomic on disk and on moto; s3s-fs 0.14 checks `If-None-Match` before
// it reads the body, so two concurrent creates can both succeed there (see ferry-store's tests).
on_every_store!(two_promotions_race_for_one_environment, file, moto);
async fn two_promotions_race_for_one_environment(s: Setup) {
    let p = std::sync::Arc::new(s.promoter(NO_FREEZE).await);
    let a = s.push(&p, "a", b"racer a", MONDAY).await;
    let b = s.push(&p, "b", b"racer b", MONDAY).await;

    // Both planned against the same history (seq 1), then committed at once.
    let mut plans = Vec::new();
    for r in [&a, &b] {
        match p.plan_promotion(promote(r, "dev", MONDAY)).await.unwrap() {
            Planned::Ready(plan) => plans.push(plan),
            Planned::AlreadyLive(_) => panic!("nothing is live yet"),
        }
    }
    assert!(plans.iter().all(|plan| plan.seq() == 1));
    let tasks: Vec<_> = plans
        .into_iter()
        .map(|plan| tokio::spawn(plan.commit()))
        .collect();
    let mut won = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(report) => won.push(report.release.digest.to_string()),
            Err(PromoteError::Conflict { env, seq: 1 }) if env == "dev" => conflicts += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((won.len(), conflicts), (1, 1));
    let h = p.releases("dev").await.unwrap();
    assert_eq!(h.history.len(), 1);
    assert_eq!(h.live.unwrap().digest.to_string(), won[0]);
    let msg = PromoteError::Conflict {
        env: "dev".into(),
        seq: 1,
    }
    .to_string();
    assert!(msg.contains("retry"), "{msg}");

    // Whole promotions spawned together: each either wins a sequence number or is told of
    // the conflict; never two records with one number, never a gap.
    let mut ok = 1;
    for _ in 0..5 {
        let tasks: Vec<_> = [&a, &b]
            .into_iter()
            .map(|r| {
                let (p, r) = (p.clone(), r.clone());
                tokio::spawn(async move { p.promote(promote(&r, "dev", MONDAY)).await })
            })
            .collect();
        for t in tasks {
            match t.await.unwrap() {
                Ok(report) if report.changed => ok += 1,
                Ok(_) | Err(PromoteError::Conflict { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
    let h = p.releases("dev").await.unwrap();
    let seqs: Vec<u64> = h.history.iter().rev().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=ok as u64).collect::<Vec<_>>());
}

on_every_store!(tampered_bytes_are_refused);
async fn tampered_bytes_are_refused(s: Setup) {
    let p = s.promoter(NO_FREEZE).await;
    let good = b"the real build".repeat(500);
    let r = s.push(&p, "1", &good, MONDAY).await;
    let d = sha256(&good);

    // In the central store: dev never gets the object, and nothing is recorded.
    s.tamper(&s.central_url, &d, b"the evil build").await;
    let err = p.promote(promote(&r, "dev", MONDAY)).await.unwrap_err();
    assert!(
        matches!(&err, PromoteError::Tampered { location, .. } if *location == s.central_url)
            && err.is_refusal(),
        "{err}"
    );
    assert!(s.stored(&s.dev_url, &d).await.is_none());
    assert!(p.releases("dev").await.unwrap().history.is_empty());

    // Restored centrally and promoted, then tampered in dev: staging refuses to copy it.
    s.tamper(&s.central_url, &d, &good).await;
    p.promote(promote(&r, "dev", MONDAY)).await.unwrap();
    s.tamper(&s.dev_url, &d, b"changed in dev").await;
    let err = p.promote(promote(&r, "staging", MONDAY)).await.unwrap_err();
    assert!(
        matches!(&err, PromoteError::Tampered { location, .. } if *location == s.dev_url),
        "{err}"
    );
    assert!(s.stored(&s.staging_url, &d).await.is_none());
    assert!(p.releases("staging").await.unwrap().history.is_empty());

    // Rolling back to an artifact whose copy in place was changed is refused too.
    let other = b"second build".to_vec();
    let r2 = s.push(&p, "2", &other, MONDAY).await;
    s.tamper(&s.dev_url, &d, &good).await;
    p.promote(promote(&r2, "dev", MONDAY)).await.unwrap();
    s.tamper(&s.dev_url, &d, b"changed again").await;
    let err = p.rollback(rollback("dev", None, MONDAY)).await.unwrap_err();
    assert!(matches!(err, PromoteError::Tampered { .. }), "{err}");
    assert_eq!(live(&p, "dev").await, Some(sha256(&other)));
}

on_every_store!(gc_keeps_what_history_needs);
async fn gc_keeps_what_history_needs(s: Setup) {
    let p = s.promoter(NO_FREEZE).await;
    let t0 = "2026-11-23T08:00:00Z";
    let builds: Vec<Vec<u8>> = (1..=6).map(|i| format!("build {i}").into_bytes()).collect();
    let mut refs = Vec::new();
    for (i, bytes) in builds.iter().enumerate() {
        // Build 5 is pushed just before gc runs; the others two days earlier.
        let when = if i == 4 { "2026-11-25T07:00:00Z" } else { t0 };
        refs.push(s.push(&p, &format!("{}", i + 1), bytes, when).await);
    }
    let d: Vec<String> = builds.iter().map(|b| sha256(b)).collect();
    // dev: 1, 2, 3, 4; staging: 1.
    for r in &refs[..4] {
        p.promote(promote(r, "dev", MONDAY)).await.unwrap();
    }
    p.promote(promote(&refs[0], "staging", MONDAY))
        .await
        .unwrap();

    // keep 2: dev keeps 4 and 3, staging keeps 1, build 5 is recent; 2 and 6 go.
    let now = at("2026-11-25T08:00:00Z");
    let dry = p.gc(GcRequest::new(2, true, now)).await.unwrap();
    let mut removed: Vec<(String, String)> = dry
        .removed
        .iter()
        .map(|r| (r.digest.to_string(), r.location.clone()))
        .collect();
    removed.sort();
    let mut want = vec![
        (d[1].clone(), s.central_url.clone()),
        (d[1].clone(), s.dev_url.clone()),
        (d[5].clone(), s.central_url.clone()),
    ];
    want.sort();
    assert_eq!(removed, want);
    assert!(
        s.stored(&s.central_url, &d[1]).await.is_some(),
        "a dry run removes nothing"
    );

    let report = p.gc(GcRequest::new(2, false, now)).await.unwrap();
    assert_eq!(report.removed.len(), 3);
    assert_eq!(
        report.freed_bytes,
        (builds[1].len() * 2 + builds[5].len()) as u64
    );
    for (i, present) in [true, false, true, true, true, false]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            s.stored(&s.central_url, &d[i]).await.is_some(),
            present,
            "build {}",
            i + 1
        );
    }
    assert!(s.stored(&s.dev_url, &d[1]).await.is_none());
    assert!(
        s.stored(&s.dev_url, &d[0]).await.is_some(),
        "staging's live build"
    );
    // A removed version no longer resolves; a kept one does, and rollback still works.
    assert!(matches!(
        p.resolve("app@2").await,
        Err(PromoteError::NotFound { .. })
    ));
    assert!(matches!(
        p.resolve(&refs[1]).await,
        Err(PromoteError::NotFound { .. })
    ));
    p.resolve("app@5").await.unwrap();
    let back = p.rollback(rollback("dev", None, MONDAY)).await.unwrap();
    assert_eq!(back.release.digest.to_string(), d[2]);

    let err = p.gc(GcRequest::new(0, true, now)).await.unwrap_err();
    assert!(matches!(err, PromoteError::Invalid(_)), "{err}");
    // Later, with nothing recent: build 5 (never promoted) goes too.
    let later = p
        .gc(GcRequest {
            min_age: Duration::hours(1),
            ..GcRequest::new(2, false, at("2026-11-26T08:00:00Z"))
        })
        .await
        .unwrap();
    let gone: Vec<String> = later.removed.iter().map(|r| r.digest.to_string()).collect();
    assert_eq!(gone, [d[4].clone()]);
}

#[tokio::test]
async fn environments_are_checked_when_loaded() {
    let s = Setup::file();
    let central = s.store(&s.central_url).await;
    for (extra, needle) in [
        ("requires = \"qa\"", "[env.qa]"),
        ("requires = \"production\"", "requires"),
        (
            "freeze = [{ days = [\"fri\"], from = \"9am\" }]",
            "freeze[0]: `from = \"9am\"`",
        ),
    ] {
        // `requires` appended again would be a duplicate key; replace staging's instead.
        let config = if extra.starts_with("requires") {
            let mut c = s.config("freeze = []");
            c.env.get_mut("production").unwrap().requires =
                Some(extra.split('"').nth(1).unwrap().to_string());
            c
        } else {
            s.config(extra)
        };
        let err = match Promoter::from_config(central.clone(), &config, Default::default()) {
            Err(e) => e,
            Ok(_) => panic!("{extra} was accepted"),
        };
        assert!(
            matches!(&err, PromoteError::BadEnvConfig { env, .. } if env == "production")
                && err.to_string().contains(needle),
            "{extra}: {err}"
        );
    }
    let p = s.promoter("freeze = []").await;
    let err = p.releases("qa").await.unwrap_err().to_string();
    assert!(
        err.contains("`qa`") && err.contains("dev, production, staging"),
        "{err}"
    );
    let err = p.resolve("app@sha256:1234").await.unwrap_err();
    assert!(matches!(err, PromoteError::BadReference { .. }), "{err}");
    let err = p.resolve("app@9.9.9").await.unwrap_err().to_string();
    assert!(
        err.contains("never pushed") && err.contains("ferry artifact push"),
        "{err}"
    );
}
