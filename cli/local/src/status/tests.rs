use nightcap_api::PacketCaptureSpec;

use super::*;

fn capture(name: &str, duration: &str) -> PacketCapture {
    let mut pc = PacketCapture::new(
        name,
        PacketCaptureSpec {
            duration: Some(duration.into()),
            ..PacketCaptureSpec::default()
        },
    );
    pc.metadata.namespace = Some("shop".into());
    pc
}

fn key(name: &str) -> CaptureKey {
    ("shop".into(), name.into())
}

fn state() -> (tempfile::TempDir, Arc<State>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = Arc::new(State::open(dir.path()).expect("state"));
    (dir, state)
}

#[test]
fn captures_live_like_api_objects() {
    let now = Timestamp::from_second(1_800_000_000).expect("time");
    let (_dir, state) = state();
    let mut c = Captures::new(state.clone(), None);
    c.sync(&[capture("a", "1m"), capture("b", "1m")], now);
    let a = c.get(&key("a")).expect("a is live");
    assert!(a.uid().is_some_and(|u| !u.is_empty()));
    assert_eq!(a.metadata.generation, Some(1));
    assert_eq!(a.finalizers(), [nightcap_scheduler::labels::FINALIZER]);

    // An edit bumps the generation; a capture gone from the file is deleted.
    c.sync(&[capture("a", "2m")], now);
    let a = c.get(&key("a")).expect("a is live");
    assert_eq!(a.metadata.generation, Some(2));
    assert_eq!(a.spec.duration.as_deref(), Some("2m"));
    assert!(
        c.get(&key("b"))
            .is_some_and(|b| b.metadata.deletion_timestamp.is_some())
    );

    c.merge(&key("a"), &json!({"status": {"phase": "Succeeded"}}));
    c.merge(&key("a"), &json!({"status": {"phase": 7}}));
    let phase = |c: &Captures| c.get(&key("a")).and_then(|a| a.status.as_ref()?.phase);
    assert_eq!(
        phase(&c),
        Some(Phase::Succeeded),
        "a patch that does not fit is ignored"
    );

    // What another process sees: the same record, from the database.
    let stored = state.capture("shop", "a").expect("read").expect("stored");
    assert_eq!(stored.status.and_then(|s| s.phase), Some(Phase::Succeeded));

    assert!(c.release(&key("a")));
    assert!(!c.release(&key("a")));
    assert!(state.capture("shop", "a").expect("read").is_none());
    c.sync(&[capture("a", "2m")], now);
    assert!(
        c.get(&key("a")).is_none(),
        "a configured capture that ran and is gone is not run again"
    );
    c.sync(&[capture("a", "3m")], now);
    assert!(c.get(&key("a")).is_some(), "unless its spec changes");
    assert!(c.release(&key("a")));
    c.sync(&[], now);
    c.sync(&[capture("a", "3m")], now);
    assert!(
        c.get(&key("a")).is_some(),
        "or the file drops it and lists it again"
    );
}

#[test]
fn captures_made_at_run_time_do_not_follow_the_file() {
    let now = Timestamp::now();
    let (_dir, state) = state();
    let created = state
        .create_capture(capture("from-an-alert", "1m"), CaptureOrigin::Trigger, now)
        .expect("create");
    assert!(matches!(created, Created::Created(_)));
    let mut c = Captures::new(state.clone(), None);
    c.sync(&[], now);
    let pc = c.get(&key("from-an-alert")).expect("kept");
    assert!(pc.metadata.deletion_timestamp.is_none());
}

#[test]
fn the_status_file_is_replaced_whole() {
    let (dir, state) = state();
    let path = dir.path().join("status.json");
    let mut c = Captures::new(state, Some(path.clone()));
    c.sync(&[capture("a", "1m")], Timestamp::now());
    c.write_status();
    let text = std::fs::read_to_string(&path).expect("status file");
    let all: Vec<Value> = serde_json::from_str(&text).expect("JSON");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["name"], "a");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary file is left behind");
}
