//! The kit's requests expressed as Kubernetes API calls, for every driver whose system
//! speaks that API (the reference now, any kubeconfig-reachable cluster later).
//!
//! Each function does what `kubectl` would do for the same request, and nothing more:
//! `deploy` is `create deployment`, `scale` patches the `scale` subresource, a rollback
//! copies an old ReplicaSet's pod template back into the Deployment as `rollout undo`
//! does. They return once the API server has accepted the write.

use std::collections::BTreeMap;

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec as KubeDeploymentSpec, DeploymentStrategy,
    ReplicaSet, RollingUpdateDeployment, StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::batch::v1::{
    CronJob, CronJobSpec, Job, JobSpec as KubeJobSpec, JobTemplateSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, ExecAction, HTTPGetAction, Namespace,
    Node, Pod, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SecurityContext, Service,
    ServicePort, ServiceSpec as KubeServiceSpec, TCPSocketAction, Taint as KubeTaint, Toleration,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use crate::driver::{
    Admission, Amount, AutoscaleSpec, AutoscalerStatus, CheckAction, ContainerSpec, DaemonSpec,
    DeploymentSpec, HealthCheck, JobOutcome, JobPod, JobSpec, JobState, NodeStatus, Phase,
    Placement, PodSpec as KitPodSpec, Replica, Resources, RestartPolicy, Revision, RevisionEntry,
    Rollout, RolloutStatus, ScheduledJobSpec, ScheduledRun, ServiceSpec, StatefulSpec, Strategy,
    Taint,
};

/// Label that ties a namespace to the conformance run that created it.
pub const RUN_LABEL: &str = "shipshape.conformance/run";

/// Annotation in which Kubernetes records the revision of a Deployment and its ReplicaSets.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// Label a Deployment adds to the template of each of its ReplicaSets (and so to their
/// pods), telling the templates apart.
pub const HASH_LABEL: &str = "pod-template-hash";

/// How many times a delete that met a conflict is retried.
const CONFLICT_RETRIES: usize = 5;

/// Pause before retrying a delete that met a conflict.
const CONFLICT_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// Name of the volume a pod's containers share ([`KitPodSpec::shared_volume`]).
const SHARED_VOLUME: &str = "shared";

/// Annotation of mirror pods (static pods a node reports), which a drain leaves alone.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// How long a drain keeps retrying an eviction refused for now (429).
const EVICTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Pause between two attempts at an eviction refused for now.
const EVICTION_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// A client for the kit from a loaded kubeconfig. It never repeats a request on its own:
/// kube's default layer resends any request answered 429, 503 or 504, up to fifteen times
/// over minutes, and a write answered "unavailable" or "timeout" may already have taken
/// effect — resent, a create comes back "already exists" and a compare-and-set "conflict",
/// and a history of what the clients saw would blame the system for the client's
/// repetition. It would also stretch a step past its own deadline unseen. Where the kit
/// wants another attempt, a step makes it, within its time bound, and knows it did.
pub fn client(mut config: kube::Config) -> anyhow::Result<kube::Client> {
    config.default_retry = false;
    let server = config.cluster_url.to_string();
    kube::Client::try_from(config)
        .with_context(|| format!("failed to build a Kubernetes API client for {server}"))
}

/// The system's name and version, from `/version`: `Kubernetes v1.32.0` (`gitVersion`),
/// with the platform.
pub async fn version(client: &kube::Client) -> anyhow::Result<String> {
    let info = client
        .apiserver_version()
        .await
        .context("failed to read the API server's /version")?;
    Ok(format!("{} ({})", info.git_version, info.platform))
}

/// The pull policy for an image: `Never` for the kit's own images under their local names
/// (`shipshape/…`: no registry has them, the nodes must), `IfNotPresent` for any other
/// reference — a copy of them in a registry the cluster pulls from, say.
pub fn pull_policy(image: &str) -> &'static str {
    if image.starts_with("shipshape/") {
        "Never"
    } else {
        "IfNotPresent"
    }
}

/// Creates a namespace labelled with the run id.
pub async fn create_namespace(
    client: &kube::Client,
    name: &str,
    run_id: &str,
) -> anyhow::Result<()> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(RUN_LABEL.to_owned(), run_id.to_owned())])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("failed to create namespace {name}"))?;
    Ok(())
}

/// Deletes a namespace; one that is already gone is not an error. A conflict (409, which a
/// delete without preconditions should not meet, but which a system may answer while it is
/// itself updating the namespace) is retried a few times.
pub async fn delete_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let api = Api::<Namespace>::all(client.clone());
    let mut conflicts = 0;
    loop {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => return Ok(()),
            Err(error) if is_status(&error, 404) => return Ok(()),
            Err(error) if is_status(&error, 409) && conflicts < CONFLICT_RETRIES => {
                conflicts += 1;
                tokio::time::sleep(CONFLICT_PAUSE).await;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("failed to delete namespace {name}"));
            }
        }
    }
}

/// Creates a Deployment whose labels also select its pods, with one container named
/// after the deployment (pulled as [`pull_policy`] says).
pub async fn deploy(
    client: &kube::Client,
    namespace: &str,
    spec: &DeploymentSpec,
) -> anyhow::Result<()> {
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &deployment_of(spec)?)
        .await
        .with_context(|| format!("failed to create deployment {namespace}/{}", spec.name))?;
    Ok(())
}

/// The Deployment [`deploy`] creates for the kit's description, for callers that set more
/// of it (a rollout strategy, say) before creating it themselves.
pub fn deployment_of(spec: &DeploymentSpec) -> anyhow::Result<Deployment> {
    let labels = Some(spec.labels.clone());
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            labels: labels.clone(),
            ..ObjectMeta::default()
        },
        spec: Some(KubeDeploymentSpec {
            replicas: Some(replicas_to_api(spec.replicas, &spec.name)?),
            selector: LabelSelector {
                match_labels: labels.clone(),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels,
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: spec.name.clone(),
                        image: Some(spec.image.clone()),
                        image_pull_policy: Some(pull_policy(&spec.image).to_owned()),
                        resources: requirements(&spec.requests),
                        ports: spec.port.map(|port| {
                            vec![ContainerPort {
                                container_port: i32::from(port),
                                protocol: Some("TCP".to_owned()),
                                ..ContainerPort::default()
                            }]
                        }),
                        readiness_probe: spec.readiness.as_ref().map(probe_of),
                        env: env_of(&spec.env),
                        ..Container::default()
                    }],
                    termination_grace_period_seconds: spec.termination_grace_seconds.map(i64::from),
                    ..placed(&spec.placement)
                }),
            },
            strategy: strategy_of(spec.rollout.strategy),
            min_ready_seconds: count_to_api(spec.rollout.min_ready_seconds, "minReadySeconds")?,
            progress_deadline_seconds: count_to_api(
                spec.rollout.progress_deadline_seconds,
                "progressDeadlineSeconds",
            )?,
            revision_history_limit: count_to_api(
                spec.rollout.revision_history_limit,
                "revisionHistoryLimit",
            )?,
            ..KubeDeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

/// A Deployment's strategy from the kit's.
fn strategy_of(strategy: Option<Strategy>) -> Option<DeploymentStrategy> {
    let amount = |amount: Amount| match amount {
        Amount::Count(count) => IntOrString::Int(i32::try_from(count).unwrap_or(i32::MAX)),
        Amount::Percent(percent) => IntOrString::String(format!("{percent}%")),
    };
    strategy.map(|strategy| match strategy {
        Strategy::Recreate => DeploymentStrategy {
            type_: Some("Recreate".to_owned()),
            rolling_update: None,
        },
        Strategy::RollingUpdate {
            max_surge,
            max_unavailable,
        } => DeploymentStrategy {
            type_: Some("RollingUpdate".to_owned()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: max_surge.map(amount),
                max_unavailable: max_unavailable.map(amount),
            }),
        },
    })
}

/// The kit's rollout settings from a Deployment's spec, as the system reports them.
fn rollout_of(spec: &KubeDeploymentSpec) -> Rollout {
    let amount = |value: &IntOrString| match value {
        IntOrString::Int(count) => u32::try_from(*count).ok().map(Amount::Count),
        IntOrString::String(text) => text.parse().ok(),
    };
    let strategy = spec
        .strategy
        .as_ref()
        .and_then(|strategy| match strategy.type_.as_deref() {
            Some("Recreate") => Some(Strategy::Recreate),
            Some("RollingUpdate") | None => {
                let rolling = strategy.rolling_update.as_ref();
                Some(Strategy::RollingUpdate {
                    max_surge: rolling.and_then(|r| r.max_surge.as_ref()).and_then(amount),
                    max_unavailable: rolling
                        .and_then(|r| r.max_unavailable.as_ref())
                        .and_then(amount),
                })
            }
            Some(_) => None,
        });
    let count = |value: Option<i32>| value.and_then(|value| u32::try_from(value).ok());
    Rollout {
        strategy,
        min_ready_seconds: count(spec.min_ready_seconds),
        progress_deadline_seconds: count(spec.progress_deadline_seconds),
        revision_history_limit: count(spec.revision_history_limit),
    }
}

/// A count of the kit's as the API's `int32`.
fn count_to_api(value: Option<u32>, field: &str) -> anyhow::Result<Option<i32>> {
    value
        .map(|value| i32::try_from(value).with_context(|| format!("{field} {value} is too large")))
        .transpose()
}

/// Environment variables as a container's list; `None` when there are none.
fn env_of(env: &BTreeMap<String, String>) -> Option<Vec<EnvVar>> {
    (!env.is_empty()).then(|| {
        env.iter()
            .map(|(name, value)| EnvVar {
                name: name.clone(),
                value: Some(value.clone()),
                ..EnvVar::default()
            })
            .collect()
    })
}

/// Deletes a Deployment as `kubectl delete deployment` does: its ReplicaSets and pods go
/// after it (background propagation, the API's default). One already gone is no error.
pub async fn delete_deployment(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<()> {
    match Api::<Deployment>::namespaced(client.clone(), namespace)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if is_status(&error, 404) => Ok(()),
        Err(error) => {
            Err(error).with_context(|| format!("failed to delete deployment {namespace}/{name}"))
        }
    }
}

/// Reads a Deployment back in the kit's terms; `None` if it does not exist.
pub async fn read_deployment(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Option<DeploymentSpec>> {
    let Some(deployment) = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .with_context(|| format!("failed to read deployment {namespace}/{name}"))?
    else {
        return Ok(None);
    };
    let spec = deployment
        .spec
        .as_ref()
        .ok_or_else(|| anyhow!("deployment {namespace}/{name} was reported without a spec"))?;
    let Some(pod) = spec.template.spec.as_ref() else {
        bail!("deployment {namespace}/{name} was reported without a pod spec");
    };
    let (image, requests, port, readiness, env) = match pod.containers.as_slice() {
        [container] => (
            container.image.clone().unwrap_or_default(),
            requests_of(container)
                .with_context(|| format!("deployment {namespace}/{name} has bad requests"))?,
            container
                .ports
                .iter()
                .flatten()
                .find_map(|port| u16::try_from(port.container_port).ok()),
            container.readiness_probe.as_ref().and_then(check_of),
            container
                .env
                .iter()
                .flatten()
                .filter_map(|var| Some((var.name.clone(), var.value.clone()?)))
                .collect(),
        ),
        containers => bail!(
            "deployment {namespace}/{name} was reported with {} containers, expected one",
            containers.len()
        ),
    };
    let placement = placement_of(pod)
        .with_context(|| format!("deployment {namespace}/{name} has a bad placement"))?;
    // The API defaults an unset replica count to 1.
    let replicas = spec.replicas.unwrap_or(1);
    Ok(Some(DeploymentSpec {
        name: deployment.metadata.name.clone().unwrap_or_default(),
        image,
        replicas: u32::try_from(replicas).with_context(|| {
            format!("deployment {namespace}/{name} was reported with {replicas} replicas")
        })?,
        labels: deployment.metadata.labels.clone().unwrap_or_default(),
        placement,
        requests,
        port,
        readiness,
        rollout: rollout_of(spec),
        env,
        termination_grace_seconds: pod
            .termination_grace_period_seconds
            .and_then(|seconds| u32::try_from(seconds).ok()),
    }))
}

/// Sets the replica count through the `scale` subresource, as `kubectl scale` does.
pub async fn scale(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    replicas: u32,
) -> anyhow::Result<()> {
    let patch = serde_json::json!({ "spec": { "replicas": replicas_to_api(replicas, name)? } });
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("failed to scale deployment {namespace}/{name} to {replicas}"))?;
    Ok(())
}

/// Changes the image of the deployment's only container, which starts a rollout, as
/// `kubectl set image` does: a strategic merge patch naming the container (with the
/// `$setElementOrder` directive kubectl adds), which touches nothing else.
pub async fn update_image(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    image: &str,
) -> anyhow::Result<()> {
    let api = Api::<Deployment>::namespaced(client.clone(), namespace);
    let deployment = api
        .get(name)
        .await
        .with_context(|| format!("failed to read deployment {namespace}/{name}"))?;
    let container = match deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .map(|pod| pod.containers.as_slice())
    {
        Some([container]) => container.name.clone(),
        _ => bail!("deployment {namespace}/{name} does not have exactly one container"),
    };
    let patch = serde_json::json!({
        "spec": { "template": { "spec": {
            "$setElementOrder/containers": [{ "name": container }],
            "containers": [{ "name": container, "image": image }],
        } } }
    });
    api.patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .with_context(|| {
            format!("failed to update the image of deployment {namespace}/{name} to {image}")
        })?;
    Ok(())
}

/// The ReplicaSets a Deployment owns, as `kubectl` finds them: those its label selector
/// picks whose controller (the owner reference marked `controller`) is this Deployment.
pub async fn owned_replica_sets(
    client: &kube::Client,
    deployment: &Deployment,
) -> anyhow::Result<Vec<ReplicaSet>> {
    let namespace = deployment.metadata.namespace.clone().unwrap_or_default();
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let uid = deployment.metadata.uid.clone().unwrap_or_default();
    let selector = deployment
        .spec
        .as_ref()
        .map(|spec| label_selector_string(&spec.selector))
        .ok_or_else(|| anyhow!("deployment {namespace}/{name} has no spec"))?;
    let replica_sets = Api::<ReplicaSet>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .with_context(|| {
            format!("failed to list the ReplicaSets of deployment {namespace}/{name}")
        })?;
    Ok(replica_sets
        .items
        .into_iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|owner| owner.controller == Some(true) && owner.uid == uid)
        })
        .collect())
}

/// Annotations a rollback keeps from the Deployment instead of copying them from the
/// ReplicaSet (kubectl's `annotationsToSkip`, in `polymorphichelpers/rollback.go`).
const ANNOTATIONS_TO_SKIP: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// Rolls a Deployment back as `kubectl rollout undo` does (`DeploymentRollbacker` in
/// kubectl's `polymorphichelpers/rollback.go`): among the ReplicaSets it owns, take the
/// one of the wanted revision — for [`Revision::Previous`], the second-highest revision —
/// and, unless its template already is the Deployment's, write that template (without the
/// `pod-template-hash` label) into the Deployment with a JSON patch that replaces
/// `/spec/template` and `/metadata/annotations`; the annotations are the ReplicaSet's, except
/// the revision bookkeeping and kubectl's last applied configuration, which the Deployment
/// keeps. A paused Deployment is not rolled back, as kubectl refuses to.
pub async fn roll_back(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    to: Revision,
) -> anyhow::Result<()> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("failed to read deployment {namespace}/{name}"))?;
    let spec = deployment
        .spec
        .as_ref()
        .ok_or_else(|| anyhow!("deployment {namespace}/{name} has no spec"))?;
    if spec.paused == Some(true) {
        bail!("deployment {namespace}/{name} is paused; a paused deployment is not rolled back");
    }
    let mut history: Vec<(u64, ReplicaSet)> = owned_replica_sets(client, &deployment)
        .await?
        .into_iter()
        .filter_map(|rs| revision_of(&rs.metadata).map(|revision| (revision, rs)))
        .collect();
    history.sort_by_key(|(revision, _)| *revision);
    let wanted = match to {
        Revision::Number(number) => history
            .into_iter()
            .find(|(revision, _)| *revision == number),
        Revision::Previous => history.into_iter().rev().nth(1),
    };
    let Some((revision, replica_set)) = wanted else {
        bail!("deployment {namespace}/{name} has no revision {to:?} to roll back to");
    };
    // The hash label belongs to the ReplicaSet, not to the Deployment's template.
    let template = replica_set
        .spec
        .and_then(|spec| spec.template)
        .map(without_hash)
        .ok_or_else(|| {
            anyhow!("revision {revision} of deployment {namespace}/{name} has no pod template")
        })?;
    if without_hash(spec.template.clone()) == template {
        // kubectl: "skipped rollback (current template already matches revision N)".
        return Ok(());
    }
    let kept = deployment.metadata.annotations.clone().unwrap_or_default();
    let mut annotations: BTreeMap<String, String> = kept
        .into_iter()
        .filter(|(key, _)| ANNOTATIONS_TO_SKIP.contains(&key.as_str()))
        .collect();
    annotations.extend(
        replica_set
            .metadata
            .annotations
            .unwrap_or_default()
            .into_iter()
            .filter(|(key, _)| !ANNOTATIONS_TO_SKIP.contains(&key.as_str())),
    );
    // RFC 6902 `replace` needs the member to exist; `add` replaces it when it does.
    let annotations_op = if deployment.metadata.annotations.is_some() {
        "replace"
    } else {
        "add"
    };
    let patch = serde_json::json!([
        { "op": "replace", "path": "/spec/template", "value": template },
        { "op": annotations_op, "path": "/metadata/annotations", "value": annotations },
    ]);
    json_patch_deployment(client, namespace, name, &patch)
        .await
        .with_context(|| {
            format!("failed to roll deployment {namespace}/{name} back to revision {revision}")
        })?;
    Ok(())
}

/// Applies a JSON patch (RFC 6902) to a Deployment. Sent as a plain request: kube's typed
/// `Patch::Json` needs a feature (and a `json-patch` version) this crate does without.
pub async fn json_patch_deployment(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    patch: &serde_json::Value,
) -> anyhow::Result<Deployment> {
    let request = http::Request::patch(format!(
        "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
    ))
    .header(http::header::CONTENT_TYPE, "application/json-patch+json")
    .body(serde_json::to_vec(patch).context("failed to serialize a JSON patch")?)
    .with_context(|| format!("failed to build a JSON patch of deployment {namespace}/{name}"))?;
    client
        .request::<Deployment>(request)
        .await
        .with_context(|| format!("failed to patch deployment {namespace}/{name}"))
}

/// The `Progressing` condition's reason once a rollout made no progress in time.
const DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

/// Where a Deployment's rollout stands, by the rule `kubectl rollout status` applies
/// (`DeploymentStatusViewer` in kubectl's `polymorphichelpers/rollout_status.go`): first
/// the controller must have seen the latest spec (`observedGeneration ≥ generation`); then
/// a `Progressing` condition with reason `ProgressDeadlineExceeded` means it stalled; then
/// every replica must be updated, no old one left, and every updated one available.
pub async fn rollout_status(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<RolloutStatus> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("failed to read deployment {namespace}/{name}"))?;
    Ok(progress(&deployment))
}

/// [`rollout_status`] of a Deployment already read; the status in a few words is appended
/// to every answer but "complete".
pub fn progress(deployment: &Deployment) -> RolloutStatus {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let status = deployment.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0);
    let conditions: Vec<String> = status
        .conditions
        .iter()
        .flatten()
        .map(|condition| {
            format!(
                "{}={} ({})",
                condition.type_,
                condition.status,
                condition.reason.as_deref().unwrap_or_default()
            )
        })
        .collect();
    let replicas = status.replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let in_words = format!(
        "status: {replicas} replicas, {updated} updated, {available} available, observed generation {observed} of {generation}; {}",
        conditions.join(", ")
    );
    if observed < generation {
        return RolloutStatus::InProgress(format!(
            "waiting for deployment spec update to be observed; {in_words}"
        ));
    }
    let progressing = status
        .conditions
        .iter()
        .flatten()
        .find(|condition| condition.type_ == "Progressing");
    if let Some(condition) = progressing
        && condition.reason.as_deref() == Some(DEADLINE_EXCEEDED)
    {
        return RolloutStatus::Stalled(format!(
            "the rollout exceeded its progress deadline: {}; {in_words}",
            condition.message.as_deref().unwrap_or_default()
        ));
    }
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1);
    if updated < desired {
        RolloutStatus::InProgress(format!(
            "{updated} out of {desired} new replicas have been updated; {in_words}"
        ))
    } else if replicas > updated {
        RolloutStatus::InProgress(format!(
            "{} old replicas are pending termination; {in_words}",
            replicas - updated
        ))
    } else if available < updated {
        RolloutStatus::InProgress(format!(
            "{available} of {updated} updated replicas are available; {in_words}"
        ))
    } else {
        RolloutStatus::Complete
    }
}

/// A Deployment's history as `kubectl rollout history` lists it: the ReplicaSets it owns,
/// by revision, with the image each runs and its change cause.
pub async fn history(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Vec<RevisionEntry>> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("failed to read deployment {namespace}/{name}"))?;
    let mut history = owned_replica_sets(client, &deployment)
        .await?
        .iter()
        .map(|rs| {
            let rs_name = rs.metadata.name.as_deref().unwrap_or_default();
            Ok(RevisionEntry {
                number: revision_of(&rs.metadata)
                    .ok_or_else(|| anyhow!("ReplicaSet {rs_name} has no revision"))?,
                image: rs
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.template.as_ref())
                    .and_then(|template| template.spec.as_ref())
                    .and_then(|pod| pod.containers.first())
                    .and_then(|container| container.image.clone())
                    .unwrap_or_default(),
                change_cause: rs
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|annotations| annotations.get("kubernetes.io/change-cause"))
                    .cloned(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    history.sort_by_key(|entry| entry.number);
    Ok(history)
}

/// Sets an environment variable of the Deployment's first container, replacing all of its
/// environment (the kit's deployments have none of their own), with a JSON patch.
pub async fn set_env(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    variable: &str,
    value: &str,
) -> anyhow::Result<()> {
    let patch = serde_json::json!([{
        "op": "add",
        "path": "/spec/template/spec/containers/0/env",
        "value": [{ "name": variable, "value": value }],
    }]);
    json_patch_deployment(client, namespace, name, &patch)
        .await
        .with_context(|| {
            format!(
                "failed to set {variable}={value} in the template of deployment {namespace}/{name}"
            )
        })?;
    Ok(())
}

/// A pod template without the `pod-template-hash` label: a ReplicaSet's template as the
/// Deployment's would be, to compare them as kubectl does (`equalIgnoreHash`).
fn without_hash(mut template: PodTemplateSpec) -> PodTemplateSpec {
    if let Some(labels) = template
        .metadata
        .as_mut()
        .and_then(|meta| meta.labels.as_mut())
    {
        labels.remove(HASH_LABEL);
    }
    template
}

/// Creates a Service selecting the deployment's pods, as `kubectl expose` does, of type
/// `NodePort`: reachable from outside the cluster on a port of every node.
pub async fn expose(
    client: &kube::Client,
    namespace: &str,
    service: &ServiceSpec,
) -> anyhow::Result<()> {
    let selector = deployment_selector(client, namespace, &service.deployment).await?;
    expose_selector(client, namespace, service, &selector).await
}

/// The labels a Deployment selects its pods by (its `matchLabels`).
async fn deployment_selector(
    client: &kube::Client,
    namespace: &str,
    deployment: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(deployment)
        .await
        .with_context(|| {
            format!("failed to read deployment {namespace}/{deployment} to expose it")
        })?
        .spec
        .and_then(|spec| spec.selector.match_labels)
        .ok_or_else(|| anyhow!("deployment {namespace}/{deployment} has no label selector"))
}

/// Creates a NodePort Service named and ported as `service` says, selecting the pods that
/// carry `selector`.
pub async fn expose_selector(
    client: &kube::Client,
    namespace: &str,
    service: &ServiceSpec,
    selector: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let object = Service {
        metadata: ObjectMeta {
            name: Some(service.name.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(KubeServiceSpec {
            selector: Some(selector.clone()),
            ports: Some(vec![ServicePort {
                port: i32::from(service.port),
                target_port: Some(IntOrString::Int(i32::from(service.target_port))),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            type_: Some("NodePort".to_owned()),
            ..KubeServiceSpec::default()
        }),
        ..Service::default()
    };
    Api::<Service>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &object)
        .await
        .with_context(|| format!("failed to create service {namespace}/{}", service.name))?;
    Ok(())
}

/// The (first) port of a service.
pub async fn service_port(
    client: &kube::Client,
    namespace: &str,
    service: &str,
) -> anyhow::Result<u16> {
    Api::<Service>::namespaced(client.clone(), namespace)
        .get(service)
        .await
        .with_context(|| format!("failed to read service {namespace}/{service}"))?
        .spec
        .and_then(|spec| spec.ports)
        .and_then(|ports| ports.first().map(|port| port.port))
        .and_then(|port| u16::try_from(port).ok())
        .ok_or_else(|| anyhow!("service {namespace}/{service} has no port"))
}

/// A service's cluster IP and (first) port: where pods of the cluster reach it.
pub async fn cluster_ip(
    client: &kube::Client,
    namespace: &str,
    service: &str,
) -> anyhow::Result<(String, u16)> {
    let spec = Api::<Service>::namespaced(client.clone(), namespace)
        .get(service)
        .await
        .with_context(|| format!("failed to read service {namespace}/{service}"))?
        .spec
        .ok_or_else(|| anyhow!("service {namespace}/{service} has no spec"))?;
    let ip = spec
        .cluster_ip
        .filter(|ip| !ip.is_empty() && ip != "None")
        .ok_or_else(|| anyhow!("service {namespace}/{service} has no cluster IP"))?;
    let port = spec
        .ports
        .and_then(|ports| ports.first().map(|port| port.port))
        .and_then(|port| u16::try_from(port).ok())
        .ok_or_else(|| anyhow!("service {namespace}/{service} has no port"))?;
    Ok((ip, port))
}

/// The node port the system gave a service's (first) port.
pub async fn node_port(
    client: &kube::Client,
    namespace: &str,
    service: &str,
) -> anyhow::Result<u16> {
    let object = Api::<Service>::namespaced(client.clone(), namespace)
        .get(service)
        .await
        .with_context(|| format!("failed to read service {namespace}/{service}"))?;
    let spec = object
        .spec
        .ok_or_else(|| anyhow!("service {namespace}/{service} has no spec"))?;
    if spec.type_.as_deref() != Some("NodePort") && spec.type_.as_deref() != Some("LoadBalancer") {
        bail!(
            "service {namespace}/{service} is of type {:?}, not NodePort: it cannot be reached from outside the cluster",
            spec.type_.unwrap_or_default()
        );
    }
    spec.ports
        .iter()
        .flatten()
        .find_map(|port| port.node_port)
        .and_then(|port| u16::try_from(port).ok())
        .ok_or_else(|| anyhow!("service {namespace}/{service} has no node port (yet)"))
}

/// Lists the pods selected by a deployment's label selector.
pub async fn list_replicas(
    client: &kube::Client,
    namespace: &str,
    deployment: &str,
) -> anyhow::Result<Vec<Replica>> {
    let selector = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(deployment)
        .await
        .with_context(|| format!("failed to read deployment {namespace}/{deployment}"))?
        .spec
        .map(|spec| label_selector_string(&spec.selector))
        .filter(|selector| !selector.is_empty())
        .ok_or_else(|| anyhow!("deployment {namespace}/{deployment} has no label selector"))?;
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .with_context(|| {
            format!("failed to list the pods of deployment {namespace}/{deployment}")
        })?;
    pods.items
        .iter()
        .map(|pod| replica_of(namespace, pod))
        .collect()
}

/// Reads one pod as a replica.
/// A pod's phase; one nobody has reported on yet is pending.
fn phase_of(namespace: &str, pod: &Pod) -> anyhow::Result<Phase> {
    Ok(
        match pod
            .status
            .as_ref()
            .and_then(|status| status.phase.as_deref())
        {
            None | Some("Pending") => Phase::Pending,
            Some("Running") => Phase::Running,
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            Some("Unknown") => Phase::Unknown,
            Some(other) => bail!(
                "pod {namespace}/{} reports an unknown phase {other:?}",
                pod.name_any()
            ),
        },
    )
}

fn replica_of(namespace: &str, pod: &Pod) -> anyhow::Result<Replica> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref();
    let phase = phase_of(namespace, pod)?;
    let conditions = status
        .and_then(|status| status.conditions.as_deref())
        .unwrap_or_default();
    let ready_condition = conditions
        .iter()
        .find(|condition| condition.type_ == "Ready" && condition.status == "True");
    let ready = ready_condition.is_some();
    let ready_since = ready_condition
        .and_then(|condition| condition.last_transition_time.as_ref())
        .and_then(|time| {
            let millis = u64::try_from(time.0.as_millisecond()).ok()?;
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis))
        });
    let containers = status
        .and_then(|status| status.container_statuses.as_deref())
        .unwrap_or_default();
    let restarts = containers
        .iter()
        .map(|container| u32::try_from(container.restart_count).unwrap_or(0))
        .sum();
    // Why it is not running as it should: refused by its node (the pod's own reason), not
    // scheduled (the PodScheduled condition), or a container waiting or failed.
    let unscheduled = conditions
        .iter()
        .find(|condition| condition.type_ == "PodScheduled" && condition.status == "False");
    let waiting = containers.iter().find_map(|container| {
        let waiting = container.state.as_ref()?.waiting.as_ref()?;
        Some((waiting.reason.clone()?, waiting.message.clone()))
    });
    let failed = containers.iter().find_map(|container| {
        let terminated = container.state.as_ref()?.terminated.as_ref()?;
        (terminated.exit_code != 0).then(|| {
            (
                terminated
                    .reason
                    .clone()
                    .unwrap_or_else(|| "Error".to_owned()),
                Some(format!(
                    "container {} exited with code {}",
                    container.name, terminated.exit_code
                )),
            )
        })
    });
    let (reason, message) = if let Some(reason) = status.and_then(|s| s.reason.clone()) {
        (Some(reason), status.and_then(|s| s.message.clone()))
    } else if let Some(condition) = unscheduled {
        (condition.reason.clone(), condition.message.clone())
    } else if let Some((reason, message)) = waiting.or(failed) {
        (Some(reason), message)
    } else {
        (None, None)
    };
    Ok(Replica {
        name,
        id: pod.metadata.uid.clone().unwrap_or_default(),
        phase,
        node: pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.clone())
            .filter(|node| !node.is_empty()),
        ready,
        restarts,
        ip: status
            .and_then(|status| status.pod_ip.clone())
            .filter(|ip| !ip.is_empty()),
        reason,
        message,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        image: pod
            .spec
            .as_ref()
            .and_then(|spec| spec.containers.first())
            .and_then(|container| container.image.clone()),
        template: pod
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(HASH_LABEL))
            .cloned(),
        ready_since: ready.then_some(ready_since).flatten(),
    })
}

/// Reads one pod as a replica; `None` if it does not exist.
pub async fn read_replica(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Option<Replica>> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .with_context(|| format!("failed to read pod {namespace}/{name}"))?
        .map(|pod| replica_of(namespace, &pod))
        .transpose()
}

/// Creates a Pod from the kit's description, as `kubectl apply` of the equivalent manifest
/// would. A refusal by the API (403 Forbidden, 422 Invalid: an admission policy, say) is
/// an answer, not an error.
pub async fn run_pod(
    client: &kube::Client,
    namespace: &str,
    spec: &KitPodSpec,
) -> anyhow::Result<Admission> {
    let pod = pod_of(spec);
    match Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &pod)
        .await
    {
        Ok(_) => Ok(Admission::Accepted),
        Err(kube::Error::Api(status)) if [403, 422].contains(&status.code) => {
            Ok(Admission::Refused(status.message))
        }
        Err(error) => {
            Err(error).with_context(|| format!("failed to create pod {namespace}/{}", spec.name))
        }
    }
}

/// Label that ties a daemon's pods to it (its selector).
const DAEMON_LABEL: &str = "shipshape.conformance/daemon";

/// A DaemonSet of one probe container per pod, on the nodes whose labels match the
/// daemon's node selector.
pub async fn run_daemon(
    client: &kube::Client,
    namespace: &str,
    spec: &DaemonSpec,
) -> anyhow::Result<()> {
    let labels = BTreeMap::from([(DAEMON_LABEL.to_owned(), spec.name.clone())]);
    let container = ContainerSpec {
        name: "probe".to_owned(),
        image: spec.image.clone(),
        ..ContainerSpec::default()
    };
    let daemon = DaemonSet {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container_of(&container)],
                    node_selector: (!spec.node_selector.is_empty())
                        .then(|| spec.node_selector.clone()),
                    ..PodSpec::default()
                }),
            },
            ..DaemonSetSpec::default()
        }),
        status: None,
    };
    Api::<DaemonSet>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &daemon)
        .await
        .with_context(|| format!("failed to create daemon set {namespace}/{}", spec.name))?;
    Ok(())
}

/// `kubectl set image ds/<name> probe=<image>`.
pub async fn set_daemon_image(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    image: &str,
) -> anyhow::Result<()> {
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "probe", "image": image, "imagePullPolicy": pull_policy(image)}
    ]}}}});
    Api::<DaemonSet>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .with_context(|| format!("failed to set the image of daemon set {namespace}/{name}"))?;
    Ok(())
}

/// The pods of a daemon set, as replicas.
pub async fn list_daemon_pods(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Vec<Replica>> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{DAEMON_LABEL}={name}")))
        .await
        .with_context(|| format!("failed to list the pods of daemon set {namespace}/{name}"))?;
    pods.items
        .iter()
        .map(|pod| replica_of(namespace, pod))
        .collect()
}

/// Label that ties a stateful set's pods to it (its selector).
const STATEFUL_LABEL: &str = "shipshape.conformance/stateful-set";

/// A StatefulSet of one container per pod, its pods started in order (`OrderedReady`, the
/// default). Its `serviceName` is its own name; the kit creates no such Service, since it
/// reaches pods by address, not by DNS name.
pub async fn run_stateful_set(
    client: &kube::Client,
    namespace: &str,
    spec: &StatefulSpec,
) -> anyhow::Result<()> {
    let labels = BTreeMap::from([(STATEFUL_LABEL.to_owned(), spec.name.clone())]);
    let set = StatefulSet {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(i32::try_from(spec.replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                match_expressions: None,
            },
            service_name: Some(spec.name.clone()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container_of(&spec.container)],
                    ..PodSpec::default()
                }),
            },
            ..StatefulSetSpec::default()
        }),
        status: None,
    };
    Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &set)
        .await
        .with_context(|| format!("failed to create stateful set {namespace}/{}", spec.name))?;
    Ok(())
}

/// `kubectl autoscale deployment <name> --min --max --cpu-percent`, with the scale-down
/// stabilization window given: an `autoscaling/v2` HorizontalPodAutoscaler named after
/// the deployment.
pub async fn autoscale(
    client: &kube::Client,
    namespace: &str,
    spec: &AutoscaleSpec,
) -> anyhow::Result<()> {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let window = spec.scale_down_after.as_secs();
    let autoscaler = serde_json::json!({
        "metadata": {"name": spec.deployment},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.deployment},
            "minReplicas": spec.min, "maxReplicas": spec.max,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": spec.cpu_percent}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": window}},
        },
    });
    let autoscaler: HorizontalPodAutoscaler = serde_json::from_value(autoscaler)?;
    Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &autoscaler)
        .await
        .with_context(|| {
            format!(
                "failed to autoscale deployment {namespace}/{}",
                spec.deployment
            )
        })?;
    Ok(())
}

/// What the autoscaler of `deployment` reports: its desired and current replicas, the
/// CPU utilization it last measured, and its `ScalingActive` condition.
pub async fn read_autoscaler(
    client: &kube::Client,
    namespace: &str,
    deployment: &str,
) -> anyhow::Result<AutoscalerStatus> {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let api = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace);
    let autoscaler = api
        .get(deployment)
        .await
        .with_context(|| format!("failed to read the autoscaler {namespace}/{deployment}"))?;
    let status = autoscaler.status.unwrap_or_default();
    let active = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "ScalingActive");
    let measuring = active.map(|c| match c.status.as_str() {
        "True" => Ok(()),
        _ => Err(format!(
            "{}: {}",
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default()
        )),
    });
    let cpu_percent = status.current_metrics.iter().flatten().find_map(|metric| {
        let resource = metric.resource.as_ref().filter(|r| r.name == "cpu")?;
        u32::try_from(resource.current.average_utilization?).ok()
    });
    Ok(AutoscalerStatus {
        desired: u32::try_from(status.desired_replicas).unwrap_or(0),
        current: u32::try_from(status.current_replicas.unwrap_or(0)).unwrap_or(0),
        cpu_percent,
        measuring,
    })
}

/// `kubectl scale sts/<name> --replicas=N`.
pub async fn scale_stateful_set(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    replicas: u32,
) -> anyhow::Result<()> {
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .patch_scale(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .with_context(|| format!("failed to scale stateful set {namespace}/{name}"))?;
    Ok(())
}

/// `kubectl set image sts/<name>`, with the rolling update's `partition` at `from`: pods
/// of a lower ordinal keep their image.
pub async fn set_stateful_image(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    image: &str,
    from: u32,
) -> anyhow::Result<()> {
    let patch = serde_json::json!({"spec": {
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": from}},
        "template": {"spec": {"containers": [
            {"name": "probe", "image": image, "imagePullPolicy": pull_policy(image)}
        ]}}
    }});
    Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .with_context(|| format!("failed to set the image of stateful set {namespace}/{name}"))?;
    Ok(())
}

/// The pods of a stateful set, as replicas.
pub async fn list_stateful_pods(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Vec<Replica>> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{STATEFUL_LABEL}={name}")))
        .await
        .with_context(|| format!("failed to list the pods of stateful set {namespace}/{name}"))?;
    pods.items
        .iter()
        .map(|pod| replica_of(namespace, pod))
        .collect()
}

/// `kubectl create job`, with the kit's counts: `completions` pods must succeed,
/// `parallelism` run at once, a failed one is retried `retries` times (`backoffLimit`);
/// each pod runs once (`restartPolicy: Never`), so every try is a pod of its own.
pub async fn run_job(client: &kube::Client, namespace: &str, spec: &JobSpec) -> anyhow::Result<()> {
    let job = Job {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(job_spec_of(spec)),
        status: None,
    };
    Api::<Job>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &job)
        .await
        .with_context(|| format!("failed to create job {namespace}/{}", spec.name))?;
    Ok(())
}

/// The Job spec for the kit's job (see [`run_job`]).
fn job_spec_of(spec: &JobSpec) -> KubeJobSpec {
    let count = |n: u32| Some(i32::try_from(n).unwrap_or(i32::MAX));
    let container = ContainerSpec {
        name: "probe".to_owned(),
        image: spec.image.clone(),
        env: spec.env.clone(),
        ..ContainerSpec::default()
    };
    KubeJobSpec {
        completions: count(spec.completions),
        parallelism: count(spec.parallelism),
        backoff_limit: count(spec.retries),
        template: PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![container_of(&container)],
                restart_policy: Some("Never".to_owned()),
                ..PodSpec::default()
            }),
        },
        ..KubeJobSpec::default()
    }
}

/// A Job's outcome (its `Complete` or `Failed` condition) and the pods its selector finds.
pub async fn read_job(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Option<JobState>> {
    let Some(job) = Api::<Job>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .with_context(|| format!("failed to read job {namespace}/{name}"))?
    else {
        return Ok(None);
    };
    job_state(client, namespace, &job).await.map(Some)
}

/// `kubectl create cronjob`: a CronJob whose Job template is the kit's job.
pub async fn run_scheduled_job(
    client: &kube::Client,
    namespace: &str,
    spec: &ScheduledJobSpec,
) -> anyhow::Result<()> {
    let cron_job = CronJob {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(CronJobSpec {
            schedule: spec.schedule.clone(),
            job_template: JobTemplateSpec {
                metadata: None,
                spec: Some(job_spec_of(&spec.job)),
            },
            ..CronJobSpec::default()
        }),
        status: None,
    };
    Api::<CronJob>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &cron_job)
        .await
        .with_context(|| format!("failed to create cron job {namespace}/{}", spec.name))?;
    Ok(())
}

/// The Jobs a CronJob controls (by their owner reference), oldest first.
pub async fn list_scheduled_runs(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Vec<ScheduledRun>> {
    let what = || format!("the jobs of cron job {namespace}/{name}");
    let cron_job = Api::<CronJob>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("failed to read cron job {namespace}/{name}"))?;
    let jobs = Api::<Job>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .with_context(|| format!("failed to list {}", what()))?;
    let mut runs = Vec::new();
    for job in &jobs.items {
        let owned = job
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == cron_job.metadata.uid.as_ref());
        if !owned {
            continue;
        }
        let created =
            job.metadata.creation_timestamp.as_ref().ok_or_else(|| {
                anyhow!("job {} of {} has no creation time", job.name_any(), what())
            })?;
        runs.push(ScheduledRun {
            name: job.name_any(),
            created: std::time::SystemTime::from(created.0),
            job: job_state(client, namespace, job).await?,
        });
    }
    runs.sort_by_key(|run| run.created);
    Ok(runs)
}

/// A Job's outcome and pods (see [`read_job`]).
async fn job_state(client: &kube::Client, namespace: &str, job: &Job) -> anyhow::Result<JobState> {
    let name = job.name_any();
    let conditions = job.status.as_ref().and_then(|s| s.conditions.clone());
    let holds = |kind: &str| {
        conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == kind && c.status == "True")
    };
    let outcome = if holds("Complete").is_some() {
        Some(JobOutcome::Complete)
    } else {
        holds("Failed").map(|c| {
            JobOutcome::Failed(format!(
                "{}: {}",
                c.reason.as_deref().unwrap_or("Failed"),
                c.message.as_deref().unwrap_or_default()
            ))
        })
    };
    let selector = job
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .map(label_selector_string)
        .ok_or_else(|| anyhow!("job {namespace}/{name} has no selector"))?;
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .with_context(|| format!("failed to list the pods of job {namespace}/{name}"))?;
    let time = |t: &Time| std::time::SystemTime::from(t.0);
    let mut ran = Vec::new();
    for pod in &pods.items {
        let state = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref());
        let running = state.and_then(|s| s.running.as_ref());
        let ended = state.and_then(|s| s.terminated.as_ref());
        ran.push(JobPod {
            name: pod.name_any(),
            phase: phase_of(namespace, pod)?,
            started: running
                .and_then(|r| r.started_at.as_ref())
                .or(ended.and_then(|t| t.started_at.as_ref()))
                .map(time),
            finished: ended.and_then(|t| t.finished_at.as_ref()).map(time),
        });
    }
    Ok(JobState { outcome, pods: ran })
}

/// The Pod for the kit's description (images pulled as [`pull_policy`] says).
fn pod_of(spec: &KitPodSpec) -> Pod {
    let mount = spec.shared_volume.as_ref().map(|path| {
        vec![VolumeMount {
            name: SHARED_VOLUME.to_owned(),
            mount_path: path.clone(),
            ..VolumeMount::default()
        }]
    });
    let containers = spec
        .containers
        .iter()
        .map(|container| Container {
            volume_mounts: mount.clone(),
            ..container_of(container)
        })
        .collect();
    let restart_policy = match spec.restart_policy {
        RestartPolicy::Always => "Always",
        RestartPolicy::OnFailure => "OnFailure",
        RestartPolicy::Never => "Never",
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            labels: (!spec.labels.is_empty()).then(|| spec.labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers,
            restart_policy: Some(restart_policy.to_owned()),
            termination_grace_period_seconds: spec.termination_grace_seconds.map(i64::from),
            volumes: spec.shared_volume.as_ref().map(|_| {
                vec![Volume {
                    name: SHARED_VOLUME.to_owned(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                }]
            }),
            ..placed(&spec.placement)
        }),
        ..Pod::default()
    }
}

/// One container of a Pod, for the kit's description of it.
fn container_of(spec: &ContainerSpec) -> Container {
    let non_empty = |list: &Vec<String>| (!list.is_empty()).then(|| list.clone());
    Container {
        name: spec.name.clone(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some(pull_policy(&spec.image).to_owned()),
        command: non_empty(&spec.command),
        args: non_empty(&spec.args),
        env: env_of(&spec.env),
        ports: spec.port.map(|port| {
            vec![ContainerPort {
                container_port: i32::from(port),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            }]
        }),
        resources: requirements(&spec.requests),
        liveness_probe: spec.liveness.as_ref().map(probe_of),
        readiness_probe: spec.readiness.as_ref().map(probe_of),
        security_context: spec.privileged.then(|| SecurityContext {
            privileged: Some(true),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// A probe for the kit's health check.
fn probe_of(check: &HealthCheck) -> Probe {
    let saturate = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let mut probe = Probe {
        period_seconds: Some(saturate(check.period_seconds)),
        failure_threshold: Some(saturate(check.failure_threshold)),
        timeout_seconds: Some(1),
        ..Probe::default()
    };
    match &check.action {
        CheckAction::HttpGet { port, path } => {
            probe.http_get = Some(HTTPGetAction {
                port: IntOrString::Int(i32::from(*port)),
                path: Some(path.clone()),
                ..HTTPGetAction::default()
            });
        }
        CheckAction::TcpConnect { port } => {
            probe.tcp_socket = Some(TCPSocketAction {
                port: IntOrString::Int(i32::from(*port)),
                ..TCPSocketAction::default()
            });
        }
        CheckAction::Exec { command } => {
            probe.exec = Some(ExecAction {
                command: Some(command.clone()),
            });
        }
    }
    probe
}

/// The kit's health check for a probe, if it is one the kit describes.
fn check_of(probe: &Probe) -> Option<HealthCheck> {
    let port = |port: &IntOrString| match port {
        IntOrString::Int(port) => u16::try_from(*port).ok(),
        IntOrString::String(_) => None,
    };
    let action = if let Some(get) = &probe.http_get {
        CheckAction::HttpGet {
            port: port(&get.port)?,
            path: get.path.clone().unwrap_or_else(|| "/".to_owned()),
        }
    } else if let Some(tcp) = &probe.tcp_socket {
        CheckAction::TcpConnect {
            port: port(&tcp.port)?,
        }
    } else {
        CheckAction::Exec {
            command: probe.exec.as_ref()?.command.clone().unwrap_or_default(),
        }
    };
    let unsigned =
        |n: Option<i32>, default: u32| n.map_or(Some(default), |n| u32::try_from(n).ok());
    Some(HealthCheck {
        action,
        period_seconds: unsigned(probe.period_seconds, 10)?,
        failure_threshold: unsigned(probe.failure_threshold, 3)?,
    })
}

/// A pod spec carrying only the placement (node selector, tolerations), to be completed.
fn placed(placement: &Placement) -> PodSpec {
    let tolerations: Vec<Toleration> = placement
        .tolerations
        .iter()
        .map(|taint| Toleration {
            key: Some(taint.key.clone()),
            operator: Some("Equal".to_owned()),
            value: Some(taint.value.clone()),
            effect: Some(taint.effect.as_str().to_owned()),
            ..Toleration::default()
        })
        .collect();
    PodSpec {
        node_selector: (!placement.node_selector.is_empty())
            .then(|| placement.node_selector.clone()),
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        ..PodSpec::default()
    }
}

/// The placement a pod spec asks for, in the kit's terms.
fn placement_of(pod: &PodSpec) -> anyhow::Result<Placement> {
    let tolerations = pod
        .tolerations
        .iter()
        .flatten()
        .map(|toleration| {
            let effect = toleration.effect.as_deref().unwrap_or_default();
            Ok(Taint {
                key: toleration.key.clone().unwrap_or_default(),
                value: toleration.value.clone().unwrap_or_default(),
                effect: effect.parse()?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Placement {
        node_selector: pod.node_selector.clone().unwrap_or_default(),
        tolerations,
    })
}

/// Resource requests for the kit's amounts; `None` when nothing is asked.
fn requirements(requests: &Resources) -> Option<ResourceRequirements> {
    let mut map = BTreeMap::new();
    if let Some(millicpu) = requests.millicpu {
        map.insert("cpu".to_owned(), Quantity(cpu_quantity(millicpu)));
    }
    if let Some(bytes) = requests.memory_bytes {
        map.insert("memory".to_owned(), Quantity(bytes.to_string()));
    }
    (!map.is_empty()).then(|| ResourceRequirements {
        requests: Some(map),
        ..ResourceRequirements::default()
    })
}

/// What a container requests, in the kit's amounts.
fn requests_of(container: &Container) -> anyhow::Result<Resources> {
    let requests = container
        .resources
        .as_ref()
        .and_then(|resources| resources.requests.as_ref());
    resources_of(requests)
}

/// CPU and memory from a map of quantities (requests, a node's allocatable).
fn resources_of(map: Option<&BTreeMap<String, Quantity>>) -> anyhow::Result<Resources> {
    let Some(map) = map else {
        return Ok(Resources::default());
    };
    Ok(Resources {
        millicpu: map
            .get("cpu")
            .map(|quantity| parse_millicpu(&quantity.0))
            .transpose()?,
        memory_bytes: map
            .get("memory")
            .map(|quantity| parse_bytes(&quantity.0))
            .transpose()?,
    })
}

/// A CPU quantity for thousandths of a CPU: whole CPUs when it is a whole number.
fn cpu_quantity(millicpu: u64) -> String {
    if millicpu.is_multiple_of(1000) {
        (millicpu / 1000).to_string()
    } else {
        format!("{millicpu}m")
    }
}

/// Thousandths of a CPU in a quantity (`2`, `500m`, `1.5`).
pub fn parse_millicpu(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    if let Some(millis) = text.strip_suffix('m') {
        return millis
            .parse()
            .with_context(|| format!("CPU quantity {text:?} does not parse"));
    }
    let cpus: f64 = text
        .parse()
        .with_context(|| format!("CPU quantity {text:?} does not parse"))?;
    if !cpus.is_finite() || cpus < 0.0 {
        bail!("CPU quantity {text:?} is not a positive amount");
    }
    // Quantities are at most a few thousand CPUs: the product fits and rounds exactly.
    Ok((cpus * 1000.0).round() as u64)
}

/// Bytes in a memory quantity (`1024`, `64Mi`, `4Gi`, `1G`, `1e9`).
pub fn parse_bytes(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    const SUFFIXES: &[(&str, u64)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("k", 1_000),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
    ];
    let (number, unit) = SUFFIXES
        .iter()
        .find_map(|(suffix, unit)| Some((text.strip_suffix(suffix)?, *unit)))
        .unwrap_or((text, 1));
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(unit)
            .ok_or_else(|| anyhow!("memory quantity {text:?} is too large"));
    }
    let amount: f64 = number
        .parse()
        .with_context(|| format!("memory quantity {text:?} does not parse"))?;
    if !amount.is_finite() || amount < 0.0 {
        bail!("memory quantity {text:?} is not a positive amount");
    }
    Ok((amount * unit as f64).round() as u64)
}

/// Lists the Nodes, in the kit's terms.
pub async fn list_nodes(client: &kube::Client) -> anyhow::Result<Vec<NodeStatus>> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("failed to list the nodes")?;
    nodes.items.iter().map(node_status_of).collect()
}

/// One Node in the kit's terms.
fn node_status_of(node: &Node) -> anyhow::Result<NodeStatus> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let status = node.status.as_ref();
    let ready = status
        .and_then(|status| status.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|condition| condition.type_ == "Ready" && condition.status == "True");
    let spec = node.spec.as_ref();
    let taints = spec
        .and_then(|spec| spec.taints.as_ref())
        .into_iter()
        .flatten()
        .map(|taint| {
            Ok(Taint {
                key: taint.key.clone(),
                value: taint.value.clone().unwrap_or_default(),
                effect: taint.effect.parse()?,
            })
        })
        .collect::<anyhow::Result<_>>()
        .with_context(|| format!("node {name} has a bad taint"))?;
    Ok(NodeStatus {
        ready,
        schedulable: !spec.and_then(|spec| spec.unschedulable).unwrap_or(false),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        taints,
        allocatable: resources_of(status.and_then(|status| status.allocatable.as_ref()))
            .with_context(|| format!("node {name} reports a bad allocatable amount"))?,
        name,
    })
}

/// Sets (`Some`) or removes (`None`) one label of a Node, with a merge patch that touches
/// nothing else.
pub async fn label_node(
    client: &kube::Client,
    node: &str,
    key: &str,
    value: Option<&str>,
) -> anyhow::Result<()> {
    let patch = serde_json::json!({ "metadata": { "labels": { key: value } } });
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| match value {
            Some(value) => format!("failed to label node {node} with {key}={value}"),
            None => format!("failed to remove the label {key} from node {node}"),
        })?;
    Ok(())
}

/// Adds (`present`) or removes a taint of a Node. The node's agent keeps writing its
/// status, so the new taint list goes in with a merge patch (of `spec.taints` only) rather
/// than a replace that would conflict with every heartbeat.
pub async fn taint_node(
    client: &kube::Client,
    node: &str,
    taint: &Taint,
    present: bool,
) -> anyhow::Result<()> {
    let api = Api::<Node>::all(client.clone());
    let current = api
        .get(node)
        .await
        .with_context(|| format!("failed to read node {node}"))?;
    let same = |other: &KubeTaint| {
        other.key == taint.key
            && other.value.as_deref().unwrap_or_default() == taint.value
            && other.effect == taint.effect.as_str()
    };
    let mut taints: Vec<KubeTaint> = current
        .spec
        .and_then(|spec| spec.taints)
        .unwrap_or_default()
        .into_iter()
        .filter(|other| !same(other))
        .collect();
    if present {
        taints.push(KubeTaint {
            key: taint.key.clone(),
            value: (!taint.value.is_empty()).then(|| taint.value.clone()),
            effect: taint.effect.as_str().to_owned(),
            ..KubeTaint::default()
        });
    }
    let patch = serde_json::json!({ "spec": { "taints": taints } });
    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| {
            if present {
                format!("failed to taint node {node} with {taint}")
            } else {
                format!("failed to remove the taint {taint} from node {node}")
            }
        })?;
    Ok(())
}

/// Deletes a Node object; one that is already gone is not an error.
pub async fn delete_node(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    match Api::<Node>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if is_status(&error, 404) => Ok(()),
        Err(error) => Err(error).with_context(|| format!("failed to delete node {name}")),
    }
}

/// Deletes one pod with its default grace period, as `kubectl delete pod` does.
pub async fn delete_replica(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<()> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .delete(name, &DeleteParams::default())
        .await
        .with_context(|| format!("failed to delete pod {namespace}/{name}"))?;
    Ok(())
}

/// Cordons (`spec.unschedulable: true`) or uncordons a Node with a merge patch, as
/// `kubectl cordon` and `uncordon` do.
pub async fn cordon_node(client: &kube::Client, node: &str, cordoned: bool) -> anyhow::Result<()> {
    // Uncordoning removes the field, as kubectl does, rather than writing `false`.
    let value = if cordoned {
        serde_json::Value::Bool(true)
    } else {
        serde_json::Value::Null
    };
    let patch = serde_json::json!({ "spec": { "unschedulable": value } });
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| {
            let what = if cordoned { "cordon" } else { "uncordon" };
            format!("failed to {what} node {node}")
        })?;
    Ok(())
}

/// Drains a Node as `kubectl drain --ignore-daemonsets --delete-emptydir-data` does:
/// cordons it, then evicts every pod on it (in every namespace) through the `eviction`
/// subresource, except pods of DaemonSets and mirror pods, which drain leaves, and pods
/// already being deleted. An eviction refused for now (429: a disruption budget) is
/// retried for up to 30 seconds. Returns once every eviction was accepted.
pub async fn drain_node(client: &kube::Client, node: &str) -> anyhow::Result<()> {
    cordon_node(client, node, true).await?;
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .with_context(|| format!("failed to list the pods on node {node} to drain it"))?;
    for pod in pods.items {
        let meta = &pod.metadata;
        let (Some(namespace), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref())
        else {
            continue;
        };
        let daemon = meta
            .owner_references
            .iter()
            .flatten()
            .any(|owner| owner.kind == "DaemonSet");
        let mirror = meta
            .annotations
            .as_ref()
            .is_some_and(|annotations| annotations.contains_key(MIRROR_ANNOTATION));
        if daemon || mirror || meta.deletion_timestamp.is_some() {
            continue;
        }
        evict(client, namespace, name)
            .await
            .with_context(|| format!("failed to drain node {node}"))?;
    }
    Ok(())
}

/// Evicts one pod, retrying while the eviction is refused for now (429).
async fn evict(client: &kube::Client, namespace: &str, name: &str) -> anyhow::Result<()> {
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + EVICTION_TIMEOUT;
    loop {
        match api.evict(name, &kube::api::EvictParams::default()).await {
            Ok(_) => return Ok(()),
            // Gone already: nothing left to move.
            Err(error) if is_status(&error, 404) => return Ok(()),
            Err(error) if is_status(&error, 429) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(EVICTION_RETRY).await;
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("failed to evict pod {namespace}/{name}"));
            }
        }
    }
}

/// The last heartbeat of a Node, in seconds since the Unix epoch: the newer of its Lease's
/// `renewTime` (`kube-node-lease/<name>`, renewed every few seconds) and the
/// `lastHeartbeatTime` of its `Ready` condition (renewed when it posts its status); `None`
/// if the node does not exist or never reported.
pub async fn node_heartbeat(client: &kube::Client, name: &str) -> anyhow::Result<Option<i64>> {
    let node = Api::<Node>::all(client.clone())
        .get_opt(name)
        .await
        .with_context(|| format!("failed to read node {name}"))?;
    let posted = node
        .and_then(|node| node.status?.conditions)
        .into_iter()
        .flatten()
        .find(|condition| condition.type_ == "Ready")
        .and_then(|ready| ready.last_heartbeat_time)
        .map(|time| time.0.as_second());
    let lease = Api::<Lease>::namespaced(client.clone(), "kube-node-lease")
        .get_opt(name)
        .await
        .with_context(|| format!("failed to read node {name}'s Lease"))?;
    let renewed = lease
        .and_then(|lease| lease.spec?.renew_time)
        .map(|time| time.0.as_second());
    Ok(posted.max(renewed))
}

/// Whether the Node exists and reports itself Ready.
pub async fn node_ready(client: &kube::Client, name: &str) -> anyhow::Result<bool> {
    let node = Api::<Node>::all(client.clone())
        .get_opt(name)
        .await
        .with_context(|| format!("failed to read node {name}"))?;
    Ok(node
        .as_ref()
        .map(node_status_of)
        .transpose()?
        .is_some_and(|node| node.ready))
}

/// Whether an error is an API `Status` with this HTTP code.
pub fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// A label selector as list calls take it: `app=web,tier in (a,b),!canary`.
pub fn label_selector_string(selector: &LabelSelector) -> String {
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    for expression in selector.match_expressions.iter().flatten() {
        let values = expression.values.clone().unwrap_or_default().join(",");
        let key = &expression.key;
        terms.push(match expression.operator.as_str() {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "Exists" => key.clone(),
            _ => format!("!{key}"),
        });
    }
    terms.join(",")
}

/// The revision recorded on a Deployment or ReplicaSet, if any.
pub fn revision_of(metadata: &ObjectMeta) -> Option<u64> {
    metadata
        .annotations
        .as_ref()?
        .get(REVISION_ANNOTATION)?
        .parse()
        .ok()
}

/// The API's `int32` replica count.
fn replicas_to_api(replicas: u32, name: &str) -> anyhow::Result<i32> {
    i32::try_from(replicas)
        .with_context(|| format!("{replicas} replicas for {name} is more than the API accepts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollout_is_complete_by_kubectls_rule() {
        let deployment = |status: serde_json::Value| -> Deployment {
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": "web", "generation": 2 },
                "spec": {
                    "replicas": 3,
                    "selector": { "matchLabels": { "app": "web" } },
                    "template": {},
                },
                "status": status,
            }))
            .expect("deployment")
        };
        let in_progress =
            |status| matches!(progress(&deployment(status)), RolloutStatus::InProgress(_));
        // Not yet observed: whatever the counts say.
        assert!(in_progress(serde_json::json!({
            "observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3
        })));
        // An old replica is still there.
        assert!(in_progress(serde_json::json!({
            "observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3
        })));
        // Updated but not all available.
        assert!(in_progress(serde_json::json!({
            "observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2
        })));
        assert_eq!(
            progress(&deployment(serde_json::json!({
                "observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3
            }))),
            RolloutStatus::Complete
        );
        let stalled = progress(&deployment(serde_json::json!({
            "observedGeneration": 2, "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3,
            "conditions": [{
                "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet \"web-x\" has timed out progressing."
            }]
        })));
        assert!(matches!(stalled, RolloutStatus::Stalled(_)), "{stalled:?}");
    }

    #[test]
    fn rollout_settings_go_to_the_api_and_come_back() {
        let spec = DeploymentSpec {
            name: "web".to_owned(),
            image: "shipshape/probe:v1".to_owned(),
            replicas: 3,
            rollout: Rollout {
                strategy: Some(Strategy::RollingUpdate {
                    max_surge: Some(Amount::Percent(25)),
                    max_unavailable: Some(Amount::Count(0)),
                }),
                min_ready_seconds: Some(2),
                progress_deadline_seconds: Some(10),
                revision_history_limit: Some(2),
            },
            ..DeploymentSpec::default()
        };
        let deployment = deployment_of(&spec).expect("deployment");
        let api = deployment.spec.as_ref().expect("spec");
        assert_eq!(api.progress_deadline_seconds, Some(10));
        assert_eq!(rollout_of(api), spec.rollout);
        let recreate = Rollout {
            strategy: Some(Strategy::Recreate),
            ..Rollout::default()
        };
        let api = deployment_of(&DeploymentSpec {
            rollout: recreate.clone(),
            ..spec
        })
        .expect("deployment")
        .spec
        .expect("spec");
        assert_eq!(rollout_of(&api), recreate);
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_millicpu("2").ok(), Some(2000));
        assert_eq!(parse_millicpu("500m").ok(), Some(500));
        assert_eq!(parse_millicpu("1.5").ok(), Some(1500));
        assert!(parse_millicpu("lots").is_err());
        assert_eq!(parse_bytes("64Mi").ok(), Some(64 << 20));
        assert_eq!(parse_bytes("24634848Ki").ok(), Some(24_634_848 << 10));
        assert_eq!(parse_bytes("1G").ok(), Some(1_000_000_000));
        assert_eq!(parse_bytes("1000").ok(), Some(1000));
        assert!(parse_bytes("much").is_err());
        assert_eq!(cpu_quantity(3000), "3");
        assert_eq!(cpu_quantity(2500), "2500m");
    }

    #[test]
    fn label_selectors_are_written_as_list_calls_take_them() {
        let selector: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": { "app": "web" },
            "matchExpressions": [
                { "key": "tier", "operator": "In", "values": ["a", "b"] },
                { "key": "canary", "operator": "DoesNotExist" },
            ],
        }))
        .expect("selector");
        assert_eq!(
            label_selector_string(&selector),
            "app=web,tier in (a,b),!canary"
        );
    }

    #[test]
    fn a_pod_is_built_as_described() {
        let spec = KitPodSpec {
            name: "duo".to_owned(),
            containers: vec![
                ContainerSpec {
                    name: "a".to_owned(),
                    image: "probe".to_owned(),
                    port: Some(8080),
                    privileged: true,
                    readiness: Some(HealthCheck {
                        action: CheckAction::HttpGet {
                            port: 8080,
                            path: "/ready".to_owned(),
                        },
                        period_seconds: 1,
                        failure_threshold: 2,
                    }),
                    ..ContainerSpec::default()
                },
                ContainerSpec {
                    name: "b".to_owned(),
                    image: "probe".to_owned(),
                    requests: Resources {
                        millicpu: Some(250),
                        memory_bytes: None,
                    },
                    ..ContainerSpec::default()
                },
            ],
            restart_policy: RestartPolicy::OnFailure,
            shared_volume: Some("/shared".to_owned()),
            placement: Placement {
                node_selector: BTreeMap::from([("disk".to_owned(), "ssd".to_owned())]),
                tolerations: vec!["a=b:NoSchedule".parse().expect("taint")],
            },
            ..KitPodSpec::default()
        };
        let pod = serde_json::to_value(pod_of(&spec)).expect("serializes");
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "OnFailure");
        assert_eq!(spec["volumes"][0]["emptyDir"], serde_json::json!({}));
        assert_eq!(
            spec["containers"][1]["volumeMounts"][0]["mountPath"],
            "/shared"
        );
        assert_eq!(spec["containers"][0]["securityContext"]["privileged"], true);
        assert_eq!(spec["containers"][0]["readinessProbe"]["periodSeconds"], 1);
        assert_eq!(
            spec["containers"][1]["resources"]["requests"]["cpu"],
            "250m"
        );
        assert_eq!(spec["nodeSelector"]["disk"], "ssd");
        assert_eq!(spec["tolerations"][0]["effect"], "NoSchedule");
        let placement = placement_of(&serde_json::from_value(spec.clone()).expect("pod spec"))
            .expect("placement");
        assert_eq!(placement.tolerations[0].to_string(), "a=b:NoSchedule");
    }
}
