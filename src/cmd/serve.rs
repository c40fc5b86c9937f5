//! `weir serve`: opens the data directory, starts the coordinators, the persistent SQL
//! queries, and the Kafka, Postgres and HTTP listeners,
//! writes the bound addresses to `DATA_DIR/serve.json` (how other `weir` commands find the
//! server), and runs until SIGTERM or ctrl-c, then shuts down gracefully: stop accepting,
//! finish in-flight requests, close the log's segments cleanly.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use weir_kafka::{Broker, ServerConfig, ServerHandle};

use crate::cli::ServeArgs;

/// The file a running server writes into its data directory.
pub const SERVE_FILE: &str = "serve.json";

/// What `serve.json` holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServeInfo {
    /// The server's process id.
    pub pid: u32,
    /// The Kafka listener's bound address, if on.
    pub kafka: Option<String>,
    /// The address advertised to Kafka clients.
    pub kafka_advertised: Option<String>,
    /// The HTTP listener's bound address, if on.
    pub http: Option<String>,
    /// The Postgres listener's bound address, if on.
    #[serde(default)]
    pub pg: Option<String>,
    /// The SQS listener's bound address, if on.
    #[serde(default)]
    pub sqs: Option<String>,
}

fn listen_addr(value: &str) -> Option<String> {
    (value != "off").then(|| value.to_string())
}

pub fn run(dir: &Path, args: ServeArgs) -> Result<()> {
    let log = super::open_log(dir, true)?;
    let (groups, txns) = weir_coord::start(&log).context("cannot start the coordinators")?;
    let queues = weir_queue::Queues::open(&log, &txns).context("cannot open the queues")?;
    let host = std::sync::Arc::new(super::hosted::PipelineHost::new(
        dir,
        log.clone(),
        groups.clone(),
        txns.clone(),
        queues.clone(),
    ));
    // Persistent SQL queries (sinks, views, INSERT INTO … SELECT) run for as long as the
    // server; they start on a thread of their own, so the listeners do not wait for them (a
    // query's group may wait out the session of the instance a crash left behind).
    let db = weir_sql::Database::new(
        &log,
        Some(weir_sql::Engine {
            groups: groups.clone(),
            txns: txns.clone(),
            state_dir: dir.join("state"),
        }),
    )?;
    let starting = start_queries(&db)?;
    let pg = match listen_addr(&args.pg_listen) {
        Some(addr) => Some(weir_pg::PgServerHandle::start(db.clone(), &addr)?),
        None => None,
    };
    let sqs = start_sqs(&queues, &args)?;
    let broker = Broker::new(log.clone(), groups, txns, !args.no_auto_create_topics);
    let config = ServerConfig {
        control: Some(std::sync::Arc::new(ServeControl {
            host: host.clone(),
            queues,
        })),
        kafka_listen: listen_addr(&args.kafka_listen),
        kafka_advertised: args.kafka_advertised.clone(),
        http_listen: listen_addr(&args.http_listen),
    };
    let server = ServerHandle::start(broker, &config)?;
    let kafka = server.kafka_addr().map(|a| a.to_string());
    let info = ServeInfo {
        pid: std::process::id(),
        kafka_advertised: args.kafka_advertised.clone().or_else(|| kafka.clone()),
        kafka: kafka.clone(),
        http: server.http_addr().map(|a| a.to_string()),
        pg: pg.as_ref().map(|p| p.local_addr().to_string()),
        sqs: sqs.as_ref().map(|s| s.local_addr().to_string()),
    };
    let path = dir.join(SERVE_FILE);
    write_info(&path, &info)?;
    eprintln!(
        "weir serve: Kafka on {}, Postgres on {}, SQS on {}, HTTP on {}; data in {}",
        kafka.as_deref().unwrap_or("off"),
        info.pg.as_deref().unwrap_or("off"),
        info.sqs.as_deref().unwrap_or("off"),
        info.http.as_deref().unwrap_or("off"),
        dir.display()
    );
    let signal = server.wait_for_signal()?;
    eprintln!("weir serve: {signal}: stopping hosted pipelines, finishing in-flight requests");
    host.stop_all();
    if let Some(pg) = pg {
        pg.shutdown();
    }
    if let Some(sqs) = sqs {
        sqs.shutdown();
    }
    let _ = starting.join();
    db.stop_queries();
    server.shutdown();
    let _ = std::fs::remove_file(&path);
    log.close();
    eprintln!("weir serve: stopped");
    Ok(())
}

/// The HTTP listener's extras: hosted pipelines, and the queues' metrics.
#[derive(Debug)]
struct ServeControl {
    host: std::sync::Arc<super::hosted::PipelineHost>,
    queues: weir_queue::Queues,
}

impl weir_kafka::Control for ServeControl {
    fn handle(&self, method: &str, path: &str, body: &[u8]) -> Option<(u16, String)> {
        self.host.handle(method, path, body)
    }

    fn metrics(&self) -> String {
        weir_sqs::metrics::render(&self.queues, self.queues.log().now().0)
    }
}

/// Starts the SQS listener over the queues, if on.
fn start_sqs(
    queues: &weir_queue::Queues,
    args: &ServeArgs,
) -> Result<Option<weir_sqs::SqsServerHandle>> {
    let Some(listen) = listen_addr(&args.sqs_listen) else {
        return Ok(None);
    };
    let credentials = match args.sqs_credentials.as_deref() {
        None => weir_sqs::Credentials::default(),
        Some(pair) => {
            let (key, secret) = pair
                .split_once(':')
                .context("--sqs-credentials takes ACCESS_KEY:SECRET")?;
            weir_sqs::Credentials::single(key, secret)
        }
    };
    if credentials.is_empty() {
        eprintln!("weir serve: warning: the SQS API accepts unsigned requests (no --sqs-credentials; loopback only)");
    }
    let config = weir_sqs::SqsConfig {
        listen,
        credentials,
    };
    Ok(Some(weir_sqs::SqsServerHandle::start(
        queues.clone(),
        config,
    )?))
}

/// Starts the catalog's persistent queries on a thread of its own.
fn start_queries(db: &weir_sql::Database) -> Result<std::thread::JoinHandle<()>> {
    let db = db.clone();
    std::thread::Builder::new()
        .name("weir-sql-start".into())
        .spawn(move || {
            if let Err(e) = db.start_queries() {
                eprintln!("weir serve: the SQL engine did not start: {e}");
            }
        })
        .context("cannot start the SQL queries' thread")
}

fn write_info(path: &Path, info: &ServeInfo) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(info)?;
    std::fs::write(&tmp, json).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
