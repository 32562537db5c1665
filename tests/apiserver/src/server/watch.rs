//! Watch: newline-delimited JSON `WatchEvent`s over a chunked response, resumable from a
//! resourceVersion, with bookmarks, streaming-list initial events, selector transitions
//! (an object that stops matching is sent as DELETED) and 410 Gone as an ERROR event.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{body::Body, response::Response};
use bytes::Bytes;
use http::{HeaderValue, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    Shared,
    http::{Req, Target},
    resource::{As, partial_metadata, presentation, selectors},
    table,
};
use crate::{
    ops,
    selectors::{FieldSelector, LabelSelector},
    status::{ApiError, ApiResult},
    store::{ChangeKind, meta_str},
};

struct Watch {
    target: Target,
    labels: LabelSelector,
    fields: FieldSelector,
    bookmarks: bool,
    presentation: As,
    include_object: String,
}

impl Watch {
    fn matches(&self, obj: &Value) -> bool {
        let ns_ok = match (&self.target.ns, self.target.rt.namespaced) {
            (Some(ns), true) => meta_str(obj, "namespace") == ns,
            _ => true,
        };
        ns_ok && self.labels.matches(obj) && self.fields.matches(obj)
    }

    fn line(&self, kind: &str, obj: &Value) -> Bytes {
        let obj = ops::present(&self.target.rt, obj);
        let obj = match self.presentation {
            As::Full => obj,
            As::Metadata => partial_metadata(&obj),
            As::Table => {
                let rv = meta_str(&obj, "resourceVersion").to_string();
                table::table(
                    &self.target.rt,
                    &[Arc::new(obj)],
                    &rv,
                    None,
                    &self.include_object,
                )
            }
        };
        Bytes::from(format!("{}\n", json!({"type": kind, "object": obj})))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.target.rt.kind, "apiVersion": self.target.rt.api_version(), "metadata": meta});
        Bytes::from(format!("{}\n", json!({"type": "BOOKMARK", "object": obj})))
    }
}

fn gone_line(rv: u64, compacted: u64) -> Bytes {
    let status =
        ApiError::gone(format!("too old resource version: {rv} ({compacted})")).to_status();
    Bytes::from(format!("{}\n", json!({"type": "ERROR", "object": status})))
}

/// Start a watch; the response streams until the timeout, the client leaves, or the server
/// closes watches.
pub(crate) fn start(sh: &Arc<Shared>, t: &Target, req: &Req) -> ApiResult<Response> {
    let (labels, fields) = selectors(t, req)?;
    let send_initial = req.flag("sendInitialEvents");
    let bookmarks = req.flag("allowWatchBookmarks");
    if send_initial && !bookmarks {
        return Err(ApiError::invalid(
            &t.rt,
            "",
            vec![crate::status::Cause::forbidden(
                "allowWatchBookmarks",
                "sendInitialEvents requires setting allowWatchBookmarks to true",
            )],
        ));
    }
    let from: Option<u64> = match req.q("resourceVersion") {
        None | Some("0") => None,
        Some(rv) => Some(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let timeout = req
        .q("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let w = Watch {
        target: t.clone(),
        labels,
        fields,
        bookmarks,
        presentation: presentation(req),
        include_object: req.q("includeObject").unwrap_or("Metadata").to_string(),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(run(sh.clone(), w, from, send_initial, timeout, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

async fn run(
    sh: Arc<Shared>,
    w: Watch,
    from: Option<u64>,
    send_initial: bool,
    timeout: Option<Duration>,
    tx: mpsc::Sender<Bytes>,
) {
    let mut changes = sh.store.subscribe();
    let mut epoch = sh.store.subscribe_epoch();
    epoch.mark_unchanged();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    // Initial state.
    let (mut last, initial) = {
        let st = sh.store.read();
        match from {
            Some(rv) => (rv, vec![]),
            None => {
                let ns = if w.target.rt.namespaced {
                    w.target.ns.as_deref()
                } else {
                    None
                };
                let objs: Vec<Bytes> = st
                    .list(&w.target.rt.key(), ns)
                    .iter()
                    .filter(|o| w.matches(o))
                    .map(|o| w.line("ADDED", o))
                    .collect();
                (st.rv, objs)
            }
        }
    };
    for line in initial {
        if tx.send(line).await.is_err() {
            return;
        }
    }
    if send_initial && tx.send(w.bookmark(last, true)).await.is_err() {
        return;
    }
    let mut ticker = tokio::time::interval(sh.opts.bookmark_interval);
    ticker.tick().await;
    loop {
        let lines = {
            let st = sh.store.read();
            match st.changes_since(last) {
                Err(compacted) => Err(gone_line(last, compacted)),
                Ok(cs) => {
                    let mut lines = Vec::new();
                    for c in cs.iter().filter(|c| c.key == w.target.rt.key()) {
                        let now = w.matches(&c.object);
                        let before = c.old.as_deref().is_some_and(|o| w.matches(o));
                        let kind = match (c.kind, before, now) {
                            (ChangeKind::Deleted, true, _) => Some("DELETED"),
                            (ChangeKind::Deleted, false, _) => None,
                            (_, true, true) => Some("MODIFIED"),
                            (_, false, true) => Some("ADDED"),
                            (ChangeKind::Modified, true, false) => Some("DELETED"),
                            _ => None,
                        };
                        if let Some(k) = kind {
                            lines.push(w.line(k, &c.object));
                        }
                    }
                    last = st.rv;
                    Ok(lines)
                }
            }
        };
        let lines = match lines {
            Ok(lines) => lines,
            Err(gone) => {
                let _ = tx.send(gone).await;
                return;
            }
        };
        for line in lines {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = epoch.changed() => return,
            _ = sleep => return,
            _ = tx.closed() => return,
            _ = ticker.tick(), if w.bookmarks => {
                if tx.send(w.bookmark(last, false)).await.is_err() {
                    return;
                }
            }
        }
    }
}
