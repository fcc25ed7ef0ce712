//! `shipshape-conformance certify` given something it cannot certify: each mistake gets
//! one clear line on stderr within 10 seconds, a non-zero exit, and no report.
//!
//! The clusters and engines here that answer wrongly are small fakes (a plain HTTP server
//! on loopback, a Unix socket answering as a Docker engine would), so each answer is the
//! one under test; nothing of the machine's real Docker engine is touched.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long any of these may take to say what is wrong.
const PROMPT: Duration = Duration::from_secs(10);

/// Runs `certify` with `args` (reports into a fresh directory) and the environment
/// `env`; checks the exit is non-zero, prompt, with one line on stderr and no report;
/// returns that line.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_shipshape-conformance"));
    command
        .arg("certify")
        .args(args)
        .arg("--out")
        .arg(out.path())
        .env_remove("SHIPSHAPE_KUBECONFIG")
        .env_remove("KUBECONFIG")
        .env_remove("SHIPSHAPE_DOCKER_HOST");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("the binary runs");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert!(
        !output.status.success(),
        "certify {args:?} succeeded: {stderr}"
    );
    assert!(
        took < PROMPT,
        "certify {args:?} took {took:?} to say: {stderr}"
    );
    assert_eq!(
        lines.len(),
        1,
        "certify {args:?} said more than one line: {stderr}"
    );
    let reports: Vec<_> = walk(out.path());
    assert!(reports.is_empty(), "certify {args:?} left {reports:?}");
    lines[0].to_owned()
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// A kubeconfig for `server` with a bearer token, written into `dir`.
fn kubeconfig(dir: &Path, server: &str) -> String {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n\
         users:\n- name: u\n  user:\n    token: expired-token\ncontexts:\n- name: x\n  context:\n    \
         cluster: c\n    user: u\ncurrent-context: x\n"
    );
    std::fs::write(&path, text).expect("write the kubeconfig");
    path.display().to_string()
}

/// Serves HTTP on loopback in the background, answering each request with what `answer`
/// gives for its method and path: `(status, JSON body)`.
fn fake_server(answer: fn(&str, &str) -> (u16, String)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (method, path) = (
                parts.next().unwrap_or_default().to_owned(),
                parts.next().unwrap_or_default().to_owned(),
            );
            // Skip the headers; these requests have no body worth reading.
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                    break;
                }
            }
            let (status, body) = answer(&method, &path);
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{address}")
}

#[test]
fn a_missing_kubeconfig_is_named() {
    let line = refused(
        &[
            "--driver",
            "kubernetes",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ],
        &[],
    );
    assert!(
        line.contains("/nonexistent/kubeconfig does not exist"),
        "{line}"
    );
}

#[test]
fn an_unreachable_cluster_is_named() {
    // A port nothing listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(dir.path(), &format!("https://127.0.0.1:{port}"));
    let line = refused(&["--driver", "kubernetes", "--kubeconfig", &config], &[]);
    assert!(
        line.contains("cannot reach the Kubernetes API server") && line.contains(&port.to_string()),
        "{line}"
    );
}

#[test]
fn an_expired_token_is_told_apart() {
    let server = fake_server(|_, _| {
        (
            401,
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#
                .to_owned(),
        )
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(dir.path(), &server);
    let line = refused(&["--driver", "kubernetes", "--kubeconfig", &config], &[]);
    assert!(
        line.contains("refused the credentials (401 Unauthorized)"),
        "{line}"
    );
}

#[test]
fn a_cluster_without_the_apps_group_says_what_it_lacks() {
    let server = fake_server(|_, path| {
        match path {
        "/version" => (
            200,
            r#"{"major":"1","minor":"33","gitVersion":"v1.33.0","gitCommit":"x","gitTreeState":"clean","buildDate":"2026-01-01T00:00:00Z","goVersion":"go","compiler":"gc","platform":"linux/amd64"}"#
                .to_owned(),
        ),
        "/api/v1" => (
            200,
            r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[
                {"name":"namespaces","singularName":"namespace","namespaced":false,"kind":"Namespace","verbs":["get"]},
                {"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get"]},
                {"name":"services","singularName":"service","namespaced":true,"kind":"Service","verbs":["get"]},
                {"name":"nodes","singularName":"node","namespaced":false,"kind":"Node","verbs":["get"]}]}"#
                .to_owned(),
        ),
        _ => (
            404,
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"not found","reason":"NotFound","code":404}"#
                .to_owned(),
        ),
    }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(dir.path(), &server);
    let line = refused(&["--driver", "kubernetes", "--kubeconfig", &config], &[]);
    assert!(
        line.contains("does not serve what the kit needs: apps/v1 deployments, replicasets"),
        "{line}"
    );
}

#[test]
fn no_docker_engine_for_swarm_is_named() {
    let line = refused(
        &["--driver", "swarm"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert!(line.contains("/nonexistent/docker.sock"), "{line}");
}

#[test]
fn an_engine_that_cannot_run_swarm_mode_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("docker.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = Vec::new();
            let mut buffer = [0_u8; 4096];
            // One request per connection (each answer says `Connection: close`); read
            // until the end of its head.
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let head = String::from_utf8_lossy(&request);
            let path = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            let path = path.trim_start_matches(|c: char| {
                c == '/' || c == 'v' || c == '.' || c.is_ascii_digit()
            });
            let (status, body) = if path.starts_with("_ping") {
                (200, "OK".to_owned())
            } else if path.starts_with("info") {
                (
                    200,
                    r#"{"ServerVersion":"0.0-fake","Swarm":{"LocalNodeState":"inactive"}}"#
                        .to_owned(),
                )
            } else {
                (
                    503,
                    r#"{"message":"this engine was built without swarm mode"}"#.to_owned(),
                )
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nApi-Version: 1.41\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let host = format!("unix://{}", socket.display());
    let line = refused(&["--driver", "swarm"], &[("DOCKER_HOST", &host)]);
    assert!(
        line.contains("cannot run in swarm mode") && line.contains("built without swarm mode"),
        "{line}"
    );
}
