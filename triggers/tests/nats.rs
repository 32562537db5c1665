//! NATS core and JetStream against a real nats-server 2.15 and the API test server.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::*;
use futures::StreamExt;
use nightcap_testsupport::NatsServer;
use nightcap_triggers::{
    Config, Outcome,
    config::LimitsConfig,
    payload::ParseOptions,
    runtime::Running,
    sources::nats::{
        Consumer, NatsAuth, NatsConfig, NatsSource, StreamSpec, Subscription,
        jetstream::{Ack, consumer_info},
    },
};
use serde_json::Value;

fn nats_config(url: &str) -> NatsConfig {
    NatsConfig {
        servers: vec![url.to_owned()],
        name: "nightcap-test".into(),
        auth: NatsAuth::default(),
        tls: None,
        subscriptions: vec![],
        consumers: vec![],
        concurrency: 64,
    }
}

fn consumer(ack_wait: u64, max_deliver: i64) -> Consumer {
    Consumer {
        stream: "ALERTS".into(),
        durable: "nightcap".into(),
        filter_subjects: vec!["alerts.>".into()],
        max_deliver,
        ack_wait_seconds: ack_wait,
        retry_delay_seconds: 1,
        max_ack_pending: 1000,
        create_stream: Some(StreamSpec {
            subjects: vec!["alerts.>".into()],
            memory: false,
            max_age_seconds: None,
        }),
    }
}

fn no_limits() -> LimitsConfig {
    LimitsConfig {
        max_concurrent_per_namespace: None,
        max_concurrent_cluster: None,
    }
}

async fn client(url: &str) -> async_nats::Client {
    async_nats::connect(url).await.expect("test NATS client")
}

/// Sends a request until a subscriber answers (the subscription starts in the background).
async fn request(nc: &async_nats::Client, subject: &str, body: &str) -> Value {
    let reply = wait_for("a NATS subscriber answers", || {
        let nc = nc.clone();
        async move {
            nc.request(subject.to_owned(), body.to_owned().into())
                .await
                .ok()
        }
    })
    .await;
    serde_json::from_slice(&reply.payload).expect("reply is JSON")
}

async fn js_publish(nc: &async_nats::Client, subject: &str, body: String) {
    let js = jetstream::new(nc.clone());
    wait_for("JetStream accepts the message", || {
        let (js, body) = (js.clone(), body.clone());
        async move {
            js.publish(subject.to_owned(), body.into())
                .await
                .ok()?
                .await
                .ok()
        }
    })
    .await;
}

async fn wait_captures(client: &kube::Client, n: usize) {
    wait_for(&format!("{n} captures"), || async move {
        (captures(client, "shop").await.len() >= n).then_some(())
    })
    .await;
    assert_eq!(captures(client, "shop").await.len(), n, "exactly {n}");
}

async fn wait_settled(nc: &async_nats::Client) -> jetstream::consumer::Info {
    wait_for("the consumer has nothing pending", || async move {
        let info = consumer_info(nc, "ALERTS", "nightcap").await.ok()?;
        (info.num_ack_pending == 0 && info.num_pending == 0 && info.delivered.stream_sequence > 0)
            .then_some(info)
    })
    .await
}

#[tokio::test]
async fn alertmanager_payload_over_nats_core_creates_one_capture_and_copies_dedup() {
    let nats = NatsServer::start();
    let c = cluster().await;
    create_trigger(&c.client, LATENCY_TRIGGER).await;
    let mut cfg = nats_config(&nats.url());
    cfg.subscriptions = vec![Subscription {
        subject: "alerts.>".into(),
        queue_group: Some("nightcap".into()),
    }];
    let running = start(
        &c.client,
        Config {
            nats: Some(cfg),
            ..Config::default()
        },
        None,
        1,
    )
    .await;
    let nc = client(&nats.url()).await;
    let reply = request(&nc, "alerts.shop", FIRING).await;
    assert_eq!(reply["decisions"][0]["decision"], "created", "{reply}");
    let list = captures(&c.client, "shop").await;
    assert_eq!(list.len(), 1);
    let sel = list[0].spec.selector.as_ref().expect("selector");
    assert_eq!(
        sel.match_labels.as_ref().expect("labels")["app"],
        "checkout"
    );
    for _ in 0..1000 {
        nc.publish("alerts.shop", FIRING.into())
            .await
            .expect("publish");
    }
    nc.flush().await.expect("flush");
    let m = running.metrics.clone();
    wait_for("1000 more decisions", || {
        let m = m.clone();
        async move { (m.decisions_total(Outcome::Deduplicated) >= 1000).then_some(()) }
    })
    .await;
    assert_eq!(
        captures(&c.client, "shop").await.len(),
        1,
        "still one capture"
    );
    assert_eq!(m.decisions_total(Outcome::Created), 1);
    // A bad payload is answered with the reason.
    let reply = request(&nc, "alerts.shop", "{\"labels\": 3}").await;
    let err = reply["error"].as_str().expect("error");
    assert!(err.contains("invalid type: integer `3`"), "{err}");
}

#[tokio::test]
async fn jetstream_alert_creates_a_capture_and_is_acked() {
    let nats = NatsServer::start();
    let c = cluster().await;
    create_trigger(&c.client, LATENCY_TRIGGER).await;
    let mut cfg = nats_config(&nats.url());
    cfg.consumers = vec![consumer(30, 5)];
    let _running = start(
        &c.client,
        Config {
            nats: Some(cfg),
            ..Config::default()
        },
        None,
        1,
    )
    .await;
    let nc = client(&nats.url()).await;
    js_publish(&nc, "alerts.shop", FIRING.to_owned()).await;
    wait_captures(&c.client, 1).await;
    let info = wait_settled(&nc).await;
    assert_eq!(info.num_redelivered, 0);
}

/// A consumer takes the message, creates the capture and dies before acknowledging it. The
/// server redelivers after ackWait; the next consumer finds the capture (AlreadyExists) and
/// acknowledges: still one capture.
#[tokio::test]
async fn a_consumer_killed_before_ack_is_redelivered_and_still_one_capture() {
    let nats = NatsServer::start();
    let c = cluster().await;
    create_trigger(&c.client, LATENCY_TRIGGER).await;
    // No NATS in the runtime: this test drives the consumers itself.
    let running: Running = start(&c.client, Config::default(), None, 1).await;
    let nc = client(&nats.url()).await;
    let spec = consumer(1, 5);
    let source = NatsSource::new(running.engine.clone(), ParseOptions::default(), 8);
    let pull = source.consumer(&nc, &spec).await.expect("consumer");
    js_publish(&nc, "alerts.shop", FIRING.to_owned()).await;

    // The first consumer: processes, then "crashes" (drops the message unacknowledged).
    let mut batch = pull
        .fetch()
        .max_messages(1)
        .messages()
        .await
        .expect("fetch");
    let msg = batch.next().await.expect("a message").expect("message ok");
    let (ack, decisions) = source.process(&msg, &spec).await;
    assert_eq!(ack, Ack::Ack, "it would have acknowledged");
    assert_eq!(decisions[0].decision, Outcome::Created);
    drop(msg);
    drop(batch);
    assert_eq!(captures(&c.client, "shop").await.len(), 1);

    // The replacement consumer (same durable) gets the redelivery.
    let (s, n, sp) = (source.clone(), nc.clone(), spec.clone());
    let task = tokio::spawn(async move { s.run_consumer(n, &sp).await });
    let m = running.metrics.clone();
    wait_for("the redelivery was deduplicated", || {
        let m = m.clone();
        async move { (m.decisions_total(Outcome::Deduplicated) >= 1).then_some(()) }
    })
    .await;
    let info = wait_settled(&nc).await;
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(
        captures(&c.client, "shop").await.len(),
        1,
        "still exactly one capture"
    );
    assert_eq!(m.decisions_total(Outcome::Created), 1);
    task.abort();
}

#[tokio::test]
async fn a_nats_server_restart_mid_stream_loses_no_alert() {
    let mut nats = NatsServer::start();
    let c = cluster().await;
    create_trigger(&c.client, LATENCY_TRIGGER).await;
    let mut cfg = nats_config(&nats.url());
    cfg.consumers = vec![consumer(5, 10)];
    let config = Config {
        nats: Some(cfg),
        limits: no_limits(),
        ..Config::default()
    };
    let _running = start(&c.client, config, None, 1).await;
    let nc = client(&nats.url()).await;
    for i in 0..10 {
        js_publish(&nc, "alerts.shop", alert_variant(i)).await;
    }
    nats.restart()
        .expect("nats-server restarts on the same port and store");
    for i in 10..20 {
        js_publish(&nc, "alerts.shop", alert_variant(i)).await;
    }
    wait_captures(&c.client, 20).await;
    wait_settled(&nc).await;
}

#[tokio::test]
async fn poison_messages_are_terminated_and_counted() {
    let nats = NatsServer::start();
    let c = cluster().await;
    create_trigger(&c.client, LATENCY_TRIGGER).await;
    let mut cfg = nats_config(&nats.url());
    cfg.consumers = vec![consumer(30, 5)];
    let running = start(
        &c.client,
        Config {
            nats: Some(cfg),
            ..Config::default()
        },
        None,
        1,
    )
    .await;
    let nc = client(&nats.url()).await;
    js_publish(&nc, "alerts.shop", "{not json".to_owned()).await;
    let info = wait_settled(&nc).await;
    assert_eq!(
        info.num_redelivered, 0,
        "terminated at once, not redelivered"
    );
    assert_eq!(running.metrics.poison_total(), 1);
    assert!(captures(&c.client, "shop").await.is_empty());
}

/// The API server goes away: creation fails transiently, the message is redelivered up to
/// maxDeliver and then given up on (poison), never acknowledged as done before that.
#[tokio::test]
async fn transient_failures_are_redelivered_up_to_max_deliver() {
    let nats = NatsServer::start();
    let c = cluster().await;
    create_trigger(&c.client, LATENCY_TRIGGER).await;
    let mut cfg = nats_config(&nats.url());
    cfg.consumers = vec![consumer(2, 3)];
    let running = start(
        &c.client,
        Config {
            nats: Some(cfg),
            ..Config::default()
        },
        None,
        1,
    )
    .await;
    let Cluster { server, .. } = c;
    drop(server);
    let nc = client(&nats.url()).await;
    js_publish(&nc, "alerts.shop", FIRING.to_owned()).await;
    let m = running.metrics.clone();
    wait_for("three failed deliveries and a poison verdict", || {
        let m = m.clone();
        async move { (m.poison_total() == 1 && m.decisions_total(Outcome::Failed) == 3).then_some(()) }
    })
    .await;
    let info = wait_settled(&nc).await;
    assert_eq!(info.delivered.stream_sequence, 1);
    let text = m.encode();
    assert!(
        text.contains(r#"nightcap_trigger_jetstream_acks_total{kind="nak"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"nightcap_trigger_jetstream_acks_total{kind="term"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn token_and_user_password_auth() {
    for (args, auth) in [
        (vec!["--auth", "t0ken"], "token"),
        (vec!["--user", "nightcap", "--pass", "pa55"], "user"),
    ] {
        let mut b = NatsServer::builder();
        for a in &args {
            b = b.arg(*a);
        }
        let nats = b.start().expect("nats-server with auth");
        let c = cluster().await;
        create_trigger(&c.client, LATENCY_TRIGGER).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = nats_config(&nats.url());
        cfg.subscriptions = vec![Subscription {
            subject: "alerts.>".into(),
            queue_group: None,
        }];
        if auth == "token" {
            let p = dir.path().join("token");
            std::fs::write(&p, "t0ken\n").expect("token");
            cfg.auth.token_file = Some(p);
        } else {
            let p = dir.path().join("password");
            std::fs::write(&p, "pa55").expect("password");
            cfg.auth.user = Some("nightcap".into());
            cfg.auth.password_file = Some(p);
        }
        let _running = start(
            &c.client,
            Config {
                nats: Some(cfg),
                ..Config::default()
            },
            None,
            1,
        )
        .await;
        let opts = if auth == "token" {
            async_nats::ConnectOptions::with_token("t0ken".into())
        } else {
            async_nats::ConnectOptions::with_user_and_password("nightcap".into(), "pa55".into())
        };
        let nc = opts
            .connect(nats.url())
            .await
            .expect("test client with credentials");
        let reply = request(&nc, "alerts.shop", FIRING).await;
        assert_eq!(
            reply["decisions"][0]["decision"], "created",
            "{auth}: {reply}"
        );
        let anonymous = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(nats.url())
            .await;
        assert!(
            anonymous.is_err(),
            "{auth}: the server does require credentials"
        );
    }
}
