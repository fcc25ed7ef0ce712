//! `report.html`: the certification report as one page a person reads.
//!
//! The page is self-contained — its style inline, its pictures inline SVG, no script, no
//! file or font fetched — so it opens offline, from a CI artefact or a mail attachment.
//! Top to bottom it answers the questions in the order people ask them: *was it
//! certified?* (the banner), *what exactly was tested, and how?* (the system, the kit, the
//! profile), *which features hold?* (one verdict per feature), *what could not be tried,
//! and why?* (the capabilities), and *what happened in each scenario?* (verdict, reason or
//! error, the system's known difference if it is one, measured times against their
//! bounds, the timeline, the steps).

use std::fmt::Write as _;

use super::timeline::escape;
use super::{FeatureReport, FeatureVerdict, RunReport, ScenarioReport, StepOutcome, Verdict};

/// The page's style: plain, readable, printable.
const STYLE: &str = r#"
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0 auto; max-width: 980px; padding: 24px; color: #222; line-height: 1.4; }
h1 { font-size: 24px; margin: 0 0 8px; }
h2 { font-size: 19px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 0 0 6px; }
.banner { padding: 14px 18px; border-radius: 6px; margin-bottom: 18px; color: #fff; }
.banner.certified { background: #2e7d32; }
.banner.not-certified { background: #c62828; }
.banner p { margin: 4px 0 0; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { text-align: left; padding: 3px 10px 3px 0; vertical-align: top; }
table.facts th { color: #555; font-weight: normal; white-space: nowrap; }
table.grid th, table.grid td { border-bottom: 1px solid #eee; padding: 4px 12px 4px 0; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
         font-weight: bold; color: #fff; }
.badge.certified, .badge.passed { background: #2e7d32; }
.badge.not-certified, .badge.failed { background: #c62828; }
.badge.not-applicable { background: #757575; }
.scenario { border: 1px solid #ddd; border-left-width: 6px; border-radius: 4px;
            padding: 10px 14px; margin: 10px 0; }
.scenario.passed { border-left-color: #2e7d32; }
.scenario.failed { border-left-color: #c62828; }
.scenario.not-applicable { border-left-color: #9e9e9e; background: #fafafa; }
.error { white-space: pre-wrap; font-family: monospace; font-size: 12px; background: #fff3f3;
         border: 1px solid #f2c9c9; padding: 6px 8px; margin: 6px 0; max-height: 220px;
         overflow: auto; }
.explanation { background: #fff8e1; border: 1px solid #ffe082; padding: 6px 8px; margin: 6px 0; }
.muted { color: #666; font-size: 13px; }
ol.steps { margin: 4px 0; padding-left: 22px; font-size: 13px; }
ol.steps li.failed { color: #c62828; font-weight: bold; }
ol.steps li.skipped { color: #999; }
.over { color: #c62828; font-weight: bold; }
svg.timeline { display: block; margin: 6px 0; max-width: 100%; height: auto; }
figure.history { margin: 8px 0; }
figure.history figcaption { font-weight: bold; }
svg.history { display: block; max-width: 100%; height: auto; background: #fafafa; }
ol.marks { margin: 0 0 6px; padding-left: 22px; font-size: 12px; color: #555; }
ol.marks li.fault { color: #c62828; }
"#;

/// The whole page.
pub fn render(report: &RunReport) -> String {
    let mut page = String::new();
    let system = &report.system;
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>shipshape certification — {}</title><style>{STYLE}</style></head><body>",
        escape(&system.driver)
    );
    // The banner: the answer first.
    let (class, headline) = if report.certified() {
        ("certified", "CERTIFIED".to_owned())
    } else {
        let unexplained = report.unexplained_failures().len();
        let explained = report.failed - unexplained;
        let why = match (explained, unexplained) {
            (0, _) => String::new(),
            (_, 0) => " (each a known difference of this system)".to_owned(),
            (explained, _) => format!(" ({explained} of them known differences of this system)"),
        };
        (
            "not-certified",
            format!("NOT CERTIFIED — {} scenario(s) failed{why}", report.failed),
        )
    };
    let _ = write!(
        page,
        "<div class=\"banner {class}\"><h1>{}: {headline}</h1><p>{} passed · {} failed · {} not applicable · {:.0} s</p></div>",
        escape(&system.driver),
        report.passed,
        report.failed,
        report.not_applicable,
        report.seconds
    );
    // What was tested, and how.
    page.push_str("<table class=\"facts\">");
    let mut fact = |name: &str, value: &str| {
        let _ = write!(page, "<tr><th>{name}</th><td>{value}</td></tr>");
    };
    fact("System under test", &escape(&system.version));
    fact("Driver", &escape(&system.driver));
    fact("Details", &escape(&system.description));
    fact("Reached through", &escape(&system.reach));
    fact(
        "Kit",
        &format!("shipshape-conformance {}", escape(&report.kit_version)),
    );
    fact("Date", &escape(&report.started));
    fact(
        "Profile",
        &format!(
            "{} — {}",
            escape(&report.profile.name),
            escape(&report.profile.describe())
        ),
    );
    if let Some(tags) = &report.tags {
        fact("Scenarios selected by", &escape(tags));
    }
    fact("False alarms", &escape(&report.false_alarm_line()));
    if let Some(score) = &report.mutation_score {
        fact(
            "The kit's mutation score",
            &format!(
                "{} of {} behavioural mutants of the reference caught ({}) — <a href=\"{}\">the mutants' report</a>",
                score.caught,
                score.total,
                escape(&score.started),
                escape(&score.report)
            ),
        );
    }
    page.push_str("</table>");
    // One verdict per feature.
    page.push_str("<h2>Verdicts</h2><table class=\"grid\"><tr><th>feature</th><th>verdict</th><th>passed</th><th>failed</th><th>not applicable</th></tr>");
    for feature in &report.features {
        let _ = write!(
            page,
            "<tr><td><a href=\"#{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            anchor(&feature.name),
            escape(&feature.name),
            feature_badge(feature),
            feature.passed,
            feature.failed,
            feature.not_applicable
        );
    }
    page.push_str("</table>");
    page.push_str("<h2>Capabilities</h2><table class=\"grid\"><tr><th>capability</th><th>has it</th><th>why not</th></tr>");
    for capability in &report.capabilities {
        let _ = write!(
            page,
            "<tr><td>@{}</td><td>{}</td><td class=\"muted\">{}</td></tr>",
            escape(&capability.tag),
            if capability.has { "yes" } else { "no" },
            escape(capability.reason.as_deref().unwrap_or(""))
        );
    }
    page.push_str("</table>");
    for feature in &report.features {
        render_feature(&mut page, feature);
    }
    let files: Vec<String> = report
        .files
        .iter()
        .map(|(kind, path)| format!("{kind}: {}", escape(path)))
        .collect();
    let _ = writeln!(
        page,
        "<p class=\"muted\">Files of this run — {}.</p></body></html>",
        files.join(" · ")
    );
    page
}

/// A feature's verdict as a badge.
fn feature_badge(feature: &FeatureReport) -> String {
    match &feature.verdict {
        FeatureVerdict::Certified => "<span class=\"badge certified\">certified</span>".to_owned(),
        FeatureVerdict::NotCertified { failed } => format!(
            "<span class=\"badge not-certified\">not certified</span> <span class=\"muted\">{} failed</span>",
            failed.len()
        ),
        FeatureVerdict::NotApplicable => {
            "<span class=\"badge not-applicable\">not applicable</span>".to_owned()
        }
    }
}

/// One feature: its heading with the verdict, then its scenarios.
fn render_feature(page: &mut String, feature: &FeatureReport) {
    let _ = write!(
        page,
        "<h2 id=\"{}\">{} {}</h2>",
        anchor(&feature.name),
        escape(&feature.name),
        feature_badge(feature)
    );
    for scenario in &feature.scenarios {
        render_scenario(page, scenario);
    }
}

/// One scenario: verdict, why, measurements, timeline, steps.
fn render_scenario(page: &mut String, scenario: &ScenarioReport) {
    let (class, badge) = match &scenario.verdict {
        Verdict::Passed => ("passed", "passed"),
        Verdict::Failed { .. } => ("failed", "failed"),
        Verdict::NotApplicable { .. } => ("not-applicable", "not applicable"),
    };
    let _ = write!(
        page,
        "<div class=\"scenario {class}\"><h3><span class=\"badge {class}\">{badge}</span> {}</h3><div class=\"muted\">line {} · {:.1} s · {}</div>",
        escape(&scenario.id.scenario),
        scenario.id.line,
        scenario.seconds,
        scenario
            .tags
            .iter()
            .map(|tag| format!("@{}", escape(tag)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    match &scenario.verdict {
        Verdict::Passed => {}
        Verdict::NotApplicable { reason } => {
            let _ = write!(page, "<p>Not applicable: {}</p>", escape(reason));
        }
        Verdict::Failed { step, error } => {
            let _ = write!(
                page,
                "<p>Failed at <b>{}</b></p><div class=\"error\">{}</div>",
                escape(step),
                escape(error)
            );
            match &scenario.explanation {
                Some(explanation) => {
                    let _ = write!(
                        page,
                        "<div class=\"explanation\"><b>Known difference of this system:</b> {}</div>",
                        escape(explanation)
                    );
                }
                None => page.push_str(
                    "<div class=\"explanation\">No known difference of this system explains this failure: it is a fault of the system under test, or of the kit.</div>",
                ),
            }
        }
    }
    if !scenario.measurements.is_empty() {
        page.push_str("<table class=\"grid\"><tr><th>waited for</th><th>took</th><th>bound</th><th>after the fault</th></tr>");
        for m in &scenario.measurements {
            let after = match (&m.after_fault, m.seconds_after_fault) {
                (Some(fault), Some(seconds)) => format!("{seconds:.1} s after {}", escape(fault)),
                _ => String::new(),
            };
            let over = if m.seconds > m.bound_seconds {
                " class=\"over\""
            } else {
                ""
            };
            let _ = write!(
                page,
                "<tr><td>{}</td><td{over}>{:.1} s</td><td>{:.0} s</td><td class=\"muted\">{after}</td></tr>",
                escape(&m.what),
                m.seconds,
                m.bound_seconds
            );
        }
        page.push_str("</table>");
    }
    if let Some(timeline) = scenario.timeline.as_ref().filter(|t| !t.is_empty()) {
        page.push_str(&timeline.svg());
        if !timeline.marks.is_empty() {
            page.push_str("<ol class=\"marks\">");
            for mark in &timeline.marks {
                let _ = write!(
                    page,
                    "<li{}>{:.1} s — {}</li>",
                    if mark.fault { " class=\"fault\"" } else { "" },
                    mark.at,
                    escape(&mark.what)
                );
            }
            page.push_str("</ol>");
        }
        if let Some((at, error)) = timeline.failures.first() {
            let _ = write!(
                page,
                "<div class=\"muted\">{} failed request(s); the first at {at:.1} s: {}</div>",
                timeline.failures.len(),
                escape(error)
            );
        }
    }
    for figure in &scenario.figures {
        let _ = write!(
            page,
            "<figure class=\"history\"><figcaption>{}</figcaption>{}</figure>",
            escape(&figure.caption),
            figure.svg
        );
    }
    if !matches!(scenario.verdict, Verdict::NotApplicable { .. }) && !scenario.steps.is_empty() {
        page.push_str("<details><summary class=\"muted\">steps</summary><ol class=\"steps\">");
        for step in &scenario.steps {
            let (class, mark) = match step.outcome {
                StepOutcome::Passed => ("passed", "✔"),
                StepOutcome::Failed => ("failed", "✘"),
                StepOutcome::Skipped => ("skipped", "–"),
            };
            let _ = write!(
                page,
                "<li class=\"{class}\">{mark} {} <span class=\"muted\">{:.1} s</span></li>",
                escape(&step.text),
                step.seconds
            );
        }
        page.push_str("</ol></details>");
    }
    page.push_str("</div>");
}

/// An HTML id for a feature's heading.
fn anchor(name: &str) -> String {
    let id: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("feature-{id}")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::*;
    use super::*;

    /// A small report with one feature of each verdict.
    pub(crate) fn sample() -> RunReport {
        let report = Report::default();
        let mut header = Header {
            system: SystemReport {
                driver: "swarm".to_owned(),
                version: "Docker Engine 20.10.24 in swarm mode".to_owned(),
                description: "the local engine".to_owned(),
                reach: "a relay container on the overlay network".to_owned(),
            },
            started: "2026-11-27T18:00:00Z".to_owned(),
            took: Duration::from_secs(42),
            ..Header::default()
        };
        header.differences.insert(
            "A killed container is restarted in place".to_owned(),
            "Swarm replaces a task rather than restarting its container".to_owned(),
        );
        let _ = &report;
        let scenario = |feature: &str, name: &str, verdict: Verdict| ScenarioReport {
            id: ScenarioId {
                feature: feature.to_owned(),
                scenario: name.to_owned(),
                line: 7,
                column: 3,
            },
            tags: vec!["self-healing".to_owned()],
            verdict,
            steps: vec![StepRecord {
                text: "Given a <cluster>".to_owned(),
                outcome: StepOutcome::Passed,
                at: 0.0,
                seconds: 1.0,
                error: None,
            }],
            seconds: 3.0,
            measurements: vec![MeasurementReport {
                what: "3 replicas running".to_owned(),
                seconds: 2.5,
                bound_seconds: 10.0,
                after_fault: None,
                seconds_after_fault: None,
            }],
            timeline: None,
            explanation: None,
            figures: Vec::new(),
        };
        let healing = FeatureReport {
            name: "Replicas come back after failures".to_owned(),
            verdict: FeatureVerdict::NotCertified {
                failed: vec!["A killed container is restarted in place".to_owned()],
            },
            passed: 1,
            failed: 1,
            not_applicable: 1,
            scenarios: vec![
                scenario("h", "A deleted replica is replaced", Verdict::Passed),
                ScenarioReport {
                    explanation: header
                        .differences
                        .get("A killed container is restarted in place")
                        .cloned(),
                    figures: vec![stale_read_figure()],
                    ..scenario(
                        "h",
                        "A killed container is restarted in place",
                        Verdict::Failed {
                            step: "Then within 15 seconds that replica has restarted".to_owned(),
                            error: "task web.1 was replaced by a new task".to_owned(),
                        },
                    )
                },
                scenario(
                    "h",
                    "A lost node",
                    Verdict::NotApplicable {
                        reason: "the swarm has 1 node".to_owned(),
                    },
                ),
            ],
        };
        let routing = FeatureReport {
            name: "A service routes traffic".to_owned(),
            verdict: FeatureVerdict::Certified,
            passed: 1,
            failed: 0,
            not_applicable: 0,
            scenarios: vec![scenario("r", "Requests are spread", Verdict::Passed)],
        };
        RunReport {
            system: header.system,
            kit_version: "0.1.0".to_owned(),
            started: header.started,
            seconds: 42.0,
            profile: crate::profile::Profile::default(),
            tags: None,
            capabilities: vec![CapabilityReport {
                tag: "multi-node".to_owned(),
                has: false,
                reason: Some("the swarm has 1 node".to_owned()),
            }],
            features: vec![healing, routing],
            passed: 2,
            failed: 1,
            not_applicable: 1,
            files: BTreeMap::from([("json".to_owned(), "summary.json".to_owned())]),
            mutation_score: Some(crate::mutants::Score {
                caught: 27,
                total: 28,
                started: "2026-11-27T12:00:00Z".to_owned(),
                report: "../mutants/report.html".to_owned(),
            }),
            false_alarms: Vec::new(),
            node_looks: 12,
            failed_nodes_seen: 1,
        }
    }

    /// The picture of a history with a stale read: a write acknowledged, then the old value
    /// read.
    fn stale_read_figure() -> crate::report::Figure {
        use crate::linearizability::{check, timeline};
        let history = timeline::tests::stale_read_after_an_update();
        crate::report::Figure {
            caption: "The history of key \"k\" is not linearizable".to_owned(),
            svg: timeline::svg(&check(&history).keys[0]),
        }
    }

    /// Renders the page in a real browser — headless Chromium, from Debian's `chromium`
    /// package, which `ci/install-deps` installs — prints it to PDF, and checks that the
    /// verdicts are in the text the browser laid out (`pdftotext`, from `poppler-utils`):
    /// visible, not just present in the markup. Leaves a screenshot next to it to look at
    /// (`target/conformance/report-in-chromium.png`).
    #[test]
    fn the_verdicts_are_visible_in_a_real_browser() {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
        let dir = tempfile::tempdir().expect("tempdir");
        let page = dir.path().join("report.html");
        std::fs::write(&page, render(&sample())).expect("write the page");
        let url = format!("file://{}", page.display());
        let pdf = dir.path().join("report.pdf");
        let printed = std::process::Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-pdf-header-footer",
            ])
            .arg(format!("--print-to-pdf={}", pdf.display()))
            .arg(&url)
            .output()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run {chromium} ({error}): this test renders the report in headless \
                     Chromium; install Debian's chromium package (ci/install-deps does), or \
                     point CHROMIUM at a Chromium binary"
                )
            });
        assert!(
            printed.status.success() && pdf.exists(),
            "{chromium} failed to print the report: {}",
            String::from_utf8_lossy(&printed.stderr)
        );
        let text = std::process::Command::new("pdftotext")
            .arg(&pdf)
            .arg("-")
            .output()
            .unwrap_or_else(|error| {
                panic!("cannot run pdftotext ({error}): install Debian's poppler-utils package (ci/install-deps does)")
            });
        assert!(text.status.success(), "pdftotext failed");
        // Words, not lines: where the browser wraps a line depends on the fonts installed.
        let text = String::from_utf8_lossy(&text.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for visible in [
            "swarm: NOT CERTIFIED — 1 scenario(s) failed",
            "(each a known difference of this system)",
            "not certified",
            "certified",
            "not applicable",
            "Not applicable: the swarm has 1 node",
            "Known difference of this system:",
            "The history of key \"k\" is not linearizable",
            "had to come next and cannot",
        ] {
            assert!(
                text.contains(visible),
                "{visible:?} is not visible in:\n{text}"
            );
        }
        let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/conformance");
        if std::fs::create_dir_all(&shot).is_ok() {
            let _ = std::process::Command::new(&chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                ])
                .arg("--window-size=1000,1400")
                .arg(format!(
                    "--screenshot={}",
                    shot.join("report-in-chromium.png").display()
                ))
                .arg(&url)
                .output();
        }
    }

    #[test]
    fn the_page_says_the_verdicts_and_escapes_what_it_quotes() {
        let page = render(&sample());
        assert!(page.contains(
            "NOT CERTIFIED — 1 scenario(s) failed (each a known difference of this system)"
        ));
        assert!(page.contains("<span class=\"badge certified\">certified</span>"));
        assert!(page.contains("<span class=\"badge not-certified\">not certified</span>"));
        assert!(page.contains("Not applicable: the swarm has 1 node"));
        assert!(page.contains("Known difference of this system:</b> Swarm replaces a task"));
        assert!(page.contains("Given a &lt;cluster&gt;"));
        assert!(page.contains(
            "27 of 28 behavioural mutants of the reference caught (2026-11-27T12:00:00Z)"
        ));
        assert!(!page.contains("<script"));
        assert!(!page.contains("http://") || page.contains("http://www.w3.org/2000/svg"));
    }
}
