//! The agent's streaming endpoints: how `kubectl exec` and `kubectl attach` reach a process
//! in a container.
//!
//! kubectl asks the apiserver (`pods/{name}/exec`, `pods/{name}/attach`); the apiserver
//! checks the pod and relays the connection, byte for byte, to the agent of the pod's
//! node, which serves the kubelet's paths:
//!
//! - `GET /exec/{namespace}/{pod}/{container}?command=…&command=…&stdin=1&stdout=1&stderr=1&tty=1`
//!   runs a new process in the container (Docker's exec);
//! - `GET /attach/{namespace}/{pod}/{container}?stdin=1&stdout=1&…` joins the container's
//!   own process (Docker's attach): what it writes from now on, and its stdin if the pod
//!   asked for one (`stdin: true`).
//!
//! The request is a WebSocket upgrade, and the connection then speaks Kubernetes' channel
//! protocol, `v5.channel.k8s.io` (or `v4.channel.k8s.io`, for older clients). Every binary
//! message starts with a byte naming its stream:
//!
//! ```text
//! 0 stdin   client → agent   what the process reads
//! 1 stdout  agent → client   what it writes
//! 2 stderr  agent → client   (a terminal has no stderr: everything comes as stdout)
//! 3 error   agent → client   one Status when the process ends: Success, or Failure with
//!                            reason NonZeroExitCode and the code, which kubectl exits with
//! 4 resize  client → agent   {"Width": 80, "Height": 24} when the terminal changes size
//! 255 close client → agent   (v5 only) the stream named by the next byte has ended:
//!                            the client's stdin is at its end, so the process reads EOF
//! ```
//!
//! What can be refused is refused before the upgrade, as a plain HTTP answer the apiserver
//! passes on: a container that is not on this node (404), one that is not running (409),
//! a request that is not a WebSocket upgrade or speaks no protocol of ours (400).

use std::pin::Pin;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{AttachContainerOptions, ResizeContainerTTYOptions};
use bytes::Bytes;
use futures::{SinkExt, Stream, StreamExt};
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::logs::{Body, reply};
use super::runtime::Runtime;

/// The channel protocols spoken, most preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// What a streaming request asked for, from its query.
#[derive(Debug, Default)]
struct Asked {
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl Asked {
    fn from_query(query: Option<&str>) -> Asked {
        let mut asked = Asked::default();
        let yes = |v: &str| v == "1" || v == "true";
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "command" => asked.command.push(value.into_owned()),
                "stdin" => asked.stdin = yes(&value),
                "stdout" => asked.stdout = yes(&value),
                "stderr" => asked.stderr = yes(&value),
                "tty" => asked.tty = yes(&value),
                _ => {}
            }
        }
        // A terminal merges stderr into stdout.
        asked.stderr &= !asked.tty;
        asked
    }
}

/// The process a session is joined to.
enum Process {
    /// A process started by Docker's exec, by exec id.
    Exec(String),
    /// The container's own process, by container id.
    Attached(String),
}

/// The two ends Docker gives a joined process.
struct Joined {
    output: Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>,
    input: Pin<Box<dyn AsyncWrite + Send>>,
}

/// Serves `GET /{exec|attach}/{namespace}/{pod}/{container}`.
pub async fn serve(
    req: Request<Incoming>,
    runtime: &Runtime,
    verb: &str,
    pod: &str,
    container: &str,
) -> Response<Body> {
    let asked = Asked::from_query(req.uri().query());
    let (key, protocol, process, joined) =
        match admit(&req, runtime, verb, pod, container, &asked).await {
            Ok(admitted) => admitted,
            Err((code, why)) => return reply(code, why),
        };
    let accept = derive_accept_key(key.as_bytes());
    let runtime = runtime.clone();
    let v5 = protocol == PROTOCOLS[0];
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        session(ws, &runtime, process, joined, v5, asked.command).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(Body::default())
        .unwrap_or_else(|_| reply(StatusCode::INTERNAL_SERVER_ERROR, "bad upgrade answer"))
}

/// Why a request is refused, as the HTTP answer says it.
type Refusal = (StatusCode, String);

/// Checks the request, then joins the process: the WebSocket key and protocol to answer
/// with, and the process.
async fn admit(
    req: &Request<Incoming>,
    runtime: &Runtime,
    verb: &str,
    pod: &str,
    container: &str,
    asked: &Asked,
) -> Result<(String, &'static str, Process, Joined), Refusal> {
    let (bad, conflict) = (StatusCode::BAD_REQUEST, StatusCode::CONFLICT);
    let refuse = |code, why: String| Err((code, why));
    let the_container = format!("container {container:?} of pod {pod}");
    if !(asked.stdin || asked.stdout || asked.stderr) {
        let why = "you must specify at least one of stdin, stdout, stderr";
        return refuse(bad, why.into());
    }
    if verb == "exec" && asked.command.is_empty() {
        return refuse(bad, "you must specify at least 1 command".into());
    }
    let Some(id) = runtime.find_by_pod(pod, container).await else {
        let why = format!("{the_container} is not on this node");
        return refuse(StatusCode::NOT_FOUND, why);
    };
    let inspected = runtime.docker().inspect_container(&id, None).await.ok();
    if !inspected.and_then(|c| c.state?.running).unwrap_or(false) {
        return refuse(conflict, format!("{the_container} is not running"));
    }
    // Judged after the pod and container: kubectl, refused a WebSocket, tries SPDY, and
    // shows the second answer; it must name the real problem.
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok());
    let (Some(key), true) = (key, upgrade_to_websocket(req)) else {
        let spoken = PROTOCOLS.join(" or ");
        let why = format!("{verb} is served as a WebSocket upgrade ({spoken}), not SPDY");
        return refuse(bad, format!("Upgrade request required: {why}"));
    };
    let Some(protocol) = negotiate(req) else {
        let why = format!("no common stream protocol: this node speaks {PROTOCOLS:?}");
        return refuse(bad, why);
    };
    let joined = match verb {
        "exec" => join_exec(runtime, &id, asked).await,
        _ => join_attach(runtime, &id, asked).await,
    };
    match joined {
        Ok((process, joined)) => Ok((key.to_owned(), protocol, process, joined)),
        Err(e) => refuse(conflict, format!("{the_container}: {}", docker_message(&e))),
    }
}

/// Whether `req` asks to become a WebSocket.
pub fn upgrade_to_websocket<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The most preferred of [`PROTOCOLS`] that the client offers.
pub fn negotiate<B>(req: &Request<B>) -> Option<&'static str> {
    let offered: Vec<&str> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    PROTOCOLS.into_iter().find(|p| offered.contains(p))
}

/// Starts the asked command in the container, joined to its streams.
async fn join_exec(
    runtime: &Runtime,
    id: &str,
    asked: &Asked,
) -> Result<(Process, Joined), bollard::errors::Error> {
    let docker = runtime.docker();
    let options = CreateExecOptions {
        cmd: Some(asked.command.clone()),
        attach_stdin: Some(asked.stdin),
        attach_stdout: Some(asked.stdout),
        attach_stderr: Some(asked.stderr),
        tty: Some(asked.tty),
        ..Default::default()
    };
    let exec = docker.create_exec(id, options).await?;
    let start = StartExecOptions {
        tty: asked.tty,
        ..Default::default()
    };
    match docker.start_exec(&exec.id, Some(start)).await? {
        StartExecResults::Attached { output, input } => {
            Ok((Process::Exec(exec.id), Joined { output, input }))
        }
        // Only asked for with `detach: true`, which this never asks.
        StartExecResults::Detached => Err(bollard::errors::Error::RequestTimeoutError),
    }
}

/// Joins the container's own process.
async fn join_attach(
    runtime: &Runtime,
    id: &str,
    asked: &Asked,
) -> Result<(Process, Joined), bollard::errors::Error> {
    let options = AttachContainerOptions {
        stdin: asked.stdin,
        stdout: asked.stdout,
        stderr: asked.stderr,
        stream: true,
        logs: false,
        ..Default::default()
    };
    let attached = runtime.docker().attach_container(id, Some(options)).await?;
    let joined = Joined {
        output: attached.output,
        input: attached.input,
    };
    Ok((Process::Attached(id.to_owned()), joined))
}

/// Docker's own words for why it refused, without the HTTP wrapping.
fn docker_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Relays between the client's WebSocket and the joined process until the process ends
/// (or the client goes), then says on the error channel how it ended.
async fn session<S>(
    ws: WebSocketStream<S>,
    runtime: &Runtime,
    process: Process,
    joined: Joined,
    v5: bool,
    command: Vec<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut source) = ws.split();
    let (mut output, mut input) = (joined.output, joined.input);
    let mut stdin_open = true;
    loop {
        tokio::select! {
            message = source.next() => match message {
                Some(Ok(Message::Binary(data))) => match data.split_first() {
                    Some((&STDIN, bytes)) if stdin_open => {
                        stdin_open = feed(&mut input, bytes).await;
                    }
                    Some((&RESIZE, size)) => resize(runtime, &process, size).await,
                    Some((&CLOSE, [STDIN])) if v5 => {
                        let _ = input.shutdown().await;
                        stdin_open = false;
                    }
                    _ => {}
                },
                // The client went: nothing more can be said to it.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            chunk = output.next() => {
                let (channel, bytes) = match chunk {
                    Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                        (STDOUT, message)
                    }
                    Some(Ok(LogOutput::StdErr { message })) => (STDERR, message),
                    Some(Ok(LogOutput::StdIn { .. })) => continue,
                    Some(Err(_)) | None => break,
                };
                if sink.send(Message::Binary(framed(channel, &bytes))).await.is_err() {
                    return;
                }
            }
        }
    }
    let status = match &process {
        Process::Exec(exec) => match exit_code(runtime, exec).await {
            Ok(code) => exit_status(code, &command),
            Err(e) => failure(&format!(
                "could not learn how it ended: {}",
                docker_message(&e)
            )),
        },
        Process::Attached(_) => json!({"metadata": {}, "status": "Success"}),
    };
    let status = framed(ERROR, status.to_string().as_bytes());
    let _ = sink.send(Message::Binary(status)).await;
    // A normal closure (1000): Go's WebSocket takes a close without a code as an error.
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(normal))).await;
    let _ = sink.close().await;
}

/// The exit code of an exec whose output has ended. Docker closes the output as the
/// process ends, and may record the code a moment later: it waits up to a second for it.
async fn exit_code(runtime: &Runtime, exec: &str) -> Result<Option<i64>, bollard::errors::Error> {
    for _ in 0..20 {
        let inspected = runtime.docker().inspect_exec(exec).await?;
        if inspected.running != Some(true) {
            return Ok(inspected.exit_code);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(runtime.docker().inspect_exec(exec).await?.exit_code)
}

/// Writes `bytes` to the process's stdin; whether it still takes more.
async fn feed(input: &mut Pin<Box<dyn AsyncWrite + Send>>, bytes: &[u8]) -> bool {
    input.write_all(bytes).await.is_ok() && input.flush().await.is_ok()
}

/// `bytes` on `channel`: the channel's byte, then the bytes (port-forward's channels too).
pub(super) fn framed(channel: u8, bytes: &[u8]) -> Bytes {
    let mut message = Vec::with_capacity(bytes.len() + 1);
    message.push(channel);
    message.extend_from_slice(bytes);
    message.into()
}

/// The Status kubelet reports for a process that ended with `code`.
fn exit_status(code: Option<i64>, command: &[String]) -> Value {
    match code {
        Some(0) => json!({"metadata": {}, "status": "Success"}),
        Some(code) => json!({
            "metadata": {},
            "status": "Failure",
            "reason": "NonZeroExitCode",
            "message": format!(
                "command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"
            ),
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        None => failure("the process's exit code is unknown"),
    }
}

fn failure(message: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": message})
}

/// Applies a terminal size from the resize channel; a malformed one is ignored.
async fn resize(runtime: &Runtime, process: &Process, size: &[u8]) {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct TerminalSize {
        width: u16,
        height: u16,
    }
    let Ok(size) = serde_json::from_slice::<TerminalSize>(size) else {
        return;
    };
    let (docker, height, width) = (runtime.docker(), size.height, size.width);
    let _ = match process {
        Process::Exec(exec) => {
            let options = bollard::exec::ResizeExecOptions { height, width };
            docker.resize_exec(exec, options).await
        }
        Process::Attached(id) => {
            let (h, w) = (i32::from(height), i32::from(width));
            let options = ResizeContainerTTYOptions { h, w };
            docker.resize_container_tty(id, options).await
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_says_what_to_run_and_which_streams() {
        let asked = Asked::from_query(Some(
            "command=sh&command=-c&command=echo+hi&stdin=true&stdout=1&stderr=true&tty=false",
        ));
        assert_eq!(asked.command, ["sh", "-c", "echo hi"]);
        assert!(asked.stdin && asked.stdout && asked.stderr && !asked.tty);
        let terminal = Asked::from_query(Some("command=sh&stdout=1&stderr=1&tty=1"));
        assert!(terminal.tty && !terminal.stderr, "a terminal has no stderr");
    }

    #[test]
    fn v5_is_chosen_over_v4_and_unknown_protocols_are_refused() {
        let offer = |protocols: &str| {
            Request::get("/")
                .header(header::SEC_WEBSOCKET_PROTOCOL, protocols)
                .body(())
                .expect("request")
        };
        assert_eq!(
            negotiate(&offer("v4.channel.k8s.io, v5.channel.k8s.io")),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(
            negotiate(&offer("channel.k8s.io,v4.channel.k8s.io")),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(negotiate(&offer("base64.channel.k8s.io")), None);
    }

    #[test]
    fn a_non_zero_exit_names_its_code_as_kubectl_reads_it() {
        let status = exit_status(Some(3), &["false".to_owned()]);
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        assert_eq!(exit_status(Some(0), &[])["status"], "Success");
        assert_eq!(exit_status(None, &[])["status"], "Failure");
    }
}
