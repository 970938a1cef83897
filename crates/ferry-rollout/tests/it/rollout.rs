//! `ferry_rollout::rollout` over real hosts, behind a real HAProxy or with drain commands.

use std::time::{Duration, Instant};

use ferry_rollout::{
    HostPhase, HostStatus, Quiet, RolloutReport, RolloutRequest, RolloutStatus, rollout,
};
use ferry_testkit::fleet::Fleet;
use ferry_testkit::haproxy::Haproxy;
use ferry_testkit::traffic::Traffic;

use crate::{NEW, OLD, Recorder, fleet_config, target};

fn request(fleet: &ferry_rollout::FleetConfig) -> RolloutRequest<'_> {
    RolloutRequest {
        fleet,
        target: target(NEW),
        previous: Some(target(OLD)),
        rollback: false,
        only_hosts: None,
        dry_run: false,
    }
}

fn status_of(r: &RolloutReport, host: &str) -> HostStatus {
    r.hosts.iter().find(|h| h.name == host).unwrap().status
}

fn detail_of(r: &RolloutReport, host: &str) -> String {
    r.hosts
        .iter()
        .find(|h| h.name == host)
        .unwrap()
        .detail
        .clone()
        .unwrap_or_default()
}

fn lb_keys(fleet: &Fleet, haproxy: &Haproxy, extra: &str) -> String {
    format!(
        "deploy_command = \"{}\"\nhealth_timeout_seconds = 2\ndrain_seconds = 10\n{extra}\n{}{}",
        fleet.deploy_command(),
        haproxy.load_balancer_toml("prod"),
        fleet.hosts_toml("prod")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_hosts_in_batches_of_two_behind_haproxy_fail_no_request() {
    let Some(fleet) = Fleet::start(4, OLD) else {
        return;
    };
    let Some(haproxy) = Haproxy::start(&fleet, "app") else {
        return;
    };
    // A restarted host answers 503 for a moment; settle waits it out.
    fleet.set_warmup_ms(200);
    let config = fleet_config(&lb_keys(
        &fleet,
        &haproxy,
        "batch_size = 2\nsettle_seconds = 0.6",
    ));

    let traffic = Traffic::start(format!("{}/", haproxy.url()), 4);
    // Slow requests in flight on h1 and h2, the first batch, when it drains.
    let http = reqwest::Client::new();
    let slow: Vec<_> = (0..8)
        .map(|_| {
            let (http, url) = (http.clone(), format!("{}/slow?ms=1500", haproxy.url()));
            tokio::spawn(async move {
                let r = http.get(&url).send().await.map_err(|e| e.to_string())?;
                let status = r.status().as_u16();
                Ok::<_, String>((status, r.text().await.unwrap_or_default()))
            })
        })
        .collect();
    let busy = |s: &str| {
        haproxy
            .command("show stat app 4 -1")
            .lines()
            .find(|l| l.starts_with(&format!("app,{s},")))
            .and_then(|l| l.split(',').nth(4).map(|v| v.parse::<u64>().unwrap_or(0)))
            .unwrap_or(0)
            > 0
    };
    haproxy.wait_until(
        Duration::from_secs(10),
        "slow requests on h1 and h2",
        |_| busy("h1") && busy("h2"),
    );

    let rec = Recorder::default();
    let started = Instant::now();
    let report = rollout(request(&config), &rec).await.unwrap();
    let elapsed = started.elapsed();
    traffic
        .assert_none_failed(&format!("the rollout ({elapsed:?})"), 21)
        .await;

    assert_eq!(report.status, RolloutStatus::Succeeded, "{report:#?}");
    assert!(report.all_live(), "{report:#?}");
    assert_eq!(
        report.plan.batches,
        vec![vec!["h1", "h2"], vec!["h3", "h4"]]
    );
    for h in ["h1", "h2", "h3", "h4"] {
        assert_eq!(status_of(&report, h), HostStatus::Deployed, "{report:#?}");
        assert_eq!(fleet.version(h), NEW);
        assert_eq!(fleet.deploys(h), [NEW]);
        assert_eq!(haproxy.status(h), "UP", "{h} back in traffic");
    }
    // Every slow request completed, and on the old release: the deploy (which kills the
    // process) waited until its host had drained.
    for s in slow {
        let (status, body) = s.await.unwrap().expect("slow request completed");
        assert_eq!(status, 200, "{body}");
        assert!(body.trim_end().ends_with(OLD), "{body}");
    }
    // Batches in order: the second batch drained after the first was healthy again.
    let first_done = rec
        .first("h1", HostPhase::Healthy)
        .unwrap()
        .max(rec.first("h2", HostPhase::Healthy).unwrap());
    assert!(rec.first("h3", HostPhase::Draining).unwrap() >= first_done);
    assert_eq!(
        rec.phases("h1"),
        [
            HostPhase::Waiting,
            HostPhase::Draining,
            HostPhase::Deploying,
            HostPhase::Settling,
            HostPhase::Healthy
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_load_balancer_drain_and_undrain_commands_wrap_each_deploy() {
    let Some(fleet) = Fleet::start(4, OLD) else {
        return;
    };
    let log = fleet.root().join("lb.log");
    let config = fleet_config(&format!(
        "deploy_command = \"echo deploy {{host}} >> {log} && {deploy}\"\n\
         drain_command = \"echo drain {{host}} >> {log}\"\n\
         undrain_command = \"echo undrain {{host}} {{version}} >> {log}\"\n\
         batch_size = \"50%\"\nsettle_seconds = 0\nhealth_timeout_seconds = 2\n{hosts}",
        log = log.display(),
        deploy = fleet.deploy_command(),
        hosts = fleet.hosts_toml("prod"),
    ));
    let report = rollout(request(&config), &Quiet).await.unwrap();
    assert_eq!(report.status, RolloutStatus::Succeeded, "{report:#?}");
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    for h in ["h1", "h2", "h3", "h4"] {
        assert_eq!(fleet.version(h), NEW);
        let at = |l: String| {
            lines
                .iter()
                .position(|x| *x == l)
                .unwrap_or_else(|| panic!("{l} in {lines:?}"))
        };
        let (d, x, u) = (
            at(format!("drain {h}")),
            at(format!("deploy {h}")),
            at(format!("undrain {h} {NEW}")),
        );
        assert!(d < x && x < u, "{lines:?}");
    }
    // Batches of two: both of the first batch undrained before the second drains.
    let pos = |l: &str| lines.iter().position(|x| x == l).unwrap();
    assert!(
        pos(&format!("undrain h2 {NEW}")) < pos("drain h3"),
        "{lines:?}"
    );
    assert!(
        pos(&format!("undrain h1 {NEW}")) < pos("drain h4"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_and_maintenance_hosts_are_skipped_and_never_deployed_to() {
    let Some(fleet) = Fleet::start(4, OLD) else {
        return;
    };
    let Some(haproxy) = Haproxy::start(&fleet, "app") else {
        return;
    };
    fleet.set_unhealthy("h2", true);
    haproxy.set_state("h3", "maint");
    let config = fleet_config(&lb_keys(
        &fleet,
        &haproxy,
        "batch_size = 2\nsettle_seconds = 0",
    ));
    let report = rollout(request(&config), &Quiet).await.unwrap();
    assert_eq!(report.status, RolloutStatus::Succeeded, "{report:#?}");
    assert_eq!(status_of(&report, "h2"), HostStatus::Skipped);
    assert!(
        detail_of(&report, "h2").contains("unhealthy before"),
        "{report:#?}"
    );
    assert_eq!(status_of(&report, "h3"), HostStatus::Skipped);
    assert!(
        detail_of(&report, "h3").contains("maintenance"),
        "{report:#?}"
    );
    assert!(fleet.deploys("h2").is_empty() && fleet.deploys("h3").is_empty());
    assert_eq!(fleet.version("h2"), OLD);
    assert_eq!(
        haproxy.status("h3"),
        "MAINT",
        "a skipped host is left as it was"
    );
    for h in ["h1", "h4"] {
        assert_eq!(status_of(&report, h), HostStatus::Deployed);
        assert_eq!(fleet.version(h), NEW);
    }
    assert_eq!(report.plan.batches, vec![vec!["h1", "h4"]]);
    // Exit 0 in the CLI: every host that was not skipped runs the new version.
    assert!(report.all_live());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_unhealthy_after_its_deploy_halts_and_stays_out_of_traffic() {
    let Some(fleet) = Fleet::start(4, OLD) else {
        return;
    };
    let Some(haproxy) = Haproxy::start(&fleet, "app") else {
        return;
    };
    fleet.break_on_deploy("h2", NEW);
    // The Runtime API over TCP this time.
    let keys = lb_keys(&fleet, &haproxy, "batch_size = 1\nsettle_seconds = 0.3")
        .replace(&haproxy.admin_unix(), &haproxy.admin_tcp());
    let config = fleet_config(&keys);
    let report = rollout(request(&config), &Quiet).await.unwrap();
    assert_eq!(report.status, RolloutStatus::Halted, "{report:#?}");
    assert_eq!(status_of(&report, "h1"), HostStatus::Deployed);
    assert_eq!(status_of(&report, "h2"), HostStatus::Failed);
    let d = detail_of(&report, "h2");
    assert!(
        d.contains("unhealthy after its deploy") && d.contains("HTTP 500"),
        "{d}"
    );
    for h in ["h3", "h4"] {
        assert_eq!(status_of(&report, h), HostStatus::NotReached);
        assert!(
            fleet.deploys(h).is_empty(),
            "{h} never received the deploy command"
        );
        assert_eq!(fleet.version(h), OLD);
    }
    assert_eq!(
        haproxy.status("h2"),
        "MAINT",
        "the failed host stays out of traffic"
    );
    assert_eq!(haproxy.status("h1"), "UP");
    assert!(report.detail.as_deref().unwrap().contains("h2"));
    assert_eq!(report.deployed_hosts(), ["h1", "h2"]);
    assert!(!report.all_live());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_deploy_command_is_reported_with_its_status_and_last_lines() {
    let Some(fleet) = Fleet::start(4, OLD) else {
        return;
    };
    fleet.fail_deploy("h1", 7);
    let config = fleet_config(&format!(
        "deploy_command = \"{}\"\nbatch_size = 2\nsettle_seconds = 0\n{}",
        fleet.deploy_command(),
        fleet.hosts_toml("prod")
    ));
    let report = rollout(request(&config), &Quiet).await.unwrap();
    assert_eq!(report.status, RolloutStatus::Halted);
    let d = detail_of(&report, "h1");
    assert!(
        d.contains("exited with status 7") && d.contains("disk full"),
        "{d}"
    );
    // Its batch-mate went on in parallel; the next batch never started.
    assert_eq!(status_of(&report, "h2"), HostStatus::Deployed);
    assert_eq!(status_of(&report, "h3"), HostStatus::NotReached);
    assert_eq!(status_of(&report, "h4"), HostStatus::NotReached);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_on_the_wrong_version_at_the_final_check_is_stopped() {
    let Some(fleet) = Fleet::start(3, OLD) else {
        return;
    };
    let Some(haproxy) = Haproxy::start(&fleet, "app") else {
        return;
    };
    // The last host's deploy script clobbers h1's release (a shared volume gone wrong): h1
    // passed its own check, and reports the old version again by the final check.
    let root = fleet.root().display().to_string();
    let keys = lb_keys(&fleet, &haproxy, "batch_size = 1\nsettle_seconds = 0\nmax_failed = 1")
        .replace(
            &format!("deploy_command = \"{}\"", fleet.deploy_command()),
            &format!(
                "deploy_command = \"{} && if [ {{host}} = h3 ]; then echo 0.9 > {root}/h1/version; fi\"",
                fleet.deploy_command()
            ),
        );
    let report = rollout(request(&fleet_config(&keys)), &Quiet)
        .await
        .unwrap();
    // One stopped, max_failed = 1: not failed, but said, and not all live.
    assert_eq!(report.status, RolloutStatus::Succeeded, "{report:#?}");
    assert_eq!(report.stopped, 1);
    assert_eq!(status_of(&report, "h1"), HostStatus::Stopped);
    let h1 = report.hosts.iter().find(|h| h.name == "h1").unwrap();
    assert_eq!(h1.after_version.as_deref(), Some("0.9"));
    assert!(detail_of(&report, "h1").contains("0.9"));
    assert!(!report.all_live());
    assert_eq!(haproxy.status("h1"), "MAINT");
    assert_eq!(status_of(&report, "h2"), HostStatus::Deployed);
    assert_eq!(haproxy.status("h2"), "UP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_stopped_hosts_than_max_failed_fail_the_rollout() {
    let Some(fleet) = Fleet::start(3, OLD) else {
        return;
    };
    let root = fleet.root().display().to_string();
    let config = fleet_config(&format!(
        "deploy_command = \"{} && if [ {{host}} = h3 ]; then echo 0.9 > {root}/h1/version; echo 0.9 > {root}/h2/version; fi\"\n\
         batch_size = 1\nsettle_seconds = 0\nmax_failed = 1\n{}",
        fleet.deploy_command(),
        fleet.hosts_toml("prod")
    ));
    let report = rollout(request(&config), &Quiet).await.unwrap();
    assert_eq!(report.status, RolloutStatus::Failed, "{report:#?}");
    assert_eq!(report.stopped, 2);
    assert!(report.detail.as_deref().unwrap().contains("max_failed = 1"));
    assert_eq!(status_of(&report, "h3"), HostStatus::Deployed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_bed_soaks_first_and_alone() {
    let Some(fleet) = Fleet::start(3, OLD) else {
        return;
    };
    let Some(haproxy) = Haproxy::start(&fleet, "app") else {
        return;
    };
    let config = fleet_config(&lb_keys(
        &fleet,
        &haproxy,
        "batch_size = 2\nsettle_seconds = 0\ntestbed = \"h3\"\ntestbed_soak_seconds = 1\nhealth_timeout_seconds = 0.5",
    )
    .replace("health_timeout_seconds = 2\n", ""));
    let rec = Recorder::default();
    let report = rollout(request(&config), &rec).await.unwrap();
    assert_eq!(report.status, RolloutStatus::Succeeded, "{report:#?}");
    assert_eq!(report.plan.testbed.as_deref(), Some("h3"));
    assert_eq!(report.plan.batches, vec![vec!["h1", "h2"]]);
    let soak = rec.first("h3", HostPhase::Soaking).unwrap();
    let next = rec.first("h1", HostPhase::Draining).unwrap();
    assert!(
        next.duration_since(soak) >= Duration::from_secs(1),
        "h1 started {:?} after the test bed began soaking",
        next.duration_since(soak)
    );
    for h in ["h1", "h2", "h3"] {
        assert_eq!(fleet.version(h), NEW);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_bed_failing_its_soak_touches_nothing_else() {
    let Some(fleet) = Fleet::start(3, OLD) else {
        return;
    };
    let Some(haproxy) = Haproxy::start(&fleet, "app") else {
        return;
    };
    let config = fleet_config(&lb_keys(
        &fleet,
        &haproxy,
        "batch_size = 2\nsettle_seconds = 0\ntestbed = \"h1\"\ntestbed_soak_seconds = 2\nhealth_timeout_seconds = 0.5",
    )
    .replace("health_timeout_seconds = 2\n", ""));
    // The test bed turns unhealthy while it soaks, as a release with a slow leak would.
    let state = fleet.host("h1").state.clone();
    let rec = Recorder {
        on: Some(Box::new(move |name: &str, phase: HostPhase| {
            if name == "h1" && phase == HostPhase::Soaking {
                std::fs::write(state.join("unhealthy"), "").unwrap();
            }
        })),
        ..Default::default()
    };
    let report = rollout(request(&config), &rec).await.unwrap();
    assert_eq!(report.status, RolloutStatus::Halted, "{report:#?}");
    assert_eq!(status_of(&report, "h1"), HostStatus::Failed);
    assert!(detail_of(&report, "h1").contains("soak"), "{report:#?}");
    for h in ["h2", "h3"] {
        assert_eq!(status_of(&report, h), HostStatus::NotReached);
        assert!(fleet.deploys(h).is_empty());
        assert_eq!(haproxy.status(h), "UP");
    }
    assert_eq!(haproxy.status("h1"), "MAINT");

    // A test bed that is unhealthy before the rollout halts it before anything changes.
    let report = rollout(request(&config), &Quiet).await.unwrap();
    assert_eq!(report.status, RolloutStatus::Halted);
    assert_eq!(status_of(&report, "h1"), HostStatus::Skipped);
    assert!(
        report
            .detail
            .as_deref()
            .unwrap()
            .contains("test bed h1 was skipped")
    );
    assert_eq!(fleet.deploys("h1"), [NEW], "no second deploy");
    assert!(fleet.deploys("h2").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_of_a_halted_rollout_brings_every_deployed_host_back() {
    let Some(fleet) = Fleet::start(4, OLD) else {
        return;
    };
    let Some(haproxy) = Haproxy::start(&fleet, "app") else {
        return;
    };
    fleet.break_on_deploy("h3", NEW);
    let config = fleet_config(&lb_keys(
        &fleet,
        &haproxy,
        "batch_size = 1\nsettle_seconds = 0.2",
    ));
    let halted = rollout(request(&config), &Quiet).await.unwrap();
    assert_eq!(halted.status, RolloutStatus::Halted, "{halted:#?}");
    assert_eq!(halted.deployed_hosts(), ["h1", "h2", "h3"]);
    assert_eq!(haproxy.status("h3"), "MAINT");

    // With a test bed whose soak would take a minute: a rollback does not soak.
    let with_testbed = fleet_config(&lb_keys(
        &fleet,
        &haproxy,
        "batch_size = 1\nsettle_seconds = 0.2\ntestbed = \"h1\"\ntestbed_soak_seconds = 60",
    ));
    let started = Instant::now();
    let back = rollout(
        RolloutRequest {
            fleet: &with_testbed,
            target: target(OLD),
            previous: Some(target(NEW)),
            rollback: true,
            only_hosts: None,
            dry_run: false,
        },
        &Quiet,
    )
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "no soak in a rollback"
    );
    assert_eq!(back.status, RolloutStatus::Succeeded, "{back:#?}");
    assert!(back.all_live(), "{back:#?}");
    for h in ["h1", "h2", "h3"] {
        assert_eq!(status_of(&back, h), HostStatus::Deployed, "{back:#?}");
        assert_eq!(fleet.version(h), OLD);
        assert_eq!(fleet.deploys(h), [NEW, OLD]);
    }
    // h4 never left the previous release: left alone.
    assert_eq!(status_of(&back, "h4"), HostStatus::Unchanged);
    assert!(fleet.deploys("h4").is_empty());
    // The failed host, healthy again on the old release, is back in traffic.
    haproxy.wait_until(Duration::from_secs(10), "h3 UP", |h| h.status("h3") == "UP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_plans_and_changes_nothing() {
    let Some(fleet) = Fleet::start(3, OLD) else {
        return;
    };
    let Some(haproxy) = Haproxy::start(&fleet, "app") else {
        return;
    };
    fleet.set_unhealthy("h3", true);
    let config = fleet_config(&lb_keys(
        &fleet,
        &haproxy,
        "batch_size = 1\nsettle_seconds = 0",
    ));
    let report = rollout(
        RolloutRequest {
            dry_run: true,
            ..request(&config)
        },
        &Quiet,
    )
    .await
    .unwrap();
    assert!(report.dry_run);
    assert_eq!(report.plan.batches, vec![vec!["h1"], vec!["h2"]]);
    assert_eq!(
        report.plan.commands["h1"],
        format!(
            "{} deploy {}/h1 {NEW}",
            fleet.deploy_command().split(" deploy ").next().unwrap(),
            fleet.root().display()
        )
    );
    assert_eq!(status_of(&report, "h3"), HostStatus::Skipped);
    assert_eq!(report.plan.gathered[0].version.as_deref(), Some(OLD));
    assert_eq!(report.plan.gathered[0].load_balancer.as_deref(), Some("UP"));
    for h in ["h1", "h2", "h3"] {
        assert!(fleet.deploys(h).is_empty());
        assert_eq!(status_of(&report, h) == HostStatus::NotReached, h != "h3");
    }
    assert_eq!(haproxy.status("h1"), "UP");
}

#[tokio::test]
async fn a_load_balancer_that_cannot_be_reached_stops_before_any_host() {
    let Some(fleet) = Fleet::start(1, OLD) else {
        return;
    };
    // A host that takes connections and never answers: its health request runs beside the
    // load balancer's read and would wait out health_timeout_seconds; the error must not.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = fleet_config(&format!(
        "deploy_command = \"{}\"\nsettle_seconds = 0\nhealth_timeout_seconds = 10\n[env.prod.load_balancer]\nadmin = \"unix:///nonexistent/admin.sock\"\nbackend = \"app\"\n{}\n[[env.prod.hosts]]\nname = \"silent\"\nhealth_url = \"http://{}/_status\"\n",
        fleet.deploy_command(),
        fleet.hosts_toml("prod"),
        silent.local_addr().unwrap()
    ));
    let started = Instant::now();
    let err = rollout(request(&config), &Quiet).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the load balancer's error waited for a silent host: {:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("/nonexistent/admin.sock"), "{err}");
    assert!(!err.is_invalid_input());
    assert!(fleet.deploys("h1").is_empty());
}
