//! # Who runs the scheduler and the controllers: leader election through a Lease
//!
//! Every member of a control plane serves the API, but two schedulers would bind one pod
//! twice and two ReplicaSet controllers would start two pods for one missing replica. So
//! the members elect one, the way Kubernetes' components do: through the API, with a
//! `coordination.k8s.io/v1` Lease (`kube-system/shipshape-controllers`).
//!
//! - The holder renews the Lease every [`RETRY`]. A member that cannot renew within
//!   [`RENEW_DEADLINE`] stops its components at once, before anyone else may take over.
//! - Another member takes over only when it has seen the Lease unchanged for a whole
//!   [`LEASE_DURATION`] — measured on its own clock from when *it* saw the last change,
//!   so that members' clocks need not agree.
//! - Every change is a compare-and-set on the Lease's `resourceVersion`: of two members
//!   trying to take over at once, the store lets one win and the other gets 409 Conflict.
//!   Never two holders.
//!
//! So after the holder is lost, another member runs the components within
//! `LEASE_DURATION + RETRY`.

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The Lease's namespace.
pub const NAMESPACE: &str = "kube-system";

/// The Lease's name.
pub const LEASE: &str = "shipshape-controllers";

/// How long a Lease is good for without renewal (Kubernetes' default: 15 s).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);

/// How long a holder keeps trying to renew before it stops its components (Kubernetes'
/// default: 10 s).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);

/// How often the holder renews and the others look (Kubernetes' default: 2 s).
pub const RETRY: Duration = Duration::from_secs(2);

/// Timeout of one API call of the elector.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the last look at the Lease found, on this member's clock.
struct Observed {
    /// The Lease's resourceVersion and holder.
    version: String,
    holder: String,
    /// When this member first saw this version.
    since: Instant,
}

/// Runs the election for `identity` until `stopped` turns true; while this member holds
/// the Lease, runs the components `start` starts (it is called each time this member
/// takes over, with a signal that turns true when it must stop them).
pub async fn run<F, Fut>(
    client: kube::Client,
    identity: String,
    mut start: F,
    mut stopped: watch::Receiver<bool>,
) where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let leases: Api<Lease> = Api::namespaced(client, NAMESPACE);
    let mut observed: Option<Observed> = None;
    let mut running: Option<(watch::Sender<bool>, JoinHandle<()>)> = None;
    let mut last_renewal = Instant::now();
    loop {
        let round = try_acquire_or_renew(&leases, &identity, &mut observed);
        let held = match tokio::time::timeout(CALL_TIMEOUT, round).await {
            Ok(Ok(held)) => held,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "leader election: the Lease could not be read or written");
                false
            }
            Err(_) => false,
        };
        if held {
            last_renewal = Instant::now();
            if running.is_none() {
                tracing::info!(%identity, "leading: starting the scheduler and the controllers");
                let (stop, components_stopped) = watch::channel(false);
                running = Some((stop, tokio::spawn(start(components_stopped))));
            }
        } else if running.is_some()
            && (last_renewal.elapsed() >= RENEW_DEADLINE
                || observed.as_ref().is_some_and(|o| o.holder != identity))
        {
            // A failed renewal keeps the components going while the Lease is still ours for a
            // while (renewed within RENEW_DEADLINE, and ours when last seen); not past that.
            tracing::warn!(%identity, "lost the lead: stopping the scheduler and the controllers");
            stop_components(running.take()).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stopped.wait_for(|stop| *stop) => break,
        }
    }
    stop_components(running).await;
}

/// Tells the running components to stop, and waits (up to 5 s) until they have.
async fn stop_components(running: Option<(watch::Sender<bool>, JoinHandle<()>)>) {
    if let Some((stop, task)) = running {
        let _ = stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
}

/// One round: creates, renews or takes over the Lease if this member may; whether it holds
/// the Lease afterwards.
async fn try_acquire_or_renew(
    leases: &Api<Lease>,
    identity: &str,
    observed: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let Some(current) = leases.get_opt(LEASE).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE.to_owned()),
                namespace: Some(NAMESPACE.to_owned()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.to_owned()),
                lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match leases.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let version = current
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    let spec = current.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let seen_since = match observed {
        Some(o) if o.version == version => o.since,
        _ => Instant::now(),
    };
    *observed = Some(Observed {
        version,
        holder: holder.clone(),
        since: seen_since,
    });
    let ours = holder == identity;
    let expired = holder.is_empty() || seen_since.elapsed() >= LEASE_DURATION;
    if !ours && !expired {
        return Ok(false);
    }
    let mut lease = current;
    let spec = lease.spec.get_or_insert_with(Default::default);
    if !ours {
        spec.holder_identity = Some(identity.to_owned());
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        tracing::info!(%identity, previous = %holder, "taking over an expired Lease");
    }
    spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
    spec.renew_time = Some(now);
    // The resourceVersion read stays in the object: if anyone wrote the Lease since, the
    // store refuses this with a conflict.
    match leases.replace(LEASE, &PostParams::default(), &lease).await {
        Ok(written) => {
            *observed = Some(Observed {
                version: written.metadata.resource_version.unwrap_or_default(),
                holder: identity.to_owned(),
                since: Instant::now(),
            });
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
