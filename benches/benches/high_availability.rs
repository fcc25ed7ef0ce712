//! A control plane of three members against etcd's three members, measured in the same run.
//!
//! - **failover**: a steady, open-loop write load (a new write every
//!   [`FAILOVER_INTERVAL`], whatever the earlier ones are doing, each waiting up to 5 s for
//!   its answer); the member that leads is killed with SIGKILL; the time measured runs from
//!   the kill to the first acknowledged write that was *sent after* the kill — so a client
//!   stuck on a lost request does not count, only when the system takes writes again. Then
//!   the killed member is started again on its data and the next round begins. Median and
//!   p99 over every round, and the ratio shipshape/etcd of the medians (goal: ≤ 1, and
//!   ≤ 3 s).
//! - **replicated writes**: durable creates of 256-byte values by 1 and 32 concurrent
//!   clients, each write acknowledged only once a majority has it.
//!
//! The two systems, as a user runs them:
//!
//! - **shipshape**: `up --control-plane 3` (this benchmark's own binary plays `shipshape`
//!   for the member processes): three member processes behind the front door; writes are
//!   Event creates through the Kubernetes API (HTTPS, JSON, bearer token), which the front
//!   door spreads over the members and followers forward to the leader.
//! - **etcd** (Debian's `etcd-server`): three members on loopback with their default
//!   timings (heartbeat 100 ms, election 1000 ms), written through their v3 HTTP/JSON
//!   gateway; each writer starts on its own member and moves to the next when one fails.
//!
//! Both pay HTTP and JSON per write and share this machine's cores with the benchmark;
//! shipshape also pays TLS, the front door's hop, and the apiserver's validation.
//!
//! Run: `cargo bench -p shipshape-benches --bench high_availability` (about four minutes).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use criterion::{Criterion, SamplingMode, Throughput};
use k8s_openapi::api::core::v1::{Event, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use shipshape::control_plane::ControlPlaneConfig;
use shipshape::controllers::node_lifecycle::NodeLifecycleConfig;
use shipshape::local_cluster::LocalMembersCluster;
use shipshape::machines::Machines;
use shipshape_benches::{EtcdClient, EtcdCluster, measuring, median, percentile, secs, selected};

/// Members of each control plane.
const MEMBERS: usize = 3;
/// Concurrent clients per throughput load.
const CLIENTS: [usize; 2] = [1, 32];
/// Bytes per value.
const VALUE_LEN: usize = 256;
/// How often a write is sent during a failover.
const FAILOVER_INTERVAL: Duration = Duration::from_millis(20);
/// How long one write may wait for its answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The failover time shipshape aims to stay under, whatever etcd does.
const FAILOVER_GOAL: Duration = Duration::from_secs(3);
/// How long a failover may take before the round fails.
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);

/// Measured failovers, and writes with their total time, per target.
#[derive(Default)]
struct Tally {
    failovers: BTreeMap<&'static str, Vec<Duration>>,
    writes: BTreeMap<(usize, &'static str), (u64, Duration)>,
}

static TALLY: Mutex<Option<Tally>> = Mutex::new(None);

fn tally<T>(f: impl FnOnce(&mut Tally) -> T) -> T {
    let mut guard = TALLY.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(Tally::default))
}

/// One of the two systems under measurement.
enum System {
    Shipshape {
        cluster: Box<LocalMembersCluster>,
        /// A client of each member's own API, by member id, to ask who leads.
        members: BTreeMap<u64, kube::Client>,
        events: Box<Api<Event>>,
        /// The members' data, removed when the benchmark ends.
        _dir: tempfile::TempDir,
    },
    Etcd(Box<EtcdCluster>),
}

impl System {
    fn name(&self) -> &'static str {
        match self {
            System::Shipshape { .. } => "shipshape",
            System::Etcd(_) => "etcd",
        }
    }

    /// A writer for client number `client`.
    fn writer(&self, client: usize) -> Writer {
        match self {
            System::Shipshape { events, .. } => Writer::Shipshape(events.clone()),
            System::Etcd(cluster) => Writer::Etcd {
                members: cluster
                    .client_urls()
                    .iter()
                    .map(|url| EtcdClient::new(url))
                    .collect(),
                at: Arc::new(AtomicUsize::new(client)),
            },
        }
    }

    /// Which member leads now (an index from 0).
    async fn leader(&self) -> anyhow::Result<usize> {
        match self {
            System::Shipshape { members, .. } => {
                for client in members.values() {
                    let request = http::Request::get("/readyz").body(Vec::new())?;
                    let Ok(response) = client.send(request.map(Into::into)).await else {
                        continue;
                    };
                    if let Some(leader) = response
                        .headers()
                        .get(shipshape::apiserver::LEADER_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<usize>().ok())
                    {
                        return Ok(leader - 1);
                    }
                }
                bail!("no member names a leader")
            }
            System::Etcd(cluster) => cluster.leader().await,
        }
    }

    async fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        match self {
            System::Shipshape { cluster, .. } => cluster.kill_member(index as u64 + 1).await,
            System::Etcd(cluster) => cluster.kill(index),
        }
    }

    /// Starts member `index` again and waits until every member names one leader.
    async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        match self {
            System::Shipshape {
                cluster, members, ..
            } => {
                cluster.restart_member(index as u64 + 1).await?;
                let client = members
                    .get(&(index as u64 + 1))
                    .ok_or_else(|| anyhow!("no member {}", index + 1))?
                    .clone();
                let deadline = Instant::now() + FAILOVER_LIMIT;
                loop {
                    let request = http::Request::get("/readyz").body(Vec::new())?;
                    if let Ok(response) = client.send(request.map(Into::into)).await
                        && response.status() == http::StatusCode::OK
                    {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "member {} did not rejoin within {FAILOVER_LIMIT:?}",
                            index + 1
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            System::Etcd(cluster) => cluster.restart(index).await,
        }
    }
}

/// Writes through one of the systems.
#[derive(Clone)]
enum Writer {
    Shipshape(Box<Api<Event>>),
    Etcd {
        members: Vec<EtcdClient>,
        /// The member this writer uses, moved on when it fails.
        at: Arc<AtomicUsize>,
    },
}

impl Writer {
    async fn put(&self, key: &str, value: &str) -> anyhow::Result<()> {
        match self {
            Writer::Shipshape(events) => {
                events
                    .create(&PostParams::default(), &event(key, value))
                    .await
                    .context("create failed")?;
                Ok(())
            }
            Writer::Etcd { members, at } => {
                let i = at.load(Ordering::Relaxed) % members.len();
                let result = members[i].put(key, value.as_bytes()).await;
                if result.is_err() {
                    at.fetch_add(1, Ordering::Relaxed);
                }
                result
            }
        }
    }
}

fn event(name: &str, message: &str) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("default".to_owned()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("Namespace".to_owned()),
            name: Some("default".to_owned()),
            namespace: Some("default".to_owned()),
            ..Default::default()
        },
        reason: Some("Benchmark".to_owned()),
        message: Some(message.to_owned()),
        type_: Some("Normal".to_owned()),
        ..Default::default()
    }
}

/// Unique key names across the whole run.
static NEXT_KEY: AtomicUsize = AtomicUsize::new(0);

fn next_key() -> String {
    format!("w-{}", NEXT_KEY.fetch_add(1, Ordering::Relaxed))
}

/// One failover: steady writes, SIGKILL of the leader, time to the first acknowledged
/// write sent after it; then the member is brought back.
async fn failover_once(system: &mut System) -> anyhow::Result<Duration> {
    let value = "v".repeat(VALUE_LEN);
    let acks: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (acks, stop) = (acks.clone(), stop.clone());
        let writers: Vec<Writer> = (0..MEMBERS).map(|client| system.writer(client)).collect();
        tokio::spawn(async move {
            let mut in_flight = tokio::task::JoinSet::new();
            let mut ticker = tokio::time::interval(FAILOVER_INTERVAL);
            for n in 0.. {
                ticker.tick().await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (writer, acks, value) = (
                    writers[n % writers.len()].clone(),
                    acks.clone(),
                    value.clone(),
                );
                in_flight.spawn(async move {
                    let sent = Instant::now();
                    if let Ok(Ok(())) =
                        tokio::time::timeout(WRITE_TIMEOUT, writer.put(&next_key(), &value)).await
                    {
                        acks.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((sent, Instant::now()));
                    }
                });
                while in_flight.try_join_next().is_some() {}
            }
            in_flight.abort_all();
        })
    };
    let outcome = async {
        let warm = Instant::now();
        while acks.lock().unwrap_or_else(PoisonError::into_inner).len() < 20 {
            if warm.elapsed() > FAILOVER_LIMIT {
                bail!("{}: writes did not flow before the kill", system.name());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let leader = system.leader().await?;
        let killed = Instant::now();
        system.kill(leader).await?;
        let took = loop {
            let first = acks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .filter(|(sent, _)| *sent > killed)
                .map(|(_, acked)| *acked)
                .min();
            if let Some(acked) = first {
                break acked - killed;
            }
            if killed.elapsed() > FAILOVER_LIMIT {
                bail!(
                    "{}: no write acknowledged within {FAILOVER_LIMIT:?} of the kill",
                    system.name()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        Ok((leader, took))
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    let (leader, took) = outcome?;
    system.restart(leader).await?;
    Ok(took)
}

/// `clients` concurrent writers each writing `iters` values; the wall time.
async fn write_load(system: &System, clients: usize, iters: u64) -> anyhow::Result<Duration> {
    let value = "v".repeat(VALUE_LEN);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (writer, value) = (system.writer(client), value.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..iters {
                writer.put(&next_key(), &value).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

async fn start_shipshape() -> anyhow::Result<System> {
    let dir = tempfile::Builder::new()
        .prefix("shipshape-bench-members-")
        .tempdir()?;
    let mut config = ControlPlaneConfig::new(dir.path(), "127.0.0.1:0".parse()?);
    config.node_ports = 30000..=32767;
    let cluster = LocalMembersCluster::start(
        config,
        MEMBERS as u64,
        0,
        NodeLifecycleConfig::default(),
        Machines::Processes,
    )
    .await?;
    let mut members = BTreeMap::new();
    for (id, api) in cluster.member_apis().await {
        let mut credentials = cluster.credentials().clone();
        credentials.server = format!("https://{api}");
        members.insert(id, credentials.client()?);
    }
    let events = Box::new(Api::namespaced(cluster.credentials().client()?, "default"));
    Ok(System::Shipshape {
        cluster: Box::new(cluster),
        members,
        events,
        _dir: dir,
    })
}

fn report() {
    let measured = measuring();
    tally(|t| {
        println!();
        println!("== high availability: shipshape (3 members) / etcd (3 members) ==");
        if !measured {
            println!("(test mode: each load ran once; a smoke test, not a measurement)");
        }
        let summary = |name: &str| {
            let samples = t.failovers.get(name).cloned().unwrap_or_default();
            (median(&samples), percentile(&samples, 0.99), samples.len())
        };
        match (summary("shipshape"), summary("etcd")) {
            ((Some(om), Some(op), on), (Some(tm), Some(tp), tn)) => {
                let ratio = om.as_secs_f64() / tm.as_secs_f64().max(f64::MIN_POSITIVE);
                let verdict = if ratio <= 1.0 && om <= FAILOVER_GOAL {
                    "met"
                } else {
                    "NOT met"
                };
                println!(
                    "failover (SIGKILL of the leader -> next acknowledged write): shipshape \
                     median {} p99 {} ({on} kills), etcd median {} p99 {} ({tn} kills), ratio \
                     {ratio:.2} (goal <= 1.0 and <= {}: {verdict})",
                    secs(om),
                    secs(op),
                    secs(tm),
                    secs(tp),
                    secs(FAILOVER_GOAL),
                );
            }
            _ => println!("failover: not measured in this run (filtered out)"),
        }
        for clients in CLIENTS {
            match (
                t.writes.get(&(clients, "shipshape")),
                t.writes.get(&(clients, "etcd")),
            ) {
                (Some(&(ow, oe)), Some(&(tw, te))) => {
                    let (o, th) = (
                        ow as f64 / oe.as_secs_f64().max(f64::MIN_POSITIVE),
                        tw as f64 / te.as_secs_f64().max(f64::MIN_POSITIVE),
                    );
                    println!(
                        "replicated writes, {clients} client(s): shipshape {o:.0} w/s, etcd \
                         {th:.0} w/s, ratio {:.2} [shipshape {ow} writes, etcd {tw} writes]",
                        o / th
                    );
                }
                _ => println!("replicated writes, {clients} client(s): not measured in this run"),
            }
        }
    });
}

fn main() -> anyhow::Result<()> {
    // The member processes of `up --control-plane 3` are this program, started again.
    shipshape_benches::run_as_shipshape_if_asked();
    if !selected("failover") && !selected("replicated_writes") {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut systems = vec![
        rt.block_on(start_shipshape())?,
        System::Etcd(Box::new(rt.block_on(EtcdCluster::start(MEMBERS))?)),
    ];
    println!(
        "high availability: shipshape = 3 member processes behind the front door, Event creates \
         over HTTPS/JSON; etcd = 3 members on loopback, puts through the v3 HTTP/JSON gateway"
    );
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();
    {
        let mut group = criterion.benchmark_group("failover");
        group.sampling_mode(SamplingMode::Flat);
        for system in &mut systems {
            let name = system.name();
            let system = tokio::sync::Mutex::new(system);
            group.bench_function(name, |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let system = &system;
                    async move {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let mut guard = system.lock().await;
                            let took = failover_once(&mut guard)
                                .await
                                .unwrap_or_else(|e| panic!("{e:#}"));
                            tally(|t| t.failovers.entry(name).or_default().push(took));
                            total += took;
                        }
                        total
                    }
                });
            });
        }
        group.finish();
    }
    for clients in CLIENTS {
        let mut group = criterion.benchmark_group(format!("replicated_writes/{clients}_clients"));
        group
            .sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Elements(clients as u64));
        for system in &systems {
            let name = system.name();
            group.bench_function(name, |b| {
                b.to_async(&rt).iter_custom(|iters| async move {
                    let took = write_load(system, clients, iters)
                        .await
                        .unwrap_or_else(|e| panic!("{e:#}"));
                    tally(|t| {
                        let entry = t.writes.entry((clients, name)).or_default();
                        entry.0 += iters * clients as u64;
                        entry.1 += took;
                    });
                    took
                });
            });
        }
        group.finish();
    }
    criterion.final_summary();
    report();
    for system in systems {
        if let System::Shipshape { cluster, .. } = system {
            rt.block_on(cluster.stop())?;
        }
    }
    Ok(())
}
