//! In-process tests of the store: writes, preconditions, watches, restarts, compaction.

use std::sync::Arc;

use super::transport::NoPeers;
use super::*;

async fn open(dir: &std::path::Path, window: u64, compact_after: u64) -> Store {
    let mut config = StoreConfig::single(dir);
    config.history_window = window;
    config.compact_after = compact_after;
    Store::open(config, Arc::new(NoPeers))
        .await
        .expect("store opens")
}

fn put(key: &str, value: &str, pre: Precondition) -> Vec<Op> {
    vec![Op::put(key, value.as_bytes().to_vec(), pre)]
}

#[tokio::test]
async fn a_write_is_readable_with_its_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 100, 1000).await;
    let r1 = store
        .write(put("/a/1", "one", Precondition::Absent))
        .await
        .expect("write");
    let r2 = store
        .write(put("/a/2", "two", Precondition::Absent))
        .await
        .expect("write");
    assert_eq!(r2.revision, r1.revision + 1);
    let rec = store.get("/a/1").expect("get").expect("present");
    assert_eq!(rec.value, b"one");
    assert_eq!(rec.mod_revision, r1.revision);
    let (items, rev) = store.list("/a/").expect("list");
    assert_eq!(items.len(), 2);
    assert_eq!(rev, r2.revision);
    store.shutdown().await;
}

#[tokio::test]
async fn preconditions_reject_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 100, 1000).await;
    let r1 = store
        .write(put("/k", "v1", Precondition::Absent))
        .await
        .expect("create");
    assert!(matches!(
        store.write(put("/k", "again", Precondition::Absent)).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    let r2 = store
        .write(put("/k", "v2", Precondition::Revision(r1.revision)))
        .await
        .expect("update at the current revision");
    // A writer still holding r1 is stale now.
    assert!(matches!(
        store.write(put("/k", "stale", Precondition::Revision(r1.revision))).await,
        Err(StoreError::Conflict { expected, actual, .. }) if expected == r1.revision && actual == r2.revision
    ));
    assert!(matches!(
        store
            .write(vec![Op::delete("/missing", Precondition::Exists)])
            .await,
        Err(StoreError::NotFound { .. })
    ));
    // A write with one failing op applies none of its ops.
    let mixed = vec![
        Op::put("/new", b"x".to_vec(), Precondition::Absent),
        Op::put("/k", b"y".to_vec(), Precondition::Revision(r1.revision)),
    ];
    assert!(store.write(mixed).await.is_err());
    assert!(store.get("/new").expect("get").is_none());
    assert_eq!(store.revision(), r2.revision);
    assert_eq!(store.get("/k").expect("get").expect("present").value, b"v2");
    store.shutdown().await;
}

#[tokio::test]
async fn watch_replays_history_then_follows_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 100, 1000).await;
    let first = store
        .write(put("/w/a", "1", Precondition::None))
        .await
        .expect("w");
    store
        .write(put("/other/x", "1", Precondition::None))
        .await
        .expect("w");
    store
        .write(put("/w/a", "2", Precondition::None))
        .await
        .expect("w");
    let mut watch = store.watch("/w/", first.revision - 1).expect("watch");
    let writer = store.clone();
    tokio::spawn(async move {
        for i in 0..50 {
            let key = format!("/w/{}", i % 5);
            writer
                .write(put(&key, &i.to_string(), Precondition::None))
                .await
                .expect("w");
        }
        writer
            .write(vec![Op::delete("/w/a", Precondition::Exists)])
            .await
            .expect("delete");
    });
    let mut last = 0;
    let mut seen = 0;
    while seen < 53 {
        let event = watch.next().await.expect("open").expect("event");
        assert!(event.key.starts_with("/w/"), "foreign key {}", event.key);
        assert!(event.revision() > last, "out of order");
        last = event.revision();
        seen += 1;
    }
    store.shutdown().await;
}

#[tokio::test]
async fn a_power_cut_between_applying_and_recording_the_commit_index_loses_nothing() {
    use protobuf::Message as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let rev = {
        let store = open(dir.path(), 100, 1000).await;
        for i in 0..5 {
            store
                .write(put(&format!("/r/{i}"), "v", Precondition::Absent))
                .await
                .expect("write");
        }
        let rev = store.revision();
        store.shutdown().await;
        rev
    };
    // What a power cut can leave: the entries applied, the commit index that allowed it
    // not yet on disk.
    {
        let db = super::open_sled(&sled::Config::new().path(dir.path().join(STORE_DIR)))
            .expect("the store's database");
        let raft = db.open_tree("raft").expect("the log");
        let bytes = raft.get(b"hs").expect("read").expect("a hard state");
        let mut hs = raft::prelude::HardState::parse_from_bytes(&bytes).expect("a hard state");
        assert!(hs.commit > 3, "{hs:?}");
        hs.commit -= 3;
        raft.insert(b"hs", hs.write_to_bytes().expect("encodes"))
            .expect("write");
        db.flush().expect("flush");
    }
    let store = open(dir.path(), 100, 1000).await;
    assert_eq!(store.revision(), rev);
    assert_eq!(store.list("/r/").expect("list").0.len(), 5);
    store
        .write(put("/r/x", "v", Precondition::Absent))
        .await
        .expect("a write after starting again");
    store.shutdown().await;
}

#[tokio::test]
async fn writes_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rev = {
        let store = open(dir.path(), 100, 1000).await;
        for i in 0..20 {
            store
                .write(put(&format!("/r/{i}"), "v", Precondition::Absent))
                .await
                .expect("write");
        }
        let rev = store.revision();
        store.shutdown().await;
        rev
    };
    let store = open(dir.path(), 100, 1000).await;
    assert_eq!(store.revision(), rev);
    assert_eq!(store.list("/r/").expect("list").0.len(), 20);
    let next = store
        .write(put("/r/x", "v", Precondition::Absent))
        .await
        .expect("write");
    assert_eq!(next.revision, rev + 1);
    store.shutdown().await;
}

#[tokio::test]
async fn old_history_is_compacted_and_answers_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 10, 5).await;
    for i in 0..40 {
        store
            .write(put(
                &format!("/c/{}", i % 3),
                &i.to_string(),
                Precondition::None,
            ))
            .await
            .expect("write");
    }
    assert!(matches!(
        store.watch("/c/", 1),
        Err(StoreError::Compacted { .. })
    ));
    let recent = store.revision() - 5;
    let mut watch = store.watch("/c/", recent).expect("recent watch");
    let event = watch.next().await.expect("open").expect("event");
    assert_eq!(event.revision(), recent + 1);
    store.shutdown().await;
    drop((store, watch));
    // The compacted log still restarts into the same state.
    let store = open(dir.path(), 10, 5).await;
    assert_eq!(store.list("/c/").expect("list").0.len(), 3);
    store
        .write(put("/c/new", "v", Precondition::Absent))
        .await
        .expect("write after restart");
    store.shutdown().await;
}

#[tokio::test]
async fn a_list_at_an_earlier_revision_undoes_what_changed_since() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 4, 1000).await;
    for key in ["/l/a", "/l/b", "/l/c"] {
        store
            .write(put(key, "first", Precondition::Absent))
            .await
            .expect("write");
    }
    let then = store.revision();
    let (before, _) = store.list("/l/").expect("list");
    store
        .write(put("/l/b", "second", Precondition::Exists))
        .await
        .expect("update");
    store
        .write(vec![Op::delete("/l/c", Precondition::Exists)])
        .await
        .expect("delete");
    store
        .write(put("/l/d", "new", Precondition::Absent))
        .await
        .expect("create");
    store
        .write(put("/other", "x", Precondition::Absent))
        .await
        .expect("elsewhere");
    assert_eq!(
        store
            .list_at("/l/", None, then)
            .expect("within the history"),
        before
    );
    assert_eq!(
        store.list_at("/l/", None, store.revision()).expect("now"),
        store.list("/l/").expect("list").0
    );
    assert!(matches!(
        store.list_at("/l/", None, store.revision() + 1),
        Err(StoreError::FutureRevision { .. })
    ));
    // Four revisions of history are kept: the first write's is gone.
    assert!(matches!(
        store.list_at("/l/", None, 1),
        Err(StoreError::Compacted { .. })
    ));
    store.shutdown().await;
}
