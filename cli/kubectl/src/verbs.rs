//! Each verb: parse → backend calls → a view printed to stdout.

use std::path::PathBuf;

use clap::CommandFactory;
use jiff::Timestamp;
use kube::ResourceExt;
use nightcap_api::{PacketCapture, quantity::format_duration};
use serde::Serialize;

use crate::{
    PluginCli, Verb,
    args::{DryRun, GetArgs, Kind, ManifestOutput, Output},
    backend::Backend,
    download,
    error::{Error, Result},
    view::{describe::describe, human_bytes, table},
    watch, zipfile,
};

const KIND: &str = "packetcapture.nightcap.dev";

/// Runs one verb; `Ok(code)` is the exit code.
pub async fn run(verb: Verb) -> Result<i32> {
    match verb {
        Verb::Create(a) => {
            if a.dry_run == Some(DryRun::Client) {
                let ns = match &a.conn.namespace {
                    Some(ns) => ns.clone(),
                    None => match Backend::connect(&a.conn).await {
                        Ok(b) => b.namespace().to_string(),
                        Err(_) => "default".into(),
                    },
                };
                let pc = crate::create::build(&a, &ns, Timestamp::now())?;
                return print_manifest(&pc, a.output);
            }
            let backend = Backend::connect(&a.conn).await?;
            let ns = backend.namespace().to_string();
            let pc = crate::create::build(&a, &ns, Timestamp::now())?;
            let made = backend.create(&pc).await?;
            println!("{KIND}/{} created", made.name_any());
            if !a.watch {
                return Ok(0);
            }
            Ok(watch::watch(&backend, &ns, &a.name).await?.exit_code())
        }
        Verb::Get(a) => get(a).await,
        Verb::Describe(a) => {
            let backend = Backend::connect(&a.conn).await?;
            let ns = backend.namespace().to_string();
            let pc = backend.get(&ns, &a.name).await?;
            let events = backend.events(&ns, &a.name).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "Cannot read the capture's Events.");
                Vec::new()
            });
            print!("{}", describe(&pc, &events, Timestamp::now()));
            Ok(0)
        }
        Verb::Watch(a) => {
            let backend = Backend::connect(&a.conn).await?;
            let ns = backend.namespace().to_string();
            backend.get(&ns, &a.name).await?;
            Ok(watch::watch(&backend, &ns, &a.name).await?.exit_code())
        }
        Verb::Download(a) => {
            let backend = Backend::connect(&a.conn).await?;
            let ns = backend.namespace().to_string();
            let gw = backend.gateway(&a.conn).await?;
            let dir = a.dir.clone().unwrap_or_else(|| PathBuf::from(&a.name));
            if a.zip {
                let (path, entries) = zipfile::download_zip(&gw, &ns, &a.name, &dir).await?;
                println!(
                    "Downloaded {} ({entries} files, every SHA-256 checked).",
                    path.display()
                );
                println!(
                    "Unpack it with:\n  unzip -d {} {}",
                    dir.display(),
                    path.display()
                );
                return Ok(0);
            }
            let s = download::download(&gw, &ns, &a.name, &dir, a.parallel).await?;
            println!(
                "Downloaded {} file{} ({}, {} resumed) to {}; {} already present and intact.",
                s.fetched,
                if s.fetched == 1 { "" } else { "s" },
                human_bytes(s.bytes),
                s.resumed,
                dir.display(),
                s.skipped
            );
            println!("{}", download::open_hint(&dir, &a.name, &s.paths));
            Ok(0)
        }
        Verb::Stop(a) => {
            let backend = Backend::connect(&a.conn).await?;
            let ns = backend.namespace().to_string();
            backend.stop(&ns, &a.name, &a.reason).await?;
            println!("{KIND}/{} stopped (files kept)", a.name);
            Ok(0)
        }
        Verb::Delete(a) => {
            let backend = Backend::connect(&a.conn).await?;
            let ns = backend.namespace().to_string();
            backend.delete(&ns, &a.name, a.keep_files).await?;
            println!("{KIND}/{} deleted", a.name);
            Ok(0)
        }
        Verb::Link(a) => {
            let backend = Backend::connect(&a.conn).await?;
            let ns = backend.namespace().to_string();
            let gw = backend.gateway(&a.conn).await?;
            let link = gw.link(&ns, &a.name, &format_duration(a.expires)).await?;
            println!("{}", link.url);
            eprintln!("Valid until {}.", link.expires_at);
            Ok(0)
        }
        Verb::Version => {
            println!("kubectl-nightcap version {}", env!("CARGO_PKG_VERSION"));
            println!("API: {}/{}", nightcap_api::GROUP, nightcap_api::VERSION);
            Ok(0)
        }
        Verb::Completion(a) => {
            let mut cmd = PluginCli::command();
            clap_complete::generate(
                a.shell,
                &mut cmd,
                "kubectl-nightcap",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
    }
}

async fn get(a: GetArgs) -> Result<i32> {
    let (kind, name) = match a.what.as_slice() {
        [] => (Kind::Captures, None),
        [w] => match Kind::parse(w) {
            Some(k) => (k, None),
            None => (Kind::Captures, Some(w.clone())),
        },
        [w, n] => (
            Kind::parse(w).ok_or_else(|| Error::Usage(format!("unknown resource {w:?}")))?,
            Some(n.clone()),
        ),
        _ => {
            return Err(Error::Usage(
                "get takes at most a resource and a name".into(),
            ));
        }
    };
    let backend = Backend::connect(&a.conn).await?;
    let ns = (!a.all_namespaces).then(|| backend.namespace().to_string());
    let sel = a.selector.as_deref();
    let now = Timestamp::now();
    let output = a.output;
    let one = name.is_some();
    let (text, values, kind_name) = match kind {
        Kind::Captures => {
            let items = match &name {
                Some(n) => vec![backend.get(ns.as_deref().unwrap_or("default"), n).await?],
                None => backend.list(ns.as_deref(), sel).await?,
            };
            let rows = table::capture_rows(&items, output == Some(Output::Wide), ns.is_none(), now);
            (table::render(&rows), to_values(&items)?, KIND)
        }
        Kind::Triggers => {
            let items = filter_named(backend.triggers(ns.as_deref(), sel).await?, &name)?;
            let rows = table::trigger_rows(&items, ns.is_none(), now);
            (
                table::render(&rows),
                to_values(&items)?,
                "capturetrigger.nightcap.dev",
            )
        }
        Kind::Schedules => {
            let items = filter_named(backend.schedules(ns.as_deref(), sel).await?, &name)?;
            let rows = table::schedule_rows(&items, ns.is_none(), now);
            (
                table::render(&rows),
                to_values(&items)?,
                "captureschedule.nightcap.dev",
            )
        }
    };
    match output {
        None | Some(Output::Wide) => {
            if text.is_empty() {
                match &ns {
                    Some(ns) => eprintln!("No resources found in {ns} namespace."),
                    None => eprintln!("No resources found"),
                }
            }
            print!("{text}");
        }
        Some(Output::Name) => {
            for v in &values {
                println!(
                    "{kind_name}/{}",
                    v["metadata"]["name"].as_str().unwrap_or_default()
                );
            }
        }
        Some(Output::Json | Output::Yaml) => {
            let doc = match (one, values.as_slice()) {
                (true, [v]) => v.clone(),
                _ => serde_json::json!({
                    "apiVersion": "v1", "kind": "List",
                    "metadata": {"resourceVersion": ""}, "items": values,
                }),
            };
            print_doc(&doc, output == Some(Output::Json))?;
        }
    }
    Ok(0)
}

fn filter_named<K: kube::Resource>(items: Vec<K>, name: &Option<String>) -> Result<Vec<K>> {
    let Some(n) = name else { return Ok(items) };
    let found: Vec<K> = items
        .into_iter()
        .filter(|i| i.meta().name.as_ref() == Some(n))
        .collect();
    if found.is_empty() {
        return Err(Error::Server {
            reason: "NotFound".into(),
            message: format!("{n:?} not found"),
            code: 404,
            hint: None,
        });
    }
    Ok(found)
}

fn to_values<T: Serialize>(items: &[T]) -> Result<Vec<serde_json::Value>> {
    items
        .iter()
        .map(|i| serde_json::to_value(i).map_err(|e| Error::Config(format!("encoding: {e}"))))
        .collect()
}

fn print_doc(doc: &serde_json::Value, json: bool) -> Result<i32> {
    let text = if json {
        serde_json::to_string_pretty(doc)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string())
    } else {
        serde_yaml::to_string(doc).map_err(|e| e.to_string())
    }
    .map_err(|e| Error::Config(format!("encoding: {e}")))?;
    print!("{text}");
    Ok(0)
}

fn print_manifest(pc: &PacketCapture, output: Option<ManifestOutput>) -> Result<i32> {
    match output {
        None | Some(ManifestOutput::Name) => {
            println!("{KIND}/{} created (dry run)", pc.name_any());
            Ok(0)
        }
        Some(o) => {
            let v =
                serde_json::to_value(pc).map_err(|e| Error::Config(format!("encoding: {e}")))?;
            print_doc(&v, o == ManifestOutput::Json)
        }
    }
}

/// The error as kubectl prints it, with its hint.
pub fn error_text(e: &Error) -> String {
    let mut s = match e {
        Error::Invalid { name, errors } => {
            let mut s = format!("error: The PacketCapture {name:?} is invalid:");
            for fe in &errors.0 {
                s.push_str(&format!("\n* {}: {}", fe.path, fe.message));
            }
            s
        }
        other => other.to_string(),
    };
    if let Some(h) = e.hint() {
        s.push('\n');
        s.push_str(h);
    }
    s
}
