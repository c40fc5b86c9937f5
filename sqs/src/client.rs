//! [`SqsClient`]: a small blocking client of the SQS JSON protocol over one keep-alive
//! HTTP/1.1 connection, unsigned — for a loopback server without credentials. `weir queue`,
//! `weir bench sqs` and the crash tests speak it; applications use an AWS SDK.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use serde_json::Value;

/// Largest response read.
const RESPONSE_BYTES_MAX: usize = 16 << 20;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed (the server is down or went away).
    #[error("SQS API connection: {0}")]
    Io(#[from] std::io::Error),
    /// The server answered with an SQS error.
    #[error("{code}: {message}")]
    Sqs {
        /// The error shape (`QueueDoesNotExist`).
        code: String,
        /// What it says.
        message: String,
    },
    /// The answer is not SQS's JSON.
    #[error("bad answer from the SQS API: {0}")]
    Protocol(String),
}

/// One connection.
#[derive(Debug)]
pub struct SqsClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
}

impl SqsClient {
    /// Connects to `addr` (`HOST:PORT`).
    pub fn connect(addr: &str) -> Result<SqsClient, ClientError> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(SqsClient {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            host: addr.to_string(),
        })
    }

    /// The URL of a queue on this server.
    pub fn url(&self, queue: &str) -> String {
        format!("http://{}/{}/{queue}", self.host, crate::attrs::ACCOUNT_ID)
    }

    /// Calls an action with its JSON body (`Weir.<Action>` for Weir's own).
    pub fn call(&mut self, action: &str, body: &Value) -> Result<Value, ClientError> {
        let body = body.to_string();
        let target = if action.starts_with("Weir.") {
            action.to_string()
        } else {
            format!("AmazonSQS.{action}")
        };
        write!(
            self.writer,
            "POST / HTTP/1.1\r\nHost: {}\r\nX-Amz-Target: {target}\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        )?;
        let mut status = String::new();
        if self.reader.read_line(&mut status)? == 0 {
            return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v
                        .trim()
                        .parse()
                        .map_err(|_| ClientError::Protocol(format!("Content-Length `{v}`")))?;
                }
            }
        }
        if length > RESPONSE_BYTES_MAX {
            return Err(ClientError::Protocol(format!("a {length}-byte answer")));
        }
        let mut buf = vec![0; length];
        self.reader.read_exact(&mut buf)?;
        let v: Value =
            serde_json::from_slice(&buf).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if !status.contains(" 200 ") {
            let code = v["__type"].as_str().and_then(|t| t.rsplit('#').next());
            return Err(ClientError::Sqs {
                code: code.unwrap_or("error").to_string(),
                message: v["message"].as_str().unwrap_or_default().to_string(),
            });
        }
        Ok(v)
    }
}
