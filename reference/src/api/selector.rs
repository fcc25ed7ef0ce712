//! Label selectors (`app=web,tier in (front,back),!canary`) and field selectors
//! (`spec.nodeName=node-1,status.phase!=Running`), parsed once and matched against objects.
//!
//! The grammar is Kubernetes': requirements separated by commas; equality (`=`, `==`,
//! `!=`), sets (`in (a,b)`, `notin (a,b)`), existence (`key`, `!key`). A malformed selector
//! is the client's mistake and becomes 400 Bad Request.

use serde_json::Value;

use super::meta;

/// Why a selector could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid selector {selector:?}: {reason}")]
pub struct SelectorError {
    /// The selector text.
    pub selector: String,
    /// What is wrong with it.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl SelectorError {
    fn new(selector: &str, reason: impl Into<String>) -> Self {
        SelectorError {
            selector: selector.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn valid_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        let err = |reason: &str| SelectorError::new(text, reason);
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(LabelSelector { requirements });
        }
        for part in split_top_level(text) {
            let part = part.trim();
            let set = |rest| parse_set(rest).ok_or_else(|| err("bad set"));
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::DoesNotExist(k.trim().into())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), set(rest)?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Requirement::In(k.trim().into(), set(rest)?)
            } else {
                Requirement::Exists(part.into())
            };
            let (key, values): (&str, Vec<&str>) = match &req {
                Requirement::Equals(k, v) | Requirement::NotEquals(k, v) => (k, vec![v.as_str()]),
                Requirement::In(k, vs) | Requirement::NotIn(k, vs) => {
                    (k, vs.iter().map(String::as_str).collect())
                }
                Requirement::Exists(k) | Requirement::DoesNotExist(k) => (k, vec![]),
            };
            if !valid_key(key) {
                return Err(err(&format!("invalid label key {key:?}")));
            }
            if let Some(v) = values.iter().find(|v| !valid_value(v)) {
                return Err(err(&format!("invalid label value {v:?}")));
            }
            requirements.push(req);
        }
        Ok(LabelSelector { requirements })
    }

    /// A selector requiring every given label (a `matchLabels` map).
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        LabelSelector {
            requirements: labels
                .into_iter()
                .map(|(k, v)| Requirement::Equals(k.into(), v.into()))
                .collect(),
        }
    }

    /// Whether an object with these labels matches.
    pub fn matches(&self, labels: &[(&str, &str)]) -> bool {
        self.matches_labels(|key| labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v))
    }

    /// Whether an object matches, `get` giving the value of each of its labels by key:
    /// a map's lookup, with nothing copied or collected.
    pub fn matches_labels<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }

    /// Whether the selector matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object matches, by its `metadata.labels`.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.requirements.is_empty() {
            return true;
        }
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        self.matches_labels(|key| labels?.get(key)?.as_str())
    }
}

fn parse_set(rest: &str) -> Option<Vec<String>> {
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

/// A parsed field selector: equality and inequality on dotted paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Whether the selector matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Parses the `fieldSelector` query parameter.
    pub fn parse(text: &str) -> Result<FieldSelector, SelectorError> {
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(FieldSelector { requirements });
        }
        for part in text.split(',') {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                let why = format!("{part:?} is not field=value or field!=value");
                return Err(SelectorError::new(text, why));
            };
            let field = field.trim();
            if field.is_empty() || !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
                return Err(SelectorError::new(text, format!("invalid field {field:?}")));
            }
            requirements.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether the object matches; a missing field counts as the empty string.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|(field, equal, value)| {
            let actual = match meta::path(obj, field) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_match_like_kubernetes() {
        let labels = [("app", "web"), ("tier", "front")];
        let ok = |s: &str| LabelSelector::parse(s).expect("parses").matches(&labels);
        assert!(ok(""));
        assert!(ok("app=web"));
        assert!(ok("app==web,tier=front"));
        assert!(!ok("app=db"));
        assert!(ok("app!=db"));
        assert!(ok("tier in (front, back)"));
        assert!(!ok("tier notin (front)"));
        assert!(ok("app"));
        assert!(!ok("!app"));
        assert!(ok("!canary"));
    }

    #[test]
    fn malformed_label_selectors_are_errors() {
        assert!(LabelSelector::parse("app=we b").is_err());
        assert!(LabelSelector::parse("tier in front").is_err());
        assert!(LabelSelector::parse("=x").is_err());
    }

    #[test]
    fn field_selectors_follow_paths() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "node-1"}});
        let ok = |s: &str| {
            FieldSelector::parse(s)
                .expect("parses")
                .matches_object(&pod)
        };
        assert!(ok("spec.nodeName=node-1"));
        assert!(!ok("spec.nodeName!=node-1"));
        assert!(ok("spec.nodeName=node-1,metadata.name=p"));
        assert!(ok("status.phase="));
        assert!(FieldSelector::parse("spec.nodeName").is_err());
    }
}
