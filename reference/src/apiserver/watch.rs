//! `?watch=true`: a stream of `{"type": ..., "object": ...}` lines, one per change.
//!
//! A watch names where to start with `resourceVersion`:
//! - absent or `"0"`: the current objects first, as `ADDED` events, then every change;
//! - `N`: every change after revision `N` (a revision older than the store's history
//!   window gets one `ERROR` event with a 410 `Expired` Status, and the client relists);
//! - with `sendInitialEvents=true`, the current objects first, then a `BOOKMARK` annotated
//!   `k8s.io/initial-events-end`.
//!
//! Label and field selectors apply to each change: an object that stops matching is sent as
//! `DELETED`, one that starts matching as `ADDED`, as Kubernetes does. With
//! `allowWatchBookmarks=true`, a `BOOKMARK` carrying the current revision is sent now and
//! then, so a client can resume without replaying what it has seen.

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::resources::{Query, from_record, selectors};
use super::status::{ApiError, from_store};
use super::{Body, Shared, table};
use crate::api::Resource;
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::store::{Event, EventKind, Store};

/// How often a bookmark is sent to clients that allow them.
const BOOKMARK_EVERY: Duration = Duration::from_secs(10);
/// How long a watch lasts when the client does not say (Kubernetes picks 30 to 60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches_object(obj)
    }
}

/// Starts a watch; the response streams until the client goes away or the timeout passes.
pub(super) fn serve(
    shared: &Shared,
    r: &'static Resource,
    ns: Option<&str>,
    query: &Query,
    as_table: bool,
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(query)?;
    let filter = Filter { labels, fields };
    let out = Output { r, as_table };
    let flag = |k: &str| query.get(k).is_some_and(|v| v == "true" || v == "1");
    let bookmarks = flag("allowWatchBookmarks");
    let initial_events = flag("sendInitialEvents");
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::BadRequest(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        None => DEFAULT_TIMEOUT,
    };
    let rv = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let prefix = r.prefix(ns);
    let store = shared.store.clone();

    // Where to start, and which objects to announce first.
    let (start, initial) = match (rv, initial_events) {
        (Some(rv), false) => (rv, Vec::new()),
        _ => {
            let (records, revision) = store.list(&prefix).map_err(|e| from_store(e, r, ""))?;
            let mut objs = Vec::new();
            for (_, rec) in &records {
                let obj = from_record(rec)?;
                if filter.matches(&obj) {
                    objs.push(obj);
                }
            }
            (revision, objs)
        }
    };

    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let stream = async {
            for obj in initial {
                send(&tx, "ADDED", out.object(obj)).await?;
            }
            if initial_events {
                let mut bm = bookmark(r, start);
                bm["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                send(&tx, "BOOKMARK", bm).await?;
            }
            follow(&store, &out, &prefix, start, &filter, &tx, bookmarks).await
        };
        tokio::select! {
            _ = stream => {}
            _ = tokio::time::sleep(timeout) => {}
            _ = tx.closed() => {}
        }
    });
    let body = StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    }));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(BodyExt::boxed(body))
        .map_err(|e| ApiError::Internal(format!("failed to build the watch response: {e}")))
}

fn bookmark(r: &Resource, revision: u64) -> Value {
    json!({
        "kind": r.kind,
        "apiVersion": r.api_version(),
        "metadata": {"resourceVersion": revision.to_string()},
    })
}

/// Sends one event line; `Err` once the client is gone.
async fn send(tx: &mpsc::Sender<Bytes>, kind: &str, object: Value) -> Result<(), ()> {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).map_err(|_| ())?;
    line.push(b'\n');
    tx.send(Bytes::from(line)).await.map_err(|_| ())
}

/// How event objects are written: as they are, or as one-row Tables for kubectl.
struct Output {
    r: &'static Resource,
    as_table: bool,
}

impl Output {
    fn object(&self, obj: Value) -> Value {
        if self.as_table {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_owned);
            table::table(self.r, std::slice::from_ref(&obj), rv.as_deref())
        } else {
            obj
        }
    }
}

async fn follow(
    store: &Store,
    out: &Output,
    prefix: &str,
    start: u64,
    filter: &Filter,
    tx: &mpsc::Sender<Bytes>,
    bookmarks: bool,
) -> Result<(), ()> {
    let r = out.r;
    let mut watch = match store.watch(prefix, start) {
        Ok(w) => w,
        Err(e) => {
            let status = from_store(e, r, "").status();
            return send(tx, "ERROR", status).await;
        }
    };
    let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick(), if bookmarks => {
                send(tx, "BOOKMARK", bookmark(r, watch.revision())).await?;
            }
            next = watch.next() => {
                match next {
                    None => return Ok(()),
                    Some(Err(e)) => {
                        let status = from_store(e, r, "").status();
                        return send(tx, "ERROR", status).await;
                    }
                    Some(Ok(event)) => {
                        if let Some((kind, obj)) = translate(&event, filter) {
                            send(tx, kind, out.object(obj)).await?;
                        }
                    }
                }
            }
        }
    }
}

/// The watch event a store event becomes for this filter, if any.
fn translate(event: &Event, filter: &Filter) -> Option<(&'static str, Value)> {
    let now = from_record(&event.record).ok()?;
    let before = event
        .previous
        .as_ref()
        .and_then(|p| from_record(p).ok())
        .filter(|p| filter.matches(p));
    match event.kind {
        EventKind::Delete => before.map(|_| ("DELETED", now)),
        EventKind::Put => match (before.is_some(), filter.matches(&now)) {
            (false, true) => Some(("ADDED", now)),
            (true, true) => Some(("MODIFIED", now)),
            (true, false) => Some(("DELETED", now)),
            (false, false) => None,
        },
    }
}
