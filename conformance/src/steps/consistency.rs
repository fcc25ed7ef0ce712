//! The sentences about what clients of the control plane see: several clients reading and
//! writing through the API while faults happen, and the check that their history is
//! linearizable ([`crate::linearizability`]); and what one member of the control plane
//! cut off from the others must not do — acknowledge a write it cannot make durable with a
//! majority.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use cucumber::{given, then, when};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};

use super::{StepResult, Wait};
use crate::driver::Fault;
use crate::linearizability::workload::{ClientSource, Workload, event};
use crate::linearizability::{self, timeline};
use crate::world::ConformanceWorld;

/// How many operations the clients must have completed before the scenario goes on, so a
/// fault meets a busy system.
const WARM_UP_OPERATIONS: usize = 40;

/// How long the clients may take to warm up.
const WARM_UP_SECONDS: u64 = 30;

#[given(
    expr = "{int} clients create, read, compare-and-set and delete {int} objects through the control plane"
)]
async fn start_clients(world: &mut ConformanceWorld, clients: usize, keys: usize) -> StepResult {
    if clients == 0 || keys == 0 {
        return Err(anyhow!("a history needs at least one client and one object").into());
    }
    let namespace = world.namespace().await?;
    world.kube()?;
    let driver = world.driver()?;
    let source: ClientSource = Arc::new(move || {
        driver
            .kube_client()
            .ok_or_else(|| anyhow!("driver {} has no Kubernetes API client", driver.name()))
    });
    let workload = Workload::start(source, &namespace, "register", clients, keys);
    world.workload = Some(workload);
    wait_for_operations(world, WARM_UP_SECONDS, WARM_UP_OPERATIONS).await
}

#[then(expr = "within {int} seconds the clients have completed {int} more operations")]
async fn more_operations(world: &mut ConformanceWorld, seconds: u64, more: usize) -> StepResult {
    wait_for_operations(world, seconds, more).await
}

/// Waits until the clients have completed `more` operations after now (unknown outcomes
/// do not count).
async fn wait_for_operations(
    world: &mut ConformanceWorld,
    seconds: u64,
    more: usize,
) -> StepResult {
    let completed = |world: &ConformanceWorld| -> anyhow::Result<usize> {
        let workload = world
            .workload
            .as_ref()
            .ok_or_else(|| anyhow!("no clients were started in this scenario"))?;
        Ok(workload.recorder().completed())
    };
    let before = completed(world)?;
    let wait = Wait::new(
        seconds,
        format!("{more} more operations completed by the clients"),
    );
    loop {
        let done = completed(world)? - before;
        if done >= more {
            wait.done(world);
            return Ok(());
        }
        wait.again(&format!("{done} completed")).await?;
    }
}

#[then("the history of their operations is linearizable")]
async fn history_is_linearizable(world: &mut ConformanceWorld) -> StepResult {
    let workload = world
        .workload
        .take()
        .ok_or_else(|| anyhow!("no clients were started in this scenario"))?;
    let history = workload.stop().await.operations();
    let checked = tokio::task::spawn_blocking(move || linearizability::check(&history))
        .await
        .map_err(|e| anyhow!("the linearizability check failed to run: {e}"))?;
    println!("      checked: {}", checked.summary());
    if checked.is_linearizable() {
        return Ok(());
    }
    let failures: Vec<_> = checked.failures().take(2).collect();
    for failure in &failures {
        world.figures.push(crate::report::Figure {
            caption: format!(
                "The history of key {:?} is not linearizable: no order of its operations \
                 explains every answer",
                failure.key
            ),
            svg: timeline::svg(failure),
        });
    }
    let drawn: Vec<String> = failures.into_iter().map(timeline::draw).collect();
    Err(anyhow!("{}\n{}", checked.summary(), drawn.join("\n")).into())
}

/// How long a write sent to the member cut off may stay unanswered; no answer in that time
/// is no acknowledgement.
const CUT_OFF_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[when(
    expr = "the member of the control plane that leads is cut off from the other members while the deployment {string} runs"
)]
async fn partition_control_plane_leader(
    world: &mut ConformanceWorld,
    deployment: String,
) -> StepResult {
    super::healing::inject_while_running(world, &deployment, &Fault::PartitionControlPlaneLeader)
        .await?;
    Ok(())
}

#[when("the links between the members of the control plane are restored")]
async fn heal_control_plane(world: &mut ConformanceWorld) -> StepResult {
    super::healing::inject(world, &Fault::HealControlPlane).await?;
    Ok(())
}

/// A client of the member cut off, and of it alone.
async fn cut_off_member(world: &mut ConformanceWorld) -> anyhow::Result<Api<Event>> {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let client = driver
        .cut_off_member_client()
        .await?
        .ok_or_else(|| anyhow!("no member of the control plane is cut off from the others"))?;
    Ok(Api::namespaced(client, &namespace))
}

#[then(expr = "the member that was cut off acknowledges none of {int} writes sent to it")]
async fn cut_off_member_acknowledges_nothing(
    world: &mut ConformanceWorld,
    writes: usize,
) -> StepResult {
    let api = cut_off_member(world).await?;
    let namespace = world.namespace().await?;
    let names: Vec<String> = (1..=writes)
        .map(|n| format!("sent-to-cut-off-{n}"))
        .collect();
    // All at once, while the member may still believe it leads: each becomes a proposal
    // that only a majority could commit.
    let attempts = names.iter().map(|name| {
        let (api, object) = (api.clone(), event(&namespace, name, name, None));
        async move {
            let params = PostParams::default();
            let created = api.create(&params, &object);
            match tokio::time::timeout(CUT_OFF_WRITE_TIMEOUT, created).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(kube::Error::Api(status))) => Err(format!(
                    "{} {} ({})",
                    status.code, status.reason, status.message
                )),
                Ok(Err(error)) => Err(format!("failed: {error}")),
                Err(_) => Err(format!("no answer in {CUT_OFF_WRITE_TIMEOUT:?}")),
            }
        }
    });
    let answers = futures::future::join_all(attempts).await;
    world.sent_to_cut_off = names.clone();
    let acknowledged: Vec<&String> = names
        .iter()
        .zip(&answers)
        .filter(|(_, answer)| answer.is_ok())
        .map(|(name, _)| name)
        .collect();
    let mut refusals = std::collections::BTreeMap::<String, usize>::new();
    for refusal in answers.into_iter().filter_map(Result::err) {
        *refusals.entry(refusal).or_default() += 1;
    }
    let refusals: Vec<String> = refusals
        .into_iter()
        .map(|(refusal, times)| format!("{times} × {refusal}"))
        .collect();
    println!(
        "      measured: {} of {writes} writes acknowledged by the member cut off (the others: {})",
        acknowledged.len(),
        refusals.join("; ")
    );
    if !acknowledged.is_empty() {
        return Err(anyhow!(
            "the member cut off from the majority acknowledged {:?}, which no majority can have made durable",
            acknowledged
        )
        .into());
    }
    Ok(())
}

/// How long a read sent to the member cut off may take; one not answered by then is left
/// out (it changed nothing). Short, so that the partition lasts no longer than the
/// scenario needs: the nodes' agents that reach the control plane through that member
/// are cut off from it too while it lasts.
const CUT_OFF_READ_TIMEOUT: Duration = Duration::from_secs(2);

#[then("what the member that was cut off answers to reads of the objects is part of their history")]
async fn cut_off_member_reads_join_the_history(world: &mut ConformanceWorld) -> StepResult {
    let client = world
        .driver()?
        .cut_off_member_client()
        .await?
        .ok_or_else(|| anyhow!("no member of the control plane is cut off from the others"))?;
    let workload = world
        .workload
        .as_ref()
        .ok_or_else(|| anyhow!("no clients were started in this scenario"))?;
    // A member that may not know the latest writes must not answer a read with what it
    // has: either it refuses, or what it answers is checked with the rest.
    let answered = workload.read_through(client, CUT_OFF_READ_TIMEOUT).await;
    println!(
        "      measured: the member cut off answered {answered} of {} reads",
        workload.keys().len()
    );
    Ok(())
}

#[then(
    expr = "within {int} seconds the member that was cut off serves what the others wrote meanwhile, and none of the writes sent to it"
)]
async fn cut_off_member_follows(world: &mut ConformanceWorld, seconds: u64) -> StepResult {
    let api = serves_what_the_others_wrote(world, Alone::CutOff, seconds).await?;
    let namespace = world.namespace().await?;
    let majority: Api<Event> = Api::namespaced(world.kube()?, &namespace);
    for name in &world.sent_to_cut_off {
        if let Some(found) = api
            .get_opt(name)
            .await
            .context("reading through the member that was cut off")?
        {
            return Err(anyhow!(
                "{name}, sent to the member while it was cut off and never acknowledged, exists after the links were restored: {:?}",
                found.metadata
            )
            .into());
        }
        if majority.get_opt(name).await?.is_some() {
            return Err(anyhow!("{name} exists on the majority's side").into());
        }
    }
    Ok(())
}

#[when(
    expr = "a member of the control plane that does not lead is killed abruptly and its data lost while the deployment {string} runs"
)]
async fn lose_control_plane_member_and_data(
    world: &mut ConformanceWorld,
    deployment: String,
) -> StepResult {
    super::healing::inject_while_running(world, &deployment, &Fault::LoseControlPlaneMemberAndData)
        .await?;
    Ok(())
}

#[then(
    expr = "within {int} seconds a new member has taken its place and serves what the others wrote"
)]
async fn new_member_catches_up(world: &mut ConformanceWorld, seconds: u64) -> StepResult {
    serves_what_the_others_wrote(world, Alone::New, seconds).await?;
    Ok(())
}

/// A member of the control plane a scenario talks to on its own.
#[derive(Clone, Copy)]
enum Alone {
    /// The member cut off from the others ([`Fault::PartitionControlPlaneLeader`]).
    CutOff,
    /// The member that took the place of one lost with its data
    /// ([`Fault::LoseControlPlaneMemberAndData`]).
    New,
}

impl Alone {
    fn describe(self) -> &'static str {
        match self {
            Alone::CutOff => "the member that was cut off",
            Alone::New => "the new member",
        }
    }
}

/// Writes an object through the control plane as a whole (its majority), then waits up
/// to `seconds` until `member`, asked on its own, has it — so it has what the others
/// wrote before it, too. Returns a client of that member.
async fn serves_what_the_others_wrote(
    world: &mut ConformanceWorld,
    member: Alone,
    seconds: u64,
) -> anyhow::Result<Api<Event>> {
    let namespace = world.namespace().await?;
    let majority: Api<Event> = Api::namespaced(world.kube()?, &namespace);
    let marker = "written-by-the-majority";
    let wait = Wait::new(
        seconds,
        format!("{} serving what the majority wrote", member.describe()),
    );
    let mut written = false;
    loop {
        if !written {
            let object = event(&namespace, marker, marker, None);
            written = match majority.create(&PostParams::default(), &object).await {
                Ok(_) => true,
                Err(kube::Error::Api(status)) => status.code == 409,
                Err(_) => false,
            };
        }
        let driver = world.driver()?;
        let client = match member {
            Alone::CutOff => driver.cut_off_member_client().await?.ok_or_else(|| {
                anyhow!("no member of the control plane is cut off from the others")
            })?,
            Alone::New => match driver.new_member_client().await? {
                Some(client) => client,
                None => {
                    wait.again("no new member has taken the lost one's place yet")
                        .await?;
                    continue;
                }
            },
        };
        let api: Api<Event> = Api::namespaced(client, &namespace);
        let last = if !written {
            "the majority has not taken the write yet".to_owned()
        } else {
            match api.get_opt(marker).await {
                Ok(Some(_)) => {
                    wait.done(world);
                    return Ok(api);
                }
                Ok(None) => "it does not have the majority's write yet".to_owned(),
                Err(error) => format!("it answers {error}"),
            }
        };
        wait.again(&last).await?;
    }
}
