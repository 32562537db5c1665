//! The user's kubeconfig, as kubectl reads it: `--kubeconfig`, else `KUBECONFIG` (merged), else
//! `~/.kube/config`; `--context`; the context's namespace. The user's own bearer token goes to
//! the gateway.

use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::{
    args::ConnArgs,
    error::{Error, Result},
};

/// A loaded kubeconfig context.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The kube client configuration.
    pub config: kube::Config,
    /// The namespace to use (`-n`, else the context's, else `default`).
    pub namespace: String,
}

/// Loads the kubeconfig the flags name.
pub async fn load(conn: &ConnArgs) -> Result<Loaded> {
    let kubeconfig = match &conn.kubeconfig {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    }
    .map_err(|e| Error::Config(format!("cannot read the kubeconfig: {e}")))?;
    let opts = KubeConfigOptions {
        context: conn.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &opts)
        .await
        .map_err(|e| Error::Config(format!("kubeconfig: {e}")))?;
    let namespace = conn
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok(Loaded { config, namespace })
}

/// The bearer token of the kubeconfig's user: static, from a file, or from an exec plugin.
pub async fn bearer_token(auth: &AuthInfo) -> Result<String> {
    if let Some(t) = &auth.token {
        return Ok(t.expose_secret().to_string());
    }
    if let Some(f) = &auth.token_file {
        return std::fs::read_to_string(f)
            .map(|t| t.trim().to_string())
            .map_err(|e| Error::io(f, e));
    }
    if let Some(exec) = &auth.exec {
        let command = exec
            .command
            .clone()
            .ok_or_else(|| Error::Config("the kubeconfig's exec plugin has no command".into()))?;
        let mut cmd = tokio::process::Command::new(&command);
        cmd.args(exec.args.iter().flatten());
        for pair in exec.env.iter().flatten() {
            if let (Some(k), Some(v)) = (pair.get("name"), pair.get("value")) {
                cmd.env(k, v);
            }
        }
        let out = cmd
            .stderr(std::process::Stdio::inherit())
            .output()
            .await
            .map_err(|e| Error::Config(format!("running the exec plugin {command}: {e}")))?;
        if !out.status.success() {
            return Err(Error::Config(format!(
                "the exec plugin {command} failed ({})",
                out.status
            )));
        }
        return exec_token(&out.stdout)
            .ok_or_else(|| Error::Config(format!("the exec plugin {command} returned no token")));
    }
    if auth.client_certificate.is_some() || auth.client_certificate_data.is_some() {
        return Err(Error::Config(
            "this kubeconfig user signs in with a client certificate, which the nightcap gateway \
             cannot check. Use a token: pass --token \"$(kubectl create token NAME -n NS)\" or set \
             NIGHTCAP_TOKEN (see runbooks/kubectl-plugin.md)"
                .into(),
        ));
    }
    Err(Error::Config(
        "the kubeconfig user has no token for the gateway; pass --token or set NIGHTCAP_TOKEN"
            .into(),
    ))
}

/// `status.token` of an ExecCredential.
fn exec_token(stdout: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Cred {
        status: Option<Status>,
    }
    #[derive(Deserialize)]
    struct Status {
        token: Option<String>,
    }
    serde_json::from_slice::<Cred>(stdout).ok()?.status?.token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_credential_token() {
        let out = br#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","status":{"token":"abc"}}"#;
        assert_eq!(exec_token(out).as_deref(), Some("abc"));
        assert_eq!(exec_token(b"{}"), None);
    }

    #[tokio::test]
    async fn tokens_from_every_kind_of_user() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").expect("write");
        let by_file = AuthInfo {
            token_file: Some(file.display().to_string()),
            ..AuthInfo::default()
        };
        assert_eq!(bearer_token(&by_file).await.expect("token"), "from-file");
        let script = dir.path().join("cred.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\necho '{\"status\":{\"token\":\"from-exec-'$1'\"}}'\n",
        )
        .expect("write");
        let by_exec: AuthInfo = serde_yaml::from_str(&format!(
            "exec:\n  apiVersion: client.authentication.k8s.io/v1\n  command: /bin/sh\n  args: [{}, x]\n",
            script.display()
        ))
        .expect("auth info");
        assert_eq!(bearer_token(&by_exec).await.expect("token"), "from-exec-x");
        let by_cert = AuthInfo {
            client_certificate_data: Some("Y2VydA==".into()),
            ..AuthInfo::default()
        };
        let err = bearer_token(&by_cert)
            .await
            .expect_err("no token")
            .to_string();
        assert!(
            err.contains("client certificate") && err.contains("--token"),
            "{err}"
        );
    }
}
