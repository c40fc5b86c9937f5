//! One client connection: its [`Session`], and the pgwire handlers that run its statements.
//! Simple queries may hold several statements (each gets its own response, and the first
//! error stops the rest, as in Postgres); the extended protocol binds parameters into one
//! statement ([`crate::params`]). Statements run on the blocking pool: a session's methods
//! block on DataFusion's runtime and on disk.
//!
//! Transaction control (`BEGIN`, `COMMIT`, `ROLLBACK`) and `SET` are accepted so drivers that
//! send them work; Weir's statements are not transactional, and `BEGIN` says so in a notice.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::{stream, Sink, SinkExt};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeResponse, DescribeStatementResponse, FieldInfo, QueryResponse,
    Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::response::NoticeResponse;
use pgwire::messages::PgWireBackendMessage;
use weir_sql::datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use weir_sql::{Database, Described, Outcome, Output, Session, SqlError};

use crate::encode::{fields, pg_type, rows};
use crate::error::{error_info, sql_error, user_error};
use crate::params;
use crate::subscribe::{self, Subscriptions};

/// The handlers of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Connection(Arc<Inner>);

#[derive(Debug)]
pub(crate) struct Inner {
    session: Arc<Mutex<Session>>,
    db: Database,
    subscriptions: Subscriptions,
    parser: Arc<Parser>,
    /// The server's connections by process id and secret, for cancel requests.
    manager: Arc<ConnectionManager>,
}

impl Connection {
    pub(crate) fn new(
        db: &Database,
        subscriptions: Subscriptions,
        manager: Arc<ConnectionManager>,
    ) -> Result<Connection, SqlError> {
        Ok(Connection(Arc::new(Inner {
            session: Arc::new(Mutex::new(db.session()?)),
            db: db.clone(),
            subscriptions,
            parser: Arc::new(Parser),
            manager,
        })))
    }
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.0.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.0.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.0.clone()
    }

    /// A cancel request (psql's ctrl-c, a driver ending a `COPY (SUBSCRIBE …)`) stops the
    /// connection's running statement: its response future is dropped, which ends a
    /// subscription's thread.
    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.0.manager.clone()))
    }
}

/// A statement of the extended protocol: its text and how many parameters it takes.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    sql: String,
    parameters: usize,
    /// The parameters' types as Describe answered them (drivers that let the server infer
    /// types then bind binary values of those types).
    inferred: Arc<std::sync::OnceLock<Vec<Type>>>,
}

#[derive(Debug)]
pub(crate) struct Parser;

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        Ok(Some(Prepared {
            sql: sql.to_string(),
            parameters: params::count(sql),
            inferred: Arc::default(),
        }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        // Untyped parameters are taken as text, and cast by the query's own types.
        Ok(vec![Type::TEXT; stmt.parameters])
    }

    fn get_result_schema(
        &self,
        _stmt: &Prepared,
        _format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        // Describe is answered by planning on the blocking pool (`do_describe_*`).
        Ok(Vec::new())
    }
}

/// What one statement of a simple query does, before Weir's parser sees it.
enum Control {
    Begin,
    Commit,
    Rollback,
    Set(&'static str),
    /// `SHOW name` of a server parameter drivers ask for.
    Parameter(&'static str, &'static str),
}

/// Server parameters that `SHOW` answers (drivers and tools ask for these).
const PARAMETERS: &[(&str, &str)] = &[
    ("server_version", weir_sql::SERVER_VERSION),
    ("server_version_num", "160006"),
    ("client_encoding", "UTF8"),
    ("server_encoding", "UTF8"),
    ("standard_conforming_strings", "on"),
    ("timezone", "UTC"),
    ("datestyle", "ISO, MDY"),
    ("transaction_isolation", "read committed"),
    ("search_path", "public"),
    ("integer_datetimes", "on"),
];

fn control(sql: &str) -> Option<Control> {
    let s = sql.trim().trim_end_matches(';').trim();
    // One statement only: in `SET x = 1; CREATE …` the CREATE must not be skipped.
    if s.contains(';') {
        return None;
    }
    let words: Vec<String> = s
        .split_whitespace()
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let first = words.first()?.as_str();
    match first {
        "begin" | "start"
            if words.len() <= 3 || words.get(1).is_some_and(|w| w == "transaction") =>
        {
            Some(Control::Begin)
        }
        "commit" | "end" => Some(Control::Commit),
        // Savepoints (psycopg nests its type probes in one): statements are not
        // transactional, so there is nothing to roll back to.
        "savepoint" => Some(Control::Set("SAVEPOINT")),
        "release" => Some(Control::Set("RELEASE")),
        "rollback" if words.get(1).is_some_and(|w| w == "to") => Some(Control::Set("ROLLBACK")),
        "rollback" | "abort" => Some(Control::Rollback),
        "set" => Some(Control::Set("SET")),
        "reset" => Some(Control::Set("RESET")),
        "discard" => Some(Control::Set("DISCARD ALL")),
        "show" if words[1..] == ["transaction", "isolation", "level"] => Some(Control::Parameter(
            "transaction_isolation",
            "read committed",
        )),
        "show" if words.len() == 2 => PARAMETERS
            .iter()
            .find(|(n, _)| *n == words[1])
            .map(|(n, v)| Control::Parameter(n, v)),
        _ => None,
    }
}

fn control_response(c: Control) -> Response {
    match c {
        Control::Begin => Response::TransactionStart(Tag::new("BEGIN")),
        Control::Commit => Response::TransactionEnd(Tag::new("COMMIT")),
        Control::Rollback => Response::TransactionEnd(Tag::new("ROLLBACK")),
        Control::Set(tag) => Response::Execution(Tag::new(tag)),
        Control::Parameter(name, value) => {
            let field = FieldInfo::new(
                name.to_string(),
                None,
                None,
                Type::TEXT,
                pgwire::api::results::FieldFormat::Text,
            );
            let fields = Arc::new(vec![field]);
            let mut e = pgwire::api::results::DataRowEncoder::new(fields.clone());
            let row = e.encode_field(&value).map(|_| e.take_row());
            Response::Query(QueryResponse::new(fields, stream::iter(vec![row])))
        }
    }
}

impl Inner {
    /// Runs `f` with the session on the blocking pool.
    async fn with_session<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Session) -> T + Send + 'static,
    ) -> PgWireResult<T> {
        let session = self.session.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = session.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut s)
        })
        .await
        .map_err(|e| PgWireError::ApiError(Box::new(e)))
    }

    /// Runs a script's statements, stopping at the first error; with `single`, a script of
    /// several statements is refused before any runs (the extended protocol's rule).
    async fn run_script(
        &self,
        sql: String,
        single: bool,
    ) -> PgWireResult<Vec<Result<Outcome, SqlError>>> {
        self.with_session(move |s| {
            let statements = match weir_sql::parse(&sql) {
                Ok(s) => s,
                Err(e) => return vec![Err(e)],
            };
            if single && statements.len() != 1 {
                return vec![Err(SqlError::Plan {
                    message: format!(
                        "the extended protocol runs one statement at a time; this has {}",
                        statements.len()
                    ),
                    at: weir_sql::At(None),
                    hint: weir_sql::Hint(None),
                })];
            }
            let mut out = Vec::with_capacity(statements.len());
            for statement in statements {
                let r = s.run(statement);
                let failed = r.is_err();
                out.push(r);
                if failed {
                    break;
                }
            }
            out
        })
        .await
    }

    async fn describe(&self, sql: String) -> PgWireResult<Result<Described, SqlError>> {
        self.with_session(move |s| s.describe_sql(&sql)).await
    }
}

/// Sends a statement's notices before its response.
async fn notices<C>(client: &mut C, outcome: &Outcome) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for n in &outcome.notices {
        let info = ErrorInfo::new("NOTICE".into(), "01000".into(), n.clone());
        client
            .feed(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
                info,
            )))
            .await?;
    }
    Ok(())
}

/// An outcome as its response, rows in `format`.
fn response(outcome: Outcome, format: &Format) -> PgWireResult<Response> {
    Ok(match outcome.output {
        Output::Status(tag) => Response::Execution(Tag::new(&tag)),
        Output::Rows { schema, batches } => {
            let fields = fields(&schema, format);
            let rows = rows(&batches, &fields)?;
            Response::Query(QueryResponse::new(
                fields,
                stream::iter(rows.into_iter().map(Ok)),
            ))
        }
    })
}

#[async_trait]
impl SimpleQueryHandler for Inner {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(c) = control(query) {
            if matches!(c, Control::Begin) {
                let info = ErrorInfo::new(
                    "NOTICE".into(),
                    "01000".into(),
                    "Weir statements are not transactional: each takes effect when it runs".into(),
                );
                client
                    .feed(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
                        info,
                    )))
                    .await?;
            }
            return Ok(vec![control_response(c)]);
        }
        if let Some(target) = subscribe::parse(query) {
            return Ok(vec![self.subscribe(client, target, query).await?]);
        }
        let mut responses = Vec::new();
        for result in self.run_script(query.to_string(), false).await? {
            match result {
                Ok(outcome) => {
                    notices(client, &outcome).await?;
                    responses.push(response(outcome, &Format::UnifiedText)?);
                }
                Err(e) => responses.push(Response::Error(Box::new(error_info(&e, query)))),
            }
        }
        Ok(responses)
    }
}

impl Inner {
    /// Runs a subscription until its client goes; its rows are sent here, the response is
    /// the closing tag (or the error that stopped it from starting).
    async fn subscribe<C>(
        &self,
        client: &mut C,
        target: subscribe::Target,
        sql: &str,
    ) -> PgWireResult<Response>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (db, slots, t) = (self.db.clone(), self.subscriptions.clone(), target.clone());
        let started = tokio::task::spawn_blocking(move || subscribe::start(&db, &slots, &t))
            .await
            .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        match started {
            Ok(started) => {
                let rows = subscribe::stream_to(client, &target, started).await?;
                Ok(Response::Execution(subscribe::tag(&target, rows)))
            }
            Err(e) => Ok(Response::Error(Box::new(error_info(&e, sql)))),
        }
    }

    /// The text to run for a portal: its statement with the bound parameters in place.
    async fn portal_sql(&self, portal: &Portal<Prepared>) -> PgWireResult<String> {
        let prepared = &portal.statement.statement;
        let given = &portal.statement.parameter_types;
        let untyped_binary = (0..portal.parameters.len()).any(|i| {
            portal.parameter_format.is_binary(i) && given.get(i).cloned().flatten().is_none()
        });
        if untyped_binary && prepared.inferred.get().is_none() {
            // Binary values of types the client left to the server: infer them now.
            let d = self.described(&prepared.sql).await?;
            let types = (0..prepared.parameters)
                .map(|i| {
                    d.parameters
                        .get(i)
                        .cloned()
                        .flatten()
                        .map_or(Type::TEXT, |t| pg_type(&t))
                })
                .collect();
            let _ = prepared.inferred.set(types);
        }
        let types: Vec<Option<Type>> = (0..portal.parameters.len())
            .map(|i| {
                given
                    .get(i)
                    .cloned()
                    .flatten()
                    .or_else(|| prepared.inferred.get().and_then(|t| t.get(i).cloned()))
            })
            .collect();
        let literals = params::bound(&portal.parameters, &types, &portal.parameter_format)?;
        if literals.len() < prepared.parameters {
            return Err(user_error(
                "08P01",
                format!(
                    "the statement takes {} parameter(s), {} were bound",
                    prepared.parameters,
                    literals.len()
                ),
            ));
        }
        params::substitute(&prepared.sql, &literals)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Inner {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let sql = self.portal_sql(portal).await?;
        if let Some(c) = control(&sql) {
            return Ok(control_response(c));
        }
        if let Some(target) = subscribe::parse(&sql) {
            if !target.is_copy() {
                // Describe answered NoData; rows now would break the protocol.
                return Err(user_error(
                    "0A000",
                    "a push request (SUBSCRIBE, SELECT … EMIT CHANGES) through the extended \
                     protocol: wrap it in COPY (…) TO STDOUT, or use the simple protocol",
                ));
            }
            return self.subscribe(client, target, &sql).await;
        }
        let mut results = self.run_script(sql.clone(), true).await?;
        if results.is_empty() {
            return Ok(Response::EmptyQuery);
        }
        match results.remove(0) {
            Ok(outcome) => {
                notices(client, &outcome).await?;
                response(outcome, &portal.result_column_format)
            }
            Err(e) => Err(sql_error(&e, &sql)),
        }
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Prepared>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Planned with the placeholders in place: DataFusion infers their types from where
        // they are used; a type the client gave wins, an unknown one is text.
        let n = target.statement.parameters;
        let described = self.described(&target.statement.sql).await?;
        let types: Vec<Type> = (0..n)
            .map(|i| {
                target
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .or_else(|| {
                        described
                            .parameters
                            .get(i)
                            .cloned()
                            .flatten()
                            .map(|t| pg_type(&t))
                    })
                    .unwrap_or(Type::TEXT)
            })
            .collect();
        let _ = target.statement.inferred.set(types.clone());
        let fields = match described.schema {
            Some(s) => fields(&s, &Format::UnifiedText).as_ref().clone(),
            None => Vec::new(),
        };
        Ok(DescribeStatementResponse::new(types, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Prepared>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let sql = self.portal_sql(portal).await?;
        Ok(match self.schema_of(&sql).await? {
            Some(s) => DescribePortalResponse::new(
                fields(&s, &portal.result_column_format).as_ref().clone(),
            ),
            None => DescribePortalResponse::no_data(),
        })
    }
}

impl Inner {
    /// The columns of `sql`'s result (none for a statement without rows).
    async fn schema_of(&self, sql: &str) -> PgWireResult<Option<SchemaRef>> {
        Ok(self.described(sql).await?.schema)
    }

    /// What `sql` returns and takes.
    async fn described(&self, sql: &str) -> PgWireResult<Described> {
        if let Some(c) = control(sql) {
            let schema = match c {
                Control::Parameter(name, _) => Some(Arc::new(Schema::new(vec![Field::new(
                    name,
                    DataType::Utf8,
                    true,
                )]))),
                _ => None,
            };
            return Ok(Described {
                schema,
                parameters: Vec::new(),
            });
        }
        if subscribe::parse(sql).is_some() {
            return Ok(Described::default());
        }
        match self.describe(sql.to_string()).await? {
            Ok(d) => Ok(d),
            Err(e) => Err(sql_error(&e, sql)),
        }
    }
}

/// No authentication: the listener is meant for loopback or a trusted network (say so in the
/// flag's help); what a client may do is what the data directory's owner may.
#[async_trait]
impl NoopStartupHandler for Inner {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.manager.clone())
    }
}
