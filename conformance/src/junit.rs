//! Measured convergence times in the JUnit report, as properties of each scenario's
//! `<testcase>`.
//!
//! Cucumber's JUnit writer (cucumber 0.23, on `junit-report` 0.9) has no way to add
//! properties: a test case is built from the scenario's events alone, and written out
//! whole when the run finishes. So the report is completed afterwards: [`add_properties`]
//! reads the XML the writer produced and gives every scenario that measured something a
//! `<properties>` element as its first child, one `<property>` per measurement:
//!
//! ```xml
//! <testcase name="Scenario: A node fails: features/self-healing.feature:30:3" time="…">
//!   <properties>
//!     <property name="within 30 s: deployment web: 10 replicas running" value="11.204"/>
//!     <property name="since lose node node-2: deployment web: 10 replicas running" value="11.207"/>
//!   </properties>
//!   …
//! ```
//!
//! Values are seconds. A scenario is found by the names cucumber gives: its test suite is
//! `Feature: <feature>[: <path>]`, its test case `[Rule: <rule>: ]Scenario: <scenario>:
//! [<path>:]<line>:<column>`. The XML is only scanned, tag by tag (CDATA sections, comments
//! and declarations are skipped whole), never rebuilt: everything else is kept byte for
//! byte.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};

use crate::report::{Measurement, ScenarioId};

/// The report with properties added, and the scenarios whose test case was not found.
#[derive(Debug)]
pub struct WithProperties {
    /// The completed XML.
    pub xml: String,
    /// Scenarios with measurements that have no test case in the report.
    pub missing: Vec<ScenarioId>,
}

/// Adds the measurements to the test cases of their scenarios in `xml`, a JUnit report
/// written by cucumber.
pub fn add_properties(xml: &str, measurements: &[Measurement]) -> anyhow::Result<WithProperties> {
    let mut by_scenario: BTreeMap<(&str, &str, usize, usize), (&ScenarioId, String)> =
        BTreeMap::new();
    for measurement in measurements {
        let id = &measurement.scenario;
        let key = (
            id.feature.as_str(),
            id.scenario.as_str(),
            id.line,
            id.column,
        );
        let (_, properties) = by_scenario.entry(key).or_insert((id, String::new()));
        for (name, seconds) in properties_of(measurement) {
            properties.push_str(&format!(
                "<property name=\"{}\" value=\"{seconds:.3}\"/>",
                escape(&name)
            ));
        }
    }
    let mut out = String::with_capacity(xml.len() + by_scenario.len() * 256);
    let mut suite: Option<String> = None;
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        // Whole constructs whose content is not markup.
        let skipped = [
            ("<![CDATA[", "]]>"),
            ("<!--", "-->"),
            ("<?", "?>"),
            ("<!", ">"),
        ]
        .into_iter()
        .find(|(open, _)| rest.starts_with(open));
        if let Some((open, close)) = skipped {
            let end = rest[open.len()..]
                .find(close)
                .map(|at| open.len() + at + close.len())
                .ok_or_else(|| anyhow!("the JUnit report has an unterminated {open}"))?;
            out.push_str(&rest[..end]);
            rest = &rest[end..];
            continue;
        }
        let end = tag_end(rest)?;
        let tag = &rest[..end];
        rest = &rest[end..];
        if let Some(closing) = tag.strip_prefix("</") {
            if tag_name(closing) == "testsuite" {
                suite = None;
            }
            out.push_str(tag);
            continue;
        }
        let self_closing = tag.ends_with("/>");
        match tag_name(&tag[1..]) {
            "testsuite" if !self_closing => {
                suite = attribute(tag, "name")?;
                out.push_str(tag);
            }
            "testcase" => {
                let case = attribute(tag, "name")?.unwrap_or_default();
                let found = by_scenario
                    .iter()
                    .find(|(_, (id, _))| is_case_of(suite.as_deref(), &case, id))
                    .map(|(key, _)| *key);
                match found.and_then(|key| by_scenario.remove(&key)) {
                    Some((_, properties)) if self_closing => {
                        out.push_str(tag[..tag.len() - 2].trim_end());
                        out.push_str(&format!(
                            "><properties>{properties}</properties></testcase>"
                        ));
                    }
                    Some((_, properties)) => {
                        out.push_str(tag);
                        out.push_str(&format!("<properties>{properties}</properties>"));
                    }
                    None => out.push_str(tag),
                }
            }
            _ => out.push_str(tag),
        }
    }
    out.push_str(rest);
    Ok(WithProperties {
        xml: out,
        missing: by_scenario
            .into_values()
            .map(|(id, _)| id.clone())
            .collect(),
    })
}

/// The properties of one measurement: the time it took, named with its bound, and the
/// time since the fault before it, if any.
fn properties_of(measurement: &Measurement) -> Vec<(String, f64)> {
    let mut properties = vec![(
        format!(
            "within {} s: {}",
            measurement.bound.as_secs(),
            measurement.what
        ),
        measurement.took.as_secs_f64(),
    )];
    if let Some((fault, since)) = &measurement.since_fault {
        properties.push((
            format!("since {fault}: {}", measurement.what),
            since.as_secs_f64(),
        ));
    }
    properties
}

/// Whether the test case named `case`, in the suite named `suite`, is the scenario `id`.
fn is_case_of(suite: Option<&str>, case: &str, id: &ScenarioId) -> bool {
    let in_feature = suite
        .and_then(|suite| suite.strip_prefix("Feature: "))
        .and_then(|rest| rest.strip_prefix(id.feature.as_str()))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(": "));
    let scenario = format!("Scenario: {}: ", id.scenario);
    let named = case.starts_with(&scenario)
        || (case.starts_with("Rule: ") && case.contains(&format!(": {scenario}")));
    in_feature && named && case.ends_with(&format!(":{}:{}", id.line, id.column))
}

/// Where a tag that starts `text` ends (just after its `>`), quotes respected.
fn tag_end(text: &str) -> anyhow::Result<usize> {
    let mut quote = None;
    for (at, c) in text.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(open), _) if c == open => quote = None,
            (None, '>') => return Ok(at + 1),
            _ => {}
        }
    }
    let shown: String = text.chars().take(60).collect();
    bail!("the JUnit report has an unterminated tag: {shown:?}")
}

/// The name of an element, from the text just after its `<` (or `</`).
fn tag_name(text: &str) -> &str {
    let end = text
        .find(|c: char| c.is_whitespace() || c == '/' || c == '>')
        .unwrap_or(text.len());
    &text[..end]
}

/// The unescaped value of an attribute of a start tag, if it has it.
fn attribute(tag: &str, name: &str) -> anyhow::Result<Option<String>> {
    let mut rest = tag
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim_end_matches('/');
    rest = &rest[tag_name(rest).len()..];
    loop {
        rest = rest.trim_start();
        let Some((key, after)) = rest.split_once('=') else {
            return Ok(None);
        };
        let after = after.trim_start();
        let quote = after
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
            .ok_or_else(|| anyhow!("attribute {} of {tag:?} is not quoted", key.trim()))?;
        let value_end = after[1..]
            .find(quote)
            .ok_or_else(|| anyhow!("attribute {} of {tag:?} is not closed", key.trim()))?;
        if key.trim() == name {
            return unescape(&after[1..1 + value_end]).map(Some);
        }
        rest = &after[value_end + 2..];
    }
}

/// Escapes text for an attribute value.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Undoes XML escapes: the five named entities and numeric character references.
fn unescape(text: &str) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find(';')
            .ok_or_else(|| anyhow!("unterminated entity in {text:?}"))?;
        let entity = &rest[at + 1..at + end];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else {
                    entity
                        .strip_prefix('#')
                        .and_then(|decimal| decimal.parse().ok())
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| anyhow!("unknown entity &{entity}; in {text:?}"))?
            }
        };
        out.push(c);
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn measurement(scenario: &str, line: usize, what: &str, millis: u64) -> Measurement {
        Measurement {
            scenario: ScenarioId {
                feature: "Replicas <come> back".to_owned(),
                scenario: scenario.to_owned(),
                line,
                column: 3,
            },
            what: what.to_owned(),
            took: Duration::from_millis(millis),
            bound: Duration::from_secs(30),
            since_fault: None,
        }
    }

    /// What cucumber's writer produces (quick-xml escapes `<`, `>`, `&`, `'`, `"` in
    /// attributes); the second case contains markup-like text in CDATA.
    const REPORT: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?><testsuites>\
        <testsuite id=\"0\" name=\"Feature: Replicas &lt;come&gt; back: features/x.feature\" \
        package=\"testsuite/0\" tests=\"3\" errors=\"0\" failures=\"0\" hostname=\"localhost\" \
        timestamp=\"2025-01-01T00:00:00Z\" time=\"3\">\
        <testcase name=\"Scenario: A &quot;node&quot; fails: features/x.feature:5:3\" time=\"1\"/>\
        <testcase name=\"Scenario: Skip: features/x.feature:9:3\" time=\"0\"><skipped/>\
        <system-out><![CDATA[<testcase name=\"Scenario: Skip: features/x.feature:9:3\">]]></system-out>\
        </testcase>\
        <testcase name=\"Scenario: Skip: features/x.feature:12:3\" time=\"1\">\
        <system-out><![CDATA[ok]]></system-out></testcase>\
        </testsuite></testsuites>";

    #[test]
    fn properties_go_into_the_right_test_cases() {
        let mut lost = measurement("A \"node\" fails", 5, "web: 10 running & ready", 11_204);
        lost.since_fault = Some(("lose node node-2".to_owned(), Duration::from_millis(11_300)));
        let measurements = [
            lost,
            measurement("Skip", 12, "pod x running", 1_500),
            measurement("Skip", 12, "pod y running", 250),
            measurement("Not in the report", 40, "anything", 1),
        ];
        let done = add_properties(REPORT, &measurements).expect("adds");
        assert_eq!(done.missing.len(), 1);
        assert_eq!(done.missing[0].scenario, "Not in the report");
        let lost_properties = "<properties>\
            <property name=\"within 30 s: web: 10 running &amp; ready\" value=\"11.204\"/>\
            <property name=\"since lose node node-2: web: 10 running &amp; ready\" value=\"11.300\"/>\
            </properties>";
        let skip_properties = "<properties>\
            <property name=\"within 30 s: pod x running\" value=\"1.500\"/>\
            <property name=\"within 30 s: pod y running\" value=\"0.250\"/>\
            </properties>";
        // The self-closing test case is opened to take its properties; properties come
        // first; the CDATA that looks like a test case is left alone; nothing else changes.
        let expected = REPORT
            .replace(
                "features/x.feature:5:3\" time=\"1\"/>",
                &format!("features/x.feature:5:3\" time=\"1\">{lost_properties}</testcase>"),
            )
            .replace(
                "features/x.feature:12:3\" time=\"1\">",
                &format!("features/x.feature:12:3\" time=\"1\">{skip_properties}"),
            );
        assert_ne!(expected, REPORT);
        assert_eq!(done.xml, expected);
    }

    #[test]
    fn a_report_without_measurements_is_unchanged_and_bad_xml_is_an_error() {
        let done = add_properties(REPORT, &[]).expect("adds");
        assert_eq!(done.xml, REPORT);
        assert!(done.missing.is_empty());
        assert!(add_properties("<testsuites><testcase name=\"x", &[]).is_err());
        assert!(add_properties("<a><![CDATA[never closed", &[]).is_err());
    }

    #[test]
    fn entities_round_trip() {
        let text = "a <b> & \"c\" 'd'";
        assert_eq!(unescape(&escape(text)).expect("unescapes"), text);
        assert_eq!(unescape("&#233;&#xE9;").expect("unescapes"), "éé");
        assert!(unescape("&nope;").is_err());
        assert!(unescape("&amp").is_err());
    }
}
