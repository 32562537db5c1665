//! The documents of a kustomize base, for tests that load the install (`manifests/`) into a
//! [`Policy`](crate::Policy) or check its objects.
//!
//! This is a plain reader, not a kustomize implementation: it follows `resources:` (YAML files,
//! and directories with their own `kustomization.yaml`) and returns the documents as written. It
//! refuses every other kustomization field that would change documents (patches, generators,
//! components, name prefixes, namespaces, …), so what it returns is what `kubectl kustomize`
//! renders — except `images:`, which only sets image tags and is accepted but not applied.

use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::Value;

use crate::error::{Error, Result};

/// Kustomization fields the reader understands. `images` is accepted and not applied.
const KNOWN_FIELDS: [&str; 4] = ["apiVersion", "kind", "resources", "images"];

fn problem(path: &Path, reason: impl Into<String>) -> Error {
    Error::Manifest {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Every document of the base in `dir` (its `kustomization.yaml` and what its `resources:` name,
/// recursively), in the order kustomize lists them in the kustomization. Empty documents are
/// skipped.
pub fn install_documents(dir: &Path) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    read_base(dir, &mut docs, &mut Vec::new())?;
    Ok(docs)
}

fn read_base(dir: &Path, docs: &mut Vec<Value>, seen: &mut Vec<PathBuf>) -> Result<()> {
    let file = dir.join("kustomization.yaml");
    let canonical = file.canonicalize().map_err(|e| {
        problem(
            &file,
            format!("cannot read it ({e}); a base directory needs a kustomization.yaml"),
        )
    })?;
    if seen.contains(&canonical) {
        return Err(problem(&file, "is included twice (a resource cycle?)"));
    }
    seen.push(canonical);
    let k = read_documents(&file)?
        .into_iter()
        .next()
        .ok_or_else(|| problem(&file, "is empty"))?;
    if k["kind"] != "Kustomization" {
        return Err(problem(
            &file,
            format!(
                "has kind {}, not Kustomization (components are not read; render them with \
                 kubectl kustomize)",
                k["kind"]
            ),
        ));
    }
    if let Some(fields) = k.as_object() {
        for field in fields.keys() {
            if !KNOWN_FIELDS.contains(&field.as_str()) {
                return Err(problem(
                    &file,
                    format!(
                        "uses `{field}`, which this reader does not apply (it follows \
                         `resources:` only); render it with kubectl kustomize instead"
                    ),
                ));
            }
        }
    }
    for entry in k["resources"].as_array().into_iter().flatten() {
        let name = entry
            .as_str()
            .ok_or_else(|| problem(&file, format!("resources: {entry} is not a path")))?;
        let path = dir.join(name);
        if path.is_dir() {
            read_base(&path, docs, seen)?;
        } else if path.is_file()
            && path
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            docs.extend(read_documents(&path)?);
        } else {
            return Err(problem(
                &file,
                format!(
                    "resources: {name:?} is neither a YAML file nor a directory with a \
                     kustomization.yaml (URLs and remote bases are not read)"
                ),
            ));
        }
    }
    Ok(())
}

fn read_documents(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: format!("reading {}", path.display()),
        source,
    })?;
    let mut docs = Vec::new();
    for d in serde_yaml::Deserializer::from_str(&text) {
        let v = Value::deserialize(d).map_err(|e| problem(path, format!("invalid YAML: {e}")))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    const K: &str = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n";

    #[test]
    fn follows_files_and_nested_bases() {
        let d = tempfile::tempdir().expect("tempdir");
        write(
            d.path(),
            "kustomization.yaml",
            &format!("{K}resources: [a.yaml, sub]\nimages: [{{name: x, newTag: '1'}}]\n"),
        );
        write(d.path(), "a.yaml", "kind: A\n---\n---\nkind: B\n");
        write(
            d.path(),
            "sub/kustomization.yaml",
            &format!("{K}resources: [c.yml]\n"),
        );
        write(d.path(), "sub/c.yml", "kind: C\n");
        let kinds: Vec<String> = install_documents(d.path())
            .expect("read")
            .iter()
            .map(|v| v["kind"].as_str().expect("kind").to_string())
            .collect();
        assert_eq!(kinds, ["A", "B", "C"]);
    }

    #[test]
    fn refuses_what_it_would_not_apply() {
        let cases = [
            (format!("{K}namePrefix: x-\n"), "uses `namePrefix`"),
            (
                format!("{K}resources: [missing.yaml]\n"),
                "neither a YAML file",
            ),
            (
                format!("{K}resources: [https://example.invalid/base]\n"),
                "URLs and remote bases",
            ),
            (
                format!("{K}resources: [notes.txt]\n"),
                "neither a YAML file",
            ),
            (
                format!("{K}resources: [sub]\n"),
                "needs a kustomization.yaml",
            ),
            (format!("{K}resources: [.]\n"), "included twice"),
            (
                "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n".to_string(),
                "not Kustomization",
            ),
        ];
        for (kustomization, want) in cases {
            let d = tempfile::tempdir().expect("tempdir");
            write(d.path(), "kustomization.yaml", &kustomization);
            write(d.path(), "notes.txt", "hello");
            std::fs::create_dir_all(d.path().join("sub")).expect("mkdir");
            let err = install_documents(d.path())
                .expect_err(&kustomization)
                .to_string();
            assert!(err.contains(want), "{kustomization:?}: {err}");
        }
        let err = install_documents(Path::new("/nonexistent-dir"))
            .expect_err("no dir")
            .to_string();
        assert!(err.contains("needs a kustomization.yaml"), "{err}");
    }
}
