//! Liveness and readiness probes: HTTP GET, TCP connect, or a command run in the container.
//!
//! A probe runs every `periodSeconds` once `initialDelaySeconds` have passed since the
//! container started, and gives up after `timeoutSeconds`. Its verdict flips only after
//! `failureThreshold` failures in a row (or `successThreshold` successes): one slow answer
//! does not restart a container. Readiness starts out failing, liveness passing, as in
//! Kubernetes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::runtime::Runtime;

/// How a probe checks, from its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// GET `http://<pod ip>:<port><path>`; 200–399 passes.
    Http {
        /// Port.
        port: u16,
        /// Path (with query).
        path: String,
    },
    /// A TCP connection to the port opens.
    Tcp {
        /// Port.
        port: u16,
    },
    /// The command exits 0 inside the container.
    Exec {
        /// argv.
        command: Vec<String>,
    },
}

/// A probe's spec, with Kubernetes' defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// What to check.
    pub check: Check,
    /// Wait this long after the container starts.
    pub initial_delay: Duration,
    /// Check this often.
    pub period: Duration,
    /// Give one check this long.
    pub timeout: Duration,
    /// Failures in a row that flip the verdict to failing.
    pub failure_threshold: u32,
    /// Successes in a row that flip it to passing.
    pub success_threshold: u32,
}

/// Resolves a port given as a number or as the name of one of the container's ports.
fn port(value: Option<&Value>, container: &Value) -> Option<u16> {
    match value? {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Value::String(name) => name.parse().ok().or_else(|| {
            container
                .get("ports")?
                .as_array()?
                .iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name))?
                .get("containerPort")?
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
        }),
        _ => None,
    }
}

impl Probe {
    /// Parses `container[field]` (`livenessProbe`, `readinessProbe`), if present and usable.
    pub fn parse(container: &Value, field: &str) -> Option<Probe> {
        let p = container.get(field)?;
        let secs = |k: &str, default: u64| {
            Duration::from_secs(p.get(k).and_then(Value::as_u64).unwrap_or(default))
        };
        let count = |k: &str, default: u32| {
            p.get(k)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        let check = if let Some(h) = p.get("httpGet") {
            Check::Http {
                port: port(h.get("port"), container)?,
                path: h
                    .get("path")
                    .and_then(Value::as_str)
                    .unwrap_or("/")
                    .to_owned(),
            }
        } else if let Some(t) = p.get("tcpSocket") {
            Check::Tcp {
                port: port(t.get("port"), container)?,
            }
        } else {
            let command: Vec<String> = p
                .pointer("/exec/command")?
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            Check::Exec { command }
        };
        Some(Probe {
            check,
            initial_delay: secs("initialDelaySeconds", 0),
            period: secs("periodSeconds", 10).max(Duration::from_secs(1)),
            timeout: secs("timeoutSeconds", 1).max(Duration::from_secs(1)),
            failure_threshold: count("failureThreshold", 3),
            success_threshold: count("successThreshold", 1),
        })
    }
}

/// A probe's running verdict for one container.
#[derive(Debug, Clone)]
pub struct ProbeState {
    /// Passing now.
    pub passing: bool,
    successes: u32,
    failures: u32,
    last_run: Option<Instant>,
}

impl ProbeState {
    /// A fresh state: readiness starts failing, liveness passing.
    pub fn new(passing: bool) -> Self {
        ProbeState {
            passing,
            successes: 0,
            failures: 0,
            last_run: None,
        }
    }

    /// Whether a check is due, for a container running since `started`.
    pub fn due(&self, probe: &Probe, started: Instant, now: Instant) -> bool {
        now >= started + probe.initial_delay
            && self.last_run.is_none_or(|last| now >= last + probe.period)
    }

    /// Records one check's result; returns whether the verdict flipped.
    pub fn record(&mut self, probe: &Probe, ok: bool, now: Instant) -> bool {
        self.last_run = Some(now);
        if ok {
            self.successes += 1;
            self.failures = 0;
            if !self.passing && self.successes >= probe.success_threshold {
                self.passing = true;
                return true;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.passing && self.failures >= probe.failure_threshold {
                self.passing = false;
                return true;
            }
        }
        false
    }
}

/// Runs one check against a container at `pod_ip`.
pub async fn check(probe: &Probe, pod_ip: &str, runtime: &Runtime, container_id: &str) -> bool {
    let attempt = async {
        match &probe.check {
            Check::Http { port, path } => {
                let client: Client<_, Empty<Bytes>> =
                    Client::builder(TokioExecutor::new()).build_http();
                let Ok(uri) = format!("http://{pod_ip}:{port}{path}").parse::<http::Uri>() else {
                    return false;
                };
                match client.get(uri).await {
                    Ok(resp) => (200..400).contains(&resp.status().as_u16()),
                    Err(_) => false,
                }
            }
            Check::Tcp { port } => tokio::net::TcpStream::connect((pod_ip, *port))
                .await
                .is_ok(),
            Check::Exec { command } => {
                matches!(runtime.exec(container_id, command.clone()).await, Ok(0))
            }
        }
    };
    let answered = tokio::time::timeout(probe.timeout, attempt).await;
    answered.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_with_defaults_and_named_ports() {
        let c = json!({"ports": [{"name": "http", "containerPort": 8080}],
                       "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 2}});
        let p = Probe::parse(&c, "readinessProbe").expect("parses");
        assert_eq!(
            p.check,
            Check::Http {
                port: 8080,
                path: "/ready".into()
            }
        );
        assert_eq!(p.period, Duration::from_secs(2));
        assert_eq!(p.failure_threshold, 3);
        assert!(Probe::parse(&c, "livenessProbe").is_none());
    }

    #[test]
    fn verdict_flips_only_at_the_thresholds() {
        let c = json!({"livenessProbe": {"tcpSocket": {"port": 80}, "failureThreshold": 2}});
        let p = Probe::parse(&c, "livenessProbe").expect("parses");
        let mut s = ProbeState::new(true);
        let t = Instant::now();
        assert!(!s.record(&p, false, t));
        assert!(s.passing);
        assert!(s.record(&p, false, t));
        assert!(!s.passing);
        assert!(s.record(&p, true, t));
        assert!(s.passing);
    }
}
