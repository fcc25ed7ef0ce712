//! Store writes: shipshape's store against etcd, measured in the same run.
//!
//! Load: durable puts of 256-byte values, (a) one client writing sequentially, (b) 32
//! concurrent clients (tokio tasks) each writing sequentially. A write counts once it is
//! acknowledged, which for both targets means committed and fsynced:
//!
//! - **shipshape**: a single-voter store (raft-rs + sled), called **in-process** through
//!   `Store::write`; concurrent writes share one fsync.
//! - **etcd**: a private single-member etcd (Debian `etcd-server`) on loopback with its
//!   default fsync behaviour, written to through its v3 **HTTP/JSON gateway** (`POST
//!   /v3/kv/put`) over pooled keep-alive connections.
//!
//! Fairness: etcd pays HTTP + JSON (+ base64, and its gateway's hop to its own gRPC
//! server) on every write, and it shares this machine's cores with the benchmark process,
//! while shipshape's store is called in-process with no network in between. The gap this
//! gives shipshape is real but small next to an fsync; the printed lines say which is which.
//!
//! Criterion reports each target per client count (one iteration = one write per client).
//! Every timed run is also added to a tally, warm-up included, and after the groups the
//! benchmark prints, per client count, both throughputs and the ratio shipshape/etcd
//! computed from those same runs.
//!
//! Run: `cargo bench -p shipshape-benches --bench store_writes` (about two minutes).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use shipshape_benches::{Etcd, ShipshapeStore, Target, run_writes, value_of_len};

/// Concurrent clients per load.
const CLIENTS: [usize; 2] = [1, 32];
/// Bytes per value.
const VALUE_LEN: usize = 256;
/// The ratio shipshape/etcd the design aims for.
const GOAL: f64 = 1.0;

/// Writes and wall time accumulated per (clients, target) over every timed run.
type Tally = BTreeMap<(usize, &'static str), (u64, Duration)>;
static TALLY: Mutex<Tally> = Mutex::new(BTreeMap::new());

fn record(clients: usize, target: &'static str, writes: u64, elapsed: Duration) {
    let mut tally = TALLY.lock().unwrap_or_else(PoisonError::into_inner);
    let entry = tally.entry((clients, target)).or_default();
    entry.0 += writes;
    entry.1 += elapsed;
}

fn per_second(writes: u64, elapsed: Duration) -> f64 {
    writes as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// Whether criterion runs as a benchmark (`cargo bench`), not as a smoke test
/// (`cargo test --benches`, `-- --test`), following criterion's own reading of its flags.
fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list")
}

fn report() {
    let tally = TALLY.lock().unwrap_or_else(PoisonError::into_inner);
    println!();
    println!("== store writes: shipshape / etcd, durable, {VALUE_LEN}-byte values ==");
    if !measuring() {
        println!(
            "(test mode: each load ran once; these figures are a smoke test, not a measurement)"
        );
    }
    for clients in CLIENTS {
        let label = if clients == 1 {
            "1 client".to_owned()
        } else {
            format!("{clients} clients")
        };
        let ours = tally.get(&(clients, "shipshape"));
        let theirs = tally.get(&(clients, "etcd"));
        match (ours, theirs) {
            (Some(&(ow, oe)), Some(&(tw, te))) => {
                let (o, t) = (per_second(ow, oe), per_second(tw, te));
                let ratio = o / t;
                let verdict = if ratio >= GOAL { "met" } else { "NOT met" };
                println!(
                    "store writes, {label}: shipshape {o:.0} w/s, etcd {t:.0} w/s, \
                     ratio {ratio:.2} (goal >= {GOAL:.1}: {verdict}) \
                     [shipshape {ow} writes in {:.2}s, etcd {tw} writes in {:.2}s]",
                    oe.as_secs_f64(),
                    te.as_secs_f64(),
                );
            }
            _ => println!("store writes, {label}: not measured in this run (filtered out)"),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Dropped (etcd killed) on every exit path, panics included.
    let etcd = rt.block_on(Etcd::start())?;
    let store = rt.block_on(ShipshapeStore::open())?;
    let etcd_version = rt
        .block_on(etcd.client().version())
        .unwrap_or_else(|| "unknown".to_owned());
    println!(
        "store writes: shipshape = single-voter store, in-process Store::write (raft commit + \
         sled fsync); etcd {etcd_version} = single member at {}, via its HTTP/JSON gateway \
         (pooled keep-alive), default fsync",
        etcd.client_url()
    );

    let targets = [
        Target::Shipshape(store.store.clone()),
        Target::Etcd(Box::new(etcd.client())),
    ];
    let value = value_of_len(VALUE_LEN);
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();

    for clients in CLIENTS {
        let mut group = criterion.benchmark_group(format!("store_writes/{clients}_clients"));
        group
            .sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Elements(clients as u64));
        for target in &targets {
            group.bench_function(target.name(), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let target = target.clone();
                    let value = value.clone();
                    async move {
                        let elapsed = run_writes(&target, clients, iters, &value)
                            .await
                            .unwrap_or_else(|e| panic!("{e:#}"));
                        record(clients, target.name(), iters * clients as u64, elapsed);
                        elapsed
                    }
                });
            });
        }
        group.finish();
    }
    criterion.final_summary();
    report();

    rt.block_on(store.shutdown());
    drop(etcd);
    Ok(())
}
