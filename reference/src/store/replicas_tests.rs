//! Three replicas in one test process, each with its own database and its own peer
//! listener, talking over real HTTPS with mutual TLS on loopback: elections, forwarded
//! writes, linearizable reads on followers, a lost leader, a member that comes back behind
//! a compacted log, and members that must be refused.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::peers::{self, PeerAddress, PeerConfig, PeerTransport};
use super::transport::Transport;
use super::*;
use crate::apiserver::tls;

const CLUSTER: &str = "testcluster";

/// One running replica.
struct Member {
    store: Store,
    stop: watch::Sender<bool>,
}

impl Member {
    async fn stop(self) {
        let _ = self.stop.send(true);
        self.store.shutdown().await;
    }
}

fn peer_config(
    ca_dir: &Path,
    id: u64,
    addresses: &BTreeMap<u64, PeerAddress>,
    cluster: &str,
) -> PeerConfig {
    let material = tls::peer_tls(ca_dir, &addresses[&id].host, id).expect("peer certificates");
    PeerConfig {
        id,
        cluster_id: cluster.to_owned(),
        peers: addresses
            .iter()
            .filter(|(other, _)| **other != id)
            .map(|(other, address)| (*other, address.clone()))
            .collect(),
        server_tls: material.server,
        client_tls: material.client,
    }
}

/// Starts member `id` of three on `listener`, its data in `root/<id>`.
async fn start(
    root: &Path,
    id: u64,
    listener: TcpListener,
    addresses: &BTreeMap<u64, PeerAddress>,
) -> Member {
    start_with_voters(root, id, listener, addresses, vec![1, 2, 3]).await
}

/// Starts member `id` on `listener`, its data in `root/<id>`, with `voters` if its log is
/// new (none, for a member that joins).
async fn start_with_voters(
    root: &Path,
    id: u64,
    listener: TcpListener,
    addresses: &BTreeMap<u64, PeerAddress>,
    voters: Vec<u64>,
) -> Member {
    let config = Arc::new(peer_config(root, id, addresses, CLUSTER));
    let store_config = StoreConfig {
        data_dir: root.join(id.to_string()),
        id,
        voters,
        tick: Duration::from_millis(50),
        history_window: 10_000,
        compact_after: 20,
    };
    let transport: Arc<dyn Transport> = PeerTransport::new((*config).clone());
    let store = Store::open(store_config, transport)
        .await
        .expect("store opens");
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(peers::serve(listener, store.clone(), config, stopped));
    Member { store, stop }
}

async fn listeners() -> (Vec<TcpListener>, BTreeMap<u64, PeerAddress>) {
    let mut listeners = Vec::new();
    let mut addresses = BTreeMap::new();
    for id in 1..=3u64 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addresses.insert(id, listener.local_addr().expect("address").into());
        listeners.push(listener);
    }
    (listeners, addresses)
}

/// Starts three members with their data under `root`; them and their peer addresses.
/// Listens again on a stopped member's address. The port may be busy for a moment: the
/// stopped member's listener may not be closed yet, or a test beside this one may have
/// been handed it for a connection of its own. So: try again, for up to ten seconds.
async fn rebind(address: &PeerAddress) -> TcpListener {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(address.listen()).await {
            Ok(listener) => return listener,
            Err(error) if tokio::time::Instant::now() > deadline => {
                panic!("cannot listen on {} again: {error}", address.listen())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn three_members(root: &Path) -> (BTreeMap<u64, Member>, BTreeMap<u64, PeerAddress>) {
    let (listeners, addresses) = listeners().await;
    let mut members = BTreeMap::new();
    for (id, listener) in (1..=3u64).zip(listeners) {
        members.insert(id, start(root, id, listener, &addresses).await);
    }
    (members, addresses)
}

/// Stops every member.
async fn stop_all(members: BTreeMap<u64, Member>) {
    for (_, member) in members {
        member.stop().await;
    }
}

/// Waits until the given members agree on a leader among them; its id.
async fn leader_of(members: &BTreeMap<u64, Member>) -> u64 {
    for _ in 0..200 {
        let seen: Vec<Option<u64>> = members.values().map(|m| m.store.leader()).collect();
        if let Some(Some(leader)) = seen.first()
            && seen.iter().all(|s| *s == Some(*leader))
            && members.contains_key(leader)
        {
            return *leader;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader agreed on within 10 s");
}

fn put(key: &str, value: &str, pre: Precondition) -> Vec<Op> {
    vec![Op::put(key, value.as_bytes().to_vec(), pre)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_takes_writes_and_serves_linearizable_reads() {
    let root = tempfile::tempdir().expect("tempdir");
    let (members, _) = three_members(root.path()).await;
    let leader = leader_of(&members).await;
    let follower = *members
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    // A write through a follower is forwarded to the leader and answered with its outcome.
    let first = members[&follower]
        .store
        .write(put("/k/a", "one", Precondition::Absent))
        .await
        .expect("forwarded write");
    assert!(matches!(
        members[&follower]
            .store
            .write(put("/k/a", "again", Precondition::Absent))
            .await,
        Err(StoreError::AlreadyExists { .. })
    ));
    // Every replica, once it has caught up to a read index, sees the write.
    for (id, member) in &members {
        member.store.linearizable().await.expect("read index");
        let record = member.store.get("/k/a").expect("get").expect("present");
        assert_eq!(record.value, b"one", "member {id}");
        assert_eq!(record.mod_revision, first.revision, "member {id}");
    }
    // A watch on another follower delivers the next write too.
    let other = *members
        .keys()
        .find(|id| **id != leader && **id != follower)
        .expect("another follower");
    let mut watch = members[&other]
        .store
        .watch("/k/", first.revision)
        .expect("watch");
    members[&leader]
        .store
        .write(put("/k/b", "two", Precondition::Absent))
        .await
        .expect("write on the leader");
    let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("event in time")
        .expect("open")
        .expect("event");
    assert_eq!(event.key, "/k/b");
    stop_all(members).await;
}

/// Members on other machines know each other by host name: the name is looked up on
/// every connection, and each member's certificate carries the name it is reached by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_reach_each_other_by_host_name() {
    let root = tempfile::tempdir().expect("tempdir");
    let (listeners, addresses) = listeners().await;
    let named: BTreeMap<u64, PeerAddress> = addresses
        .iter()
        .map(|(id, address)| {
            let named = format!("localhost:{}", address.port).parse().expect("name");
            (*id, named)
        })
        .collect();
    let mut members = BTreeMap::new();
    for (id, listener) in (1..=3u64).zip(listeners) {
        members.insert(id, start(root.path(), id, listener, &named).await);
    }
    let leader = leader_of(&members).await;
    let follower = *members
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    let written = members[&follower]
        .store
        .write(put("/k/named", "yes", Precondition::Absent))
        .await
        .expect("a write forwarded to the leader by name");
    members[&leader]
        .store
        .linearizable()
        .await
        .expect("read index");
    let record = members[&leader]
        .store
        .get("/k/named")
        .expect("get")
        .expect("present");
    assert_eq!(record.mod_revision, written.revision);
    stop_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_leader_is_replaced_and_comes_back_from_a_snapshot_with_everything() {
    let root = tempfile::tempdir().expect("tempdir");
    let (mut members, addresses) = three_members(root.path()).await;
    let old_leader = leader_of(&members).await;
    let mut acknowledged = Vec::new();
    for i in 0..10 {
        let key = format!("/k/before-{i}");
        members[&old_leader]
            .store
            .write(put(&key, "v", Precondition::Absent))
            .await
            .expect("write");
        acknowledged.push(key);
    }
    // A watcher on a follower, from the start: it must see every write, in order, across
    // the change of leader.
    let watcher = *members
        .keys()
        .find(|id| **id != old_leader)
        .expect("a follower");
    let mut watch = members[&watcher].store.watch("/k/", 0).expect("watch");
    members.remove(&old_leader).expect("leader").stop().await;
    let new_leader = leader_of(&members).await;
    assert_ne!(new_leader, old_leader);
    // Enough writes while it is away that the log it missed is compacted: it can only
    // catch up from a snapshot.
    for i in 0..60 {
        let key = format!("/k/during-{i}");
        let via = *members.keys().nth(i % 2).expect("member");
        members[&via]
            .store
            .write(put(&key, "v", Precondition::Absent))
            .await
            .expect("write with one member lost");
        acknowledged.push(key);
    }
    let mut seen = Vec::new();
    while seen.len() < acknowledged.len() {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("the watch keeps delivering")
            .expect("open")
            .expect("event");
        seen.push((event.revision(), event.key.clone()));
    }
    let revisions: Vec<u64> = seen.iter().map(|(revision, _)| *revision).collect();
    assert!(
        revisions.windows(2).all(|w| w[1] == w[0] + 1),
        "the watch skipped or repeated a revision: {revisions:?}"
    );
    let keys: Vec<&String> = seen.iter().map(|(_, key)| key).collect();
    assert_eq!(keys, acknowledged.iter().collect::<Vec<_>>());
    let listener = rebind(&addresses[&old_leader]).await;
    let back = start(root.path(), old_leader, listener, &addresses).await;
    back.store.linearizable().await.expect("caught up");
    for key in &acknowledged {
        assert!(back.store.get(key).expect("get").is_some(), "{key} lost");
    }
    members.insert(old_leader, back);
    stop_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_another_cluster_or_ca_are_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let (members, addresses) = three_members(root.path()).await;
    let leader = leader_of(&members).await;
    let revision = members[&leader].store.revision();
    let posing_as = if leader == 1 { 2 } else { 1 };
    // Same CA, another cluster id.
    let stranger = PeerTransport::new(peer_config(
        root.path(),
        posing_as,
        &addresses,
        "othercluster",
    ));
    let refused = stranger
        .forward(leader, put("/k/x", "x", Precondition::None))
        .await;
    match refused {
        Err(StoreError::Unavailable(why)) => assert!(why.contains("cluster"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Another CA altogether.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let impostor = PeerTransport::new(peer_config(
        elsewhere.path(),
        posing_as,
        &addresses,
        CLUSTER,
    ));
    let refused = impostor
        .forward(leader, put("/k/x", "x", Precondition::None))
        .await;
    match refused {
        Err(StoreError::Unavailable(why)) => assert!(why.contains("TLS"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    members[&leader]
        .store
        .linearizable()
        .await
        .expect("read index");
    assert_eq!(
        members[&leader].store.revision(),
        revision,
        "nothing was written"
    );
    stop_all(members).await;
}

#[test]
fn a_truncated_outcome_is_an_error_not_a_panic() {
    let result = WriteResult {
        revision: 7,
        previous: vec![
            None,
            Some(state::Record {
                value: b"v".to_vec(),
                create_revision: 1,
                mod_revision: 2,
            }),
        ],
    };
    let bytes = peers::encode_outcome(&Ok(result.clone()));
    let decoded = peers::decode_outcome(&bytes).expect("decodes");
    assert_eq!(decoded.expect("ok"), result);
    for cut in 0..bytes.len() {
        assert!(
            peers::decode_outcome(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_removed_by_a_configuration_change_but_never_the_last() {
    let root = tempfile::tempdir().expect("tempdir");
    let (mut members, _) = three_members(root.path()).await;
    let leader = leader_of(&members).await;
    let followers: Vec<u64> = members.keys().copied().filter(|id| *id != leader).collect();
    // Asked through a follower, forwarded to the leader.
    let via = members[&followers[0]].store.clone();
    assert!(matches!(
        via.remove_member(7).await,
        Err(StoreError::NotAMember { id: 7, .. })
    ));
    via.remove_member(followers[1])
        .await
        .expect("removal of a follower");
    members.remove(&followers[1]).expect("member").stop().await;
    // Two voters left: writes need both, and get them.
    via.write(put("/k/after", "v", Precondition::Absent))
        .await
        .expect("a write with two voters");
    members[&leader]
        .store
        .remove_member(followers[0])
        .await
        .expect("removal of the other follower");
    members.remove(&followers[0]).expect("member").stop().await;
    let alone = members[&leader].store.clone();
    alone
        .write(put("/k/alone", "v", Precondition::Absent))
        .await
        .expect("a write by the last voter alone");
    assert!(matches!(
        alone.remove_member(leader).await,
        Err(StoreError::LastVoter { .. })
    ));
    stop_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_data_is_lost_comes_back_under_a_new_id_from_a_snapshot() {
    let root = tempfile::tempdir().expect("tempdir");
    let (mut members, mut addresses) = three_members(root.path()).await;
    let first_addresses = addresses.clone();
    let leader = leader_of(&members).await;
    let lost = *members
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    let survivor = *members
        .keys()
        .find(|id| **id != leader && **id != lost)
        .expect("another follower");
    let mut acknowledged = Vec::new();
    // More writes than the log keeps: the new member can only catch up from a snapshot.
    for i in 0..60 {
        let key = format!("/k/{i}");
        members[&leader]
            .store
            .write(put(&key, "v", Precondition::Absent))
            .await
            .expect("write");
        acknowledged.push(key);
    }
    // The machine of `lost` is gone, disk and all.
    members.remove(&lost).expect("member").stop().await;
    std::fs::remove_dir_all(root.path().join(lost.to_string())).expect("wipe");
    let via = members[&survivor].store.clone();
    via.remove_member(lost).await.expect("removal");
    assert!(matches!(
        via.add_member(lost, addresses[&lost].clone()).await,
        Err(StoreError::RemovedMember { id }) if id == lost
    ));
    assert!(matches!(
        via.add_member(leader, addresses[&leader].clone()).await,
        Err(StoreError::AlreadyAMember { id }) if id == leader
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    addresses.insert(4, listener.local_addr().expect("address").into());
    addresses.remove(&lost);
    eventually_ok(|| via.add_member(4, addresses[&4].clone())).await;
    drop(via);
    let new = start_with_voters(root.path(), 4, listener, &addresses, Vec::new()).await;
    new.store
        .linearizable()
        .await
        .expect("the new member catches up");
    for key in &acknowledged {
        assert!(new.store.get(key).expect("get").is_some(), "{key} missing");
    }
    members.insert(4, new);
    // Three voters again: with the old leader gone, the survivor and the new member are a
    // majority, and the new member takes writes.
    members.remove(&leader).expect("leader").stop().await;
    let after = leader_of(&members).await;
    assert!(after == survivor || after == 4, "leader {after}");
    members[&4]
        .store
        .write(put("/k/after", "v", Precondition::Absent))
        .await
        .expect("a write with the new member in the majority");
    members[&survivor].store.linearizable().await.expect("read");
    assert!(
        members[&survivor]
            .store
            .get("/k/after")
            .expect("get")
            .is_some()
    );
    // The survivor restarts with the flags it was first given, which name the removed
    // member and not the new one: what the configuration changes said wins, or the two
    // of them would be no majority.
    let address = addresses[&survivor].clone();
    members.remove(&survivor).expect("survivor").stop().await;
    let listener = rebind(&address).await;
    let back = start(root.path(), survivor, listener, &first_addresses).await;
    members.insert(survivor, back);
    members[&4]
        .store
        .write(put("/k/after-restart", "v", Precondition::Absent))
        .await
        .expect("a write after the survivor restarted");
    stop_all(members).await;
}

/// Runs `attempt` until it succeeds, for up to ten seconds (a membership change is refused
/// while a new leader has not applied its first entry, or another change is in flight).
async fn eventually_ok<F, Fut>(attempt: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let mut last = None;
    for _ in 0..100 {
        match attempt().await {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("still failing after 10 s: {last:?}");
}
