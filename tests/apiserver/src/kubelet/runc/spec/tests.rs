use k8s_openapi::api::core::v1::Container;
use serde_json::json;

use super::*;

fn pod_spec(pod_sc: serde_json::Value, c: serde_json::Value) -> (PodSpec, Container) {
    let mut c = c;
    c["name"] = json!("main");
    let spec: PodSpec =
        serde_json::from_value(json!({"securityContext": pod_sc, "containers": [c]}))
            .expect("pod spec");
    let c = spec.containers[0].clone();
    (spec, c)
}

fn image() -> Image {
    Image {
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec!["echo image".into()],
        uid: 65534,
        gid: 65534,
        ..Image::default()
    }
}

fn host() -> Vec<String> {
    caps_from_mask((1u64 << 41) - 1)
}

#[test]
fn capability_table() {
    let cases: &[(serde_json::Value, &[&str])] = &[
        (json!({}), DEFAULT_CAPABILITIES),
        (json!({"capabilities": {"drop": ["ALL"]}}), &[]),
        (
            json!({"capabilities": {"drop": ["ALL"], "add": ["NET_RAW", "bpf"]}}),
            &["CAP_NET_RAW", "CAP_BPF"],
        ),
        (
            json!({"capabilities": {"drop": ["all"], "add": ["CAP_NET_ADMIN"]}}),
            &["CAP_NET_ADMIN"],
        ),
    ];
    for (sc, want) in cases {
        let (spec, c) = pod_spec(json!({}), json!({"securityContext": sc}));
        let s = security(&spec, &c, &image(), &host()).expect("security");
        assert_eq!(s.capabilities, want.to_vec(), "{sc}");
    }
    let (spec, c) = pod_spec(
        json!({}),
        json!({"securityContext": {"capabilities": {"drop": ["NET_RAW", "KILL"]}}}),
    );
    let s = security(&spec, &c, &image(), &host()).expect("security");
    assert!(
        !s.capabilities
            .iter()
            .any(|c| c == "CAP_NET_RAW" || c == "CAP_KILL")
    );
    assert_eq!(s.capabilities.len(), DEFAULT_CAPABILITIES.len() - 2);
}

#[test]
fn user_precedence_and_confinement() {
    // (pod securityContext, container securityContext, uid, gid, groups)
    let cases = [
        (json!({}), json!({}), 65534, 65534, vec![]),
        (json!({"runAsUser": 1000}), json!({}), 1000, 0, vec![]),
        (
            json!({"runAsUser": 1000, "runAsGroup": 1000, "supplementalGroups": [5], "fsGroup": 7}),
            json!({"runAsUser": 1001}),
            1001,
            1000,
            vec![5, 7],
        ),
    ];
    for (psc, sc, uid, gid, groups) in cases {
        let (spec, c) = pod_spec(psc.clone(), json!({"securityContext": sc}));
        let s = security(&spec, &c, &image(), &host()).expect("security");
        assert_eq!((s.uid, s.gid, s.groups), (uid, gid, groups), "{psc} {sc}");
    }
    let (spec, c) = pod_spec(json!({"runAsNonRoot": true, "runAsUser": 0}), json!({}));
    assert!(security(&spec, &c, &image(), &host()).is_err());
    let (spec, c) = pod_spec(
        json!({"seccompProfile": {"type": "RuntimeDefault"}}),
        json!({"securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true}}),
    );
    let s = security(&spec, &c, &image(), &host()).expect("security");
    assert!(s.no_new_privileges && s.read_only_root && s.seccomp.is_some());
    let (spec, c) = pod_spec(
        json!({"seccompProfile": {"type": "RuntimeDefault"}}),
        json!({"securityContext": {"privileged": true}}),
    );
    let s = security(&spec, &c, &image(), &host()).expect("security");
    assert!(s.seccomp.is_none() && s.capabilities.len() == CAPABILITIES.len());
    let (spec, c) = pod_spec(json!({"seccompProfile": {"type": "Localhost"}}), json!({}));
    assert!(security(&spec, &c, &image(), &host()).is_err());
}

#[test]
fn argv_follows_kubernetes_semantics() {
    let env = BTreeMap::from([("N".to_string(), "x".to_string())]);
    let cases = [
        (json!({}), vec!["/bin/sh", "-c", "echo image"]),
        (
            json!({"args": ["echo $(N)"]}),
            vec!["/bin/sh", "-c", "echo x"],
        ),
        (json!({"command": ["/bin/true"]}), vec!["/bin/true"]),
        (
            json!({"command": ["/bin/echo"], "args": ["$(N)", "$$(N)"]}),
            vec!["/bin/echo", "x", "$(N)"],
        ),
    ];
    for (c, want) in cases {
        let (_, c) = pod_spec(json!({}), c);
        assert_eq!(argv(&c, &image(), &env).expect("argv"), want);
    }
    let (_, c) = pod_spec(json!({}), json!({}));
    assert!(argv(&c, &Image::default(), &env).is_err());
}

#[test]
fn namespaces_follow_host_flags() {
    let sec = Security {
        uid: 1000,
        gid: 1000,
        groups: vec![],
        capabilities: vec!["CAP_NET_RAW".into()],
        no_new_privileges: true,
        read_only_root: true,
        privileged: false,
        seccomp: None,
    };
    let inputs = Inputs {
        argv: vec!["/bin/true".into()],
        env: vec![],
        cwd: String::new(),
        rootfs: "/r".into(),
        hostname: None,
        network: Network::Host,
        host_pid: true,
        host_ipc: false,
        mounts: vec![],
        rootfs_propagation: None,
        cgroups_path: "/x/y".into(),
        resources: json!({}),
    };
    let cfg = config(&sec, &inputs);
    let types: Vec<&str> = cfg["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter_map(|n| n["type"].as_str())
        .collect();
    assert_eq!(types, ["mount", "ipc"]);
    assert_eq!(cfg["process"]["capabilities"]["effective"], json!([]));
    assert_eq!(
        cfg["process"]["capabilities"]["bounding"],
        json!(["CAP_NET_RAW"])
    );
    assert_eq!(cfg["root"]["readonly"], json!(true));
    let cfg = config(
        &sec,
        &Inputs {
            hostname: Some("p".into()),
            network: Network::Path("/run/netns/n".into()),
            host_pid: false,
            ..inputs
        },
    );
    let ns = &cfg["linux"]["namespaces"];
    assert_eq!(ns.as_array().map(Vec::len), Some(5));
    assert_eq!(ns[4], json!({"type": "network", "path": "/run/netns/n"}));
    assert_eq!(cfg["hostname"], json!("p"));
}
