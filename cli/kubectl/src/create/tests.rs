//! Flags → PacketCapture, table-driven.

use clap::Parser;

use super::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: CreateArgs,
}

fn args(argv: &[&str]) -> CreateArgs {
    let mut full = vec!["create"];
    full.extend_from_slice(argv);
    Cli::try_parse_from(full)
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
        .args
}

fn now() -> Timestamp {
    "2026-12-02T04:00:00Z".parse().expect("time")
}

#[test]
fn flags_become_the_spec() {
    let pc = build(
        &args(&[
            "web-dns",
            "-l",
            "app=web,tier!=db",
            "--filter",
            "udp port 53",
            "--protocol",
            "udp",
            "--port",
            "53,8000-8080",
            "--snaplen",
            "128",
            "--duration",
            "1h30m",
            "--max-bytes",
            "1GiB",
            "--max-packets",
            "1000",
            "--rotate-size",
            "100MB",
            "--rotate-every",
            "5m",
            "--max-files",
            "3",
            "--storage",
            "fast",
            "--ttl",
            "7d",
        ]),
        "team-a",
        now(),
    )
    .expect("valid");
    let s = &pc.spec;
    assert_eq!(pc.metadata.namespace.as_deref(), Some("team-a"));
    let sel = s.selector.as_ref().expect("selector");
    assert_eq!(sel.match_labels.as_ref().expect("labels")["app"], "web");
    let e = &sel.match_expressions.as_ref().expect("exprs")[0];
    assert_eq!((e.key.as_str(), e.operator.as_str()), ("tier", "NotIn"));
    assert_eq!(s.expression.as_deref(), Some("udp port 53"));
    assert_eq!(s.filters[0].protocol, Protocol::Udp);
    assert_eq!(s.filters[0].ports, vec![53]);
    assert_eq!(
        s.filters[0].port_ranges,
        vec![PortRange {
            from: 8000,
            to: 8080
        }]
    );
    assert_eq!(s.snap_len, Some(128));
    assert_eq!(s.duration.as_deref(), Some("1h30m"));
    assert_eq!(s.max_bytes, Some(1 << 30));
    assert_eq!(s.max_packets, Some(1000));
    let r = s.rotation.as_ref().expect("rotation");
    assert_eq!(
        (r.max_file_bytes, r.max_file_seconds, r.max_files),
        (Some(100_000_000), Some(300), Some(3))
    );
    assert_eq!(s.storage.as_deref(), Some("fast"));
    assert_eq!(s.ttl_seconds_after_finished, Some(7 * 86400));
}

#[test]
fn every_problem_is_reported_with_its_field() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["x"], &["spec.selector"]),
        (&["Bad_Name", "-l", "app=web"], &["metadata.name"]),
        (
            &["x", "-l", "app=web", "--snaplen", "10"],
            &["spec.snapLen"],
        ),
        (
            &["x", "-l", "app=web", "--port", "http"],
            &["spec.filters[0].ports[0]"],
        ),
        (
            &["x", "-l", "app=web", "--protocol", "quic"],
            &["spec.filters[0].protocol"],
        ),
        (
            &["x", "-l", "app=web", "--end", "yesterday"],
            &["spec.endTime"],
        ),
        (
            &["x", "-l", "app=web", "--filter", "udp port"],
            &["spec.expression"],
        ),
        (
            &["x", "-l", "app in web", "--snaplen", "1", "--port", "0-"],
            &["spec.selector", "spec.filters[0].ports[0]", "spec.snapLen"],
        ),
    ];
    for (argv, want) in cases {
        let err = build(&args(argv), "team-a", now()).expect_err("invalid");
        let Error::Invalid { errors, .. } = &err else {
            panic!("{argv:?}: {err:?}");
        };
        let paths = errors.paths();
        for w in *want {
            assert!(
                paths.iter().any(|p| p.starts_with(w)),
                "{argv:?}: {w} not in {paths:?}"
            );
        }
    }
}

#[test]
fn kubectl_selector_syntax() {
    let s = parse_selector("app=web,env==prod,tier!=db,zone in (a, b),x notin (c),has,!gone")
        .expect("parses");
    let labels = s.match_labels.expect("labels");
    assert_eq!(
        (labels["app"].as_str(), labels["env"].as_str()),
        ("web", "prod")
    );
    let ops: Vec<(String, String)> = s
        .match_expressions
        .expect("exprs")
        .into_iter()
        .map(|e| (e.key, e.operator))
        .collect();
    let want = [
        ("tier", "NotIn"),
        ("zone", "In"),
        ("x", "NotIn"),
        ("has", "Exists"),
        ("gone", "DoesNotExist"),
    ];
    assert_eq!(ops, want.map(|(k, o)| (k.to_string(), o.to_string())));
    for bad in ["app in web", "a,,b", "a b"] {
        assert!(parse_selector(bad).is_err(), "{bad}");
    }
}
