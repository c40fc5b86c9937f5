//! The command-line surface (clap definitions only).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Weir: a stream-processing engine over its own partitioned log.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
pub struct Cli {
    /// Data directory of the embedded log.
    #[arg(
        long,
        global = true,
        env = "WEIR_DATA_DIR",
        default_value = "./weir-data"
    )]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, describe, delete and compact topics.
    #[command(subcommand)]
    Topic(TopicCmd),
    /// Produce one record per stdin line.
    Produce(ProduceArgs),
    /// Print records of a topic.
    Consume(ConsumeArgs),
    /// List, describe, reset and delete consumer groups.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Queues: create, list, describe, delete, send, receive, redrive (the SQS API's).
    #[command(subcommand)]
    Queue(crate::cmd::queue::QueueCmd),
    /// Run built-in pipelines of the dataflow engine.
    #[command(subcommand)]
    Pipeline(PipelineCmd),
    /// Measure the log's throughput and latency.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Serve the data directory to Kafka clients (the Kafka wire protocol).
    Serve(ServeArgs),
    /// Run SQL: streams, tables and batch queries over the log (a REPL without -c or -f).
    Sql(SqlArgs),
    /// Capture a database's changes into topics (Debezium change events), exactly once.
    #[command(subcommand)]
    Cdc(CdcCmd),
}

#[derive(Debug, Args)]
pub struct BenchQueueArgs {
    /// Messages sent, then received and acknowledged.
    #[arg(long, default_value_t = 2_000_000)]
    pub messages: u64,
    /// Competing consumers (threads).
    #[arg(long, default_value_t = 8)]
    pub consumers: usize,
    /// Messages per receive and per ack.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Partitions of the queue's topic.
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 100)]
    pub bytes: usize,
}

#[derive(Debug, Args)]
pub struct BenchSqsArgs {
    /// Messages sent (in batches of 10), then received and deleted (in batches of 10).
    #[arg(long, default_value_t = 500_000)]
    pub messages: u64,
    /// Concurrent HTTP connections (one thread each).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Partitions of the queue's topic (1: a queue as CreateQueue makes it).
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
}

#[derive(Debug, Args)]
pub struct BenchPgSinkArgs {
    /// Distinct rows (keys) upserted.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
}

#[derive(Debug, Args)]
pub struct BenchChangesArgs {
    /// Change events of the orders table (creates, updates that move orders between
    /// customers and change amounts, deletes), after one create per customer.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: u64,
    /// Distinct orders.
    #[arg(long, default_value_t = 200_000)]
    pub orders: u64,
    /// Customers (each in one of 50 regions).
    #[arg(long, default_value_t = 10_000)]
    pub customers: u64,
    /// Partitions of each table.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Only the aggregate, over the orders table itself (its region computed from the
    /// customer id), without the join.
    #[arg(long)]
    pub no_join: bool,
}

#[derive(Debug, Args)]
pub struct BenchCdcArgs {
    /// Changes written before the source starts, for its throughput.
    #[arg(long, default_value_t = 200_000)]
    pub changes: u64,
    /// Changes per second the paced writer commits, for the commit -> read model delay.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    /// How long the paced writer runs.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
}

#[derive(Debug, Subcommand)]
pub enum CdcCmd {
    /// PostgreSQL: a snapshot of the publication's tables, then their changes from a logical
    /// replication slot (wal2json), into PREFIX.schema.table topics; runs until ctrl-c.
    Postgres(CdcPostgresArgs),
}

#[derive(Debug, Args)]
pub struct CdcPostgresArgs {
    /// The database, `postgres://user[:password]@host:port/db`.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// The publication naming the tables (created FOR ALL TABLES when absent).
    #[arg(long, value_name = "NAME")]
    pub publication: String,
    /// The logical replication slot (created when absent).
    #[arg(long, value_name = "NAME")]
    pub slot: String,
    /// Topics are PREFIX.schema.table.
    #[arg(long, value_name = "PREFIX")]
    pub topic_prefix: String,
    /// The source's name: its progress in the log (default: the slot's name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Partitions of the topics it creates.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// Run these statements and exit.
    #[arg(
        short = 'c',
        long = "command",
        value_name = "SQL",
        conflicts_with = "file"
    )]
    pub command: Option<String>,
    /// Run the statements of this file and exit.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the Kafka listener, or `off`.
    #[arg(long, default_value = "127.0.0.1:9092", value_name = "HOST:PORT|off")]
    pub kafka_listen: String,
    /// Address Kafka clients are told to connect to (default: the bound address).
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka_advertised: Option<String>,
    /// Address of the HTTP listener (`GET /metrics` in Prometheus format, `GET /health`),
    /// or `off`.
    #[arg(long, default_value = "127.0.0.1:9644", value_name = "HOST:PORT|off")]
    pub http_listen: String,
    /// Address of the Postgres listener (psql, Postgres drivers: Weir SQL), or `off`.
    #[arg(long, default_value = "127.0.0.1:5433", value_name = "HOST:PORT|off")]
    pub pg_listen: String,
    /// Address of the SQS-compatible API (boto3, the AWS SDKs and CLI), or `off`.
    #[arg(long, default_value = "127.0.0.1:9324", value_name = "HOST:PORT|off")]
    pub sqs_listen: String,
    /// Credentials SQS requests must be signed with (SigV4). Without them the SQS API
    /// accepts any request, and only on a loopback address.
    #[arg(
        long,
        env = "WEIR_SQS_CREDENTIALS",
        value_name = "ACCESS_KEY:SECRET",
        hide_env_values = true
    )]
    pub sqs_credentials: Option<String>,
    /// Do not create topics that clients ask about or produce to (Kafka's
    /// `auto.create.topics.enable=false`).
    #[arg(long)]
    pub no_auto_create_topics: bool,
}

#[derive(Debug, Subcommand)]
pub enum TopicCmd {
    /// Create a topic.
    Create {
        /// Topic name ([a-zA-Z0-9._-], at most 249 characters).
        name: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Topic config, e.g. retention.ms=60000, cleanup.policy=compact, flush=os.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
    },
    /// List topics.
    List,
    /// Partitions, offsets, sizes and config of a topic.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Run compaction now (topics with cleanup.policy=compact).
    Compact {
        /// Topic name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to.
    pub topic: String,
    /// Write every record to this partition (default: by key with Kafka's partitioner,
    /// keyless lines round-robin per batch).
    #[arg(long)]
    pub partition: Option<u32>,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Print a line to stdout for every acknowledged append
    /// (`ack p=P offsets=A-B producer=ID epoch=E seq=X-Y`).
    #[arg(long)]
    pub print_acks: bool,
    /// Most records per append.
    #[arg(long, default_value_t = 5000)]
    pub batch_records: usize,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Read only this partition (default: all).
    #[arg(long)]
    pub partition: Option<u32>,
    /// Where to start: earliest, latest, an offset N, or -N (N before the end). With
    /// `--group`: where to start partitions the group has no committed offset for
    /// (earliest or latest).
    #[arg(long, default_value = "earliest", allow_hyphen_values = true)]
    pub offset: String,
    /// Consume as a member of this consumer group, starting at its committed offsets and
    /// committing what was printed.
    #[arg(long)]
    pub group: Option<String>,
    /// read_uncommitted (default) or read_committed (skip open and aborted transactions).
    #[arg(long, default_value = "read_uncommitted")]
    pub isolation: String,
    /// Stop after this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Keep waiting for new records instead of stopping at the end.
    #[arg(long)]
    pub follow: bool,
    /// Output format (kcat placeholders): %t topic, %p partition, %o offset, %k key,
    /// %s value, %T timestamp ms, %h headers, %% percent, \n newline, \t tab.
    /// Default: `%s\n`; for a dead-letter topic (`*.dlq`), each record's key and headers
    /// (error, source topic, partition, offset, attempts, time).
    #[arg(short = 'f', long = "format")]
    pub format: Option<String>,
}

impl ConsumeArgs {
    /// The output format: the one given, or the default for this topic.
    pub fn format(&self) -> &str {
        match &self.format {
            Some(f) => f,
            None if self.topic.ends_with(".dlq") => "%p/%o key=%k %h\\n",
            None => "%s\\n",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// List groups with their state.
    List,
    /// Per partition: owner, committed offset, log end and lag.
    Describe {
        /// Group id.
        group: String,
    },
    /// Set a group's committed offsets for a topic (refused while it has live members).
    ResetOffsets {
        /// Group id.
        group: String,
        /// Topic whose offsets to set.
        #[arg(long)]
        topic: String,
        /// earliest, latest, offset:N or timestamp:MS.
        #[arg(long)]
        to: String,
    },
    /// Delete a group and its committed offsets (refused while it has live members).
    Delete {
        /// Group id.
        group: String,
    },
}

#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the `Run` variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum PipelineCmd {
    /// Applications that have run in this data directory, running or not.
    List,
    /// Stop a pipeline that `weir serve` runs (one `weir pipeline run` handed over).
    Stop {
        /// Application id.
        app: String,
    },
    /// An application's tasks, lag, commit rate, latencies, operators, dead-letter depth and
    /// state changelogs (live figures while it runs, its last ones after).
    Describe {
        /// Application id.
        app: String,
    },
    /// Start an application over: delete its committed offsets, internal topics (changelogs,
    /// repartition topics, dead letters) and RocksDB state. Its next run reads its inputs from
    /// the start. Stop it first.
    Reset {
        /// Application id.
        app: String,
        /// RocksDB state directory (default: DATA_DIR/state).
        #[arg(long)]
        state_dir: Option<std::path::PathBuf>,
    },
    /// Run a built-in pipeline until stopped (or idle): `keyed-count` counts records per key
    /// from INPUT into OUTPUT with RocksDB state; `latest` keeps the latest value per key and
    /// writes its length; `window-count` counts records per key and window of event time (JSON
    /// values with an integer `ts`, else the record timestamp) and writes
    /// {"window_start","window_end","count","max_ts"}. Exactly once by default.
    Run {
        /// Built-in pipeline name: keyed-count, latest or window-count.
        name: String,
        /// Application id (consumer group, internal topic prefix).
        #[arg(long)]
        app: String,
        /// Input topic.
        #[arg(long)]
        input: String,
        /// INPUT is a queue (`weir queue create`): consumed as one of its competing
        /// consumers, each message acked in the commit that holds its results (under
        /// exactly-once in the same transaction).
        #[arg(long)]
        queue: bool,
        /// Output topic.
        #[arg(long)]
        output: String,
        /// at_least_once instead of exactly_once.
        #[arg(long)]
        at_least_once: bool,
        /// Commit interval in ms.
        #[arg(long, default_value_t = 100)]
        commit_ms: u64,
        /// Stop after this many ms without input (default: run until killed).
        #[arg(long)]
        until_idle_ms: Option<u64>,
        /// RocksDB state directory (default: DATA_DIR/state).
        #[arg(long)]
        state_dir: Option<std::path::PathBuf>,
        /// Poison records: dead_letter (to APP.dlq), skip, or fail.
        #[arg(long, default_value = "dead_letter")]
        on_error: String,
        /// Worker threads (default: the machine's cores).
        #[arg(long)]
        workers: Option<usize>,
        /// Where a new application starts reading: earliest, latest, or a timestamp (ms since
        /// the epoch). An application with committed offsets resumes from them.
        #[arg(long, default_value = "earliest")]
        from: String,
        /// Windows of `window-count`.
        #[command(flatten)]
        window: WindowArgs,
    },
}

/// The windows of the `window-count` built-in pipeline.
#[derive(Debug, Clone, Args)]
pub struct WindowArgs {
    /// tumbling:SIZE, hopping:SIZE:ADVANCE or session:GAP (durations like 10s, 500ms, 2m).
    #[arg(long)]
    pub window: Option<String>,
    /// How long after its end a window still takes records.
    #[arg(long, default_value = "0s")]
    pub grace: String,
    /// The watermark's bound: watermark = largest event time seen - this.
    #[arg(long, default_value = "0s")]
    pub out_of_orderness: String,
    /// update (every change, per commit) or close (one final result per window).
    #[arg(long, default_value = "update")]
    pub emit: String,
    /// Late records: drop or dead_letter (counted either way).
    #[arg(long, default_value = "drop")]
    pub late: String,
}

impl Default for WindowArgs {
    /// The same defaults as the command line's.
    fn default() -> Self {
        WindowArgs {
            window: None,
            grace: "0s".into(),
            out_of_orderness: "0s".into(),
            emit: "update".into(),
            late: "drop".into(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Append throughput and ack latency (in a scratch topic under the data directory).
    Produce(BenchProduceArgs),
    /// Read throughput from the page cache.
    Consume(BenchConsumeArgs),
    /// Time for a consumer group to rebalance after a member leaves cleanly.
    Rebalance(BenchRebalanceArgs),
    /// Throughput of engine pipelines (stateless filter/map, or a keyed count with RocksDB).
    Pipeline(BenchPipelineArgs),
    /// Restart of a task holding a large committed state: time to its first output.
    Restart(BenchRestartArgs),
    /// Throughput and peak memory of windowed aggregations (`window-count`).
    Window(BenchWindowArgs),
    /// Throughput of a stream–stream windowed join.
    Join(BenchJoinArgs),
    /// A persistent SQL query over generated rows into a blackhole (Nexmark q1 by default).
    Sql(BenchSqlArgs),
    /// Pull queries by key on a materialized view, through the Postgres protocol.
    Pull(BenchPullArgs),
    /// Rows upserted into PostgreSQL per second by the postgres sink (the local PostgreSQL).
    PgSink(BenchPgSinkArgs),
    /// Debezium change events per second applied to updating views (a join of tables and
    /// an aggregate over it) in Weir's state.
    Changes(BenchChangesArgs),
    /// The PostgreSQL CDC source: changes/s read, and the delay from a PostgreSQL commit to
    /// a read model kept in PostgreSQL at a steady rate (the local PostgreSQL).
    Cdc(BenchCdcArgs),
    /// Queues through the Rust API: messages/s sent, and received + acknowledged (durably)
    /// by competing consumers; how late a message comes back after its lock expires.
    Queue(BenchQueueArgs),
    /// Queues through the SQS API over HTTP (a Rust load generator, batches of 10).
    Sqs(BenchSqsArgs),
}

#[derive(Debug, Args)]
pub struct BenchPullArgs {
    /// Keys (groups) of the view.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Pull queries measured (after as many warm-up queries as a tenth of them).
    #[arg(long, default_value_t = 20_000)]
    pub queries: u64,
    /// Partitions of the generated stream and of the view.
    #[arg(long, default_value_t = 2)]
    pub partitions: u32,
}

#[derive(Debug, Args)]
pub struct BenchJoinArgs {
    /// Records per side.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Distinct keys, round-robin.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Records per second of event time, per side.
    #[arg(long, default_value_t = 100_000)]
    pub events_per_second: u64,
    /// Records of the two sides match when at most this far apart (ms).
    #[arg(long, default_value_t = 500)]
    pub within_ms: u64,
    /// Partitions of each side (= tasks).
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
}

#[derive(Debug, Args)]
pub struct BenchSqlArgs {
    /// Rows generated.
    #[arg(long, default_value_t = 10_000_000)]
    pub rows: u64,
    /// Partitions of the generator (= tasks).
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// The query over `gen (id, auction, bidder, price, ts)`; default Nexmark q1.
    #[arg(long)]
    pub select: Option<String>,
    /// Run the windowed query instead of q1: a 10 s tumbling COUNT + MAX per key, 10,000 keys.
    #[arg(long)]
    pub windowed: bool,
    /// Time a batch GROUP BY over `--rows` JSON records in a topic instead.
    #[arg(long)]
    pub batch: bool,
    /// Rows per second of event time (`ts` of row i is i / rate seconds).
    #[arg(long, default_value_t = 100_000)]
    pub events_per_second: u64,
}

#[derive(Debug, Args)]
pub struct BenchWindowArgs {
    /// Input records (JSON values with an event time `ts`).
    #[arg(long, default_value_t = 3_000_000)]
    pub records: u64,
    /// Distinct keys, round-robin.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Records per second of event time (record i has ts = i / rate seconds).
    #[arg(long, default_value_t = 100_000)]
    pub events_per_second: u64,
    /// tumbling:SIZE, hopping:SIZE:ADVANCE or session:GAP.
    #[arg(long, default_value = "tumbling:10s")]
    pub window: String,
    /// update or close.
    #[arg(long, default_value = "close")]
    pub emit: String,
    /// Partitions of the input (= tasks).
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Commit interval in ms.
    #[arg(long, default_value_t = 100)]
    pub commit_ms: u64,
    /// Leave the windows open (no final record past them): measures the memory of open
    /// windows rather than the cost of closing them.
    #[arg(long)]
    pub keep_open: bool,
}

#[derive(Debug, Args)]
pub struct BenchPipelineArgs {
    /// Input records.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Distinct keys for a keyed count with RocksDB state; 0 for a stateless filter/map.
    #[arg(long, default_value_t = 0)]
    pub keys: u64,
    /// Partitions of the input (= tasks).
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// exactly_once, at_least_once, or both (one after the other, same data).
    #[arg(long, default_value = "both")]
    pub guarantee: String,
    /// Commit interval in ms.
    #[arg(long, default_value_t = 100)]
    pub commit_ms: u64,
    /// Measure end-to-end latency instead: produce `--records` at this many records/s while
    /// the pipeline runs, and report latency percentiles (record timestamp to commit).
    #[arg(long)]
    pub rate: Option<u64>,
}

#[derive(Debug, Args)]
pub struct BenchRestartArgs {
    /// Committed state to build, in MiB (values of `--value-bytes` under distinct keys).
    #[arg(long, default_value_t = 1024)]
    pub state_mb: u64,
    /// Bytes per state value.
    #[arg(long, default_value_t = 1000)]
    pub value_bytes: usize,
    /// Restarts to measure.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Also measure a restart after `kill -9`: the state is built by a `weir pipeline run`
    /// child process killed right after it processed the last record (its unflushed RocksDB
    /// memtables are lost and restored from the changelog), then a new child is timed.
    #[arg(long)]
    pub crash: bool,
}

#[derive(Debug, Args)]
pub struct BenchRebalanceArgs {
    /// Members of the group.
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 12)]
    pub partitions: u32,
    /// Rounds to measure.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

#[derive(Debug, Args)]
pub struct BenchProduceArgs {
    /// Records in total.
    #[arg(long, default_value_t = 5_000_000)]
    pub records: u64,
    /// Value size of each record.
    #[arg(long, default_value_t = 100)]
    pub record_bytes: usize,
    /// Partitions of the scratch topic.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Flush policy: batch, ms:N or os.
    #[arg(long, default_value = "batch")]
    pub flush: String,
    /// Concurrent producer threads.
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Bytes per batch a producer builds before submitting it.
    #[arg(long, default_value_t = 256 * 1024)]
    pub batch_bytes: usize,
    /// Appends each producer keeps in flight.
    #[arg(long, default_value_t = 5)]
    pub in_flight: usize,
    /// Stamp producer id, epoch and sequences on every batch (idempotent producers).
    #[arg(long)]
    pub idempotent: bool,
    /// Produce in transactions committed every N ms (transactional producers).
    #[arg(long, value_name = "MS")]
    pub transactional: Option<u64>,
}

#[derive(Debug, Args)]
pub struct BenchConsumeArgs {
    /// Records to write and then read.
    #[arg(long, default_value_t = 10_000_000)]
    pub records: u64,
    /// Value size of each record.
    #[arg(long, default_value_t = 100)]
    pub record_bytes: usize,
}
