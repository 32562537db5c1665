//! The `kubectl-nightcap` binary as kubectl runs it (`kubectl nightcap …` execs it).

use std::process::{Command, Output};

use clap::CommandFactory;

fn plugin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-nightcap"))
        .args(args)
        .env_clear()
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("kubectl-nightcap runs")
}

fn text(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn version_and_completions() {
    assert!(text(&plugin(&["version"])).starts_with("kubectl-nightcap version "));
    for shell in ["bash", "zsh", "fish"] {
        let script = text(&plugin(&["completion", shell]));
        assert!(
            script.contains("kubectl-nightcap") && script.contains("download"),
            "{shell}"
        );
    }
}

#[test]
fn dry_run_needs_no_cluster() {
    let out = text(&plugin(&[
        "create",
        "web",
        "-n",
        "team-a",
        "-l",
        "app=web",
        "--duration",
        "90s",
        "--dry-run=client",
        "-o",
        "json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON manifest");
    assert_eq!(v["kind"], "PacketCapture");
    assert_eq!(v["metadata"]["namespace"], "team-a");
    assert_eq!(v["spec"]["duration"], "1m30s");
}

#[test]
fn errors_read_like_kubectl_and_exit_1() {
    let out = plugin(&["get"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: cannot read the kubeconfig"),
        "{err}"
    );
    let out = plugin(&["get", "--server", "http://127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"));
}

#[test]
fn help_is_one_short_line_per_flag() {
    let cmd = nightcap_kubectl::PluginCli::command();
    for sub in cmd.get_subcommands() {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        assert!(
            !about.is_empty() && about.chars().count() <= 79,
            "{}: {about:?}",
            sub.get_name()
        );
        for arg in sub.get_arguments() {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                !help.is_empty(),
                "{} --{} has no help",
                sub.get_name(),
                arg.get_id()
            );
            assert!(
                !help.contains('\n') && help.chars().count() <= 79,
                "{}: {help:?}",
                arg.get_id()
            );
        }
    }
}

#[test]
fn kubectl_finds_and_runs_the_plugin() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("SKIP: kubectl is not on PATH");
        return;
    }
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-nightcap"));
    let dir = exe.parent().expect("binary directory");
    let path = std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("PATH");
    let out = Command::new("kubectl")
        .args(["nightcap", "version"])
        .env("PATH", path)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("kubectl runs");
    assert!(text(&out).starts_with("kubectl-nightcap version "));
}
