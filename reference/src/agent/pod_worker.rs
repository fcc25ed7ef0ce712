//! One pod's life on this node: a task per pod that drives its containers toward its spec.
//!
//! Each round (on every change to the pod, and every sync period):
//!
//! 1. if the pod is gone from the API, remove its containers; if it is being deleted, stop
//!    them gracefully (SIGTERM, the grace period, SIGKILL), remove them, and remove the pod;
//! 2. refuse what the agent will not run (privileged containers, the Docker socket);
//! 3. start the sandbox (pause) if it is not running;
//! 4. for each container: create it if missing (the image must be present: nothing is ever
//!    pulled; the ConfigMaps and Secrets it names are read then, [`super::configuration`]),
//!    run its probes if running, restart it if it exited and the restart policy
//!    says so — after a back-off that doubles up to a cap (CrashLoopBackOff);
//! 5. report the status if it changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Endpoints, Pod, Volume};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::AgentConfig;
use super::configuration::Sources;
use super::probes::{self, Probe, ProbeState};
use super::runtime::{ContainerInfo, ContainerRun, PAUSE, Runtime};
use super::status::{self, ContainerState, ContainerView, PodView};
use crate::api::meta;
use crate::api::quantity::{parse_cpu, parse_memory};

/// The longest a terminating pod waits to leave the Services' rotation before SIGTERM.
const ROTATION_WAIT: Duration = Duration::from_secs(2);

/// What a worker keeps about one container between rounds.
#[derive(Debug)]
struct Track {
    restart_count: i32,
    /// No restart before this instant (the back-off).
    not_before: Option<Instant>,
    backoff: Duration,
    started: Option<Instant>,
    readiness: ProbeState,
    liveness: ProbeState,
    last_state: Option<ContainerState>,
    /// The finish time of the exit `last_state` records, so one exit is counted once.
    last_exit_of: Option<String>,
}

impl Track {
    fn new() -> Self {
        Track {
            restart_count: 0,
            not_before: None,
            backoff: Duration::ZERO,
            started: None,
            readiness: ProbeState::new(false),
            liveness: ProbeState::new(true),
            last_state: None,
            last_exit_of: None,
        }
    }
}

/// Everything a worker owns.
pub(super) struct Worker {
    runtime: Runtime,
    pods: Api<Pod>,
    config: Arc<AgentConfig>,
    uid: String,
    key: String,
    tracks: HashMap<String, Track>,
    start_time: String,
    /// The pod reached Succeeded or Failed: nothing more to run.
    finished: bool,
}

/// Runs the worker until the pod is gone from this node.
pub(super) async fn run(
    runtime: Runtime,
    client: kube::Client,
    config: Arc<AgentConfig>,
    pod: watch::Receiver<Option<Pod>>,
) {
    let Some(first) = pod.borrow().clone() else {
        return;
    };
    let namespace = first.metadata.namespace.unwrap_or_default();
    let key = format!("{namespace}/{}", first.metadata.name.unwrap_or_default());
    let span = tracing::info_span!("pod", pod = %key);
    let worker = Worker {
        runtime,
        pods: Api::namespaced(client, &namespace),
        config,
        uid: first.metadata.uid.unwrap_or_default(),
        key,
        tracks: HashMap::new(),
        start_time: meta::now_rfc3339(),
        finished: false,
    };
    tracing::Instrument::instrument(worker.work(pod), span).await;
}

fn pod_json(pod: &Pod) -> Value {
    serde_json::to_value(pod).unwrap_or_default()
}

/// The string at `pointer` in `v`, if there is one.
fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)?.as_str()
}

/// Waiting, for `reason`.
fn waiting(reason: &str, message: String) -> ContainerState {
    ContainerState::Waiting {
        reason: reason.into(),
        message,
    }
}

/// The container (re)started just now: its probes begin again, and it is not ready yet,
/// even without a readiness probe: ready means seen running, by the next round (which the
/// status write brings at once). A container that dies as it starts is then never counted
/// available, so a rollout to a broken image stalls instead of trading old pods for it.
fn just_started(track: &mut Track, view: &mut ContainerView, now: Instant) {
    track.started = Some(now);
    track.readiness = ProbeState::new(false);
    track.liveness = ProbeState::new(true);
    view.state = ContainerState::Running {
        started_at: meta::now_rfc3339(),
    };
    view.ready = false;
}

impl Worker {
    async fn work(mut self, mut pod: watch::Receiver<Option<Pod>>) {
        loop {
            let current = pod.borrow_and_update().clone();
            let Some(current) = current else {
                // Gone from the API (deleted, or evicted from this node): remove everything.
                self.remove_all(Duration::ZERO).await;
                return;
            };
            if current.metadata.deletion_timestamp.is_some() {
                self.terminate(&current).await;
                return;
            }
            if let Err(e) = self.sync(&current).await {
                tracing::warn!(error = %e, "pod sync failed; retrying");
            }
            tokio::select! {
                changed = pod.changed() => {
                    if changed.is_err() {
                        // The agent is stopping; containers are its shutdown's business.
                        return;
                    }
                }
                _ = tokio::time::sleep(self.config.sync_period) => {}
            }
        }
    }

    /// Stops every container (app containers first, with `grace`), then removes them.
    async fn remove_all(&self, grace: Duration) {
        let Ok(all) = self.runtime.list().await else {
            return;
        };
        let mut mine: Vec<(String, String)> = all
            .into_iter()
            .filter_map(|(uid, name, id)| (uid == self.uid).then_some((name, id)))
            .collect();
        // The sandbox last: the app containers live in its network namespace.
        mine.sort_by_key(|(name, _)| name == PAUSE);
        let apps = mine.iter().filter(|(n, _)| n != PAUSE);
        let stops = apps.map(|(_, id)| self.runtime.stop(id, grace));
        for r in futures::future::join_all(stops).await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "failed to stop a container");
            }
        }
        for (_, id) in &mine {
            if let Err(e) = self.runtime.remove(id).await {
                tracing::warn!(error = %e, "failed to remove a container");
            }
        }
        let _ = std::fs::remove_dir_all(self.config.data_dir.join("pods").join(&self.uid));
    }

    /// Graceful deletion: stop, remove, then remove the pod object for good.
    async fn terminate(&self, pod: &Pod) {
        let mut grace = pod
            .metadata
            .deletion_grace_period_seconds
            .and_then(|g| u64::try_from(g).ok())
            .unwrap_or(30);
        if crate::failpoints::on!("agent::kill-without-grace") {
            grace = 0;
        }
        if crate::failpoints::on!("agent::wait-past-the-grace-period") {
            grace = 600;
        }
        tracing::info!(grace, "terminating pod");
        if grace > 0 {
            self.wait_out_of_rotation(pod).await;
        }
        self.remove_all(Duration::from_secs(grace)).await;
        let params = DeleteParams::default()
            .grace_period(0)
            .preconditions(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            });
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        if let Err(e) = self.pods.delete(name, &params).await {
            tracing::debug!(error = %e, "pod already gone");
        }
    }

    /// Waits (briefly) until no Endpoints lists the pod as ready, so the proxies stop
    /// sending it new connections before its containers get SIGTERM: a rolling update or a
    /// scale-down then drops no request. Bounded: a slow Endpoints controller delays the
    /// shutdown by [`ROTATION_WAIT`] at most.
    async fn wait_out_of_rotation(&self, pod: &Pod) {
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()) else {
            return;
        };
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let endpoints: Api<Endpoints> = Api::namespaced(self.pods.clone().into_client(), namespace);
        let deadline = Instant::now() + ROTATION_WAIT;
        while Instant::now() < deadline {
            let listed = match endpoints.list(&ListParams::default()).await {
                Ok(list) => list.items.iter().any(|ep| {
                    ep.subsets
                        .iter()
                        .flatten()
                        .any(|s| s.addresses.iter().flatten().any(|a| a.ip == ip))
                }),
                Err(_) => false,
            };
            if !listed {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::debug!("pod still listed in endpoints; terminating anyway");
    }

    async fn report(&self, pod: &Pod, view: &PodView) -> Result<(), String> {
        let previous = pod_json(pod).get("status").cloned().unwrap_or(json!({}));
        let next = status::pod_status(view, &previous, &meta::now_rfc3339());
        if next == previous {
            return Ok(());
        }
        // Replace the whole status: a merge patch would keep stale keys.
        let mut full = previous.clone();
        if let (Some(f), Value::Object(n)) = (full.as_object_mut(), next) {
            f.extend(n);
            if view.refused.is_none() {
                f.remove("reason");
                f.remove("message");
            }
        }
        if full == previous {
            return Ok(());
        }
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let patch = Patch::Merge(json!({"status": full}));
        self.pods
            .patch_status(name, &PatchParams::default(), &patch)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Why the agent will not run this pod, if it will not.
    fn refusal(spec: &Value) -> Option<(String, String)> {
        let forbidden = |message| Some(("Forbidden".to_owned(), message));
        let privileged = meta::each(spec, "/containers")
            .find(|c| c.pointer("/securityContext/privileged") == Some(&json!(true)));
        if let Some(c) = privileged {
            let name = str_at(c, "/name").unwrap_or_default();
            return forbidden(format!(
                "container {name:?} asks to be privileged; this node runs no privileged containers"
            ));
        }
        let path = meta::each(spec, "/volumes")
            .filter_map(|v| str_at(v, "/hostPath/path"))
            .find(|path| {
                let p = path.trim_end_matches('/');
                p.ends_with("docker.sock") || p == "/var/run" || p == "/run"
            })?;
        forbidden(format!(
            "volume mounts the host's {path:?}: access to the container runtime is not allowed"
        ))
    }

    async fn sync(&mut self, pod: &Pod) -> Result<(), String> {
        let pod_value = pod_json(pod);
        let spec = &pod_value["spec"];
        let policy = str_at(spec, "/restartPolicy").unwrap_or("Always");
        let mut view = PodView {
            containers: Vec::new(),
            refused: Self::refusal(spec)
                .filter(|_| !crate::failpoints::on!("agent::run-privileged-pods")),
            pod_ip: None,
            host_ip: self.config.address.to_string(),
            start_time: self.start_time.clone(),
            qos_class: status::qos_class(spec).to_owned(),
        };
        if let Some((_, reason)) = &view.refused {
            tracing::warn!(%reason, "refusing pod");
            self.finished = true;
            return self.report(pod, &view).await;
        }

        if self.finished {
            return Ok(());
        }

        // The sandbox.
        let sandbox = match self.runtime.find(&self.uid, PAUSE).await {
            Some(s) if s.running => s,
            _ => {
                let hostname = pod.metadata.name.as_deref().unwrap_or_default();
                self.runtime
                    .run_pause(&self.key, &self.uid, hostname)
                    .await
                    .map_err(|e| e.to_string())?
            }
        };
        view.pod_ip = sandbox.ip.clone();

        for c in meta::each(spec, "/containers") {
            let container = self.sync_container(pod, c, &sandbox, policy).await;
            view.containers.push(container);
        }
        if matches!(status::phase(&view), "Succeeded" | "Failed") {
            // Done: the sandbox has nothing left to hold.
            self.finished = true;
            let _ = self.runtime.stop(&sandbox.id, Duration::ZERO).await;
        }
        self.report(pod, &view).await
    }

    async fn sync_container(
        &mut self,
        pod: &Pod,
        c: &Value,
        sandbox: &ContainerInfo,
        policy: &str,
    ) -> ContainerView {
        let name = str_at(c, "/name").unwrap_or_default();
        let image = str_at(c, "/image").unwrap_or_default();
        let info = self.runtime.find(&self.uid, name).await;
        let now = Instant::now();
        let track = self
            .tracks
            .entry(name.to_owned())
            .or_insert_with(Track::new);

        let mut view = ContainerView {
            name: name.to_owned(),
            image: image.to_owned(),
            image_id: info.as_ref().and_then(|i| i.image_id.clone()),
            container_id: info.as_ref().map(|i| i.id.clone()),
            state: waiting("ContainerCreating", String::new()),
            last_state: track.last_state.clone(),
            ready: false,
            restart_count: track.restart_count,
            will_restart: policy == "Always",
        };

        match info {
            None => {
                if !self.runtime.image_present(image).await {
                    let message = format!(
                        "Container image \"{image}\" is not present with pull policy of Never"
                    );
                    view.state = waiting("ErrImageNeverPull", message);
                    return view;
                }
                let who = (self.config.as_ref(), self.uid.as_str());
                let run = match container_run(&self.pods, who, pod, c, sandbox).await {
                    Ok(run) => run,
                    Err(message) => {
                        view.state = waiting("CreateContainerConfigError", message);
                        return view;
                    }
                };
                match self
                    .runtime
                    .run_container(&self.key, &self.uid, &sandbox.id, &run)
                    .await
                {
                    Ok(id) => {
                        view.container_id = Some(id);
                        just_started(track, &mut view, now);
                    }
                    Err(e) => view.state = waiting("CreateContainerError", e.to_string()),
                }
                view
            }
            Some(info) if info.running => {
                let started = *track.started.get_or_insert(now);
                let ip = sandbox.ip.as_deref().unwrap_or_default();
                if let Some(p) = &Probe::parse(c, "readinessProbe") {
                    if track.readiness.due(p, started, now) {
                        let ok = probes::check(p, ip, &self.runtime, &info.id).await;
                        track.readiness.record(p, ok, now);
                    }
                } else {
                    track.readiness.passing = true;
                }
                if let Some(p) = &Probe::parse(c, "livenessProbe")
                    && track.liveness.due(p, started, now)
                {
                    let ok = probes::check(p, ip, &self.runtime, &info.id).await;
                    if track.liveness.record(p, ok, now)
                        && !track.liveness.passing
                        && !crate::failpoints::on!("agent::ignore-liveness-checks")
                    {
                        tracing::info!(container = %name, "liveness probe failed; restarting");
                        let grace = pod
                            .spec
                            .as_ref()
                            .and_then(|s| u64::try_from(s.termination_grace_period_seconds?).ok());
                        let grace = Duration::from_secs(grace.unwrap_or(30));
                        let _ = self.runtime.stop(&info.id, grace).await;
                        track.liveness = ProbeState::new(true);
                    }
                }
                view.ready = track.readiness.passing
                    || crate::failpoints::on!("agent::ready-whatever-the-check");
                view.state = ContainerState::Running {
                    started_at: info.started_at.clone().unwrap_or_default(),
                };
                view
            }
            Some(info) => {
                let exit_code = if crate::failpoints::on!("agent::ignore-exit-codes") {
                    0
                } else {
                    info.exit_code.unwrap_or(-1)
                };
                let reason = match (info.oom_killed, exit_code) {
                    (true, _) => "OOMKilled",
                    (false, 0) => "Completed",
                    _ => "Error",
                };
                let terminated = ContainerState::Terminated {
                    exit_code,
                    reason: reason.into(),
                    started_at: info.started_at.clone(),
                    finished_at: info.finished_at.clone(),
                };
                // Liveness failures restart even under OnFailure; Never never restarts.
                let restart = match policy {
                    "Always" => true,
                    "OnFailure" => exit_code != 0,
                    _ => false,
                } && !crate::failpoints::on!("agent::never-restart-containers");
                view.will_restart = restart;
                if !restart {
                    view.state = terminated;
                    return view;
                }
                // Record this exit once, then restart after the back-off.
                let exit_of = info.finished_at.clone().unwrap_or_default();
                if track.last_exit_of.as_ref() != Some(&exit_of) {
                    track.last_exit_of = Some(exit_of);
                    track.last_state = Some(terminated);
                    track.not_before = Some(now + track.backoff);
                    track.backoff = if track.backoff.is_zero() {
                        self.config.backoff_initial
                    } else {
                        (track.backoff * 2).min(self.config.backoff_max)
                    };
                }
                view.last_state = track.last_state.clone();
                if track.not_before.is_some_and(|t| now < t) {
                    let message = format!(
                        "back-off {}s restarting failed container={name} pod={}",
                        track.backoff.as_secs() / 2,
                        self.key
                    );
                    view.state = waiting("CrashLoopBackOff", message);
                    return view;
                }
                match self.runtime.restart(&info.id).await {
                    Ok(()) => {
                        track.restart_count += 1;
                        view.restart_count = track.restart_count;
                        // As for a first start: ready only once seen running.
                        just_started(track, &mut view, now);
                    }
                    Err(e) => view.state = waiting("RunContainerError", e.to_string()),
                }
                view
            }
        }
    }
}

/// The `kubernetes` Service's endpoint, `(host, port)`: where pods reach the apiserver.
async fn apiserver(client: kube::Client) -> Option<(String, String)> {
    let endpoints = Api::<Endpoints>::namespaced(client, "default");
    let subset = endpoints
        .get_opt("kubernetes")
        .await
        .ok()??
        .subsets?
        .pop()?;
    let port = subset.ports?.first()?.port.to_string();
    Some((subset.addresses?.first()?.ip.clone(), port))
}

/// What Docker must run for container spec `c` of `pod`, with what it takes from ConfigMaps
/// and Secrets read now; `Err` says why it cannot be created yet.
async fn container_run(
    pods: &Api<Pod>,
    (config, uid): (&AgentConfig, &str),
    pod: &Pod,
    c: &Value,
    sandbox: &ContainerInfo,
) -> Result<ContainerRun, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let sources = Sources::read(&pods.clone().into_client(), namespace, pod.spec.as_ref())
        .await
        .map_err(|e| format!("cannot read the pod's ConfigMaps and Secrets: {e}"))?;
    let pod_value = pod_json(pod);
    let field = |path: &str| match path {
        "metadata.name" => pod.metadata.name.clone().unwrap_or_default(),
        "metadata.namespace" => namespace.to_owned(),
        "metadata.uid" => uid.to_owned(),
        "spec.nodeName" => config.node_name.clone(),
        "spec.serviceAccountName" => (pod.spec.as_ref())
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" => sandbox.ip.clone().unwrap_or_default(),
        "status.hostIP" => config.address.to_string(),
        other => meta::path(&pod_value, other)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_default(),
    };
    let typed: Container = serde_json::from_value(c.clone())
        .map_err(|e| format!("container spec cannot be read: {e}"))?;
    // ConfigMaps' and Secrets' first, so that `env`'s own values (later) win.
    let mut env: Vec<String> = sources
        .env(&typed)?
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    for var in typed.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => value.clone(),
            (None, Some(from)) => match &from.field_ref {
                Some(field_ref) => field(&field_ref.field_path),
                // From a ConfigMap or Secret: added above.
                None => continue,
            },
            (None, None) => String::new(),
        };
        env.push(format!("{}={value}", var.name));
    }
    // The downward API names a probe uses out of the box, and where client libraries
    // find the apiserver: the `kubernetes` Service's endpoint (cluster IPs are not routed).
    let (host, port) = apiserver(pods.clone().into_client())
        .await
        .unwrap_or_default();
    for (k, value) in [
        ("POD_NAME", field("metadata.name")),
        ("POD_NAMESPACE", field("metadata.namespace")),
        ("POD_IP", field("status.podIP")),
        ("KUBERNETES_SERVICE_HOST", host),
        ("KUBERNETES_SERVICE_PORT", port),
    ] {
        if !value.is_empty() && !env.iter().any(|e| e.starts_with(&format!("{k}="))) {
            env.push(format!("{k}={value}"));
        }
    }
    let volumes: HashMap<&str, &Volume> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .map(|v| (v.name.as_str(), v))
        .collect();
    let pod_volumes = config.data_dir.join("pods").join(uid).join("volumes");
    let mut binds = Vec::new();
    for m in typed.volume_mounts.iter().flatten() {
        let Some(&volume) = volumes.get(m.name.as_str()) else {
            continue;
        };
        let own_dir = pod_volumes.join(&m.name);
        let files = sources.write_volume(volume, &own_dir)?;
        let host = match &volume.host_path {
            Some(host_path) if !files => host_path.path.clone(),
            // ConfigMap, Secret and projected files, emptyDir (and anything else): a directory of the
            // pod's, shared by its containers.
            _ => {
                let _ = std::fs::create_dir_all(&own_dir);
                own_dir.display().to_string()
            }
        };
        // ConfigMap, Secret and projected files are read-only, as in Kubernetes.
        let ro = (files || m.read_only == Some(true)).then_some(":ro");
        binds.push(format!("{host}:{}{}", m.mount_path, ro.unwrap_or_default()));
    }
    let limit = |k: &str| str_at(c, &format!("/resources/limits/{k}"));
    Ok(ContainerRun {
        name: typed.name,
        image: typed.image.unwrap_or_default(),
        command: typed.command,
        args: typed.args,
        env,
        binds,
        memory: limit("memory").and_then(|q| parse_memory(q).ok()),
        nano_cpus: limit("cpu")
            .and_then(|q| parse_cpu(q).ok().map(|m| m.saturating_mul(1_000_000))),
        working_dir: typed.working_dir,
        stdin: typed.stdin == Some(true),
        stdin_once: typed.stdin_once == Some(true),
        tty: typed.tty == Some(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_privileged_and_the_docker_socket() {
        let privileged =
            json!({"containers": [{"name": "x", "securityContext": {"privileged": true}}]});
        assert!(Worker::refusal(&privileged).is_some());
        let socket = json!({"containers": [{"name": "x"}],
                            "volumes": [{"name": "d", "hostPath": {"path": "/var/run/docker.sock"}}]});
        assert!(Worker::refusal(&socket).is_some());
        assert!(Worker::refusal(&json!({"containers": [{"name": "x"}]})).is_none());
    }
}
