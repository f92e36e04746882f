//! Maximum connection age: an HTTP/2 connection older than its (jittered) age
//! is asked to finish gracefully with GOAWAY, so the client opens a new
//! connection for new calls while the streams already open run to their end.
//! That is what spreads long-lived gRPC connections over replicas behind a
//! per-connection balancer (a Kubernetes ClusterIP Service).
//!
//! Only HTTP/2 connections are aged. HTTP/1.1 has no GOAWAY: closing an idle
//! keep-alive connection races the client's next request, which a client may
//! not retry (a POST). HTTP/1.1 requests are balanced one by one by proxies
//! anyway. [`Sniff`] tells the two apart by the connection preface.
//!
//! Kept apart from the accept loop: the loop decides *whether* a connection
//! has an age; this decides *when* it is told to go and how long it may stay.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::server::graceful::Watcher;
use rand::Rng;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::watch,
};

use crate::config::ConnectionAge;

/// Ages are spread by ±10 % so connections opened together (a client pool
/// after a rollout) do not all reconnect at the same instant.
const JITTER: f64 = 0.1;

fn jittered(max: Duration) -> Duration {
    let factor = rand::thread_rng().gen_range((1.0 - JITTER)..=(1.0 + JITTER));
    max.mul_f64(factor)
}

/// Drives `conn` to its end. `finish` asks it to finish gracefully; it is
/// called once, when the connection reaches its age or when the process
/// drains (`stop`), whichever comes first. After the age, in-flight requests
/// get `age.grace` (unbounded when `None`); a process drain is bounded by the
/// shutdown grace period instead. `watcher` is held to the end, so the
/// listener's drain waits for this connection as for any other.
pub(super) async fn serve<C, E>(
    conn: C,
    finish: fn(Pin<&mut C>),
    age: ConnectionAge,
    http2: Arc<AtomicBool>,
    watcher: Watcher,
    mut stop: watch::Receiver<bool>,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let _counted = watcher;
    let mut conn = std::pin::pin!(conn);
    let aged = tokio::select! {
        done = conn.as_mut() => return done,
        _ = super::stopped(&mut stop) => false,
        _ = tokio::time::sleep(jittered(age.max)) => true,
    };
    if aged && !http2.load(Ordering::Relaxed) {
        // HTTP/1.1: no age (see the module comment); only the drain ends it.
        tokio::select! {
            done = conn.as_mut() => return done,
            _ = super::stopped(&mut stop) => {}
        }
        finish(conn.as_mut());
        return conn.await;
    }
    finish(conn.as_mut());
    if !aged {
        return conn.await;
    }
    tracing::debug!("connection reached its maximum age: asked to finish (GOAWAY)");
    let Some(grace) = age.grace else {
        return conn.await;
    };
    let in_grace = tokio::time::timeout(grace, conn.as_mut());
    tokio::select! {
        done = in_grace => match done {
            Ok(done) => done,
            Err(_) => {
                tracing::debug!("connection still busy after its maximum age grace: closed");
                Ok(())
            }
        },
        // A drain that starts during the grace keeps its own bound.
        _ = super::stopped(&mut stop) => conn.await,
    }
}

/// The HTTP/2 client preface starts with this; no HTTP/1.1 method does.
const PREFACE: &[u8; 3] = b"PRI";

/// An I/O stream that notes whether its first bytes are the HTTP/2 preface
/// (after TLS: it wraps the decrypted stream). Everything else passes through.
pub(super) struct Sniff<IO> {
    inner: IO,
    seen: [u8; 3],
    len: usize,
    http2: Arc<AtomicBool>,
}

impl<IO> Sniff<IO> {
    pub(super) fn new(inner: IO, http2: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            seen: [0; 3],
            len: 0,
            http2,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Sniff<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.len < PREFACE.len() {
            for &b in &buf.filled()[before..] {
                if this.len == PREFACE.len() {
                    break;
                }
                this.seen[this.len] = b;
                this.len += 1;
            }
            if this.len == PREFACE.len() && &this.seen == PREFACE {
                this.http2.store(true, Ordering::Relaxed);
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Sniff<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn sniffed(first: &[u8]) -> bool {
        let (mut client, server) = tokio::io::duplex(64);
        let flag = Arc::new(AtomicBool::new(false));
        let mut s = Sniff::new(server, flag.clone());
        // Byte by byte: the preface may arrive split.
        for b in first {
            tokio::io::AsyncWriteExt::write_all(&mut client, &[*b])
                .await
                .unwrap();
            let mut one = [0u8; 1];
            s.read_exact(&mut one).await.unwrap();
            assert_eq!(one[0], *b);
        }
        flag.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn the_http2_preface_is_told_from_http1() {
        assert!(sniffed(b"PRI * HTTP/2.0\r\n").await);
        assert!(!sniffed(b"POST /v2/code/completions HTTP/1.1\r\n").await);
        assert!(!sniffed(b"PR").await, "undecided is not HTTP/2");
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let max = Duration::from_secs(100);
        for _ in 0..1000 {
            let d = jittered(max);
            assert!(
                d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
                "{d:?}"
            );
        }
    }
}
