//! # Expectations: knowing when a cache has caught up with our own writes
//!
//! A controller that reads from a watch-fed cache reads the past: the pods it created a
//! moment ago are not in it yet. Counting them as missing creates them a second time;
//! counting a pod it just deleted as still there deletes another. Kubernetes' controllers
//! solve this with *expectations*, and so does the ReplicaSet controller here.
//!
//! After every write, the controller records what it expects the cache to show once the
//! write has come back through the watch: the uid of each pod it created, each pod it
//! deleted gone or terminating, each pod it adopted or released with its new controller.
//! Before acting on the cache again it [`checks`](Expectations::check) them against the
//! cache:
//!
//! * all seen — the cache holds every write of ours: decide from it ([`Freshness::Fresh`]);
//! * some not seen yet — wait a moment and look again ([`Freshness::Behind`]); the watch
//!   usually delivers within milliseconds;
//! * some still not seen after [`TRUST_THE_CACHE_FOR`] — the watch is lagging, or a pod
//!   came and went between two looks: stop waiting, read the live state once instead
//!   ([`Freshness::Lagging`]). A live list always shows our own writes, so it is safe;
//!   it is only slower.
//!
//! Kubernetes counts adds and deletes and gives up after five minutes; keying on uids
//! instead lets the check be a pure function of the cache, so an event seen before its
//! expectation was recorded (a create's response can arrive after its watch event) cannot
//! leave a count that never reaches zero.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::{controller_uid, terminating};

/// How long the cache may lag behind our own writes before a pass reads live instead.
pub(super) const TRUST_THE_CACHE_FOR: Duration = Duration::from_secs(1);

/// Expectations older than this are dropped unlooked-at: their owner is gone.
const FORGET_AFTER: Duration = Duration::from_secs(300);

/// One write of ours, as the cache will show it once the write has come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Awaited {
    /// A pod we created: a pod with this uid is in the cache.
    Created(String),
    /// A pod we deleted: no pod with this uid in the cache, or it is terminating.
    Deleted(String),
    /// A pod we adopted (`ours: true`) or released (`false`): the pod with this uid is
    /// controlled by the owner, or not, as we made it (or it is gone).
    Owned {
        /// The pod's uid.
        pod: String,
        /// Whether the owner now controls it.
        ours: bool,
    },
}

impl Awaited {
    /// Whether `cache` shows this write, `owner` being the uid of the object that wrote.
    fn seen(&self, owner: &str, cache: &HashMap<&str, &Pod>) -> bool {
        match self {
            Awaited::Created(uid) => cache.contains_key(uid.as_str()),
            Awaited::Deleted(uid) => cache
                .get(uid.as_str())
                .is_none_or(|pod| terminating(&pod.metadata)),
            Awaited::Owned { pod, ours } => cache
                .get(pod.as_str())
                .is_none_or(|pod| (controller_uid(&pod.metadata) == Some(owner)) == *ours),
        }
    }
}

/// How far the cache is from the writes of one owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Freshness {
    /// It shows all of them: decide from the cache.
    Fresh,
    /// Some are not in it yet: look again shortly.
    Behind,
    /// Some have been missing for longer than [`TRUST_THE_CACHE_FOR`]: read live.
    Lagging,
}

/// The writes each owner (by uid) has made and not yet seen in the cache.
#[derive(Debug, Default)]
pub(super) struct Expectations {
    /// A std `Mutex`: held for map updates, never across an `.await`.
    pending: Mutex<HashMap<String, Pending>>,
}

#[derive(Debug)]
struct Pending {
    /// When the last of these writes was made.
    since: Instant,
    awaited: Vec<Awaited>,
}

impl Expectations {
    /// Records writes `owner` made at `now`.
    pub(super) fn expect(&self, owner: &str, writes: Vec<Awaited>, now: Instant) {
        if writes.is_empty() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.retain(|_, p| now.duration_since(p.since) < FORGET_AFTER);
        let entry = pending.entry(owner.to_owned()).or_insert_with(|| Pending {
            since: now,
            awaited: Vec::new(),
        });
        entry.since = now;
        entry.awaited.extend(writes);
    }

    /// Checks `owner`'s writes against `cache` (the cached pods of its namespace) at `now`,
    /// forgetting the ones seen.
    pub(super) fn check(&self, owner: &str, cache: &[&Pod], now: Instant) -> Freshness {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = pending.get_mut(owner) else {
            return Freshness::Fresh;
        };
        // Indexed only when there is something to look up: most passes have nothing pending.
        let by_uid: HashMap<&str, &Pod> = cache
            .iter()
            .filter_map(|pod| Some((pod.metadata.uid.as_deref()?, *pod)))
            .collect();
        entry.awaited.retain(|w| !w.seen(owner, &by_uid));
        if entry.awaited.is_empty() {
            pending.remove(owner);
            Freshness::Fresh
        } else if now.duration_since(entry.since) < TRUST_THE_CACHE_FOR {
            Freshness::Behind
        } else {
            Freshness::Lagging
        }
    }

    /// Forgets `owner`'s writes: a live read has shown all of them.
    pub(super) fn forget(&self, owner: &str) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(owner);
    }
}

/// The writes of one pass, recorded as expectations when the pass ends — however it ends,
/// an early error included: a write that was made must be awaited.
pub(super) struct Written<'a> {
    expectations: &'a Expectations,
    owner: String,
    writes: Vec<Awaited>,
}

impl<'a> Written<'a> {
    /// Starts recording the writes of `owner`.
    pub(super) fn new(expectations: &'a Expectations, owner: &str) -> Self {
        Written {
            expectations,
            owner: owner.to_owned(),
            writes: Vec::new(),
        }
    }

    /// Records one write that succeeded.
    pub(super) fn push(&mut self, write: Awaited) {
        self.writes.push(write);
    }
}

impl Drop for Written<'_> {
    fn drop(&mut self) {
        let writes = std::mem::take(&mut self.writes);
        self.expectations
            .expect(&self.owner, writes, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

    const OWNER: &str = "rs-uid";

    fn pod(uid: &str, controlled: bool, deleting: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                owner_references: controlled.then(|| {
                    vec![OwnerReference {
                        uid: OWNER.into(),
                        controller: Some(true),
                        ..OwnerReference::default()
                    }]
                }),
                deletion_timestamp: deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn cached(pods: &[Pod]) -> Vec<&Pod> {
        pods.iter().collect()
    }

    #[test]
    fn an_owner_with_no_writes_reads_the_cache() {
        let e = Expectations::default();
        assert_eq!(e.check(OWNER, &[], Instant::now()), Freshness::Fresh);
    }

    #[test]
    fn created_pods_must_show_up_before_the_cache_is_trusted() {
        let e = Expectations::default();
        let t0 = Instant::now();
        let writes = vec![Awaited::Created("a".into()), Awaited::Created("b".into())];
        e.expect(OWNER, writes, t0);
        let one = [pod("a", true, false)];
        assert_eq!(e.check(OWNER, &cached(&one), t0), Freshness::Behind);
        let both = [pod("a", true, false), pod("b", true, false)];
        assert_eq!(e.check(OWNER, &cached(&both), t0), Freshness::Fresh);
        // Seen once is enough: the pod may be gone by the next look.
        assert_eq!(e.check(OWNER, &[], t0), Freshness::Fresh);
    }

    #[test]
    fn a_deleted_pod_counts_once_gone_or_terminating() {
        let e = Expectations::default();
        let t0 = Instant::now();
        e.expect(OWNER, vec![Awaited::Deleted("a".into())], t0);
        let still = [pod("a", true, false)];
        assert_eq!(e.check(OWNER, &cached(&still), t0), Freshness::Behind);
        let going = [pod("a", true, true)];
        assert_eq!(e.check(OWNER, &cached(&going), t0), Freshness::Fresh);
        e.expect(OWNER, vec![Awaited::Deleted("b".into())], t0);
        assert_eq!(e.check(OWNER, &[], t0), Freshness::Fresh);
    }

    #[test]
    fn adoption_and_release_count_once_the_owner_changed() {
        let e = Expectations::default();
        let t0 = Instant::now();
        e.expect(
            OWNER,
            vec![
                Awaited::Owned {
                    pod: "a".into(),
                    ours: true,
                },
                Awaited::Owned {
                    pod: "b".into(),
                    ours: false,
                },
            ],
            t0,
        );
        let before = [pod("a", false, false), pod("b", true, false)];
        assert_eq!(e.check(OWNER, &cached(&before), t0), Freshness::Behind);
        let after = [pod("a", true, false), pod("b", false, false)];
        assert_eq!(e.check(OWNER, &cached(&after), t0), Freshness::Fresh);
    }

    #[test]
    fn a_cache_lagging_past_the_limit_sends_the_pass_to_a_live_read() {
        let e = Expectations::default();
        let t0 = Instant::now();
        e.expect(OWNER, vec![Awaited::Created("a".into())], t0);
        let later = t0 + TRUST_THE_CACHE_FOR;
        assert_eq!(e.check(OWNER, &[], later), Freshness::Lagging);
        e.forget(OWNER);
        assert_eq!(e.check(OWNER, &[], later), Freshness::Fresh);
        // Other owners are not affected by one's writes.
        e.expect(OWNER, vec![Awaited::Created("a".into())], t0);
        assert_eq!(e.check("other", &[], t0), Freshness::Fresh);
    }

    #[test]
    fn writes_are_awaited_even_when_the_pass_ends_early() {
        let e = Expectations::default();
        let failing_pass = || -> Result<(), ()> {
            let mut written = Written::new(&e, OWNER);
            written.push(Awaited::Created("a".into()));
            Err(())
        };
        assert!(failing_pass().is_err());
        assert_eq!(e.check(OWNER, &[], Instant::now()), Freshness::Behind);
    }
}
