//! The Kafka listener: binds the address, accepts connections up to [`CONNECTIONS_MAX`], and
//! on shutdown stops accepting, lets every connection finish its in-flight requests (up to
//! [`SHUTDOWN_GRACE`]), then returns.
//!
//! [`ServerHandle`] runs the listener on a runtime of its own, for applications (and the
//! `weir` binary) that are not async themselves.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::error::{bound, ServeError};
use crate::limits::{CONNECTIONS_MAX, SHUTDOWN_GRACE};

/// Worker threads of the server's runtime: network I/O and request encoding. Two matches the
/// machines Weir is measured on; the log's writer threads do the disk work.
const RUNTIME_WORKERS: usize = 2;

/// Threads for blocking work (group joins waiting for members, fsyncing commits): one per
/// connection could be waiting in a join, plus room for commits.
const BLOCKING_THREADS_MAX: usize = CONNECTIONS_MAX + 64;

/// The flag name used in error messages about the Kafka listener.
pub const KAFKA_LISTEN_FLAG: &str = "--kafka-listen";
/// The flag name used in error messages about the HTTP listener.
pub const HTTP_LISTEN_FLAG: &str = "--http-listen";

/// A bound Kafka listener, not yet accepting.
#[derive(Debug)]
pub struct KafkaListener {
    listener: TcpListener,
    broker: Arc<Broker>,
    addr: SocketAddr,
}

impl KafkaListener {
    /// Binds `addr`; `advertised` (`HOST:PORT`) is what clients are told to connect to,
    /// by default the bound address.
    pub async fn bind(
        broker: Arc<Broker>,
        addr: &str,
        advertised: Option<&str>,
    ) -> Result<KafkaListener, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                flag: KAFKA_LISTEN_FLAG,
                addr: addr.to_string(),
                source,
            })?;
        let local = bound(&listener, KAFKA_LISTEN_FLAG)?;
        let (host, port) = match advertised {
            Some(a) => parse_host_port(a).ok_or_else(|| ServeError::BadAddress {
                flag: "--kafka-advertised",
                value: a.to_string(),
            })?,
            None => (local.ip().to_string(), local.port() as i32),
        };
        // A broker serves one listener; a second bind keeps the first advertised address.
        let _ = broker.advertised.set((host, port));
        Ok(KafkaListener {
            listener,
            broker,
            addr: local,
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts and serves connections until `shutdown` turns true, then drains them.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            self.broker.metrics.connections_rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::warn!(%peer, max = CONNECTIONS_MAX, "connection limit reached; closing new connection");
                            drop(stream);
                            continue;
                        };
                        self.broker.metrics.connections_accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let (broker, rx) = (self.broker.clone(), shutdown.clone());
                        conns.spawn(async move {
                            crate::conn::serve(stream, peer, broker, rx).await;
                            drop(slot);
                        });
                    }
                    // Out of file descriptors and the like: the listener itself is fine.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.changed() => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(self.listener);
        let drain = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!("connections still busy after the shutdown grace period; closing them");
            conns.shutdown().await;
        }
    }
}

/// `HOST:PORT` (the host may be a name) into parts.
pub fn parse_host_port(s: &str) -> Option<(String, i32)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if host.is_empty() {
        return None;
    }
    Some((host.trim_matches(['[', ']']).to_string(), port as i32))
}

/// What to listen on.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// Extra HTTP endpoints of the embedding application.
    pub control: Option<Arc<dyn crate::http::Control>>,
    /// Kafka listener address, `None` for off.
    pub kafka_listen: Option<String>,
    /// Address advertised to Kafka clients; default: the bound one.
    pub kafka_advertised: Option<String>,
    /// HTTP listener (`/metrics`, `/health`) address, `None` for off.
    pub http_listen: Option<String>,
}

/// A running server on its own runtime. Dropping it shuts the server down gracefully.
#[derive(Debug)]
pub struct ServerHandle {
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: watch::Sender<bool>,
    served: Option<tokio::task::JoinHandle<()>>,
    kafka_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
}

impl ServerHandle {
    /// Binds the configured listeners and starts serving.
    pub fn start(broker: Arc<Broker>, config: &ServerConfig) -> Result<ServerHandle, ServeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_WORKERS)
            .max_blocking_threads(BLOCKING_THREADS_MAX)
            .thread_name("weir-serve")
            .enable_all()
            .build()
            .map_err(|source| ServeError::Io {
                op: "start the server's runtime".into(),
                source,
            })?;
        let (tx, rx) = watch::channel(false);
        let mut kafka_addr = None;
        let mut served = None;
        if let Some(addr) = &config.kafka_listen {
            let listener = runtime.block_on(KafkaListener::bind(
                broker.clone(),
                addr,
                config.kafka_advertised.as_deref(),
            ))?;
            kafka_addr = Some(listener.local_addr());
            served = Some(runtime.spawn(listener.serve(rx.clone())));
        }
        let mut http_addr = None;
        if let Some(addr) = &config.http_listen {
            let listener = runtime
                .block_on(TcpListener::bind(addr))
                .map_err(|source| ServeError::Bind {
                    flag: HTTP_LISTEN_FLAG,
                    addr: addr.to_string(),
                    source,
                })?;
            http_addr = Some(bound(&listener, HTTP_LISTEN_FLAG)?);
            runtime.spawn(crate::http::serve(
                listener,
                broker.clone(),
                config.control.clone(),
                rx.clone(),
            ));
        }
        Ok(ServerHandle {
            runtime: Some(runtime),
            shutdown: tx,
            served,
            kafka_addr,
            http_addr,
        })
    }

    /// The bound HTTP address, if that listener is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The bound Kafka address, if that listener is on.
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.kafka_addr
    }

    /// Blocks until SIGTERM or ctrl-c (SIGINT) arrives; returns the signal's name.
    pub fn wait_for_signal(&self) -> Result<&'static str, ServeError> {
        let Some(rt) = &self.runtime else {
            return Ok("shutdown");
        };
        rt.block_on(async {
            let io = |source| ServeError::Io {
                op: "listen for signals".into(),
                source,
            };
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                let mut term = signal(SignalKind::terminate()).map_err(io)?;
                tokio::select! {
                    _ = term.recv() => Ok("SIGTERM"),
                    r = tokio::signal::ctrl_c() => r.map(|_| "SIGINT").map_err(io),
                }
            }
            #[cfg(not(unix))]
            {
                tokio::signal::ctrl_c().await.map(|_| "ctrl-c").map_err(io)
            }
        })
    }

    /// Stops accepting, finishes in-flight requests, and stops the runtime.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(rt) = self.runtime.take() {
            if let Some(task) = self.served.take() {
                let _ = rt.block_on(task);
            }
            rt.shutdown_timeout(SHUTDOWN_GRACE);
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
