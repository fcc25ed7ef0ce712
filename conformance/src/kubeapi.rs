//! The kit's requests expressed as Kubernetes API calls, for every driver whose system
//! speaks that API (the reference now, any kubeconfig-reachable cluster later).
//!
//! Each function does what `kubectl` would do for the same request, and nothing more:
//! `deploy` is `create deployment`, `scale` patches the `scale` subresource, a rollback
//! copies an old ReplicaSet's pod template back into the Deployment as `rollout undo`
//! does. They return once the API server has accepted the write.

use std::collections::BTreeMap;

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec as KubeDeploymentSpec, ReplicaSet};
use k8s_openapi::api::core::v1::{
    Container, Namespace, Pod, PodSpec, PodTemplateSpec, Service, ServicePort,
    ServiceSpec as KubeServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use crate::driver::{DeploymentSpec, Phase, Replica, Revision, ServiceSpec};

/// Label that ties a namespace to the conformance run that created it.
pub const RUN_LABEL: &str = "shipshape.conformance/run";

/// Annotation in which Kubernetes records the revision of a Deployment and its ReplicaSets.
const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// How many times a read-modify-write is retried when another writer got there first.
const CONFLICT_RETRIES: usize = 5;

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

/// Deletes a namespace; one that is already gone is not an error.
pub async fn delete_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    match Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if is_status(&error, 404) => Ok(()),
        Err(error) => Err(error).with_context(|| format!("failed to delete namespace {name}")),
    }
}

/// Creates a Deployment whose labels also select its pods, with one container named
/// after the deployment. Images are local to the nodes: the pull policy is `Never`.
pub async fn deploy(
    client: &kube::Client,
    namespace: &str,
    spec: &DeploymentSpec,
) -> anyhow::Result<()> {
    let labels = Some(spec.labels.clone());
    let deployment = Deployment {
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
                        image_pull_policy: Some("Never".to_owned()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..KubeDeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &deployment)
        .await
        .with_context(|| format!("failed to create deployment {namespace}/{}", spec.name))?;
    Ok(())
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
    let image = match spec
        .template
        .spec
        .as_ref()
        .map(|pod| pod.containers.as_slice())
    {
        Some([container]) => container.image.clone().unwrap_or_default(),
        Some(containers) => bail!(
            "deployment {namespace}/{name} was reported with {} containers, expected one",
            containers.len()
        ),
        None => bail!("deployment {namespace}/{name} was reported without a pod spec"),
    };
    // The API defaults an unset replica count to 1.
    let replicas = spec.replicas.unwrap_or(1);
    Ok(Some(DeploymentSpec {
        name: deployment.metadata.name.clone().unwrap_or_default(),
        image,
        replicas: u32::try_from(replicas).with_context(|| {
            format!("deployment {namespace}/{name} was reported with {replicas} replicas")
        })?,
        labels: deployment.metadata.labels.clone().unwrap_or_default(),
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

/// Changes the image of the deployment's only container, which starts a rolling update.
pub async fn update_image(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    image: &str,
) -> anyhow::Result<()> {
    modify_deployment(client, namespace, name, |deployment| {
        let containers = deployment
            .spec
            .as_mut()
            .and_then(|spec| spec.template.spec.as_mut())
            .map(|pod| pod.containers.as_mut_slice());
        match containers {
            Some([container]) => {
                container.image = Some(image.to_owned());
                Ok(())
            }
            _ => bail!("deployment {namespace}/{name} does not have exactly one container"),
        }
    })
    .await
    .with_context(|| {
        format!("failed to update the image of deployment {namespace}/{name} to {image}")
    })
}

/// Rolls a Deployment back as `kubectl rollout undo` does: find the ReplicaSet of the
/// wanted revision among those the Deployment owns, and copy its pod template back.
pub async fn roll_back(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    to: Revision,
) -> anyhow::Result<()> {
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let deployment = deployments
        .get(name)
        .await
        .with_context(|| format!("failed to read deployment {namespace}/{name}"))?;
    let uid = deployment.metadata.uid.clone().unwrap_or_default();
    let selector = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.selector.match_labels.as_ref())
        .map(selector_string)
        .unwrap_or_default();
    let replica_sets = Api::<ReplicaSet>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .with_context(|| {
            format!("failed to list the ReplicaSets of deployment {namespace}/{name}")
        })?;
    let mut history: Vec<(u64, ReplicaSet)> = replica_sets
        .items
        .into_iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|owner| owner.uid == uid)
        })
        .filter_map(|rs| revision_of(&rs.metadata).map(|revision| (revision, rs)))
        .collect();
    history.sort_by_key(|(revision, _)| *revision);
    let current = revision_of(&deployment.metadata);
    let wanted = match to {
        Revision::Number(number) => history
            .into_iter()
            .find(|(revision, _)| *revision == number),
        Revision::Previous => history
            .into_iter()
            .rev()
            .find(|(revision, _)| Some(*revision) != current),
    };
    let Some((revision, replica_set)) = wanted else {
        bail!("deployment {namespace}/{name} has no revision {to:?} to roll back to");
    };
    let mut template = replica_set
        .spec
        .map(|spec| spec.template.unwrap_or_default())
        .ok_or_else(|| {
            anyhow!("revision {revision} of deployment {namespace}/{name} has no pod template")
        })?;
    // The hash label belongs to the ReplicaSet, not to the Deployment's template.
    if let Some(labels) = template
        .metadata
        .as_mut()
        .and_then(|meta| meta.labels.as_mut())
    {
        labels.remove("pod-template-hash");
    }
    modify_deployment(client, namespace, name, |deployment| {
        let spec = deployment
            .spec
            .as_mut()
            .ok_or_else(|| anyhow!("deployment {namespace}/{name} has no spec"))?;
        spec.template = template.clone();
        Ok(())
    })
    .await
    .with_context(|| {
        format!("failed to roll deployment {namespace}/{name} back to revision {revision}")
    })
}

/// Creates a Service selecting the deployment's pods, as `kubectl expose` does.
pub async fn expose(
    client: &kube::Client,
    namespace: &str,
    service: &ServiceSpec,
) -> anyhow::Result<()> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(&service.deployment)
        .await
        .with_context(|| {
            format!(
                "failed to read deployment {namespace}/{} to expose it",
                service.deployment
            )
        })?;
    let selector = deployment
        .spec
        .and_then(|spec| spec.selector.match_labels)
        .ok_or_else(|| {
            anyhow!(
                "deployment {namespace}/{} has no label selector",
                service.deployment
            )
        })?;
    let object = Service {
        metadata: ObjectMeta {
            name: Some(service.name.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(KubeServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                port: i32::from(service.port),
                target_port: Some(IntOrString::Int(i32::from(service.target_port))),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
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
        .and_then(|spec| spec.selector.match_labels)
        .map(|labels| selector_string(&labels))
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
fn replica_of(namespace: &str, pod: &Pod) -> anyhow::Result<Replica> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref();
    let phase = match status.and_then(|status| status.phase.as_deref()) {
        // A pod nobody has reported on yet is pending.
        None | Some("Pending") => Phase::Pending,
        Some("Running") => Phase::Running,
        Some("Succeeded") => Phase::Succeeded,
        Some("Failed") => Phase::Failed,
        Some("Unknown") => Phase::Unknown,
        Some(other) => bail!("pod {namespace}/{name} reports an unknown phase {other:?}"),
    };
    let ready = status
        .and_then(|status| status.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|condition| condition.type_ == "Ready" && condition.status == "True");
    Ok(Replica {
        name,
        phase,
        node: pod.spec.as_ref().and_then(|spec| spec.node_name.clone()),
        ready,
    })
}

/// Read-modify-write of a Deployment, retried when another writer changed it in between
/// (the write carries the resourceVersion that was read, so nothing is overwritten blindly).
async fn modify_deployment(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    change: impl Fn(&mut Deployment) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let api = Api::<Deployment>::namespaced(client.clone(), namespace);
    for _ in 0..CONFLICT_RETRIES {
        let mut deployment = api
            .get(name)
            .await
            .with_context(|| format!("failed to read deployment {namespace}/{name}"))?;
        change(&mut deployment)?;
        match api.replace(name, &PostParams::default(), &deployment).await {
            Ok(_) => return Ok(()),
            Err(error) if is_status(&error, 409) => continue,
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("failed to write deployment {namespace}/{name}"));
            }
        }
    }
    bail!(
        "deployment {namespace}/{name} kept changing under us: {CONFLICT_RETRIES} conflicts in a row"
    )
}

/// Whether an error is an API `Status` with this HTTP code.
pub fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// `a=1,b=2` from a label map, for list calls.
fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The revision recorded on a Deployment or ReplicaSet, if any.
fn revision_of(metadata: &ObjectMeta) -> Option<u64> {
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
