use std::sync::Arc;

use nightcap_api::{CaptureScheduleStatus, PacketCaptureSpec};

use super::*;

fn capture(name: &str) -> PacketCapture {
    let mut pc = PacketCapture::new(
        name,
        PacketCaptureSpec {
            duration: Some("1m".into()),
            ..PacketCaptureSpec::default()
        },
    );
    pc.metadata.namespace = Some("shop".into());
    pc
}

#[test]
fn created_if_absent_is_atomic_and_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = Arc::new(State::open(dir.path()).expect("open"));
    let now = Timestamp::now();
    let created: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let state = state.clone();
                s.spawn(move || {
                    (0..20)
                        .filter(|_| {
                            matches!(
                                state.create_capture(capture("dedup"), CaptureOrigin::Trigger, now),
                                Ok(Created::Created(_))
                            )
                        })
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    assert_eq!(created, 1, "320 attempts, one capture");
    let uid = state
        .capture("shop", "dedup")
        .expect("read")
        .and_then(|pc| pc.metadata.uid)
        .expect("uid");
    drop(state);

    let state = State::open(dir.path()).expect("reopen");
    let again = state
        .create_capture(capture("dedup"), CaptureOrigin::Trigger, now)
        .expect("create");
    assert!(matches!(again, Created::AlreadyExists), "dedup is durable");
    let pc = state.capture("shop", "dedup").expect("read").expect("kept");
    assert_eq!(pc.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        state.origin("shop", "dedup").expect("origin"),
        Some(CaptureOrigin::Trigger)
    );
}

#[test]
fn updates_bump_the_version_and_removal_is_for_good() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = State::open(dir.path()).expect("open");
    state
        .create_capture(capture("a"), CaptureOrigin::Api, Timestamp::now())
        .expect("create");
    let rv = |s: &State| s.versions().expect("versions")[0].rv;
    assert_eq!(rv(&state), 1);
    let unchanged = state
        .update_capture("shop", "a", |_| false)
        .expect("update");
    assert!(unchanged.is_some());
    assert_eq!(rv(&state), 1, "no write without a change");
    state
        .update_capture("shop", "a", |pc| {
            pc.metadata.labels = Some([("x".into(), "y".into())].into());
            true
        })
        .expect("update");
    assert_eq!(rv(&state), 2);
    assert!(
        state
            .update_capture("shop", "missing", |_| true)
            .expect("update")
            .is_none()
    );
    assert!(state.remove_capture("shop", "a").expect("remove"));
    assert!(!state.remove_capture("shop", "a").expect("remove"));
    assert!(state.captures(None).expect("list").is_empty());
}

#[test]
fn a_second_process_is_refused_with_the_owner_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _first = State::open(dir.path()).expect("open");
    let err = State::open(dir.path()).expect_err("locked").to_string();
    assert!(err.contains("in use by another nightcap local"), "{err}");
    assert!(err.contains(&std::process::id().to_string()), "{err}");
}

#[test]
fn a_corrupt_or_foreign_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.db");
    let garbage = b"this is not a database, but someone's notes\n".repeat(200);
    std::fs::write(&path, &garbage).expect("write");
    let err = State::open(dir.path()).expect_err("corrupt").to_string();
    assert!(
        err.contains("not a usable nightcap state database"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        garbage,
        "not overwritten"
    );

    let other = tempfile::tempdir().expect("temp dir");
    let conn = Connection::open(other.path().join("state.db")).expect("sqlite");
    conn.execute_batch("CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('mine');")
        .expect("foreign schema");
    drop(conn);
    let err = State::open(other.path()).expect_err("foreign").to_string();
    assert!(err.contains("schema version none"), "{err}");
}

#[test]
fn schedule_runs_and_events_are_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = State::open(dir.path()).expect("open");
    let t0 = Timestamp::from_second(1_800_000_000).expect("time");
    let first = state.schedule("shop", "nightly", t0).expect("record");
    let later = state
        .schedule("shop", "nightly", t0 + jiff::SignedDuration::from_hours(1))
        .expect("record");
    assert_eq!(first.uid, later.uid, "stable uid");
    assert_eq!(later.created, t0, "first seen stays");
    let status = CaptureScheduleStatus {
        last_schedule_time: Some(Time(t0)),
        active: vec!["nightly-29999999".into()],
        ..CaptureScheduleStatus::default()
    };
    assert!(
        state
            .write_schedule_status("shop", "nightly", &status)
            .expect("write")
    );
    assert_eq!(
        state
            .schedule("shop", "nightly", t0)
            .expect("record")
            .status,
        status
    );
    state.retain_schedules(&[]).expect("retain");
    assert!(!state.has_schedule("shop", "nightly").expect("has"));

    let e = StoredEvent {
        namespace: "shop".into(),
        kind: "PacketCapture".into(),
        name: "a".into(),
        event_type: "Normal".into(),
        reason: "JobCreated".into(),
        message: "created job x".into(),
        related: None,
        count: 1,
        first: t0,
        last: t0,
    };
    for _ in 0..3 {
        state.record_event(&e).expect("event");
    }
    for i in 0..(events::KEEP_PER_OBJECT + 5) {
        let mut other = e.clone();
        other.message = format!("event {i}");
        state.record_event(&other).expect("event");
    }
    let all = state.events("shop", "PacketCapture", "a").expect("events");
    assert_eq!(
        all.len() as i64,
        events::KEEP_PER_OBJECT,
        "the newest are kept"
    );
    assert_eq!(all.last().map(|e| e.message.as_str()), Some("event 54"));

    let mut first = e.clone();
    first.name = "b".into();
    for _ in 0..3 {
        state.record_event(&first).expect("event");
    }
    let b = state.events("shop", "PacketCapture", "b").expect("events");
    assert_eq!(b.len(), 1, "repeats are coalesced");
    assert_eq!(b[0].count, 3);
}
