//! The authorisation matrix: every endpoint × every caller × every namespace × existing and
//! missing capture. Asserts the expected status, that forbidden answers do not depend on
//! existence, and that nothing served belongs to another namespace.

use std::io::{Cursor, Read};

use serde_json::Value;

use super::fixture::{Stored, capture_of};

/// A caller: name, bearer token, and whether it may read a namespace.
pub struct Caller<'a> {
    pub name: &'a str,
    pub token: &'a str,
    pub may_read: &'a dyn Fn(&str) -> bool,
}

/// One matrix cell's outcome, for printing.
pub struct Cell {
    pub caller: String,
    pub ns: String,
    pub endpoint: &'static str,
    pub existing: u16,
    pub missing: u16,
}

const ENDPOINTS: [&str; 3] = ["files", "files.zip", "links"];

async fn call(
    http: &reqwest::Client,
    base: &str,
    endpoint: &str,
    ns: &str,
    name: &str,
    token: Option<&str>,
) -> (u16, bytes::Bytes) {
    let url = format!("{base}/v1/namespaces/{ns}/packetcaptures/{name}/{endpoint}");
    let req = if endpoint == "links" {
        http.post(&url)
    } else {
        http.get(&url)
    };
    let req = match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.bytes().await.expect("body"))
}

/// Keys or zip entries served for `ns` must all be `ns`'s own.
fn assert_same_namespace(
    endpoint: &str,
    ns: &str,
    body: &[u8],
    stored: &Stored,
    prefix: &str,
) -> usize {
    let own = |key: &str| {
        let rel = key
            .strip_prefix(prefix)
            .unwrap_or(key)
            .trim_start_matches('/');
        rel.starts_with(&format!("{ns}/"))
    };
    match endpoint {
        "files" => {
            let v: Value = serde_json::from_slice(body).expect("files JSON");
            let files = v["files"].as_array().expect("files array");
            for f in files {
                let k = f["key"].as_str().expect("key");
                assert!(own(k), "files for {ns} served {k}");
            }
            files.len()
        }
        "files.zip" => {
            let mut z = zip::ZipArchive::new(Cursor::new(body)).expect("zip opens");
            let mut n = 0;
            let manifest: Value = {
                let mut m = z.by_name("manifest.json").expect("manifest.json");
                let mut s = String::new();
                m.read_to_string(&mut s).expect("read manifest");
                serde_json::from_str(&s).expect("manifest JSON")
            };
            for f in manifest["files"].as_array().expect("manifest files") {
                let k = f["key"].as_str().expect("key");
                assert!(own(k), "zip for {ns} holds {k}");
                let mut e = z.by_name(f["path"].as_str().expect("path")).expect("entry");
                let mut got = Vec::new();
                e.read_to_end(&mut got).expect("read entry");
                assert_eq!(
                    Some(&got),
                    stored.get(k),
                    "zip entry {k} equals the stored object"
                );
                n += 1;
            }
            n
        }
        _ => 0,
    }
}

/// Runs the matrix; returns the cells. `prefix` is the store's key prefix.
pub async fn run(
    base: &str,
    callers: &[Caller<'_>],
    namespaces: &[&str],
    stored: &Stored,
    prefix: &str,
) -> Vec<Cell> {
    let http = reqwest::Client::new();
    let mut cells = Vec::new();
    for endpoint in ENDPOINTS {
        for ns in namespaces {
            // Unauthenticated and bad-token calls: 401, never more.
            for tok in [None, Some("not-a-valid-token-at-all")] {
                let (s, _) = call(&http, base, endpoint, ns, capture_of(ns), tok).await;
                assert_eq!(s, 401, "{endpoint} {ns} with token {tok:?}");
            }
            for c in callers {
                let (s_exist, b_exist) =
                    call(&http, base, endpoint, ns, capture_of(ns), Some(c.token)).await;
                let (s_miss, b_miss) =
                    call(&http, base, endpoint, ns, "no-such-capture", Some(c.token)).await;
                let in_ns = |k: &String| {
                    k.strip_prefix(prefix)
                        .unwrap_or(k)
                        .trim_start_matches('/')
                        .starts_with(&format!("{ns}/"))
                };
                let exists = stored.keys().any(in_ns);
                if (c.may_read)(ns) && !exists {
                    assert_eq!(
                        (s_exist, s_miss),
                        (404, 404),
                        "{} {endpoint} {ns}: nothing stored",
                        c.name
                    );
                } else if (c.may_read)(ns) {
                    let ok = if endpoint == "links" { 201 } else { 200 };
                    assert_eq!(
                        s_exist,
                        ok,
                        "{} {endpoint} {ns}: {:?}",
                        c.name,
                        String::from_utf8_lossy(&b_exist)
                    );
                    assert_eq!(s_miss, 404, "{} {endpoint} {ns} missing", c.name);
                    let n = assert_same_namespace(endpoint, ns, &b_exist, stored, prefix);
                    if endpoint != "links" {
                        let expected = stored.keys().filter(|k| in_ns(k)).count();
                        assert_eq!(
                            n, expected,
                            "{} {endpoint} {ns}: every file of the capture",
                            c.name
                        );
                    }
                } else {
                    assert_eq!(s_exist, 403, "{} {endpoint} {ns}", c.name);
                    assert_eq!(s_miss, 403, "{} {endpoint} {ns} missing", c.name);
                    assert_eq!(b_exist, b_miss, "403 bodies must not reveal existence");
                }
                cells.push(Cell {
                    caller: c.name.into(),
                    ns: ns.to_string(),
                    endpoint,
                    existing: s_exist,
                    missing: s_miss,
                });
            }
        }
    }
    cells
}

/// Prints the matrix as a table (for the closing note).
pub fn print(cells: &[Cell]) {
    println!(
        "{:<8} {:<8} {:<10} {:>8} {:>8}",
        "caller", "ns", "endpoint", "existing", "missing"
    );
    for c in cells {
        println!(
            "{:<8} {:<8} {:<10} {:>8} {:>8}",
            c.caller, c.ns, c.endpoint, c.existing, c.missing
        );
    }
}
