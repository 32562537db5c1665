//! Security context translation: capabilities, read-only root, run-as, no_new_privs, seccomp,
//! privileged, hostPID.

use serde_json::json;

use crate::rig::*;

#[tokio::test]
async fn drop_all_add_net_raw_is_exactly_net_raw() {
    let Some(r) = rig().await else { return };
    let sc = json!({"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_RAW"]}}});
    let logs = r.output(pod("netraw", CAPS, json!({}), sc)).await;
    assert_eq!(status_line(&logs, "CapEff:"), "0000000000002000", "{logs}");
    assert_eq!(status_line(&logs, "CapBnd:"), "0000000000002000", "{logs}");
    assert_eq!(status_line(&logs, "CapPrm:"), "0000000000002000", "{logs}");
}

#[tokio::test]
async fn no_drop_gives_the_default_set_and_no_seccomp() {
    let Some(r) = rig().await else { return };
    let logs = r.output(pod("defaults", CAPS, json!({}), json!({}))).await;
    // chown, dac_override, fowner, fsetid, kill, setgid, setuid, setpcap, net_bind_service,
    // net_raw, sys_chroot, mknod, audit_write, setfcap
    assert_eq!(status_line(&logs, "CapEff:"), "00000000a80425fb", "{logs}");
    assert_eq!(status_line(&logs, "CapBnd:"), "00000000a80425fb", "{logs}");
    assert_eq!(status_line(&logs, "NoNewPrivs:"), "0", "{logs}");
    assert_eq!(status_line(&logs, "Seccomp:"), "0", "{logs}");
}

#[tokio::test]
async fn read_only_root_allows_only_volume_writes_and_the_image_stays_untouched() {
    let Some(r) = rig().await else { return };
    let script = "touch /root-file && echo root-writable; touch /scratch/f && echo scratch-ok";
    let c = json!({"securityContext": {"readOnlyRootFilesystem": true},
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]});
    let spec = json!({"volumes": [{"name": "scratch", "emptyDir": {}}]});
    let logs = r.output(pod("ro", script, spec.clone(), c)).await;
    assert!(logs.contains("scratch-ok"), "{logs}");
    assert!(!logs.contains("root-writable"), "{logs}");
    assert!(logs.contains("Read-only file system"), "{logs}");
    // Writable root: the write lands in the container's own layer, not in the image.
    let logs = r
        .output(pod(
            "rw",
            script,
            spec,
            json!({"volumeMounts": [
            {"name": "scratch", "mountPath": "/scratch"}]}),
        ))
        .await;
    assert!(logs.contains("root-writable"), "{logs}");
    assert!(!r.bundle.join("rootfs/root-file").exists());
    assert!(!r.bundle.join("rootfs/scratch").exists());
}

#[tokio::test]
async fn run_as_user_and_group_without_capabilities() {
    let Some(r) = rig().await else { return };
    let spec = json!({"securityContext": {"runAsUser": 1000, "runAsGroup": 1000,
        "supplementalGroups": [2000]}});
    let logs = r
        .output(pod("user", &format!("id; {CAPS}"), spec, json!({})))
        .await;
    assert!(logs.contains("uid=1000 gid=1000"), "{logs}");
    assert!(logs.contains("2000"), "{logs}");
    assert_eq!(status_line(&logs, "CapEff:"), "0000000000000000", "{logs}");
    // The container level wins over the pod level.
    let spec = json!({"securityContext": {"runAsUser": 1000}});
    let c = json!({"securityContext": {"runAsUser": 1001}});
    let logs = r.output(pod("user2", "id -u", spec, c)).await;
    assert_eq!(logs.trim(), "1001");
}

#[tokio::test]
async fn allow_privilege_escalation_false_sets_no_new_privs() {
    let Some(r) = rig().await else { return };
    let c = json!({"securityContext": {"allowPrivilegeEscalation": false}});
    let logs = r.output(pod("nnp", CAPS, json!({}), c)).await;
    assert_eq!(status_line(&logs, "NoNewPrivs:"), "1", "{logs}");
}

#[tokio::test]
async fn runtime_default_seccomp_refuses_namespaces_without_sys_admin() {
    let Some(r) = rig().await else { return };
    let script = format!(
        "{CAPS}; unshare -n true && echo netns-ok || echo netns-refused; \
         unshare -U true && echo userns-ok || echo userns-refused"
    );
    let seccomp = json!({"seccompProfile": {"type": "RuntimeDefault"}});
    let logs = r
        .output(pod(
            "sc-default",
            &script,
            json!({"securityContext": seccomp}),
            json!({}),
        ))
        .await;
    assert_eq!(status_line(&logs, "Seccomp:"), "2", "{logs}");
    assert!(logs.contains("netns-refused"), "{logs}");
    assert!(logs.contains("Operation not permitted"), "{logs}");
    // A user namespace needs no capability: only the profile refuses it.
    assert!(logs.contains("userns-refused"), "{logs}");
    let c = json!({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}});
    let logs = r
        .output(pod(
            "sc-admin",
            &script,
            json!({"securityContext": seccomp}),
            c,
        ))
        .await;
    assert_eq!(status_line(&logs, "Seccomp:"), "2", "{logs}");
    assert!(logs.contains("netns-ok"), "{logs}");
    let unconfined = json!({"seccompProfile": {"type": "Unconfined"}});
    let logs = r
        .output(pod(
            "sc-none",
            &script,
            json!({"securityContext": unconfined}),
            json!({}),
        ))
        .await;
    assert_eq!(status_line(&logs, "Seccomp:"), "0", "{logs}");
    assert!(logs.contains("userns-ok"), "{logs}");
}

#[tokio::test]
async fn privileged_gets_every_capability_no_seccomp_and_writable_sys() {
    let Some(r) = rig().await else { return };
    let script = format!("{CAPS}; grep ' /sys sysfs' /proc/mounts");
    let c = json!({"securityContext": {"privileged": true,
        "seccompProfile": {"type": "RuntimeDefault"}}});
    let logs = r.output(pod("priv", &script, json!({}), c)).await;
    let own = std::fs::read_to_string("/proc/self/status").expect("status");
    assert_eq!(
        status_line(&logs, "CapEff:"),
        status_line(&own, "CapBnd:"),
        "{logs}"
    );
    assert_eq!(status_line(&logs, "Seccomp:"), "0", "{logs}");
    assert!(logs.contains("sysfs rw"), "{logs}");
    let logs = r.output(pod("unpriv", &script, json!({}), json!({}))).await;
    assert!(logs.contains("sysfs ro"), "{logs}");
}

#[tokio::test]
async fn host_pid_shows_the_hosts_processes() {
    let Some(r) = rig().await else { return };
    let me = std::process::id();
    let script = format!("echo pid=$$$$; test -d /proc/{me} && echo sees-host || echo own-only");
    let logs = r
        .output(pod("hostpid", &script, json!({"hostPID": true}), json!({})))
        .await;
    assert!(logs.contains("sees-host"), "{logs}");
    assert!(!logs.contains("pid=1\n"), "{logs}");
    let logs = r.output(pod("ownpid", &script, json!({}), json!({}))).await;
    assert!(
        logs.contains("own-only") && logs.contains("pid=1\n"),
        "{logs}"
    );
}
