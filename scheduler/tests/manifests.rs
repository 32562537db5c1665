//! The manifests in `manifests/` are valid Kubernetes 1.33 objects, and the scheduler
//! Deployment only uses flags and environment variables `nightcap scheduler` knows.

use std::{path::PathBuf, process::Command};

use clap::{CommandFactory, Parser};
use nightcap_scheduler::SchedulerArgs;
use serde::Deserialize as _;

#[derive(Debug, Parser)]
struct Scheduler {
    #[command(flatten)]
    args: SchedulerArgs,
}

fn manifests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

fn yaml_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests_dir())
        .expect("manifests/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        // The kustomization is not an object; tests/apiserver/tests/install.rs checks the
        // whole install it lists.
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn manifests_pass_kubernetes_validate_strict() {
    let files = yaml_files();
    assert!(
        files.len() >= 4,
        "expected the scheduler, capture, gateway and namespace manifests: {files:?}"
    );
    for file in files {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "-k", "1.33.0"])
            .arg(&file)
            .output()
            .expect("kubernetes-validate must be installed (pip install kubernetes-validate)");
        assert!(
            out.status.success(),
            "{} is not valid for Kubernetes 1.33:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn scheduler_deployment_uses_known_flags_and_env() {
    let text =
        std::fs::read_to_string(manifests_dir().join("scheduler.yaml")).expect("scheduler.yaml");
    let deployment = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("YAML document"))
        .find(|doc| doc["kind"] == "Deployment")
        .expect("a Deployment in scheduler.yaml");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect();
    assert_eq!(args[0], "scheduler");
    let parsed = Scheduler::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert_eq!(parsed.args.metrics_addr.port(), 9090);
    let port = container["ports"][0]["containerPort"]
        .as_u64()
        .expect("port");
    assert_eq!(port, 9090, "the metrics port matches --metrics-addr");
    let known: Vec<String> = Scheduler::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    for env in container["env"].as_sequence().expect("env") {
        let name = env["name"].as_str().expect("env name");
        assert!(
            name == "RUST_LOG" || known.iter().any(|k| k == name),
            "{name} is not read by nightcap scheduler"
        );
    }
}
