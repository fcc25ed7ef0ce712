//! Sentences about single pods and their life (`features/pod-lifecycle.feature`, and the
//! pod that fits nowhere of `features/scheduling.feature`).
//!
//! Every pod here runs the kit's `probe` workload, steered through its environment
//! (`EXIT_AFTER` and `EXIT_CODE` make it a job that runs to completion, `PORT` moves it,
//! `PROBE_VERSION` names it) and, once it runs, through its HTTP endpoints
//! (`POST /fail/liveness`, `GET /fetch`, `PUT /file`, ...) on its own address.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use cucumber::{given, then, when};
use serde_json::Value;

use super::{
    StepResult, Wait, describe, describe_all, fail, plural, read_replica, unscheduled_naming,
    wait_for_replica,
};
use crate::driver::{
    Admission, CheckAction, ContainerSpec, HealthCheck, HttpRequest, Phase, PodSpec, Replica,
    Resources, RestartPolicy,
};
use crate::world::ConformanceWorld;

/// The port the probe listens on unless told otherwise.
const PROBE_PORT: u16 = 8080;

/// How long a pod may take to be running and ready in a `Given` (a precondition, measured
/// all the same).
const START_SECONDS: u64 = 60;

/// Seconds between two health checks: short, so the suite is fast.
const CHECK_PERIOD_SECONDS: u32 = 1;

/// Failed health checks in a row before a container counts as failing: more than one, so
/// one slow answer does not restart a healthy container.
const CHECK_FAILURE_THRESHOLD: u32 = 2;

// --- submitting pods --------------------------------------------------------------------

#[when(expr = "a probe pod {string} requesting more CPU than any node has is created")]
async fn pod_too_big(world: &mut ConformanceWorld, name: String) -> StepResult {
    let nodes = world.driver()?.list_nodes().await?;
    let largest = nodes
        .iter()
        .filter(|node| node.ready)
        .map(|node| node.allocatable.millicpu.unwrap_or(0))
        .max()
        .ok_or_else(|| anyhow!("the cluster has no ready node to compare with"))?;
    // One whole CPU more than the largest node offers.
    let millicpu = (largest / 1000 + 1) * 1000;
    let mut pod = probe_pod(world, &name)?;
    pod.containers[0].requests = Resources {
        millicpu: Some(millicpu),
        memory_bytes: None,
    };
    world.requested_millicpu.insert(name.clone(), millicpu);
    submit_accepted(world, pod).await
}

#[when(
    expr = "a probe pod {string} that exits with code {int} after {int} second(s) is run with restart policy {string}"
)]
async fn pod_that_exits(
    world: &mut ConformanceWorld,
    name: String,
    code: i32,
    seconds: u32,
    policy: String,
) -> StepResult {
    let mut pod = probe_pod(world, &name)?;
    pod.restart_policy = policy.parse()?;
    let env = &mut pod.containers[0].env;
    env.insert("EXIT_AFTER".to_owned(), seconds.to_string());
    env.insert("EXIT_CODE".to_owned(), code.to_string());
    submit_accepted(world, pod).await
}

#[when(
    expr = "a pod {string} is run with two probe containers, {string} on port {int} and {string} on port {int}, sharing a volume at {string}"
)]
async fn pod_of_two(
    world: &mut ConformanceWorld,
    name: String,
    first: String,
    first_port: u16,
    second: String,
    second_port: u16,
    volume: String,
) -> StepResult {
    let image = world.driver()?.probe_image("v1");
    let container = |container: &str, port: u16| ContainerSpec {
        name: container.to_owned(),
        image: image.clone(),
        env: BTreeMap::from([
            ("PORT".to_owned(), port.to_string()),
            // The probe answers with its "version": here, which container answered.
            ("PROBE_VERSION".to_owned(), container.to_owned()),
        ]),
        port: Some(port),
        ..ContainerSpec::default()
    };
    let pod = PodSpec {
        name: name.clone(),
        labels: BTreeMap::from([("app".to_owned(), name.clone())]),
        containers: vec![
            container(&first, first_port),
            container(&second, second_port),
        ],
        shared_volume: Some(volume),
        ..PodSpec::default()
    };
    submit_accepted(world, pod).await
}

#[given(
    expr = "a probe pod {string} checked for {word} at {string} every second is running and ready"
)]
async fn checked_pod_ready(
    world: &mut ConformanceWorld,
    name: String,
    kind: String,
    path: String,
) -> StepResult {
    let check = HealthCheck {
        action: CheckAction::HttpGet {
            port: PROBE_PORT,
            path,
        },
        period_seconds: CHECK_PERIOD_SECONDS,
        failure_threshold: CHECK_FAILURE_THRESHOLD,
    };
    let mut pod = probe_pod(world, &name)?;
    match kind.as_str() {
        "liveness" => pod.containers[0].liveness = Some(check),
        "readiness" => pod.containers[0].readiness = Some(check),
        other => fail!("unknown kind of check {other:?}; expected liveness or readiness"),
    }
    submit_accepted(world, pod).await?;
    running_and_ready_to_note(world, &name).await
}

#[given(expr = "a probe pod {string} is running and ready")]
async fn plain_pod_ready(world: &mut ConformanceWorld, name: String) -> StepResult {
    let pod = probe_pod(world, &name)?;
    submit_accepted(world, pod).await?;
    running_and_ready_to_note(world, &name).await
}

#[when(expr = "a probe pod {string} asking to run privileged is created")]
async fn privileged_pod(world: &mut ConformanceWorld, name: String) -> StepResult {
    let mut pod = probe_pod(world, &name)?;
    pod.containers[0].privileged = true;
    submit(world, pod).await
}

#[when(expr = "a pod {string} of an image no node has is created")]
async fn pod_of_missing_image(world: &mut ConformanceWorld, name: String) -> StepResult {
    let mut pod = probe_pod(world, &name)?;
    pod.containers[0].image = world.driver()?.probe_image("not-present");
    submit_accepted(world, pod).await
}

// --- talking to a pod ---------------------------------------------------------------------

#[when(expr = "the probe in pod {string} is told to fail its {word} check")]
async fn fail_check(world: &mut ConformanceWorld, pod: String, kind: String) -> StepResult {
    if !["liveness", "readiness"].contains(&kind.as_str()) {
        fail!("unknown kind of check {kind:?}; expected liveness or readiness");
    }
    let answer = request(world, &pod, PROBE_PORT, "POST", &format!("/fail/{kind}")).await?;
    if answer.status != 200 {
        fail!(
            "the probe in pod {pod} answered {} to POST /fail/{kind}: {}",
            answer.status,
            answer.body
        );
    }
    Ok(())
}

#[then(
    expr = "container {string} of pod {string} reaches container {string} on localhost port {int}"
)]
async fn reaches_on_localhost(
    world: &mut ConformanceWorld,
    from: String,
    pod: String,
    to: String,
    port: u16,
) -> StepResult {
    let from_port = container_port(world, &pod, &from)?;
    let path = format!("/fetch?target=localhost:{port}/");
    let answer = request(world, &pod, from_port, "GET", &path).await?;
    if answer.status != 200 {
        fail!(
            "container {from} of pod {pod} could not reach localhost:{port}: {} {}",
            answer.status,
            answer.body
        );
    }
    let body: Value = serde_json::from_str(&answer.body).with_context(|| {
        format!(
            "localhost:{port} answered container {from} with {:?}, not the probe's JSON",
            answer.body
        )
    })?;
    if body.get("version").and_then(Value::as_str) != Some(to.as_str()) {
        fail!(
            "container {from} of pod {pod} reached localhost:{port}, but it was not container {to}: {body}"
        );
    }
    Ok(())
}

#[then(
    expr = "a file container {string} of pod {string} writes to {string} is read back by container {string}"
)]
async fn shared_file(
    world: &mut ConformanceWorld,
    writer: String,
    pod: String,
    path: String,
    reader: String,
) -> StepResult {
    let (writer_port, reader_port) = (
        container_port(world, &pod, &writer)?,
        container_port(world, &pod, &reader)?,
    );
    let content = format!(
        "written by container {writer} of pod {pod} in {}",
        world.namespace_name()?
    );
    let query = format!("/file?path={path}");
    let written = request_with_body(world, &pod, writer_port, "PUT", &query, &content).await?;
    if written.status != 200 {
        fail!(
            "container {writer} of pod {pod} could not write {path}: {} {}",
            written.status,
            written.body
        );
    }
    let read = request(world, &pod, reader_port, "GET", &query).await?;
    if read.status != 200 || read.body != content {
        fail!(
            "container {reader} of pod {pod} read {path} as {} {:?}; container {writer} wrote {content:?}",
            read.status,
            read.body
        );
    }
    Ok(())
}

#[then(
    expr = "within {int} seconds the {int} replica(s) of deployment {string} answer(s) on port {int}"
)]
async fn replicas_answer(
    world: &mut ConformanceWorld,
    seconds: u64,
    count: usize,
    deployment: String,
    port: u16,
) -> StepResult {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let wait = Wait::new(
        seconds,
        format!(
            "deployment {deployment}: {} answering on port {port}",
            plural(count, "replica")
        ),
    );
    let get = HttpRequest {
        method: "GET".to_owned(),
        path: "/".to_owned(),
        body: String::new(),
    };
    loop {
        let replicas = driver.list_replicas(&namespace, &deployment).await?;
        let mut silent = Vec::new();
        for replica in &replicas {
            // The probe says which pod it is: the answer must come from this replica.
            let answer = driver
                .request_replica(&namespace, &replica.name, port, &get)
                .await;
            let who = answer.as_ref().ok().and_then(|answer| {
                let body: Value = serde_json::from_str(&answer.body).ok()?;
                Some(body.get("pod")?.as_str()?.to_owned())
            });
            match answer {
                Ok(answer) if answer.status == 200 && who.as_deref() == Some(&replica.name) => {}
                Ok(answer) => silent.push(format!(
                    "{} answered {} {:?}",
                    replica.name, answer.status, answer.body
                )),
                Err(error) => silent.push(format!("{}: {error:#}", replica.name)),
            }
        }
        if replicas.len() == count && silent.is_empty() {
            wait.done(world);
            return Ok(());
        }
        let last = format!(
            "{} listed ({}); not answering: {}",
            replicas.len(),
            describe_all(&replicas),
            silent.join("; ")
        );
        wait.again(&last).await?;
    }
}

// --- what a pod is reported as ------------------------------------------------------------

#[then(expr = "within {int} seconds the pod {string} is in phase {word}")]
async fn pod_in_phase(
    world: &mut ConformanceWorld,
    seconds: u64,
    pod: String,
    phase: String,
) -> StepResult {
    let phase: Phase = phase.parse()?;
    wait_for_replica(
        world,
        &pod,
        seconds,
        &format!("in phase {phase}"),
        |replica| {
            if replica.phase == phase {
                Ok(())
            } else {
                Err(describe(replica))
            }
        },
    )
    .await?;
    Ok(())
}

#[then(expr = "within {int} seconds the pod {string} is running and ready")]
async fn pod_running_and_ready(
    world: &mut ConformanceWorld,
    seconds: u64,
    pod: String,
) -> StepResult {
    wait_for_replica(world, &pod, seconds, "running and ready", running_and_ready).await?;
    Ok(())
}

#[then(expr = "within {int} seconds the pod {string} is running but not ready")]
async fn pod_running_not_ready(
    world: &mut ConformanceWorld,
    seconds: u64,
    pod: String,
) -> StepResult {
    wait_for_replica(world, &pod, seconds, "running but not ready", |replica| {
        if replica.phase == Phase::Running && !replica.ready {
            Ok(())
        } else {
            Err(describe(replica))
        }
    })
    .await?;
    Ok(())
}

#[then(expr = "within {int} seconds the pod {string} has restarted at least {int} time(s)")]
async fn pod_restarted(
    world: &mut ConformanceWorld,
    seconds: u64,
    pod: String,
    times: u32,
) -> StepResult {
    let what = format!("restarted at least {}", plural(times as usize, "time"));
    wait_for_replica(world, &pod, seconds, &what, |replica| {
        if replica.restarts >= times {
            Ok(())
        } else {
            Err(describe(replica))
        }
    })
    .await?;
    Ok(())
}

/// Samples the pod four times a second for `seconds`, and fails the first time it is not
/// running, is ready, or has restarted: a pod out of service keeps running.
#[then(expr = "for {int} seconds the pod {string} stays running, not ready, and does not restart")]
async fn pod_stays_out_of_service(
    world: &mut ConformanceWorld,
    seconds: u64,
    pod: String,
) -> StepResult {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < until {
        let replica = read_replica(world, &pod).await?;
        if replica.phase != Phase::Running || replica.ready || replica.restarts != 0 {
            fail!(
                "pod {pod} should stay running, not ready and unrestarted; it is: {}",
                describe(&replica)
            );
        }
        tokio::time::sleep(super::POLL).await;
    }
    Ok(())
}

#[then(expr = "the pod {string} has not restarted")]
async fn pod_not_restarted(world: &mut ConformanceWorld, pod: String) -> StepResult {
    let replica = read_replica(world, &pod).await?;
    if replica.restarts != 0 {
        fail!("pod {pod} has restarted: {}", describe(&replica));
    }
    Ok(())
}

#[then(expr = "the pod {string} was never reported in phase {word}")]
async fn pod_never_in(world: &mut ConformanceWorld, pod: String, phase: String) -> StepResult {
    let phase: Phase = phase.parse()?;
    // One more look, so the check covers the scenario up to now.
    let now = read_replica(world, &pod).await?;
    let seen = world.seen_phases.get(&pod).cloned().unwrap_or_default();
    if seen.contains(&phase) {
        fail!(
            "pod {pod} was reported in phase {phase} (phases seen: {seen:?}; now {})",
            describe(&now)
        );
    }
    Ok(())
}

#[then(expr = "the pod {string} is the same pod, on the same node, at the same address")]
async fn same_pod(world: &mut ConformanceWorld, pod: String) -> StepResult {
    let noted = noted(world, &pod)?;
    let now = read_replica(world, &pod).await?;
    if (&now.id, &now.node, &now.ip) != (&noted.id, &noted.node, &noted.ip) {
        fail!(
            "pod {pod} is not the same: it was {} (id {}, address {:?}), it is now {} (id {}, address {:?})",
            describe(&noted),
            noted.id,
            noted.ip,
            describe(&now),
            now.id,
            now.ip
        );
    }
    Ok(())
}

#[then(expr = "the pod {string} is still running and ready, and has not restarted")]
async fn still_running(world: &mut ConformanceWorld, pod: String) -> StepResult {
    let noted = noted(world, &pod)?;
    let now = read_replica(world, &pod).await?;
    let seen = world.seen_phases.get(&pod).cloned().unwrap_or_default();
    if running_and_ready(&now).is_err()
        || now.restarts != 0
        || now.id != noted.id
        || seen.iter().any(|phase| *phase != Phase::Running)
    {
        fail!(
            "pod {pod} did not keep running: it is {} (phases seen: {seen:?})",
            describe(&now)
        );
    }
    Ok(())
}

#[then(
    expr = "within {int} seconds the pod {string} is pending, not scheduled, for a reason naming {string}"
)]
async fn pod_unscheduled(
    world: &mut ConformanceWorld,
    seconds: u64,
    pod: String,
    word: String,
) -> StepResult {
    let what = format!("pending, not scheduled, for a reason naming {word:?}");
    let replica = wait_for_replica(world, &pod, seconds, &what, |replica| {
        unscheduled_naming(replica, &word)
    })
    .await?;
    println!("      {}", describe(&replica));
    Ok(())
}

#[then(expr = "the pod {string} stays pending for {int} seconds")]
async fn pod_stays_pending(world: &mut ConformanceWorld, pod: String, seconds: u64) -> StepResult {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < until {
        let replica = read_replica(world, &pod).await?;
        if replica.phase != Phase::Pending || replica.node.is_some() {
            fail!(
                "pod {pod} did not stay pending and unplaced: {}",
                describe(&replica)
            );
        }
        tokio::time::sleep(super::POLL).await;
    }
    Ok(())
}

#[then(expr = "within {int} seconds the pod {string} is refused, with a reason")]
async fn pod_refused(world: &mut ConformanceWorld, seconds: u64, pod: String) -> StepResult {
    match world.admissions.get(&pod) {
        None => fail!("pod {pod} was not submitted by this scenario"),
        Some(Admission::Refused(reason)) => {
            println!("      refused when submitted: {reason}");
            return Ok(());
        }
        Some(Admission::Accepted) => {}
    }
    // Accepted by the system, then refused by the node it was placed on.
    let replica = wait_for_replica(world, &pod, seconds, "refused, with a reason", |replica| {
        let has_reason = replica.reason.as_deref().is_some_and(|r| !r.is_empty());
        if replica.phase == Phase::Failed && has_reason {
            Ok(())
        } else {
            Err(describe(replica))
        }
    })
    .await?;
    let seen = world.seen_phases.get(&pod).cloned().unwrap_or_default();
    if seen.contains(&Phase::Running) || replica.restarts > 0 {
        fail!(
            "pod {pod} was refused only after it ran: {} (phases seen: {seen:?})",
            describe(&replica)
        );
    }
    println!("      {}", describe(&replica));
    Ok(())
}

#[then(
    expr = "within {int} seconds the pod {string} is pending, waiting for its image, with a reason"
)]
async fn pod_waits_for_image(
    world: &mut ConformanceWorld,
    seconds: u64,
    pod: String,
) -> StepResult {
    let replica = wait_for_replica(
        world,
        &pod,
        seconds,
        "pending, waiting for its image",
        |replica| {
            let why = format!(
                "{} {}",
                replica.reason.as_deref().unwrap_or_default(),
                replica.message.as_deref().unwrap_or_default()
            );
            if replica.phase == Phase::Pending
                && replica.node.is_some()
                && why.to_lowercase().contains("image")
            {
                Ok(())
            } else {
                Err(describe(replica))
            }
        },
    )
    .await?;
    println!("      {}", describe(&replica));
    Ok(())
}

// --- helpers ------------------------------------------------------------------------------

/// A pod of one probe container (version v1) on the probe's port, restarted always.
fn probe_pod(world: &ConformanceWorld, name: &str) -> anyhow::Result<PodSpec> {
    Ok(PodSpec {
        name: name.to_owned(),
        labels: BTreeMap::from([("app".to_owned(), name.to_owned())]),
        containers: vec![ContainerSpec {
            name: "probe".to_owned(),
            image: world.driver()?.probe_image("v1"),
            port: Some(PROBE_PORT),
            ..ContainerSpec::default()
        }],
        restart_policy: RestartPolicy::Always,
        ..PodSpec::default()
    })
}

/// Submits a pod and keeps the system's answer, refused or not.
async fn submit(world: &mut ConformanceWorld, pod: PodSpec) -> StepResult {
    let namespace = world.namespace().await?;
    let admission = world.driver()?.run_pod(&namespace, &pod).await?;
    let ports = pod
        .containers
        .iter()
        .filter_map(|container| Some((container.name.clone(), container.port?)))
        .collect();
    world.ports.insert(pod.name.clone(), ports);
    world.admissions.insert(pod.name, admission);
    Ok(())
}

/// Submits a pod that the system must take on.
async fn submit_accepted(world: &mut ConformanceWorld, pod: PodSpec) -> StepResult {
    let name = pod.name.clone();
    submit(world, pod).await?;
    if let Some(Admission::Refused(reason)) = world.admissions.get(&name) {
        fail!("pod {name} was refused when submitted: {reason}");
    }
    Ok(())
}

/// Waits until a pod is running and ready, then notes it as it is.
async fn running_and_ready_to_note(world: &mut ConformanceWorld, name: &str) -> StepResult {
    let replica = wait_for_replica(
        world,
        name,
        START_SECONDS,
        "running and ready",
        running_and_ready,
    )
    .await?;
    // From here on, the pod must keep running: only what is seen from now on counts.
    world
        .seen_phases
        .insert(name.to_owned(), BTreeSet::from([replica.phase]));
    world.noted_replicas.insert(name.to_owned(), replica);
    Ok(())
}

/// Whether a replica is running and ready; what it is otherwise.
fn running_and_ready(replica: &Replica) -> Result<(), String> {
    if replica.phase == Phase::Running && replica.ready {
        Ok(())
    } else {
        Err(describe(replica))
    }
}

/// The replica as noted when it was first running and ready.
fn noted(world: &ConformanceWorld, pod: &str) -> anyhow::Result<Replica> {
    world
        .noted_replicas
        .get(pod)
        .cloned()
        .ok_or_else(|| anyhow!("pod {pod} was not noted running earlier in this scenario"))
}

/// The port a container of a pod listens on, as submitted.
fn container_port(world: &ConformanceWorld, pod: &str, container: &str) -> anyhow::Result<u16> {
    world
        .ports
        .get(pod)
        .and_then(|ports| ports.get(container))
        .copied()
        .ok_or_else(|| anyhow!("container {container} of pod {pod} was not submitted with a port"))
}

/// Sends a request without a body to a port of a pod.
async fn request(
    world: &mut ConformanceWorld,
    pod: &str,
    port: u16,
    method: &str,
    path: &str,
) -> anyhow::Result<crate::driver::HttpResponse> {
    request_with_body(world, pod, port, method, path, "").await
}

/// How long a pod's container may refuse connections after it is running. A pod without
/// a readiness check is ready once its container runs, which can be before the program in
/// it listens, in Kubernetes as in any system.
const LISTEN_WITHIN: Duration = Duration::from_secs(10);

/// Sends a request to a port of a pod, again while the pod refuses the connection (for at
/// most [`LISTEN_WITHIN`]).
async fn request_with_body(
    world: &mut ConformanceWorld,
    pod: &str,
    port: u16,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<crate::driver::HttpResponse> {
    let namespace = world.namespace().await?;
    let request = HttpRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        body: body.to_owned(),
    };
    let deadline = Instant::now() + LISTEN_WITHIN;
    loop {
        let answer = world
            .driver()?
            .request_replica(&namespace, pod, port, &request)
            .await;
        match answer {
            Err(e) if refused(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answer => return answer,
        }
    }
}

/// Whether the error is a refused connection: nothing listens on the port (yet).
fn refused(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}
