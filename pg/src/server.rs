//! The Postgres listener: [`PgListener`] accepts connections (at most
//! [`PG_CONNECTIONS_MAX`]) and gives each a session of one shared [`Database`];
//! [`PgServerHandle`] runs it on a runtime of its own.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use weir_sql::Database;

use crate::conn::Connection;
use crate::error::PgServeError;
use crate::subscribe::{Subscriptions, SUBSCRIPTIONS_MAX};

/// The command-line flag of the listener's address.
pub const PG_LISTEN_FLAG: &str = "--pg-listen";

/// Connections served at once; more are closed at accept. Each holds a session (a catalog
/// copy and DataFusion's per-session state), not threads.
pub const PG_CONNECTIONS_MAX: usize = 256;

/// I/O threads of the listener's own runtime (statements run on its blocking pool).
const PG_RUNTIME_WORKERS: usize = 2;

/// Blocking threads that run statements at once.
const PG_BLOCKING_THREADS_MAX: usize = 64;

/// A bound Postgres listener, not yet accepting.
#[derive(Debug)]
pub struct PgListener {
    listener: TcpListener,
    db: Database,
    addr: SocketAddr,
}

impl PgListener {
    /// Binds `addr` (`HOST:PORT`; port 0 picks a free one).
    pub async fn bind(db: Database, addr: &str) -> Result<PgListener, PgServeError> {
        let bind_error = |source| PgServeError::Bind {
            addr: addr.to_string(),
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        Ok(PgListener {
            listener,
            db,
            addr: local,
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts and serves connections until `shutdown` turns true.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(PG_CONNECTIONS_MAX));
        let subscriptions: Subscriptions = Arc::new(Semaphore::new(SUBSCRIPTIONS_MAX));
        let manager = Arc::new(pgwire::api::ConnectionManager::new());
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            tracing::warn!(%peer, max = PG_CONNECTIONS_MAX, "Postgres connection limit reached; closing new connection");
                            continue;
                        };
                        let (db, subs, manager) = (self.db.clone(), subscriptions.clone(), manager.clone());
                        conns.spawn(async move {
                            // A session reads the catalog from disk: the blocking pool.
                            let conn = tokio::task::spawn_blocking(move || Connection::new(&db, subs, manager)).await;
                            match conn {
                                Ok(Ok(conn)) => {
                                    if let Err(e) = pgwire::tokio::process_socket(stream, None, conn).await {
                                        tracing::debug!(%peer, error = %e, "Postgres connection ended");
                                    }
                                }
                                Ok(Err(e)) => tracing::warn!(%peer, error = %e, "cannot open a SQL session"),
                                Err(e) => tracing::warn!(%peer, error = %e, "cannot open a SQL session"),
                            }
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.changed() => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        conns.shutdown().await;
    }
}

/// A Postgres listener on a runtime of its own. Dropping it stops the listener and closes
/// its connections.
#[derive(Debug)]
pub struct PgServerHandle {
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: watch::Sender<bool>,
    addr: SocketAddr,
}

impl PgServerHandle {
    /// Binds `addr` and starts serving `db`.
    pub fn start(db: Database, addr: &str) -> Result<PgServerHandle, PgServeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(PG_RUNTIME_WORKERS)
            .max_blocking_threads(PG_BLOCKING_THREADS_MAX)
            .thread_name("weir-pg")
            .enable_all()
            .build()
            .map_err(PgServeError::Runtime)?;
        let listener = runtime.block_on(PgListener::bind(db, addr))?;
        let addr = listener.local_addr();
        let (tx, rx) = watch::channel(false);
        runtime.spawn(listener.serve(rx));
        Ok(PgServerHandle {
            runtime: Some(runtime),
            shutdown: tx,
            addr,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes the connections.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
        }
    }
}

impl Drop for PgServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
