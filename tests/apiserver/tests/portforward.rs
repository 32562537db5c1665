//! `pods/portforward` with kube-rs's client (what `kubectl port-forward` and the kubectl plugin
//! use): bytes both ways to a process listening in a Running pod, 403 without the right.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::PostParams};
use nightcap_testcluster::{ApiServer, FakeKubelet, KubeletOptions, Policy, Rule, User};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portforward_reaches_a_pod_and_needs_the_right() {
    let policy = Policy::new()
        .user(User::new("forwarder").rule(Rule::new(["create"], [""], ["pods/portforward"])))
        .user(User::new("reader").rule(Rule::new(["get", "list"], [""], ["pods"])));
    let server = ApiServer::start(policy).await.expect("server");
    let _kubelet = FakeKubelet::start(&server, "node-a", KubeletOptions::default())
        .await
        .expect("kubelet");
    let admin = server.admin_client().expect("client");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    // A one-shot echo server that upper-cases what it reads (pods without a sandbox get the
    // node's 127.0.0.1).
    let script = format!(
        "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('127.0.0.1',{port}))\ns.listen()\nwhile True:\n  c,_=s.accept()\n  c.sendall(c.recv(100).upper())\n  c.close()\n"
    );
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "echo"},
        "spec": {"nodeName": "node-a", "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "echo", "image": "python", "command": ["python3", "-c", script]}]},
    }))
    .expect("pod");
    let pods: Api<Pod> = Api::namespaced(admin, "default");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod created");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the echo pod never listened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let forwarder: Api<Pod> =
        Api::namespaced(server.client_for("forwarder").expect("client"), "default");
    let mut fwd = forwarder
        .portforward("echo", &[port])
        .await
        .expect("port-forward");
    let mut stream = fwd.take_stream(port).expect("stream");
    stream.write_all(b"hello pod").await.expect("write");
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.expect("read");
    assert_eq!(buf, b"HELLO POD");
    drop(stream);
    // The pod closed first, so the server closed the WebSocket; kube-rs's own closing frame
    // then finds it closed (`SendAfterClosing`), which is not a failure of the forward.
    let _ = fwd.join().await;

    let reader: Api<Pod> = Api::namespaced(server.client_for("reader").expect("client"), "default");
    match reader.portforward("echo", &[port]).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message
                    .contains("cannot create resource \"pods/portforward\""),
                "{}",
                s.message
            );
        }
        Err(e) => panic!("expected 403, got {e}"),
        Ok(_) => panic!("a user without pods/portforward forwarded"),
    }
}
