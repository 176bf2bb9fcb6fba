//! Reading a webhook request body: within its size limit and its time limit.
//!
//! [`read`] collects the body frame by frame until its end, until it passes `limit` bytes (a
//! 413, with what was read so far kept for the dead-letter table), or until `timeout` runs out
//! (a 408: slowloris on the body, which hyper's header read timeout does not cover). Invariant:
//! never holds more than `limit + 1` bytes of a body plus one frame, and never waits longer than
//! `timeout` for it.

use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum BodyFault {
    /// Over `limit` bytes: the part read so far (at most `limit + 1` bytes and one frame), and
    /// the length the request declared, if any.
    TooLarge {
        prefix: Bytes,
        declared: Option<u64>,
    },
    /// The body did not arrive in full within the timeout.
    TimedOut,
    /// The connection failed while the body was being read.
    Unreadable(String),
}

/// Reads the whole body, or says why not. `declared` is the request's `Content-Length`.
pub async fn read(
    body: Body,
    limit: usize,
    timeout: Duration,
    declared: Option<u64>,
) -> Result<Bytes, BodyFault> {
    match tokio::time::timeout(timeout, collect(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(Collect::Over(prefix))) => Err(BodyFault::TooLarge { prefix, declared }),
        Ok(Err(Collect::Failed(message))) => Err(BodyFault::Unreadable(message)),
        Err(_) => Err(BodyFault::TimedOut),
    }
}

enum Collect {
    Over(Bytes),
    Failed(String),
}

/// Collects data frames until the end of the body, or until more than `limit` bytes came.
async fn collect(mut body: Body, limit: usize) -> Result<Bytes, Collect> {
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Collect::Failed(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
            if out.len() > limit {
                return Err(Collect::Over(out.freeze()));
            }
        }
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(r: Result<Bytes, BodyFault>) -> BodyFault {
        r.expect_err("a fault")
    }

    #[tokio::test]
    async fn bodies_within_the_limit_are_read_whole() {
        let body = read(Body::from("hello"), 5, Duration::from_secs(1), Some(5)).await;
        assert_eq!(body.unwrap(), Bytes::from("hello"));
        let body = read(Body::from(""), 5, Duration::from_secs(1), None).await;
        assert!(body.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_larger_body_keeps_its_prefix_and_declared_length() {
        match fault(read(Body::from("abcdefgh"), 5, Duration::from_secs(1), None).await) {
            BodyFault::TooLarge { prefix, declared } => {
                assert_eq!((&prefix[..], declared), (&b"abcdefgh"[..], None));
            }
            other => panic!("{other:?}"),
        }
        match fault(read(Body::from("abcdefgh"), 5, Duration::from_secs(1), Some(8)).await) {
            BodyFault::TooLarge { declared, .. } => assert_eq!(declared, Some(8)),
            other => panic!("{other:?}"),
        }
    }

    /// A body that sends one frame and then nothing, ever (a slowloris client).
    struct Stalled(bool);

    impl hyper::body::Body for Stalled {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
            if std::mem::replace(&mut self.0, true) {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from("[{")))))
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_times_out() {
        let body = Body::new(Stalled(false));
        let read = read(body, 100, Duration::from_secs(30), Some(10));
        assert!(matches!(fault(read.await), BodyFault::TimedOut));
    }
}
