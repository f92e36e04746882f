//! Accept loops: one per listening socket, optional TLS, HTTP/1.1 and/or HTTP/2
//! through hyper, and a graceful drain on shutdown.
//!
//! Every listener of the process (API, gRPC, two metrics ports) runs through
//! this one code path, so TLS, keepalive, header limits and draining behave
//! the same everywhere. This module knows nothing about routes or auth.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::watch,
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};

use crate::config::ConnectionAge;

mod age;

/// HTTP versions a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 and HTTP/2 (h2c by prior knowledge, h2 by ALPN).
    Auto,
    /// gRPC: HTTP/2 only.
    Http2,
}

/// Limits shared by all listeners.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Server keepalive pings (upstream DWS: 20 s).
const H2_KEEPALIVE: Duration = Duration::from_secs(20);
/// Room for the large model-metadata and feature-flag headers (upstream: 24 KiB).
const MAX_HEADER_LIST: u32 = 64 * 1024;

/// Binds a TCP listener, with a message naming the listener on failure.
pub async fn bind(name: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot bind the {name} listener on {addr}: {e}"))
}

fn builder(protocol: Protocol) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_KEEPALIVE))
        .keep_alive_timeout(H2_KEEPALIVE)
        .max_header_list_size(MAX_HEADER_LIST);
    match protocol {
        Protocol::Auto => b,
        Protocol::Http2 => b.http2_only(),
    }
}

/// Serves `service` on `listener` until `shutdown` flips to true, then drains
/// open connections. The returned task ends when the last connection closed.
pub fn spawn<S, B>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    protocol: Protocol,
    service: S,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()>
where
    S: Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    spawn_aged(name, listener, tls, protocol, service, shutdown, None)
}

/// [`spawn`], with connections asked to finish once they reach `max_age`
/// (see [`age`]).
pub fn spawn_aged<S, B>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    protocol: Protocol,
    service: S,
    mut shutdown: watch::Receiver<bool>,
    max_age: Option<ConnectionAge>,
) -> JoinHandle<()>
where
    S: Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tls = tls.map(TlsAcceptor::from);
    let builder = Arc::new(builder(protocol));
    tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!(listener = name, error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let svc = service.clone().map_request(move |mut req: http::Request<Incoming>| {
                        req.extensions_mut().insert(ConnectInfo(peer));
                        req
                    });
                    let watcher = graceful.watcher();
                    let builder = builder.clone();
                    let tls = tls.clone();
                    let aging = max_age.map(|a| Aging {
                        age: a,
                        stop: shutdown.clone(),
                        http2: Arc::new(std::sync::atomic::AtomicBool::new(protocol == Protocol::Http2)),
                    });
                    tokio::spawn(async move {
                        match tls {
                            None => serve_connection(&builder, stream, svc, watcher, aging).await,
                            Some(acceptor) => {
                                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(tls_stream)) => serve_connection(&builder, tls_stream, svc, watcher, aging).await,
                                    Ok(Err(e)) => tracing::debug!(listener = name, peer = %peer, error = %e, "TLS handshake failed"),
                                    Err(_) => tracing::debug!(listener = name, peer = %peer, "TLS handshake timed out"),
                                }
                            }
                        }
                    });
                }
                _ = stopped(&mut shutdown) => break,
            }
        }
        drop(listener);
        graceful.shutdown().await;
    })
}

/// Resolves once shutdown was requested.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await.map(|_| ());
}

/// What a connection with a maximum age carries along.
struct Aging {
    age: ConnectionAge,
    stop: watch::Receiver<bool>,
    /// Set once the connection is known to speak HTTP/2.
    http2: Arc<std::sync::atomic::AtomicBool>,
}

async fn serve_connection<IO, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: IO,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
    aging: Option<Aging>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = TowerToHyperService::new(service);
    let ended = match aging {
        None => {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            watcher.watch(conn.into_owned()).await
        }
        Some(a) => {
            let io = age::Sniff::new(io, a.http2.clone());
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned();
            let finish = auto::UpgradeableConnection::graceful_shutdown;
            age::serve(conn, finish, a.age, a.http2, watcher, a.stop).await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
