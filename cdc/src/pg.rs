//! What the PostgreSQL source and sink share: a connection on a current-thread runtime of its
//! own (the caller's loop is synchronous and blocks on it), and quoting of identifiers.

use tokio_postgres::{Client, NoTls};

use crate::error::{CdcError, Result};

/// Connects to `url`; the connection is driven by the returned runtime while the caller
/// blocks on it.
pub(crate) fn connect(url: &str) -> Result<(tokio::runtime::Runtime, Client)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CdcError::Config(format!("cannot start a runtime: {e}")))?;
    let client = runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "the PostgreSQL connection ended");
            }
        });
        Ok::<_, CdcError>(client)
    })?;
    Ok((runtime, client))
}

/// An identifier quoted for SQL.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
