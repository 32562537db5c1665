use std::collections::HashMap;

use super::*;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn s3_url_reads_the_usual_variables() {
    let c = StoreConfig::from_url_with_env(
        "s3://captures/prod/eu",
        env(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "SECRET"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_ALLOW_HTTP", "true"),
        ]),
    )
    .expect("valid url");
    let StoreConfig::S3(s3) = &c else {
        panic!("expected s3, got {c:?}")
    };
    assert_eq!(s3.bucket, "captures");
    assert_eq!(s3.prefix, "prod/eu");
    assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
    assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert!(s3.allow_http);
    assert!(matches!(s3.credentials, S3Credentials::Static { .. }));
    let debug = format!("{c:?}");
    assert!(!debug.contains("SECRET"), "secret leaked in {debug}");
    let store = c.open().expect("opens");
    assert_eq!(store.backend, "s3");
    assert!(store.signer.is_some());
    assert_eq!(store.prefix.as_str(), "prod/eu");
}

#[test]
fn s3_url_without_keys_uses_the_sdk_chain() {
    let c = StoreConfig::from_url_with_env("s3://b", env(&[("AWS_DEFAULT_REGION", "us-west-2")]))
        .expect("valid");
    let StoreConfig::S3(s3) = c else {
        panic!("expected s3")
    };
    assert_eq!(s3.credentials, S3Credentials::Env);
    assert_eq!(s3.region.as_deref(), Some("us-west-2"));
    assert!(!s3.allow_http);
    assert_eq!(s3.prefix, "");
}

#[test]
fn payloads_go_unsigned_over_https_only_unless_told() {
    let s3 = |vars: &[(&str, &str)]| match StoreConfig::from_url_with_env("s3://b", env(vars)) {
        Ok(StoreConfig::S3(c)) => c,
        other => panic!("expected s3, got {other:?}"),
    };
    // AWS itself, an https endpoint (any case): TLS protects the bytes.
    assert!(s3(&[]).unsigned_payload());
    assert!(s3(&[("AWS_ENDPOINT_URL", "HTTPS://minio.example:9000")]).unsigned_payload());
    // Plain http: the signature is all that protects them.
    let http = [
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    assert!(!s3(&http).unsigned_payload());
    // AWS_UNSIGNED_PAYLOAD decides when set, either way.
    let mut told = http.to_vec();
    told.push(("AWS_UNSIGNED_PAYLOAD", "true"));
    assert!(s3(&told).unsigned_payload());
    assert!(!s3(&[("AWS_UNSIGNED_PAYLOAD", "false")]).unsigned_payload());
}

#[test]
fn file_and_memory_urls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}/store", dir.path().display());
    let c = StoreConfig::from_url(&url).expect("valid");
    assert_eq!(
        c,
        StoreConfig::Local(LocalConfig {
            path: dir.path().join("store"),
            prefix: String::new()
        })
    );
    let (_, prefix) = c.build().expect("opens and creates the directory");
    assert!(dir.path().join("store").is_dir());
    assert_eq!(prefix.as_str(), "");
    let m = StoreConfig::from_url("memory:///p/q").expect("valid");
    let opened = m.open().expect("opens");
    assert_eq!(opened.prefix.as_str(), "p/q");
    assert!(opened.signer.is_none());
}

#[test]
fn refuses_bad_urls_and_prefixes() {
    for bad in [
        "ftp://x/y",
        "not a url",
        "s3:///nobucket",
        "file://host/dir",
    ] {
        assert!(
            StoreConfig::from_url_with_env(bad, env(&[])).is_err(),
            "{bad}"
        );
    }
    let c = StoreConfig::from_url_with_env("s3://b/a/../c", env(&[])).expect("parses");
    // url normalises dot segments away; whatever remains must still be a valid prefix.
    c.open().expect("normalised prefix is valid");
    let c = StoreConfig::Memory(MemoryConfig {
        prefix: "a/%2F/b".into(),
    });
    assert!(c.open().is_err());
}

#[test]
fn yaml_configuration() {
    let c: StoreConfig = serde_yaml::from_str(
        "type: s3\nbucket: caps\nprefix: prod\nendpoint: http://minio:9000\nallowHttp: true\n\
         credentials: {source: secret, name: minio-creds}\n",
    )
    .expect("parses");
    let StoreConfig::S3(s3) = &c else {
        panic!("expected s3")
    };
    assert!(
        matches!(&s3.credentials, S3Credentials::Secret { name, access_key_id_key, .. }
        if name == "minio-creds" && access_key_id_key == "AWS_ACCESS_KEY_ID")
    );
    let err = c.open().expect_err("unresolved secret");
    assert!(err.to_string().contains("minio-creds"), "{err}");
    let wi: StoreConfig = serde_yaml::from_str(
        "type: s3\nbucket: caps\ncredentials: {source: webIdentity, roleArn: 'arn:aws:iam::1:role/r', tokenFile: /var/run/token}\n",
    )
    .expect("parses");
    wi.open().expect("web identity opens");
    let local: StoreConfig = serde_yaml::from_str("type: local\npath: /tmp/x\n").expect("parses");
    assert!(matches!(local, StoreConfig::Local(_)));
    assert!(serde_yaml::from_str::<StoreConfig>("type: s3\nbucket: b\nbogus: 1\n").is_err());
    let gs: StoreConfig = serde_yaml::from_str(
        "type: url\nurl: gs://bucket/prefix\noptions: {google_service_account_key: '{}'}\n",
    )
    .expect("parses");
    assert!(matches!(gs, StoreConfig::Url(_)));
}

#[test]
fn azure_and_gcs_urls_open() {
    let az = StoreConfig::Url(UrlConfig {
        url: "az://container/captures".into(),
        options: BTreeMap::from([
            ("azure_storage_account_name".into(), "acct".into()),
            ("azure_storage_account_key".into(), "a2V5".into()),
        ]),
    });
    let s = az.open().expect("azure opens");
    assert_eq!((s.backend, s.prefix.as_str()), ("azure", "captures"));
    assert!(s.signer.is_some());
    let bad = StoreConfig::Url(UrlConfig {
        url: "az://container/x".into(),
        options: BTreeMap::from([("no_such_option".into(), "1".into())]),
    });
    assert!(bad.open().is_err());
}
