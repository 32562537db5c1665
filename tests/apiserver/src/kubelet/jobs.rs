//! A minimal Job controller, run by the kubelet for Jobs whose pods are pinned to its node
//! (`nodeName`, a `kubernetes.io/hostname` nodeSelector, or a required node affinity on the
//! hostname / `metadata.name`). It creates pods from the template on that node and keeps Job
//! status like the real controller: active/ready/succeeded/failed/terminating, startTime,
//! completionTime, SuccessCriteriaMet → Complete, FailureTarget → Failed (BackoffLimitExceeded,
//! DeadlineExceeded), `batch.kubernetes.io/job-tracking` pod finalizers, ttlSecondsAfterFinished.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Pod, PodSpec},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, reflector, reflector::Store, watcher},
};
use serde_json::{Value, json};

use super::Ctx;
use crate::time::{parse_date_time, timestamp};

const TRACKING: &str = "batch.kubernetes.io/job-tracking";
const HOSTNAME: &str = "kubernetes.io/hostname";

/// The node a pod template is pinned to, if any.
pub(crate) fn pinned_node(spec: &PodSpec) -> Option<String> {
    if let Some(n) = &spec.node_name {
        return Some(n.clone());
    }
    if let Some(n) = spec.node_selector.as_ref().and_then(|s| s.get(HOSTNAME)) {
        return Some(n.clone());
    }
    let terms = spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .clone();
    for t in terms {
        let reqs = t
            .match_fields
            .iter()
            .flatten()
            .filter(|r| r.key == "metadata.name");
        let reqs = reqs.chain(
            t.match_expressions
                .iter()
                .flatten()
                .filter(|r| r.key == HOSTNAME),
        );
        for r in reqs {
            if let (true, Some([v])) = (r.operator == "In", r.values.as_deref()) {
                return Some(v.clone());
            }
        }
    }
    None
}

struct Controller {
    ctx: Ctx,
    pending: HashMap<String, (Vec<String>, Instant)>,
    failures: HashMap<String, (i32, Instant)>,
}

/// Run until aborted.
pub(crate) async fn run(ctx: Ctx) {
    let jobs_api: Api<Job> = Api::all(ctx.client.clone());
    let pods_api: Api<Pod> = Api::all(ctx.client.clone());
    let (jobs, jw) = reflector::store();
    let (pods, pw) = reflector::store();
    let jobs_feed = reflector(jw, watcher(jobs_api, watcher::Config::default()))
        .default_backoff()
        .for_each(|_| async {});
    let pods_cfg = watcher::Config::default().labels("batch.kubernetes.io/controller-uid");
    let pods_feed = reflector(pw, watcher(pods_api, pods_cfg))
        .default_backoff()
        .for_each(|_| async {});
    let mut c = Controller {
        ctx,
        pending: HashMap::new(),
        failures: HashMap::new(),
    };
    let control = async move {
        if jobs.wait_until_ready().await.is_err() || pods.wait_until_ready().await.is_err() {
            return;
        }
        loop {
            c.pass(&jobs, &pods).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::join!(jobs_feed, pods_feed, control);
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn owned_by(p: &Pod, uid: &str) -> bool {
    p.owner_references()
        .iter()
        .any(|r| r.uid == uid && r.controller == Some(true))
}

fn cond(t: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": t, "status": "True", "lastProbeTime": now, "lastTransitionTime": now, "reason": reason, "message": message})
}

impl Controller {
    async fn pass(&mut self, jobs: &Store<Job>, pods: &Store<Pod>) {
        let all_pods = pods.state();
        for job in jobs.state() {
            let spec = job.spec.as_ref().and_then(|s| s.template.spec.as_ref());
            let target = spec.and_then(pinned_node);
            let mine = match &target {
                Some(n) => *n == self.ctx.node,
                None => self.ctx.opts.accept_unpinned,
            };
            if mine {
                self.reconcile(&job, &all_pods).await;
            }
        }
        // Tracking finalizers of pods whose Job is gone (on this node).
        for p in all_pods.iter().filter(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&self.ctx.node)
        }) {
            let job_alive = p.owner_references().iter().any(|r| {
                jobs.state()
                    .iter()
                    .any(|j| j.uid().as_deref() == Some(&r.uid))
            });
            if !job_alive {
                self.drop_finalizer(p).await;
            }
        }
    }

    async fn drop_finalizer(&self, p: &Pod) {
        let fins = p.finalizers();
        if !fins.iter().any(|f| f == TRACKING) {
            return;
        }
        let kept: Vec<&String> = fins.iter().filter(|f| *f != TRACKING).collect();
        let api: Api<Pod> =
            Api::namespaced(self.ctx.client.clone(), &p.namespace().unwrap_or_default());
        let patch =
            json!({"metadata": {"finalizers": kept, "resourceVersion": p.resource_version()}});
        if let Err(e) = api
            .patch(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::debug!(pod = %p.name_any(), error = %e, "Could not remove the job-tracking finalizer.");
        }
    }

    async fn reconcile(&mut self, job: &Arc<Job>, all_pods: &[Arc<Pod>]) {
        let uid = job.uid().unwrap_or_default();
        let ns = job.namespace().unwrap_or_default();
        let name = job.name_any();
        let Some(spec) = job.spec.clone() else { return };
        let now_t = Timestamp::now();
        let now = timestamp(now_t);
        let pods: Vec<&Arc<Pod>> = all_pods.iter().filter(|p| owned_by(p, &uid)).collect();
        let deleting = |p: &Pod| p.metadata.deletion_timestamp.is_some();
        let terminal = |p: &Pod| matches!(phase(p), "Succeeded" | "Failed");
        let active: Vec<&&Arc<Pod>> = pods
            .iter()
            .filter(|p| !terminal(p) && !deleting(p))
            .collect();
        let terminating = pods.iter().filter(|p| !terminal(p) && deleting(p)).count() as i32;
        let ready = active
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count() as i32;
        let prev = job.status.clone().unwrap_or_default();
        let restarts: i32 = if spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            == Some("OnFailure")
        {
            pods.iter()
                .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
                .flatten()
                .map(|c| c.restart_count)
                .sum()
        } else {
            0
        };
        let succeeded = (pods.iter().filter(|p| phase(p) == "Succeeded").count() as i32)
            .max(prev.succeeded.unwrap_or(0));
        let failed = (pods.iter().filter(|p| phase(p) == "Failed").count() as i32 + restarts)
            .max(prev.failed.unwrap_or(0));
        let mut conditions: Vec<Value> = prev
            .conditions
            .iter()
            .flatten()
            .map(|c| serde_json::to_value(c).unwrap_or_default())
            .collect();
        let has =
            |cs: &[Value], t: &str| cs.iter().any(|c| c["type"] == t && c["status"] == "True");
        let finished = has(&conditions, "Complete") || has(&conditions, "Failed");
        let start = prev.start_time.as_ref().map_or(now_t, |t| t.0);
        let completions = spec.completions.unwrap_or(1);
        let mut completion_time = prev.completion_time.as_ref().map(|t| t.0.to_string());

        // Untrack pods that are counted (terminal) or going away.
        for p in pods.iter().filter(|p| terminal(p) || deleting(p)) {
            self.drop_finalizer(p).await;
        }
        if failed > self.failures.get(&uid).map_or(0, |f| f.0) {
            self.failures.insert(uid.clone(), (failed, Instant::now()));
        }

        if !finished {
            let deadline = spec
                .active_deadline_seconds
                .filter(|d| now_t.duration_since(start).as_secs() >= *d);
            let failure = if deadline.is_some() {
                Some((
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                ))
            } else if failed > spec.backoff_limit.unwrap_or(6) {
                Some((
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ))
            } else {
                None
            };
            if let Some((reason, msg)) = failure {
                if !has(&conditions, "FailureTarget") {
                    conditions.push(cond("FailureTarget", reason, msg, &now));
                }
                self.delete_pods(&ns, &active).await;
                if active.is_empty() && terminating == 0 {
                    conditions.push(cond("Failed", reason, msg, &now));
                }
            } else if succeeded >= completions {
                if !has(&conditions, "SuccessCriteriaMet") {
                    conditions.push(cond(
                        "SuccessCriteriaMet",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                        &now,
                    ));
                }
                self.delete_pods(&ns, &active).await;
                if active.is_empty() && terminating == 0 {
                    conditions.push(cond(
                        "Complete",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                        &now,
                    ));
                    completion_time = Some(now.clone());
                }
            } else if spec.suspend != Some(true) {
                let want = spec.parallelism.unwrap_or(1).min(completions - succeeded)
                    - active.len() as i32;
                self.create_pods(job, want.max(0), &pods).await;
            }
        } else if let Some(ttl) = spec.ttl_seconds_after_finished {
            let finished_at = conditions
                .iter()
                .filter(|c| c["type"] == "Complete" || c["type"] == "Failed")
                .filter_map(|c| parse_date_time(c["lastTransitionTime"].as_str()?))
                .max();
            if finished_at.is_some_and(|t| now_t.duration_since(t).as_secs() >= i64::from(ttl)) {
                let api: Api<Job> = Api::namespaced(self.ctx.client.clone(), &ns);
                if let Err(e) = api.delete(&name, &DeleteParams::background()).await {
                    tracing::debug!(job = %name, error = %e, "TTL deletion failed.");
                }
                return;
            }
        }
        let mut status = json!({
            "active": active.len(),
            "ready": ready,
            "succeeded": succeeded,
            "failed": failed,
            "terminating": terminating,
            "startTime": prev.start_time.as_ref().map_or(now.clone(), |t| t.0.to_string()),
            "uncountedTerminatedPods": {},
            "conditions": conditions,
        });
        if let Some(ct) = completion_time {
            status["completionTime"] = json!(ct);
        }
        let old = serde_json::to_value(&prev).unwrap_or_default();
        let changed = [
            "active",
            "ready",
            "succeeded",
            "failed",
            "terminating",
            "conditions",
            "completionTime",
            "startTime",
        ]
        .iter()
        .any(|k| normalise(&old[*k]) != normalise(&status[*k]));
        if changed {
            let api: Api<Job> = Api::namespaced(self.ctx.client.clone(), &ns);
            if let Err(e) = api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"status": status})),
                )
                .await
            {
                tracing::debug!(job = %name, error = %e, "Job status update failed.");
            }
        }
    }

    async fn delete_pods(&self, ns: &str, pods: &[&&Arc<Pod>]) {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        for p in pods {
            if let Err(e) = api.delete(&p.name_any(), &DeleteParams::background()).await {
                tracing::debug!(pod = %p.name_any(), error = %e, "Pod deletion failed.");
            }
        }
    }

    async fn create_pods(&mut self, job: &Job, want: i32, pods: &[&Arc<Pod>]) {
        let uid = job.uid().unwrap_or_default();
        if let Some((names, since)) = self.pending.get_mut(&uid) {
            names.retain(|n| !pods.iter().any(|p| p.name_any() == *n));
            if !names.is_empty() && since.elapsed() < Duration::from_secs(10) {
                return;
            }
        }
        if self
            .failures
            .get(&uid)
            .is_some_and(|(_, at)| at.elapsed() < self.ctx.opts.job_backoff)
        {
            return;
        }
        let ns = job.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        let mut created = Vec::new();
        for _ in 0..want {
            let pod = match pod_for(job, &self.ctx.node) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(job = %job.name_any(), error = %e, "Job template does not make a pod.");
                    return;
                }
            };
            match api.create(&PostParams::default(), &pod).await {
                Ok(p) => created.push(p.name_any()),
                Err(e) => {
                    tracing::warn!(job = %job.name_any(), error = %e, "Job pod creation failed.")
                }
            }
        }
        if !created.is_empty() {
            self.pending.insert(uid, (created, Instant::now()));
        }
    }
}

fn normalise(v: &Value) -> Value {
    match v {
        Value::Null => json!(0),
        Value::Array(a) if a.is_empty() => json!(0),
        other => other.clone(),
    }
}

/// The pod a Job's controller creates on `node`.
fn pod_for(job: &Job, node: &str) -> Result<Pod, serde_json::Error> {
    let spec = job.spec.clone().unwrap_or_default();
    let meta = spec.template.metadata.clone().unwrap_or_default();
    let mut pod_spec = serde_json::to_value(spec.template.spec.clone().unwrap_or_default())?;
    pod_spec["nodeName"] = json!(node);
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": format!("{}-", job.name_any()),
            "labels": meta.labels,
            "annotations": meta.annotations,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job.name_any(),
                "uid": job.uid(), "controller": true, "blockOwnerDeletion": true}],
            "finalizers": [TRACKING],
        },
        "spec": pod_spec,
    }))
}
