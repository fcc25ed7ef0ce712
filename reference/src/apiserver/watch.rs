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
//!
//! **One decode per change, not one per watch.** Every watch reads the store's history for
//! itself, so a slow client never holds up the others. What each change becomes on the
//! wire is made once and shared ([`DecodedEvents`]), as kube-apiserver's watch cache shares
//! its objects and their serializations: a thousand pod watches would otherwise decode
//! every pod change two thousand times (the object and what it was, for the selectors) and
//! encode it a thousand times, and at a thousand watches that was most of the apiserver's
//! work.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::form::{self, Form};
use super::resources::{Query, from_record, parse_rv, selectors};
use super::status::{ApiError, from_store};
use super::{Body, Shared};
use crate::api::Resource;
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::store::{Event, EventKind};

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

/// How many of the newest revisions [`DecodedEvents`] keeps. Watches that keep up read
/// within a few revisions of the newest; one further behind decodes for itself.
const DECODED_REVISIONS: usize = 512;

/// The newest store events as watches send them, decoded once for every watch.
#[derive(Default)]
pub(crate) struct DecodedEvents {
    recent: Mutex<RecentDecoded>,
}

/// One event's decoding, made by the first watch that needs it; `None` if the stored object
/// is not JSON (a watch skips such an event, as it always has).
type Slot = Arc<OnceLock<Option<Decoded>>>;

#[derive(Default)]
struct RecentDecoded {
    /// By revision; a revision that wrote several keys has one entry per key.
    by_revision: HashMap<u64, Vec<(String, Slot)>>,
    /// The revisions held, oldest first.
    order: VecDeque<u64>,
}

/// A store event decoded: the object now (with its `resourceVersion`), what it was before,
/// and the object's JSON, made by the first watch that sends it.
struct Decoded {
    now: Value,
    before: Option<Value>,
    json: OnceLock<Bytes>,
}

impl DecodedEvents {
    /// `event` decoded, shared with every other watch that reads it.
    fn get(&self, event: &Event) -> Slot {
        let slot = {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            recent.slot(event.revision(), &event.key)
        };
        // Decoded outside the lock; a second watch wanting it meanwhile waits for this one.
        slot.get_or_init(|| Decoded::from_event(event));
        slot
    }
}

impl RecentDecoded {
    fn slot(&mut self, revision: u64, key: &str) -> Slot {
        let mut held = self.by_revision.get(&revision).into_iter().flatten();
        if let Some((_, slot)) = held.find(|(k, _)| k == key) {
            return slot.clone();
        }
        let slot = Arc::new(OnceLock::new());
        let slots = self.by_revision.entry(revision).or_default();
        if slots.is_empty() {
            self.order.push_back(revision);
        }
        slots.push((key.to_owned(), slot.clone()));
        while self.order.len() > DECODED_REVISIONS
            && let Some(oldest) = self.order.pop_front()
        {
            self.by_revision.remove(&oldest);
        }
        slot
    }
}

impl Decoded {
    fn from_event(event: &Event) -> Option<Decoded> {
        Some(Decoded {
            now: from_record(&event.record).ok()?,
            before: event.previous.as_ref().and_then(|p| from_record(p).ok()),
            json: OnceLock::new(),
        })
    }

    /// The object's JSON.
    fn json(&self) -> &Bytes {
        self.json.get_or_init(|| {
            // A `Value` always serializes; an empty object stands in should it ever not.
            Bytes::from(serde_json::to_vec(&self.now).unwrap_or_else(|_| b"{}".to_vec()))
        })
    }
}

/// Starts a watch; the response streams until the client goes away or the timeout passes.
pub(super) fn serve(
    shared: &Shared,
    r: &'static Resource,
    ns: Option<&str>,
    query: &Query,
    form: Form,
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(query)?;
    let filter = Filter { labels, fields };
    let out = Output { r, form };
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
        Some(rv) => Some(parse_rv(rv)?),
    };
    let prefix = r.prefix(ns);
    let store = shared.store.clone();
    let decoded_events = shared.decoded_events.clone();

    // Where to start, and which objects to announce first.
    let (start, initial) = match (rv, initial_events) {
        (Some(rv), false) => (rv, Vec::new()),
        _ => {
            let (records, revision) = store.list(&prefix).map_err(|e| from_store(e, r, ""))?;
            let objs = records
                .iter()
                .map(|(_, rec)| from_record(rec))
                .filter(|obj| obj.as_ref().map_or(true, |obj| filter.matches(obj)))
                .collect::<Result<_, _>>()?;
            (revision, objs)
        }
    };

    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let stream = async {
            for obj in initial {
                send(&tx, "ADDED", form.object(r, obj)).await?;
            }
            if initial_events {
                let mut bm = bookmark(r, start);
                bm["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                send(&tx, "BOOKMARK", bm).await?;
            }
            // Then every change after `start`. A store that cannot follow from there ends the
            // watch with one ERROR event.
            let error = |e| send(&tx, "ERROR", from_store(e, r, "").status());
            let mut watch = match store.watch(&prefix, start) {
                Ok(w) => w,
                Err(e) => return error(e).await,
            };
            let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = ticker.tick(), if bookmarks => {
                        send(&tx, "BOOKMARK", bookmark(r, watch.revision())).await?;
                    }
                    next = watch.next() => match next {
                        None => return Ok(()),
                        Some(Err(e)) => return error(e).await,
                        Some(Ok(event)) => {
                            let slot = decoded_events.get(&event);
                            if let Some(decoded) = slot.get().and_then(Option::as_ref)
                                && let Some(kind) = translate(event.kind, decoded, &filter)
                            {
                                out.send(&tx, kind, decoded).await?;
                            }
                        }
                    },
                }
            }
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

/// The event line for an object already in JSON: what [`send`] writes, without encoding
/// the object again.
fn line(kind: &str, object: &[u8]) -> Bytes {
    let head = format!("{{\"type\":\"{kind}\",\"object\":");
    Bytes::from([head.as_bytes(), object, b"}\n"].concat())
}

/// How event objects are written: whole, as one-row Tables for kubectl, or metadata only.
struct Output {
    r: &'static Resource,
    form: Form,
}

impl Output {
    /// Sends a decoded change as `kind`: its shared JSON, or the form this watch asked for.
    async fn send(&self, tx: &mpsc::Sender<Bytes>, kind: &str, event: &Decoded) -> Result<(), ()> {
        match self.form {
            Form::Whole => tx.send(line(kind, event.json())).await.map_err(|_| ()),
            Form::Metadata => send(tx, kind, form::partial(&event.now)).await,
            Form::Table => send(tx, kind, self.form.object(self.r, event.now.clone())).await,
        }
    }
}

/// The kind of watch event a store event becomes for this filter, if any.
fn translate(kind: EventKind, event: &Decoded, filter: &Filter) -> Option<&'static str> {
    let matched_before = event.before.as_ref().is_some_and(|p| filter.matches(p));
    match kind {
        EventKind::Delete => matched_before.then_some("DELETED"),
        EventKind::Put => match (matched_before, filter.matches(&event.now)) {
            (false, true) => Some("ADDED"),
            (true, true) => Some("MODIFIED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Record;

    fn put(revision: u64, key: &str, labels: Value, before: Option<Value>) -> Event {
        let record = |labels: Value, revision: u64| Record {
            value: serde_json::to_vec(&json!({"metadata": {"name": key, "labels": labels}}))
                .expect("JSON"),
            create_revision: 1,
            mod_revision: revision,
        };
        Event {
            kind: EventKind::Put,
            key: key.to_owned(),
            record: record(labels, revision),
            previous: before.map(|b| record(b, revision - 1)),
        }
    }

    fn filter(labels: &str) -> Filter {
        Filter {
            labels: LabelSelector::parse(labels).expect("selector"),
            fields: FieldSelector::parse("").expect("selector"),
        }
    }

    #[test]
    fn every_watch_shares_one_decoding_of_an_event() {
        let events = DecodedEvents::default();
        let event = put(7, "/p/a", json!({"app": "web"}), None);
        let first = events.get(&event);
        let second = events.get(&event);
        assert!(Arc::ptr_eq(&first, &second), "decoded twice");
        let decoded = first.get().and_then(Option::as_ref).expect("decoded");
        assert_eq!(decoded.now["metadata"]["resourceVersion"], json!("7"));
        let other = events.get(&put(7, "/p/b", json!({}), None));
        assert!(
            !Arc::ptr_eq(&first, &other),
            "two keys of one revision are two events"
        );
    }

    #[test]
    fn only_the_newest_revisions_are_kept() {
        let events = DecodedEvents::default();
        let oldest = put(1, "/p/a", json!({}), None);
        let kept = events.get(&oldest);
        for revision in 2..=(DECODED_REVISIONS as u64 + 1) {
            events.get(&put(revision, "/p/a", json!({}), None));
        }
        let recent = events.recent.lock().expect("lock");
        assert_eq!(recent.order.len(), DECODED_REVISIONS);
        assert_eq!(recent.by_revision.len(), DECODED_REVISIONS);
        drop(recent);
        assert!(
            !Arc::ptr_eq(&kept, &events.get(&oldest)),
            "the oldest was kept"
        );
    }

    #[test]
    fn an_object_is_added_modified_or_deleted_as_the_selector_sees_it() {
        let web = filter("app=web");
        let decode = |e: &Event| Decoded::from_event(e).expect("decoded");
        let cases = [
            (None, json!({"app": "web"}), Some("ADDED")),
            (
                Some(json!({"app": "web"})),
                json!({"app": "web"}),
                Some("MODIFIED"),
            ),
            (
                Some(json!({"app": "web"})),
                json!({"app": "db"}),
                Some("DELETED"),
            ),
            (
                Some(json!({"app": "db"})),
                json!({"app": "web"}),
                Some("ADDED"),
            ),
            (Some(json!({"app": "db"})), json!({"app": "db"}), None),
        ];
        for (before, now, expected) in cases {
            let event = decode(&put(3, "/p/a", now.clone(), before.clone()));
            assert_eq!(
                translate(EventKind::Put, &event, &web),
                expected,
                "{before:?} -> {now}"
            );
        }
        let gone = decode(&put(
            3,
            "/p/a",
            json!({"app": "web"}),
            Some(json!({"app": "web"})),
        ));
        assert_eq!(translate(EventKind::Delete, &gone, &web), Some("DELETED"));
    }

    #[test]
    fn a_shared_line_is_the_line_send_would_write() {
        let event = Decoded::from_event(&put(5, "/p/a", json!({"x": "y"}), None)).expect("decoded");
        let shared: Value = serde_json::from_slice(&line("ADDED", event.json())).expect("JSON");
        assert_eq!(shared, json!({"type": "ADDED", "object": event.now}));
        assert!(line("ADDED", event.json()).ends_with(b"\n"));
    }
}
