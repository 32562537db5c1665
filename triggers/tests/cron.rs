//! CaptureSchedules through the API test server with a manual clock: runs at the scheduled
//! instants across DST, concurrency policies, suspend, missed runs and history limits.

mod common;

use std::sync::Arc;

use common::*;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use nightcap_api::{CaptureSchedule, PacketCapture, capture::STOP_ANNOTATION};
use nightcap_triggers::{Config, ManualClock, labels::schedule_capture_name, runtime::Running};
use serde_json::json;

fn ts(s: &str) -> Timestamp {
    s.parse().expect("time")
}

/// Creates a schedule that last ran at `last` (so the manual clock, not the real creation
/// time, decides what is due).
async fn schedule(client: &Client, name: &str, spec: &str, last: &str) {
    let yaml = format!(
        "metadata: {{name: {name}, namespace: shop}}\nspec:\n  {spec}\n  template: {{spec: {{selector: {{matchLabels: {{app: web}}}}, duration: 1m}}}}\n"
    );
    let s: CaptureSchedule = serde_yaml::from_str(&yaml).expect("schedule YAML");
    let api: Api<CaptureSchedule> = Api::namespaced(client.clone(), "shop");
    api.create(&PostParams::default(), &s)
        .await
        .expect("create schedule");
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"lastScheduleTime": last}})),
    )
    .await
    .expect("seed lastScheduleTime");
}

async fn run(client: &Client, now: &str) -> (Running, ManualClock) {
    let clock = ManualClock::new(ts(now));
    let running = start(client, Config::default(), Some(Arc::new(clock.clone())), 0).await;
    (running, clock)
}

fn run_name(schedule: &str, at: &str) -> String {
    schedule_capture_name(schedule, ts(at).as_second())
}

async fn wait_capture(client: &Client, name: &str) -> PacketCapture {
    let api: Api<PacketCapture> = Api::namespaced(client.clone(), "shop");
    wait_for(&format!("capture {name}"), || {
        let api = api.clone();
        async move { api.get_opt(name).await.ok().flatten() }
    })
    .await
}

async fn wait_event(client: &Client, reason: &str) -> Event {
    let api: Api<Event> = Api::namespaced(client.clone(), "shop");
    wait_for(&format!("a {reason} event"), || {
        let api = api.clone();
        async move {
            api.list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason))
        }
    })
    .await
}

async fn set_phase(client: &Client, name: &str, phase: &str, done: &str) {
    let api: Api<PacketCapture> = Api::namespaced(client.clone(), "shop");
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": phase, "completionTime": done}})),
    )
    .await
    .expect("set phase");
}

async fn names(client: &Client) -> Vec<String> {
    let mut n: Vec<_> = captures(client, "shop")
        .await
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    n.sort();
    n
}

#[tokio::test]
async fn runs_at_the_scheduled_instants_across_berlin_dst() {
    let c = cluster().await;
    schedule(
        &c.client,
        "berlin",
        "schedule: \"30 2 * * *\"\n  timeZone: Europe/Berlin",
        "2026-10-24T00:30:00Z",
    )
    .await;
    let (_running, clock) = run(&c.client, "2026-10-24T12:00:00Z").await;
    // 02:30 CEST, then 02:30 CET an hour later: the repeated wall time runs twice.
    for at in [
        "2026-10-25T00:30:00Z",
        "2026-10-25T01:30:00Z",
        "2026-10-26T01:30:00Z",
    ] {
        clock.set(ts(at));
        let pc = wait_capture(&c.client, &run_name("berlin", at)).await;
        let ann = pc.metadata.annotations.expect("annotations");
        assert_eq!(ts(&ann["nightcap.dev/scheduled-time"]), ts(at));
    }
    assert_eq!(names(&c.client).await.len(), 3);
    let owner = &captures(&c.client, "shop").await[0]
        .metadata
        .owner_references
        .clone()
        .expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("CaptureSchedule", "berlin", Some(true))
    );
    let api: Api<CaptureSchedule> = Api::namespaced(c.client.clone(), "shop");
    let status = wait_for("status.lastScheduleTime", || {
        let api = api.clone();
        async move {
            let s = api.get("berlin").await.ok()?.status?;
            (s.last_schedule_time.as_ref()?.0 == ts("2026-10-26T01:30:00Z")).then_some(s)
        }
    })
    .await;
    assert_eq!(
        status.active.len(),
        3,
        "no scheduler runs in this test: all still active"
    );
    wait_event(&c.client, "SuccessfulCreate").await;
}

#[tokio::test]
async fn spring_gap_in_new_york_and_berlin() {
    let c = cluster().await;
    schedule(
        &c.client,
        "ny-hourly",
        "schedule: \"0 * * * *\"\n  timeZone: America/New_York",
        "2026-03-08T05:00:00Z",
    )
    .await;
    schedule(
        &c.client,
        "berlin-0230",
        "schedule: \"30 2 * * *\"\n  timeZone: Europe/Berlin",
        "2026-03-28T01:30:00Z",
    )
    .await;
    let (_running, clock) = run(&c.client, "2026-03-08T05:30:00Z").await;
    // 01:00 EST, then 03:00 EDT one hour later (02:00 does not exist).
    for at in ["2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z"] {
        clock.set(ts(at));
        wait_capture(&c.client, &run_name("ny-hourly", at)).await;
    }
    // Berlin's 02:30 does not exist on 29 March: the next run is 02:30 CEST on the 30th.
    clock.set(ts("2026-03-30T00:30:00Z"));
    wait_capture(&c.client, &run_name("berlin-0230", "2026-03-30T00:30:00Z")).await;
    let berlin: Vec<_> = names(&c.client)
        .await
        .into_iter()
        .filter(|n| n.starts_with("berlin"))
        .collect();
    assert_eq!(berlin, [run_name("berlin-0230", "2026-03-30T00:30:00Z")]);
}

#[tokio::test]
async fn forbid_skips_while_active_and_replace_stops_the_old_run() {
    let c = cluster().await;
    let t0 = "2026-11-21T00:00:00Z";
    schedule(
        &c.client,
        "forbid",
        "schedule: \"*/10 * * * *\"\n  concurrencyPolicy: Forbid",
        t0,
    )
    .await;
    schedule(
        &c.client,
        "replace",
        "schedule: \"*/10 * * * *\"\n  concurrencyPolicy: Replace",
        t0,
    )
    .await;
    let (_running, clock) = run(&c.client, t0).await;
    clock.set(ts("2026-11-21T00:10:00Z"));
    let first_f = run_name("forbid", "2026-11-21T00:10:00Z");
    let first_r = run_name("replace", "2026-11-21T00:10:00Z");
    wait_capture(&c.client, &first_f).await;
    wait_capture(&c.client, &first_r).await;
    clock.set(ts("2026-11-21T00:20:00Z"));
    // Replace: the old run is asked to stop and the new one starts.
    wait_capture(&c.client, &run_name("replace", "2026-11-21T00:20:00Z")).await;
    let old = wait_for("the replaced run gets the stop annotation", || {
        let client = c.client.clone();
        let first_r = first_r.clone();
        async move {
            let pc = Api::<PacketCapture>::namespaced(client, "shop")
                .get(&first_r)
                .await
                .ok()?;
            pc.metadata.annotations?.get(STOP_ANNOTATION).cloned()
        }
    })
    .await;
    assert!(old.contains("concurrencyPolicy: Replace"), "{old}");
    // Forbid: skipped while the first run is active.
    let ev = wait_event(&c.client, "CaptureAlreadyActive").await;
    assert!(ev.note.unwrap_or_default().contains(&first_f));
    assert!(
        !names(&c.client)
            .await
            .contains(&run_name("forbid", "2026-11-21T00:20:00Z"))
    );
    // The first run finishes at 00:21. Like a CronJob without startingDeadlineSeconds, the held
    // 00:20 run starts then (late), not at the next slot.
    clock.set(ts("2026-11-21T00:21:00Z"));
    set_phase(&c.client, &first_f, "Succeeded", "2026-11-21T00:21:00Z").await;
    let late = wait_capture(&c.client, &run_name("forbid", "2026-11-21T00:20:00Z")).await;
    let ann = late.metadata.annotations.expect("annotations");
    assert_eq!(
        ts(&ann["nightcap.dev/scheduled-time"]),
        ts("2026-11-21T00:20:00Z")
    );
    let api: Api<CaptureSchedule> = Api::namespaced(c.client.clone(), "shop");
    wait_for("lastSuccessfulTime", || {
        let api = api.clone();
        async move {
            let s = api.get("forbid").await.ok()?.status?;
            (s.last_successful_time?.0 == ts("2026-11-21T00:21:00Z")).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn suspend_holds_runs_and_resume_starts_only_the_most_recent() {
    let c = cluster().await;
    let t0 = "2026-11-21T00:00:00Z";
    schedule(
        &c.client,
        "paused",
        "schedule: \"*/10 * * * *\"\n  suspend: true",
        t0,
    )
    .await;
    let (_running, clock) = run(&c.client, t0).await;
    clock.set(ts("2026-11-21T01:05:00Z"));
    let api: Api<CaptureSchedule> = Api::namespaced(c.client.clone(), "shop");
    api.patch(
        "paused",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .expect("resume");
    wait_capture(&c.client, &run_name("paused", "2026-11-21T01:00:00Z")).await;
    assert_eq!(
        names(&c.client).await,
        [run_name("paused", "2026-11-21T01:00:00Z")]
    );
}

#[tokio::test]
async fn missed_runs_after_downtime_follow_cronjob_rules() {
    let c = cluster().await;
    let t0 = "2026-11-21T00:00:00Z";
    schedule(&c.client, "five", "schedule: \"*/5 * * * *\"", t0).await;
    schedule(&c.client, "every-minute", "schedule: \"* * * * *\"", t0).await;
    schedule(
        &c.client,
        "deadline",
        "schedule: \"0 * * * *\"\n  startingDeadlineSeconds: 60",
        t0,
    )
    .await;
    // nightcap was down for three hours.
    let (_running, _clock) = run(&c.client, "2026-11-21T03:02:30Z").await;
    wait_capture(&c.client, &run_name("five", "2026-11-21T03:00:00Z")).await;
    wait_capture(&c.client, &run_name("every-minute", "2026-11-21T03:02:00Z")).await;
    let ev = wait_event(&c.client, "TooManyMissedTimes").await;
    assert!(
        ev.note
            .unwrap_or_default()
            .contains("startingDeadlineSeconds")
    );
    let ev = wait_event(&c.client, "MissSchedule").await;
    assert!(
        ev.note
            .unwrap_or_default()
            .contains("missed 3 scheduled run(s)")
    );
    let all = names(&c.client).await;
    assert_eq!(all.len(), 2, "one run each, none for the late one: {all:?}");
    let api: Api<CaptureSchedule> = Api::namespaced(c.client.clone(), "shop");
    let cond = wait_for("TooManyMissedRuns condition", || {
        let api = api.clone();
        async move {
            let s = api.get("every-minute").await.ok()?.status?;
            s.conditions
                .into_iter()
                .find(|c| c.type_ == "TooManyMissedRuns")
        }
    })
    .await;
    assert_eq!(cond.status, "True");
}

#[tokio::test]
async fn history_limits_delete_the_oldest_finished_runs() {
    let c = cluster().await;
    let t0 = "2026-11-21T00:00:00Z";
    schedule(
        &c.client,
        "kept",
        "schedule: \"*/10 * * * *\"\n  successfulHistoryLimit: 1",
        t0,
    )
    .await;
    let (_running, clock) = run(&c.client, t0).await;
    let runs = [
        "2026-11-21T00:10:00Z",
        "2026-11-21T00:20:00Z",
        "2026-11-21T00:30:00Z",
    ];
    for at in runs {
        clock.set(ts(at));
        let name = run_name("kept", at);
        wait_capture(&c.client, &name).await;
        let done = (ts(at) + SignedDuration::from_mins(1)).to_string();
        set_phase(&c.client, &name, "Succeeded", &done).await;
    }
    clock.set(ts("2026-11-21T00:40:00Z"));
    wait_capture(&c.client, &run_name("kept", "2026-11-21T00:40:00Z")).await;
    let want = [
        run_name("kept", runs[2]),
        run_name("kept", "2026-11-21T00:40:00Z"),
    ];
    wait_for("only the newest finished run is kept", || {
        let client = c.client.clone();
        let want = want.clone();
        async move { (names(&client).await == want).then_some(()) }
    })
    .await;
    wait_event(&c.client, "SuccessfulDelete").await;
}
