//! `probe`: the workload the kit and the reference run in their containers.
//!
//! An HTTP server on port 8080 (`PORT` to change it) whose behaviour a test can steer:
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | JSON: pod name, version, hostname, and how many requests it has served; with `?sleep=S` it answers S seconds later (a long request), with `?cpu_ms=N` after spending N ms of CPU (defaults: `REQUEST_SLEEP`, `REQUEST_CPU_MS`) |
//! | `GET /healthz` | liveness: 200, or 500 after `POST /fail/liveness` |
//! | `GET /ready` | readiness: 200 once `READY_AFTER` seconds have passed, 503 before, or after `POST /fail/readiness` |
//! | `POST /crash?code=N` | answers, then exits with code N |
//! | `GET /fetch?target=HOST:PORT/PATH` | fetches `http://HOST:PORT/PATH` and answers with its body (pods' containers share localhost) |
//! | `ANY /relay?target=HOST:PORT/PATH&method=M` | sends method M (default GET) with the body to `http://HOST:PORT/PATH` on a connection of its own, and answers with the answer's status and body — 502 if it got none |
//! | `PUT /file?path=P`, `GET /file?path=P` | writes the body to file P, or reads it back (for shared volumes) |
//! | `POST /traffic?target=HOST:PORT/PATH&pause_ms=P&for_s=S` | starts a traffic generator: `GET`s of the target one after the other, a connection each, P ms apart (20), for at most S seconds (180); answers its number N |
//! | `GET /traffic/N?since=K` | the generator's outcomes from the K-th on, a line each: microseconds since it started, `ok` and the answer's body, or `failed` and why |
//! | `DELETE /traffic/N?since=K` | stops the generator once its request in flight is done, and answers its last outcomes as `GET` does |
//!
//! As a *traffic generator*, a probe inside a cluster sends a scenario's requests from
//! where the cluster's own clients are, for a kit whose host cannot reach the cluster's
//! services: it keeps every request's outcome and time, and the kit collects them (through
//! the API server's `pods/proxy`) while the requests go on.
//!
//! As a *relay*, a probe on a network the kit's host cannot reach (Swarm's overlay, say)
//! carries the kit's requests to services and replicas there: the kit reaches the relay on
//! a published port. A name in `target` is resolved anew for every request, and the first
//! address the resolver gives is the one dialled, as any client does — which is how DNS
//! round robin spreads the requests.
//!
//! `probe run SECONDS [CODE]` is a batch task, for jobs: it works (sleeps) SECONDS seconds,
//! says so, and exits with CODE (0 by default).
//!
//! `probe cat [CODE]` copies its stdin to its stdout until the end, says on stderr how many
//! bytes it copied, and exits with CODE (0 by default): a process to talk to through
//! `kubectl exec -i` (the image has no shell).
//!
//! `probe check PORT/PATH...` is a health check to run inside the container (an image
//! `FROM scratch` has no shell and no curl): it asks `http://127.0.0.1:PORT/PATH` for each
//! argument and exits 0 when every answer is 2xx, 1 otherwise.
//!
//! Environment, so that one image behaves as real applications do: `POD_NAME` (else the
//! hostname), `PROBE_VERSION`, `READY_AFTER` (a slow start), `EXIT_AFTER` with
//! `EXIT_CODE` (a run-to-completion pod, or one that crashes), `STOP_AFTER` (a slow
//! shutdown: seconds it still takes to stop once SIGTERM came and its requests are done,
//! within its grace period or beyond it), `REQUEST_SLEEP` and `REQUEST_CPU_MS` (what each
//! `GET /` costs), `PROBE_BROKEN=1` (exits 1 at start: the `broken` image). On SIGTERM it
//! stops accepting connections, finishes the requests in flight (long ones included) and
//! exits 0: that is what lets a rollout drop no request.
//!
//! It uses the standard library only, so it builds in a second with `rustc` alone into a
//! static binary for a `FROM scratch` image, with no registry and no dependency.

#![allow(unsafe_code)] // one call: installing the SIGTERM handler through libc's `signal`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static TERMINATING: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: i32) {
    TERMINATING.store(true, Ordering::SeqCst);
}

unsafe extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

const SIGTERM: i32 = 15;
const SIGINT: i32 = 2;

struct State {
    name: String,
    version: String,
    hostname: String,
    started: Instant,
    ready_after: Duration,
    requests: AtomicU64,
    in_flight: AtomicUsize,
    liveness_failed: AtomicBool,
    readiness_failed: AtomicBool,
    generators: Mutex<BTreeMap<u32, Arc<Generator>>>,
    next_generator: AtomicU32,
}

/// A traffic generator running in a thread of its own.
struct Generator {
    /// Its outcomes so far, a line each (see the module's table).
    outcomes: Mutex<Vec<String>>,
    /// Set to stop it after its request in flight.
    stop: AtomicBool,
    /// Set by the generator when it has stopped.
    stopped: AtomicBool,
}

fn env_secs(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse::<f64>().ok()).filter(|v| *v >= 0.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("check") {
        std::process::exit(check(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("run") {
        std::process::exit(run(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("cat") {
        std::process::exit(cat(&args[2..]));
    }
    if std::env::var("PROBE_BROKEN").is_ok_and(|v| v == "1") {
        eprintln!("probe: this is the broken image; exiting with code 1");
        std::process::exit(1);
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        signal(SIGTERM, on_sigterm);
        signal(SIGINT, on_sigterm);
    }
    let hostname = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let state = Arc::new(State {
        name: std::env::var("POD_NAME").unwrap_or_else(|_| hostname.clone()),
        version: std::env::var("PROBE_VERSION").unwrap_or_else(|_| "dev".into()),
        hostname,
        started: Instant::now(),
        ready_after: Duration::from_secs_f64(env_secs("READY_AFTER").unwrap_or(0.0)),
        requests: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        liveness_failed: AtomicBool::new(false),
        readiness_failed: AtomicBool::new(false),
        generators: Mutex::new(BTreeMap::new()),
        next_generator: AtomicU32::new(1),
    });
    if let Some(after) = env_secs("EXIT_AFTER") {
        let code = std::env::var("EXIT_CODE").ok().and_then(|c| c.parse().ok()).unwrap_or(0);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(after));
            println!("probe: EXIT_AFTER reached, exiting with code {code}");
            std::process::exit(code);
        });
    }
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let listener = match TcpListener::bind(format!("0.0.0.0:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("probe: cannot listen on port {port}: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = listener.set_nonblocking(true) {
        eprintln!("probe: {e}");
        std::process::exit(2);
    }
    println!("probe {} ({}) listening on port {port}", state.version, state.name);
    while !TERMINATING.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let state = state.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => eprintln!("probe: accept failed: {e}"),
        }
    }
    // Stop accepting, let in-flight requests finish (bounded), then leave.
    drop(listener);
    println!("probe: SIGTERM received, finishing requests in flight");
    let deadline = Instant::now() + Duration::from_secs(30);
    while state.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Some(stop_after) = env_secs("STOP_AFTER") {
        println!("probe: taking {stop_after} s to stop, as STOP_AFTER says");
        std::thread::sleep(Duration::from_secs_f64(stop_after));
    }
    println!("probe: bye");
    std::process::exit(0);
}

/// Serves one keep-alive connection.
fn serve(stream: TcpStream, state: &State) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        // Wait for a request line, noticing SIGTERM between requests.
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if TERMINATING.load(Ordering::SeqCst) && line.is_empty() {
                    return;
                }
                if line.is_empty() {
                    continue;
                }
            }
            Err(_) => return,
        }
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        let keep = handle(&line, &mut reader, &mut writer, state);
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !keep {
            return;
        }
    }
}

/// Handles one request; returns whether the connection stays open.
fn handle(
    request_line: &str,
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    state: &State,
) -> bool {
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("/").to_owned();
    let mut content_length = 0usize;
    let mut close = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(_) if Instant::now() < deadline => continue,
            Err(_) => return false,
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                content_length = v.parse().unwrap_or(0).min(1 << 20);
            } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    let mut body = vec![0u8; content_length];
    if reader.read_exact(&mut body).is_err() {
        return false;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let count = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let ready = !state.readiness_failed.load(Ordering::SeqCst)
        && state.started.elapsed() >= state.ready_after;
    let mut exit_code = None;
    if (method.as_str(), path) == ("GET", "/") {
        let number = |name: &str, default: &str| {
            param(query, name)
                .or_else(|| std::env::var(default).ok())
                .and_then(|value| value.trim().parse::<f64>().ok())
                .filter(|value| value.is_finite() && *value > 0.0)
        };
        if let Some(cpu_ms) = number("cpu_ms", "REQUEST_CPU_MS") {
            spin(Duration::from_secs_f64(cpu_ms.min(60_000.0) / 1000.0));
        }
        if let Some(sleep) = number("sleep", "REQUEST_SLEEP") {
            std::thread::sleep(Duration::from_secs_f64(sleep.min(600.0)));
        }
    }
    let (code, text) = match (method.as_str(), path) {
        ("GET", "/") => (
            200,
            format!(
                "{{\"pod\":\"{}\",\"version\":\"{}\",\"hostname\":\"{}\",\"requests\":{count}}}",
                escape(&state.name),
                escape(&state.version),
                escape(&state.hostname)
            ),
        ),
        ("GET", "/healthz") if state.liveness_failed.load(Ordering::SeqCst) => {
            (500, "{\"live\":false}".into())
        }
        ("GET", "/healthz") => (200, "{\"live\":true}".into()),
        ("GET", "/ready") if ready => (200, "{\"ready\":true}".into()),
        ("GET", "/ready") => (503, "{\"ready\":false}".into()),
        ("POST", "/fail/liveness") => {
            state.liveness_failed.store(true, Ordering::SeqCst);
            (200, "{\"live\":false}".into())
        }
        ("POST", "/fail/readiness") => {
            state.readiness_failed.store(true, Ordering::SeqCst);
            (200, "{\"ready\":false}".into())
        }
        ("POST", "/crash") => {
            let code = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("code="))
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            exit_code = Some(code);
            (200, format!("{{\"exiting\":{code}}}"))
        }
        (_, "/relay") => match param(query, "target") {
            Some(target) => {
                let method = param(query, "method").unwrap_or_else(|| "GET".to_owned());
                match send(&method, &target, &body) {
                    Ok((code, body)) => (code, body),
                    Err(e) => (502, format!("{{\"error\":\"{}\"}}", escape(&e))),
                }
            }
            None => (400, "{\"error\":\"target missing\"}".into()),
        },
        ("POST", "/traffic") => match param(query, "target") {
            Some(target) => {
                let number = |name: &str, default: f64, max: f64| {
                    param(query, name)
                        .and_then(|value| value.parse::<f64>().ok())
                        .filter(|value| value.is_finite() && *value >= 0.0)
                        .unwrap_or(default)
                        .min(max)
                };
                let pause = Duration::from_secs_f64(number("pause_ms", 20.0, 10_000.0) / 1000.0);
                let run_for = Duration::from_secs_f64(number("for_s", 180.0, 600.0));
                let id = start_traffic(state, target, pause, run_for);
                (200, format!("{{\"traffic\":{id}}}"))
            }
            None => (400, "{\"error\":\"target missing\"}".into()),
        },
        (_, _) if path.starts_with("/traffic/") => {
            let since = param(query, "since").and_then(|k| k.parse().ok()).unwrap_or(0);
            let generator = path["/traffic/".len()..].parse::<u32>().ok().and_then(|id| {
                let mut generators = state.generators.lock().unwrap_or_else(PoisonError::into_inner);
                if method == "DELETE" { generators.remove(&id) } else { generators.get(&id).cloned() }
            });
            match (method.as_str(), generator) {
                (_, None) => (404, "{\"error\":\"no such traffic\"}".into()),
                ("GET", Some(generator)) => (200, outcomes_since(&generator, since)),
                ("DELETE", Some(generator)) => {
                    generator.stop.store(true, Ordering::SeqCst);
                    while !generator.stopped.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    (200, outcomes_since(&generator, since))
                }
                _ => (400, "{\"error\":\"GET or DELETE a traffic\"}".into()),
            }
        }
        ("GET", "/fetch") => match param(query, "target").map(|t| fetch(&t)) {
            Some(Ok(body)) => (200, body),
            Some(Err(e)) => (502, format!("{{\"error\":\"{}\"}}", escape(&e))),
            None => (400, "{\"error\":\"target missing\"}".into()),
        },
        ("PUT", "/file") => match param(query, "path").map(|p| std::fs::write(p, &body)) {
            Some(Ok(())) => (200, "{\"written\":true}".into()),
            Some(Err(e)) => (500, format!("{{\"error\":\"{}\"}}", escape(&e.to_string()))),
            None => (400, "{\"error\":\"path missing\"}".into()),
        },
        ("GET", "/file") => match param(query, "path").map(std::fs::read_to_string) {
            Some(Ok(text)) => (200, text),
            Some(Err(e)) => (404, format!("{{\"error\":\"{}\"}}", escape(&e.to_string()))),
            None => (400, "{\"error\":\"path missing\"}".into()),
        },
        _ => (404, "{\"error\":\"not found\"}".into()),
    };
    // While terminating, finish this request but ask the client not to send another.
    let close = close || TERMINATING.load(Ordering::SeqCst) || exit_code.is_some();
    let reason = match code {
        200..=299 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Other",
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{text}",
        text.len(),
        if close { "close" } else { "keep-alive" }
    );
    let ok = writer.write_all(response.as_bytes()).and_then(|_| writer.flush()).is_ok();
    if let Some(code) = exit_code {
        println!("probe: crashing with code {code} as asked");
        std::process::exit(code);
    }
    ok && !close
}

/// Starts a traffic generator sending `GET`s to `target` (`host:port/path`) `pause` apart
/// for at most `run_for`; its number.
fn start_traffic(state: &State, target: String, pause: Duration, run_for: Duration) -> u32 {
    let id = state.next_generator.fetch_add(1, Ordering::SeqCst);
    let generator = Arc::new(Generator {
        outcomes: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        stopped: AtomicBool::new(false),
    });
    state
        .generators
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, generator.clone());
    std::thread::spawn(move || {
        let started = Instant::now();
        while !generator.stop.load(Ordering::SeqCst) && started.elapsed() < run_for {
            let outcome = match send("GET", &target, &[]) {
                Ok((200..=299, body)) => format!("ok\t{}", one_line(&body)),
                Ok((code, body)) => format!("failed\tanswered {code}: {}", one_line(&body)),
                Err(e) => format!("failed\t{}", one_line(&e)),
            };
            let at = started.elapsed().as_micros();
            generator
                .outcomes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!("{at}\t{outcome}\n"));
            std::thread::sleep(pause);
        }
        generator.stopped.store(true, Ordering::SeqCst);
    });
    id
}

/// A generator's outcomes from the `since`-th on, a line each.
fn outcomes_since(generator: &Generator, since: usize) -> String {
    let outcomes = generator.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
    outcomes.get(since..).unwrap_or_default().concat()
}

/// `text` on one line, for a line of outcomes.
fn one_line(text: &str) -> String {
    text.trim().replace(['\t', '\r', '\n'], " ")
}

/// A query parameter's value, percent-decoding what paths and nested queries need
/// (`/ : ? = & %`).
fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let v = kv.strip_prefix(name)?.strip_prefix('=')?;
        Some(
            v.replace("%2F", "/")
                .replace("%2f", "/")
                .replace("%3A", ":")
                .replace("%3a", ":")
                .replace("%3F", "?")
                .replace("%3f", "?")
                .replace("%3D", "=")
                .replace("%3d", "=")
                .replace("%26", "&")
                .replace("%25", "%"),
        )
    })
}

/// The health check: asks `http://127.0.0.1:PORT/PATH` for each `PORT/PATH` argument and
/// returns the exit code, 0 when every answer is 2xx.
fn run(args: &[String]) -> i32 {
    let seconds = args.first().and_then(|s| s.parse::<f64>().ok()).filter(|s| *s >= 0.0);
    let code = args.get(1).map_or(Some(0), |c| c.parse::<i32>().ok());
    let (Some(seconds), Some(code)) = (seconds, code) else {
        eprintln!("probe run: usage: probe run SECONDS [EXIT-CODE]");
        return 2;
    };
    std::thread::sleep(Duration::from_secs_f64(seconds));
    println!("probe run: worked {seconds} s, exiting with code {code}");
    code
}

fn cat(args: &[String]) -> i32 {
    let Some(code) = args.first().map_or(Some(0), |c| c.parse::<i32>().ok()) else {
        eprintln!("probe cat: usage: probe cat [EXIT-CODE]");
        return 2;
    };
    let (mut input, mut output) = (std::io::stdin().lock(), std::io::stdout().lock());
    let mut buf = [0u8; 8192];
    let mut copied = 0usize;
    loop {
        match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if output.write_all(&buf[..n]).and_then(|()| output.flush()).is_err() {
                    break;
                }
                copied += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    eprintln!("probe cat: copied {copied} bytes");
    code
}

fn check(targets: &[String]) -> i32 {
    if targets.is_empty() {
        eprintln!("probe check: name at least one PORT/PATH to ask");
        return 2;
    }
    for target in targets {
        match send("GET", &format!("127.0.0.1:{target}"), &[]) {
            Ok((code, _)) if (200..300).contains(&code) => {}
            Ok((code, body)) => {
                eprintln!("probe check: {target} answered {code}: {body}");
                return 1;
            }
            Err(e) => {
                eprintln!("probe check: {target}: {e}");
                return 1;
            }
        }
    }
    0
}

/// A one-shot HTTP/1.1 request of `host:port/path` with `body`; the answer's status and body.
fn send(method: &str, target: &str, body: &[u8]) -> Result<(u16, String), String> {
    let (authority, path) = match target.split_once('/') {
        Some((a, p)) => (a, format!("/{p}")),
        None => (target, "/".to_owned()),
    };
    // A name is resolved anew each time; the first address is dialled, as clients do.
    let address = authority
        .to_socket_addrs()
        .map_err(|e| format!("resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("resolve {authority}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(3))
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .and_then(|_| stream.write_all(body))
    .map_err(|e| format!("send to {authority}: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read from {authority}: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("a malformed answer from {authority}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status in the answer from {authority}"))?;
    Ok((code, body.to_owned()))
}

/// A one-shot HTTP/1.1 GET of `host:port/path`; the response body, whatever its status.
fn fetch(target: &str) -> Result<String, String> {
    send("GET", target, &[]).map(|(_, body)| body)
}

/// Keeps one CPU busy for `cost`: the work a request does.
fn spin(cost: Duration) {
    let until = Instant::now() + cost;
    let mut x: u64 = 1;
    while Instant::now() < until {
        for _ in 0..10_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        }
        std::hint::black_box(x);
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
