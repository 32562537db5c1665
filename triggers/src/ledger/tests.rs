use super::*;

fn t(s: &str) -> Timestamp {
    s.parse().expect("time")
}

fn by_trigger(trigger: &str, hash: &str, created: &str, phase: Option<Phase>) -> Tracked {
    Tracked {
        origin: Origin::Trigger {
            trigger: trigger.to_owned(),
            key_hash: Some(hash.to_owned()),
        },
        phase,
        created: Some(t(created)),
        completed: None,
        scheduled: None,
        stop_requested: false,
    }
}

const T0: &str = "2026-11-21T02:00:00Z";

#[test]
fn admission_reserves_then_dedups() {
    let mut l = Ledger::default();
    let k = ObjKey::new("shop", "lat-1");
    let limits = Limits::default();
    assert!(matches!(
        l.admit(&k, "lat", "h1", &limits, t(T0)),
        Admission::Admitted
    ));
    let Admission::InFlight(mut rx) = l.admit(&k, "lat", "h1", &limits, t(T0)) else {
        panic!("second copy while in flight must wait");
    };
    assert_eq!(
        l.running_for_trigger("shop", "lat"),
        1,
        "pending counts as running"
    );
    l.created(k.clone(), by_trigger("lat", "h1", T0, None));
    assert_eq!(*rx.borrow_and_update(), Some(true));
    assert!(matches!(
        l.admit(&k, "lat", "h1", &limits, t(T0)),
        Admission::Exists
    ));
    assert_eq!(l.running_for_trigger("shop", "lat"), 1, "not counted twice");
    assert_eq!(l.running_total(), 1);
}

#[test]
fn released_reservations_tell_waiters_to_retry() {
    let mut l = Ledger::default();
    let k = ObjKey::new("shop", "lat-1");
    assert!(matches!(
        l.admit(&k, "lat", "h", &Limits::default(), t(T0)),
        Admission::Admitted
    ));
    let Admission::InFlight(rx) = l.admit(&k, "lat", "h", &Limits::default(), t(T0)) else {
        panic!("in flight");
    };
    l.release(&k);
    assert_eq!(*rx.borrow(), Some(false));
    assert_eq!(l.running_total(), 0);
    assert!(matches!(
        l.admit(&k, "lat", "h", &Limits::default(), t(T0)),
        Admission::Admitted
    ));
}

#[test]
fn cooldown_is_per_key_and_ends() {
    let mut l = Ledger::default();
    l.upsert(
        ObjKey::new("shop", "lat-a"),
        by_trigger("lat", "h1", T0, Some(Phase::Succeeded)),
    );
    let limits = Limits {
        cooldown: Some(SignedDuration::from_secs(600)),
        ..Limits::default()
    };
    let next = ObjKey::new("shop", "lat-b");
    let cases = [
        ("h1", "2026-11-21T02:05:00Z", false),
        ("h2", "2026-11-21T02:05:00Z", true),
        ("h1", "2026-11-21T02:10:00Z", true),
    ];
    for (hash, now, admitted) in cases {
        let got = l.admit(&next, "lat", hash, &limits, t(now));
        assert_eq!(
            matches!(got, Admission::Admitted),
            admitted,
            "{hash} at {now}: {got:?}"
        );
        if admitted {
            l.release(&next);
        }
    }
    // Another trigger in the same namespace with the same key hash is unaffected.
    assert!(matches!(
        l.admit(&next, "other", "h1", &limits, t("2026-11-21T02:01:00Z")),
        Admission::Admitted
    ));
}

#[test]
fn concurrency_limits_count_running_captures_only() {
    let mut l = Ledger::default();
    l.upsert(
        ObjKey::new("shop", "a"),
        by_trigger("lat", "1", T0, Some(Phase::Capturing)),
    );
    l.upsert(ObjKey::new("shop", "b"), by_trigger("lat", "2", T0, None));
    l.upsert(
        ObjKey::new("shop", "c"),
        by_trigger("err", "3", T0, Some(Phase::Succeeded)),
    );
    l.upsert(
        ObjKey::new("dev", "d"),
        by_trigger("lat", "4", T0, Some(Phase::Pending)),
    );
    assert_eq!(l.running_for_trigger("shop", "lat"), 2);
    assert_eq!(l.running_in_namespace("shop"), 2);
    assert_eq!(l.running_total(), 3);
    let new = ObjKey::new("shop", "e");
    let limit = |per_trigger, per_namespace, cluster| Limits {
        per_trigger,
        per_namespace,
        cluster,
        cooldown: None,
    };
    assert!(matches!(
        l.admit(&new, "lat", "5", &limit(Some(2), None, None), t(T0)),
        Admission::TriggerFull(2)
    ));
    assert!(matches!(
        l.admit(&new, "err", "5", &limit(Some(1), Some(2), None), t(T0)),
        Admission::NamespaceFull(2)
    ));
    assert!(matches!(
        l.admit(&new, "err", "5", &limit(Some(1), Some(3), Some(3)), t(T0)),
        Admission::ClusterFull(3)
    ));
    // One of "lat"'s captures finishes: room again.
    l.upsert(
        ObjKey::new("shop", "a"),
        by_trigger("lat", "1", T0, Some(Phase::Stopped)),
    );
    assert!(matches!(
        l.admit(&new, "lat", "5", &limit(Some(2), Some(3), Some(3)), t(T0)),
        Admission::Admitted
    ));
    // Deleting a running capture frees its slot too.
    l.remove(&ObjKey::new("shop", "b"));
    assert_eq!(
        l.running_for_trigger("shop", "lat"),
        1,
        "only the reservation"
    );
}

#[test]
fn relist_replaces_known_captures_but_keeps_reservations() {
    let mut l = Ledger::default();
    l.upsert(
        ObjKey::new("shop", "gone"),
        by_trigger("lat", "1", T0, None),
    );
    let pending = ObjKey::new("shop", "new");
    assert!(matches!(
        l.admit(&pending, "lat", "2", &Limits::default(), t(T0)),
        Admission::Admitted
    ));
    l.relist_start();
    l.upsert(
        ObjKey::new("shop", "kept"),
        by_trigger("lat", "3", T0, None),
    );
    l.relist_done();
    assert!(l.get(&ObjKey::new("shop", "gone")).is_none());
    assert!(l.get(&ObjKey::new("shop", "kept")).is_some());
    assert_eq!(
        l.running_for_trigger("shop", "lat"),
        2,
        "kept + reservation"
    );
}

#[test]
fn schedule_captures_are_listed_per_schedule() {
    let mut l = Ledger::default();
    let sched = |s: &str| Tracked {
        origin: Origin::Schedule {
            schedule: s.to_owned(),
            owner_uid: None,
        },
        phase: None,
        created: None,
        completed: None,
        scheduled: None,
        stop_requested: false,
    };
    l.upsert(ObjKey::new("shop", "nightly-2"), sched("nightly"));
    l.upsert(ObjKey::new("shop", "nightly-1"), sched("nightly"));
    l.upsert(ObjKey::new("shop", "hourly-1"), sched("hourly"));
    l.upsert(ObjKey::new("dev", "nightly-3"), sched("nightly"));
    let names: Vec<_> = l
        .owned_by_schedule("shop", "nightly")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["nightly-1", "nightly-2"]);
    assert_eq!(
        l.running_total(),
        0,
        "schedules do not count against trigger quotas"
    );
}
