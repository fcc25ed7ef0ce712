//! Which scenarios apply to the driver under test.
//!
//! Features state what a system needs with *capability tags*: `@kubernetes-api` for
//! scenarios that check Kubernetes API semantics, one tag per kind of [`Fault`]
//! (`@restart-control-plane`, `@kill-container`, `@delete-replica`, `@lose-node`,
//! `@partition-node`, `@restart-node`) for scenarios that inject it, one per [`Capability`]
//! (`@multi-node`, `@add-node`, `@label-node`, `@taint-node`, `@pods`, `@reach-replica`,
//! `@drain-node`) for scenarios that use it. A scenario whose tags (its own, its rule's,
//! its feature's) name a capability the driver lacks is *not applicable*: it is reported
//! as skipped, with the driver's reason as its only step, and it does not fail the run.
//! Any other skipped step — a step nobody defined — does.
//!
//! Cucumber has no "skip this scenario" verdict, so the reason is made visible the one way
//! that shows in every report: [`NotApplicable`] wraps the feature parser and replaces the
//! steps of such a scenario with a single step, `not applicable: <reason>`, that matches no
//! definition. Cucumber reports it as skipped (console and JUnit alike), and
//! [`Capabilities::fails_when_skipped`] tells the run which skips are expected.
//! (A feature's `Background` still runs before it; capability-tagged features should not
//! have one.)
//!
//! The same tags say which scenarios may run side by side. Each scenario works in its own
//! namespace, so most share the cluster without noticing one another. A scenario whose tags
//! are among [`RUNS_ALONE`] does not: it fails or restarts machines or the control plane,
//! changes nodes every scenario schedules onto (labels, taints, cordons, a node added), or
//! counts on having the nodes to itself (replicas spread evenly, a node filled up). It
//! [`runs_alone`]; every other capability tag is listed in [`SIDE_BY_SIDE`], and a test
//! checks that each tag the drivers know is in exactly one of the two.

use std::sync::Arc;

use cucumber::gherkin::{Feature, Rule, Scenario, Step, StepType};
use cucumber::parser;
use futures::StreamExt as _;
use futures::stream::LocalBoxStream;

use crate::driver::{Capability, Driver, Fault, Support};

/// Capability tag of scenarios that need a Kubernetes API client.
pub const KUBERNETES_API: &str = "kubernetes-api";

/// Tags of scenarios that must have the cluster to themselves: `@disruptive`, the faults
/// that take machines or the control plane away, and the capabilities that change or fill
/// the nodes every scenario shares (`autoscaling` keeps their CPU busy on purpose).
pub const RUNS_ALONE: &[&str] = &[
    "disruptive",
    "restart-control-plane",
    "lose-node",
    "partition-node",
    "restart-node",
    "lose-control-plane-member",
    "partition-control-plane",
    "multi-node",
    "add-node",
    "label-node",
    "taint-node",
    "drain-node",
    "autoscaling",
];

/// Capability tags of scenarios that touch only their own namespace's objects (a
/// container of their own replica killed, their own replica deleted).
pub const SIDE_BY_SIDE: &[&str] = &[
    KUBERNETES_API,
    "kill-container",
    "delete-replica",
    "pods",
    "reach-replica",
    "jobs",
    "scheduled-jobs",
    "daemons",
    "stateful-sets",
];

/// Whether a scenario must run with no other scenario beside it.
pub fn runs_alone(feature: &Feature, rule: Option<&Rule>, scenario: &Scenario) -> bool {
    all_tags(feature, rule, scenario).any(|tag| RUNS_ALONE.contains(&tag.as_str()))
}

/// How the only step of a scenario that does not apply begins.
pub const NOT_APPLICABLE_PREFIX: &str = "not applicable: ";

/// What the driver under test can do, as far as capability tags are concerned.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// Name of the driver, for the reasons given.
    driver: String,
    /// Each known capability tag, and why the driver lacks it (`None`: it has it).
    tags: Vec<(&'static str, Option<String>)>,
}

impl Capabilities {
    /// Asks the driver about every capability tag the features may use.
    pub fn of(driver: &dyn Driver) -> Self {
        let kubernetes_api = match driver.kube_client() {
            Some(_) => None,
            None => Some("the system does not speak the Kubernetes API".to_owned()),
        };
        let mut tags = vec![(KUBERNETES_API, kubernetes_api)];
        // A fault tag is had when every kind of fault under it is supported (partitioning
        // a node goes with healing it).
        for fault in Fault::kinds() {
            let lacks = match driver.supports(&fault) {
                Support::Yes => None,
                Support::No(reason) => Some(reason),
            };
            match tags.iter_mut().find(|(tag, _)| *tag == fault.tag()) {
                Some((_, missing)) => {
                    if missing.is_none() {
                        *missing = lacks;
                    }
                }
                None => tags.push((fault.tag(), lacks)),
            }
        }
        tags.extend(Capability::ALL.iter().map(|capability| {
            let lacks = match driver.has(*capability) {
                Support::Yes => None,
                Support::No(reason) => Some(reason),
            };
            (capability.tag(), lacks)
        }));
        Self {
            driver: driver.name().to_owned(),
            tags,
        }
    }

    /// Each capability tag with why the driver lacks it (`None`: it has it), for the
    /// run's banner and report.
    pub fn tags(&self) -> &[(&'static str, Option<String>)] {
        &self.tags
    }

    /// Why a scenario with these tags does not apply to the driver, if it does not.
    pub fn not_applicable<'t>(&self, tags: impl IntoIterator<Item = &'t String>) -> Option<String> {
        // Tags lacked for the same reason go together: `@lose-node, @restart-node (why)`.
        let mut by_reason: Vec<(String, Vec<String>)> = Vec::new();
        for tag in tags {
            let reason = self.tags.iter().find_map(|(known, lacks)| match lacks {
                Some(reason) if known == tag => Some(reason.clone()),
                _ => None,
            });
            let Some(reason) = reason else {
                continue;
            };
            match by_reason.iter_mut().find(|(known, _)| *known == reason) {
                Some((_, grouped)) => grouped.push(format!("@{tag}")),
                None => by_reason.push((reason, vec![format!("@{tag}")])),
            }
        }
        let missing: Vec<String> = by_reason
            .into_iter()
            .map(|(reason, grouped)| format!("{} ({reason})", grouped.join(", ")))
            .collect();
        (!missing.is_empty())
            .then(|| format!("driver {} lacks {}", self.driver, missing.join("; ")))
    }

    /// Whether a skipped step in this scenario fails the run: always, unless the scenario
    /// was found not applicable.
    pub fn fails_when_skipped(
        &self,
        feature: &Feature,
        rule: Option<&Rule>,
        scenario: &Scenario,
    ) -> bool {
        self.not_applicable(all_tags(feature, rule, scenario))
            .is_none()
    }
}

/// The tags that apply to a scenario: the feature's, the rule's, its own.
fn all_tags<'a>(
    feature: &'a Feature,
    rule: Option<&'a Rule>,
    scenario: &'a Scenario,
) -> impl Iterator<Item = &'a String> {
    feature
        .tags
        .iter()
        .chain(rule.into_iter().flat_map(|rule| &rule.tags))
        .chain(&scenario.tags)
}

/// A feature parser that turns scenarios the driver cannot run into a single
/// `not applicable: <reason>` step.
#[derive(Debug)]
pub struct NotApplicable<P> {
    /// The parser that reads the feature files.
    inner: P,
    /// What the driver under test can do.
    capabilities: Arc<Capabilities>,
}

impl<P> NotApplicable<P> {
    /// Wraps `inner`, judging scenarios against `capabilities`.
    pub fn new(inner: P, capabilities: Arc<Capabilities>) -> Self {
        Self {
            inner,
            capabilities,
        }
    }
}

impl<I, P: cucumber::Parser<I>> cucumber::Parser<I> for NotApplicable<P> {
    type Cli = P::Cli;
    type Output = LocalBoxStream<'static, parser::Result<Feature>>;

    fn parse(self, input: I, cli: Self::Cli) -> Self::Output {
        let capabilities = self.capabilities;
        self.inner
            .parse(input, cli)
            .map(move |feature| feature.map(|feature| mark_not_applicable(feature, &capabilities)))
            .boxed_local()
    }
}

/// Replaces the steps of every scenario of `feature` that does not apply.
fn mark_not_applicable(mut feature: Feature, capabilities: &Capabilities) -> Feature {
    let feature_tags = feature.tags.clone();
    for scenario in &mut feature.scenarios {
        let reason = capabilities.not_applicable(feature_tags.iter().chain(&scenario.tags));
        if let Some(reason) = reason {
            replace_steps(scenario, &reason);
        }
    }
    for rule in &mut feature.rules {
        for scenario in &mut rule.scenarios {
            let tags = feature_tags.iter().chain(&rule.tags).chain(&scenario.tags);
            if let Some(reason) = capabilities.not_applicable(tags) {
                replace_steps(scenario, &reason);
            }
        }
    }
    feature
}

/// Makes `not applicable: <reason>` the scenario's only step.
fn replace_steps(scenario: &mut Scenario, reason: &str) {
    let Some(first) = scenario.steps.first() else {
        return;
    };
    let step = Step {
        keyword: "Given ".to_owned(),
        ty: StepType::Given,
        value: format!("{NOT_APPLICABLE_PREFIX}{reason}"),
        docstring: None,
        table: None,
        span: first.span,
        position: first.position,
    };
    scenario.steps = vec![step];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capabilities(kube: bool) -> Capabilities {
        Capabilities {
            driver: "test".to_owned(),
            tags: vec![
                (
                    KUBERNETES_API,
                    (!kube).then(|| "it speaks no Kubernetes".to_owned()),
                ),
                ("restart-control-plane", None),
            ],
        }
    }

    fn tags(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn every_capability_tag_either_runs_alone_or_side_by_side() {
        let known: Vec<&str> = std::iter::once(KUBERNETES_API)
            .chain(Fault::kinds().iter().map(Fault::tag))
            .chain(Capability::ALL.iter().map(|c| c.tag()))
            .collect();
        for tag in &known {
            let alone = RUNS_ALONE.contains(tag);
            let beside = SIDE_BY_SIDE.contains(tag);
            assert!(
                alone != beside,
                "@{tag}: alone {alone}, side by side {beside}"
            );
        }
        for tag in RUNS_ALONE.iter().chain(SIDE_BY_SIDE) {
            assert!(
                *tag == "disruptive" || known.contains(tag),
                "@{tag} is classified but no driver knows it"
            );
        }
    }

    #[test]
    fn a_tag_of_the_feature_rule_or_scenario_makes_a_scenario_run_alone() {
        let text = "@self-healing\nFeature: f\n\n  Scenario: own namespace only\n    Given a\n\n  \
                    @delete-replica @lose-node\n  Scenario: loses a machine\n    Given a\n\n  \
                    @label-node\n  Rule: r\n\n    Scenario: in the rule\n      Given a\n";
        let feature =
            Feature::parse(text, cucumber::gherkin::GherkinEnv::default()).expect("parses");
        let own = &feature.scenarios[0];
        let loses = &feature.scenarios[1];
        let rule = &feature.rules[0];
        assert!(!runs_alone(&feature, None, own));
        assert!(runs_alone(&feature, None, loses));
        assert!(runs_alone(&feature, Some(rule), &rule.scenarios[0]));
    }

    #[test]
    fn missing_capability_makes_a_scenario_not_applicable() {
        let reason = capabilities(false).not_applicable(&tags(&["disruptive", "kubernetes-api"]));
        assert_eq!(
            reason.as_deref(),
            Some("driver test lacks @kubernetes-api (it speaks no Kubernetes)")
        );
    }

    #[test]
    fn a_scenario_not_applicable_is_reduced_to_its_reason_and_may_be_skipped() {
        let text = "@control-plane\nFeature: f\n\n  Scenario: plain\n    Given a step\n\n  \
                    @kubernetes-api\n  Scenario: needs the API\n    Given a step\n    Then another\n";
        let feature = Feature::parse(text, Default::default()).expect("feature parses");
        let caps = capabilities(false);
        let feature = mark_not_applicable(feature, &caps);
        let [plain, needs_api] = feature.scenarios.as_slice() else {
            panic!("expected two scenarios");
        };
        assert_eq!(plain.steps.len(), 1);
        assert_eq!(plain.steps[0].value, "a step");
        assert_eq!(needs_api.steps.len(), 1);
        assert_eq!(
            needs_api.steps[0].value,
            "not applicable: driver test lacks @kubernetes-api (it speaks no Kubernetes)"
        );
        assert!(caps.fails_when_skipped(&feature, None, plain));
        assert!(!caps.fails_when_skipped(&feature, None, needs_api));
    }

    #[test]
    fn tags_lacked_for_one_reason_are_named_together() {
        let caps = Capabilities {
            driver: "test".to_owned(),
            tags: vec![
                ("lose-node", Some("no machines".to_owned())),
                ("restart-node", Some("no machines".to_owned())),
                ("taint-node", Some("no taints".to_owned())),
            ],
        };
        assert_eq!(
            caps.not_applicable(&tags(&["lose-node", "restart-node", "taint-node"]))
                .as_deref(),
            Some(
                "driver test lacks @lose-node, @restart-node (no machines); @taint-node (no taints)"
            )
        );
    }

    #[test]
    fn present_and_unknown_tags_do_not() {
        let caps = capabilities(true);
        assert_eq!(
            caps.not_applicable(&tags(&["kubernetes-api", "restart-control-plane"])),
            None
        );
        assert_eq!(
            caps.not_applicable(&tags(&["control-plane", "disruptive"])),
            None
        );
    }
}
