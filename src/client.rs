//! A minimal HTTP/1.1 client for talking to a running hooklake (`hooklake flush`).
//!
//! Plain `http://` only, one request per connection: enough for the admin endpoints on a
//! loopback address, without pulling a full HTTP client into the build. Invariant: it never
//! retries a request (a flush must not run twice because an answer was slow).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a request may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("unsupported URL {0:?}: expected http://HOST:PORT")]
    BadUrl(String),
    #[error("cannot reach {url}: {source}")]
    Io { url: String, source: std::io::Error },
    #[error("no answer from {0} within {TIMEOUT:?}")]
    Timeout(String),
    #[error("malformed HTTP answer from {0}")]
    Malformed(String),
}

/// Sends `POST <base><path>` with an empty body; returns the status code and the body text.
pub async fn post(
    base: &str,
    path: &str,
    bearer: Option<&str>,
) -> Result<(u16, String), ClientError> {
    send_with(base, "POST", path, b"", bearer).await
}

/// Sends one request with `body` (as JSON when not empty); returns the status and body text.
pub async fn send(
    base: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, String), ClientError> {
    send_with(base, method, path, body, None).await
}

/// [`send`], with `Authorization: Bearer <bearer>` when given (the admin token).
pub async fn send_with(
    base: &str,
    method: &str,
    path: &str,
    body: &[u8],
    bearer: Option<&str>,
) -> Result<(u16, String), ClientError> {
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    let authority = base
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| ClientError::BadUrl(base.to_string()))?;
    let io = |source| ClientError::Io {
        url: url.clone(),
        source,
    };
    let exchange = async {
        let mut stream = TcpStream::connect(authority).await.map_err(io)?;
        let authorization = bearer
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\nUser-Agent: hooklake\r\n{authorization}\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.map_err(io)?;
        stream.write_all(body).await.map_err(io)?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.map_err(io)?;
        Ok::<_, ClientError>(answer)
    };
    let answer = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::Timeout(url.clone()))??;
    parse_response(&answer).ok_or(ClientError::Malformed(url))
}

/// Splits a complete HTTP/1.1 response into status and body (chunked bodies are decoded).
fn parse_response(bytes: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain), Some((200, "{}".into())));
        let chunked = b"HTTP/1.1 500 Internal\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((500, "abcde".into())));
        assert_eq!(parse_response(b"garbage"), None);
    }

    #[tokio::test]
    async fn rejects_https_and_paths() {
        assert!(matches!(
            post("https://x", "/a", None).await,
            Err(ClientError::BadUrl(_))
        ));
        assert!(matches!(
            post("http://x:1/base", "/a", None).await,
            Err(ClientError::BadUrl(_))
        ));
    }
}
