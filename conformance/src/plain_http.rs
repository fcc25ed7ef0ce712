//! Just enough HTTP/1.1 to talk to a replica, or to a Docker engine, directly.
//!
//! The kit sends one request per connection (`Connection: close`) and reads the answer to
//! the end: no keep-alive, no TLS; a chunked body (Docker's lists) is put back together.
//! That is all the `probe` workload and the Docker Engine API need, and it keeps a client
//! library (and its connection pool, which would outlive a replica's address) out of the
//! kit.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::driver::{HttpRequest, HttpResponse};

/// How long one exchange (connect, send, read the whole answer) may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// `value` as the value of a query parameter, for the probe's `target=host:port/path`:
/// the characters that would end the value or start another (`? & = %`) are escaped.
pub fn query_value(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            '?' => "%3F".to_owned(),
            '&' => "%26".to_owned(),
            '=' => "%3D".to_owned(),
            '%' => "%25".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// Sends `request` to `http://{authority}` and reads the answer.
pub async fn send(authority: &str, request: &HttpRequest) -> anyhow::Result<HttpResponse> {
    let attempt = async {
        let stream = TcpStream::connect(authority)
            .await
            .with_context(|| format!("failed to connect to {authority}"))?;
        exchange(stream, authority, request).await
    };
    tokio::time::timeout(TIMEOUT, attempt)
        .await
        .map_err(|_| {
            anyhow!(
                "{} http://{authority}{} got no answer within {TIMEOUT:?}",
                request.method,
                request.path
            )
        })?
        .with_context(|| {
            format!(
                "failed to {} http://{authority}{}",
                request.method, request.path
            )
        })
}

/// Writes one request on `stream` and reads the answer until the peer closes it.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    request: &HttpRequest,
) -> anyhow::Result<HttpResponse> {
    let head = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        request.method,
        request.path,
        request.body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .context("failed to send the request")?;
    stream
        .write_all(request.body.as_bytes())
        .await
        .context("failed to send the request body")?;
    stream.flush().await.context("failed to send the request")?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .context("failed to read the answer")?;
    parse(&raw)
}

/// Splits an answer into its status code and its body: cut at `Content-Length` if given,
/// decoded if it came in chunks (`Transfer-Encoding: chunked`, as Docker sends long lists).
fn parse(raw: &[u8]) -> anyhow::Result<HttpResponse> {
    let end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| {
            anyhow!(
                "the answer has no end of headers: {:?}",
                String::from_utf8_lossy(raw)
            )
        })?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let body = &raw[end + 4..];
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| anyhow!("the answer starts with {status_line:?}, not an HTTP status"))?;
    let (mut length, mut chunked) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else {
        match length {
            Some(length) => body
                .get(..length)
                .ok_or_else(|| {
                    anyhow!(
                        "the answer was cut short: {} of {length} body bytes",
                        body.len()
                    )
                })?
                .to_vec(),
            None => body.to_vec(),
        }
    };
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Decodes a chunked body: `<hex size>[;extensions]\r\n<data>\r\n`..., ending with a
/// chunk of size 0 (trailers, if any, are ignored).
fn dechunk(mut raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or_else(|| anyhow!("the chunked answer was cut short before a chunk size"))?;
        let line = String::from_utf8_lossy(&raw[..line_end]);
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16)
            .with_context(|| format!("the chunked answer has a bad chunk size {line:?}"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = raw.get(..size).ok_or_else(|| {
            anyhow!(
                "the chunked answer was cut short: {} of {size} chunk bytes",
                raw.len()
            )
        })?;
        body.extend_from_slice(chunk);
        raw = raw
            .get(size..)
            .and_then(|rest| rest.strip_prefix(b"\r\n"))
            .ok_or_else(|| anyhow!("a chunk of the chunked answer does not end with CRLF"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_with_and_without_a_length() {
        let answer = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOKextra").expect("parses");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "OK");
        let answer = parse(b"HTTP/1.0 503 Service Unavailable\r\n\r\nnot yet").expect("parses");
        assert_eq!(answer.status, 503);
        assert_eq!(answer.body, "not yet");
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(parse(b"garbage").is_err());
        assert!(parse(b"SSH-2.0 hello\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_answers_are_put_back_together() {
        // "é" is two bytes, split across two chunks.
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3\r\n[\"\xc3\r\n3;ext=1\r\n\xa9\"]\r\n0\r\n\r\n";
        let answer = parse(raw).expect("parses");
        assert_eq!(answer.body, "[\"é\"]");
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nshort\r\n";
        assert!(parse(cut).is_err());
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(parse(bad).is_err());
    }

    #[tokio::test]
    async fn a_request_goes_out_whole_and_the_answer_comes_back() {
        let (client, mut server) = tokio::io::duplex(4096);
        let serve = tokio::spawn(async move {
            // The request comes in two writes (head, body): read until the body is in.
            let mut received = Vec::new();
            while !received.ends_with(b"data") {
                let mut chunk = [0_u8; 512];
                let n = server.read(&mut chunk).await.expect("read");
                assert!(n > 0, "the client closed before sending its body");
                received.extend_from_slice(&chunk[..n]);
            }
            server
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                .await
                .expect("write");
            drop(server);
            String::from_utf8_lossy(&received).into_owned()
        });
        let request = HttpRequest {
            method: "PUT".to_owned(),
            path: "/file?path=/x".to_owned(),
            body: "data".to_owned(),
        };
        let answer = exchange(client, "pod", &request).await.expect("exchange");
        assert_eq!(answer.body, "hello");
        let received = serve.await.expect("server");
        assert!(received.starts_with("PUT /file?path=/x HTTP/1.1\r\nHost: pod\r\n"));
        assert!(received.ends_with("Content-Length: 4\r\nConnection: close\r\n\r\ndata"));
    }
}
