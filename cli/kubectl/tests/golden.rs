//! The tables and the description of fixed captures, against golden files in `tests/golden/`
//! (`NIGHTCAP_UPDATE_GOLDEN=1` rewrites them after a deliberate change).

use std::path::PathBuf;

use jiff::Timestamp;
use nightcap_api::PacketCapture;
use nightcap_kubectl::{
    backend::EventView,
    view::{describe::describe, table},
};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn captures() -> Vec<PacketCapture> {
    let text = std::fs::read_to_string(dir().join("captures.yaml")).expect("fixture");
    serde_yaml::from_str(&text).expect("fixture parses as PacketCaptures")
}

fn now() -> Timestamp {
    "2026-12-02T05:00:00Z".parse().expect("time")
}

fn check(file: &str, got: &str) {
    let path = dir().join(file);
    if std::env::var_os("NIGHTCAP_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).expect("golden written");
    }
    let want = std::fs::read_to_string(&path).expect("golden file");
    assert_eq!(got, want, "{file} differs; got:\n{got}");
}

#[test]
fn get_tables_match_the_golden_files() {
    let items = captures();
    check(
        "get.txt",
        &table::render(&table::capture_rows(&items[..1], false, false, now())),
    );
    check(
        "get-wide.txt",
        &table::render(&table::capture_rows(&items, true, false, now())),
    );
    check(
        "get-all-namespaces.txt",
        &table::render(&table::capture_rows(&items, false, true, now())),
    );
}

#[test]
fn describe_matches_the_golden_file() {
    let events = vec![
        EventView {
            type_: "Normal".into(),
            reason: "JobCreated".into(),
            message: "Created capture Job nc-web-dns-node-a-5d2c9a1b3e on node-a".into(),
            count: 1,
            last: Some("2026-12-02T03:00:01Z".parse().expect("time")),
        },
        EventView {
            type_: "Normal".into(),
            reason: "Succeeded".into(),
            message: "Every node finished; 3 files uploaded".into(),
            count: 1,
            last: Some("2026-12-02T03:10:05Z".parse().expect("time")),
        },
    ];
    check("describe.txt", &describe(&captures()[0], &events, now()));
}

#[test]
fn trigger_and_schedule_tables_match_the_golden_files() {
    #[derive(serde::Deserialize)]
    struct Fixture {
        triggers: Vec<nightcap_api::CaptureTrigger>,
        schedules: Vec<nightcap_api::CaptureSchedule>,
    }
    let text = std::fs::read_to_string(dir().join("triggers.yaml")).expect("fixture");
    let f: Fixture = serde_yaml::from_str(&text).expect("fixture parses");
    check(
        "get-triggers.txt",
        &table::render(&table::trigger_rows(&f.triggers, false, now())),
    );
    check(
        "get-schedules.txt",
        &table::render(&table::schedule_rows(&f.schedules, false, now())),
    );
}
