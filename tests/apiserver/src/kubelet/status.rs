//! Pod status documents as a kubelet writes them (phase, conditions, containerStatuses, IPs).

use serde_json::{Value, json};

/// One container state transition.
#[derive(Debug, Clone)]
pub(crate) enum ContainerState {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: String,
    },
    Terminated {
        exit_code: i32,
        signal: Option<i32>,
        reason: String,
        message: String,
        started_at: String,
        finished_at: String,
    },
}

/// Everything needed to render a pod status.
#[derive(Debug, Clone)]
pub(crate) struct PodStatus {
    pub phase: &'static str,
    pub container: String,
    pub image: String,
    pub container_id: String,
    pub image_id: String,
    pub state: ContainerState,
    pub last_state: Option<ContainerState>,
    pub restart_count: i32,
    pub pod_ips: Vec<String>,
    pub host_ip: String,
    pub start_time: String,
    pub now: String,
}

fn state_json(s: &ContainerState, container_id: &str) -> Value {
    match s {
        ContainerState::Waiting { reason, message } => {
            json!({"waiting": {"reason": reason, "message": message}})
        }
        ContainerState::Running { started_at } => json!({"running": {"startedAt": started_at}}),
        ContainerState::Terminated {
            exit_code,
            signal,
            reason,
            message,
            started_at,
            finished_at,
        } => {
            let mut t = json!({"exitCode": exit_code, "reason": reason, "startedAt": started_at,
                "finishedAt": finished_at, "containerID": container_id});
            if let Some(sig) = signal {
                t["signal"] = json!(sig);
            }
            if !message.is_empty() {
                t["message"] = json!(message);
            }
            json!({"terminated": t})
        }
    }
}

fn condition(t: &str, ok: bool, now: &str) -> Value {
    json!({"type": t, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now})
}

/// The `status` object.
pub(crate) fn render(s: &PodStatus) -> Value {
    let running = matches!(s.state, ContainerState::Running { .. });
    let terminal = s.phase == "Succeeded" || s.phase == "Failed";
    let mut conditions = vec![
        condition("PodReadyToStartContainers", !terminal, &s.now),
        condition("Initialized", true, &s.now),
        condition("Ready", running, &s.now),
        condition("ContainersReady", running, &s.now),
        condition("PodScheduled", true, &s.now),
    ];
    if terminal {
        for c in conditions
            .iter_mut()
            .filter(|c| c["type"] == "Ready" || c["type"] == "ContainersReady")
        {
            c["reason"] = json!("PodCompleted");
        }
    }
    let mut cs = json!({
        "name": s.container,
        "image": s.image,
        "imageID": s.image_id,
        "containerID": s.container_id,
        "ready": running,
        "started": running,
        "restartCount": s.restart_count,
        "state": state_json(&s.state, &s.container_id),
        "lastState": s.last_state.as_ref().map_or(json!({}), |l| state_json(l, &s.container_id)),
    });
    if s.container_id.is_empty() {
        cs.as_object_mut().map(|m| m.remove("containerID"));
    }
    let ips: Vec<Value> = s.pod_ips.iter().map(|ip| json!({"ip": ip})).collect();
    json!({
        "phase": s.phase,
        "conditions": conditions,
        "hostIP": s.host_ip,
        "hostIPs": [{"ip": s.host_ip}],
        "podIP": s.pod_ips.first(),
        "podIPs": ips,
        "startTime": s.start_time,
        "containerStatuses": [cs],
        "qosClass": "BestEffort",
    })
}
