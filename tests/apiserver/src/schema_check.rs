//! Schema checks of the objects a test saw created: built-in kinds with
//! `kubernetes-validate --strict` (the real OpenAPI schemas of a Kubernetes version, offline),
//! custom resources with their CRD's structural schema in strict mode (unknown fields are errors).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::{
    error::{Error, Result},
    resources::Registry,
    schema,
};

/// Kubernetes version the checks use by default.
pub const KUBERNETES_VERSION: &str = "1.33";

/// Write each object to `dir` as `NNN-kind-namespace-name.json` (JSON, so YAML readers keep
/// timestamps as strings); returns the paths.
pub fn dump(objects: &[Value], dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let mut paths = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        let s = |v: &Value| v.as_str().unwrap_or("").to_lowercase();
        let name = format!(
            "{i:03}-{}-{}-{}.json",
            s(&o["kind"]),
            s(&o["metadata"]["namespace"]),
            s(&o["metadata"]["name"])
        );
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(o)
            .map_err(|e| Error::SchemaCheck(format!("encoding an object: {e}")))?;
        std::fs::write(&path, text).map_err(|source| Error::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
        paths.push(path);
    }
    Ok(paths)
}

/// Run `kubernetes-validate --strict --kubernetes-version VERSION` on files; Ok when all pass.
pub fn kubernetes_validate(files: &[PathBuf], version: &str) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "--kubernetes-version", version])
        .args(files)
        .output()
        .map_err(|e| {
            Error::SchemaCheck(format!("cannot run kubernetes-validate ({e}); install it with `pip install kubernetes-validate`"))
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let errors: Vec<&str> = text
        .lines()
        // An unknown kind is only a warning there; here it is an error (a typo in apiVersion or
        // kind, or a custom resource whose CRD was not registered).
        .filter(|l| {
            l.starts_with("ERROR") || l.contains("Traceback") || l.contains("Couldn't find schema")
        })
        .collect();
    if !out.status.success() || !errors.is_empty() {
        return Err(Error::SchemaCheck(format!(
            "kubernetes-validate rejected objects:\n{text}"
        )));
    }
    Ok(())
}

/// Whether `kubernetes-validate` can be run here.
pub fn kubernetes_validate_available() -> bool {
    Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Check objects: custom resources against the CRDs known to `registry` (strict), everything
/// else with kubernetes-validate (kinds it has no schema for are errors).
pub(crate) fn check(objects: &[Value], registry: &Registry, dir: &Path) -> Result<()> {
    let mut builtins = Vec::new();
    let mut problems = Vec::new();
    for o in objects {
        let av = o["apiVersion"].as_str().unwrap_or_default();
        let kind = o["kind"].as_str().unwrap_or_default();
        match registry.find_kind(av, kind) {
            Some(rt) if rt.builtin.is_none() => {
                let Some(s) = &rt.schema else { continue };
                let mut copy = o.clone();
                let out = schema::process_root(&mut copy, s);
                let name = o["metadata"]["name"].as_str().unwrap_or_default();
                for c in out.errors {
                    problems.push(format!("{kind} {name}: {}: {}", c.field, c.message));
                }
                for u in out.unknown {
                    problems.push(format!("{kind} {name}: unknown field {u:?}"));
                }
            }
            // Built-in kinds, served or not (RBAC, Deployments, ...): the real schemas.
            _ => builtins.push(o.clone()),
        }
    }
    let files = dump(&builtins, dir)?;
    if let Err(e) = kubernetes_validate(&files, KUBERNETES_VERSION) {
        problems.push(e.to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::SchemaCheck(problems.join("\n")))
    }
}
