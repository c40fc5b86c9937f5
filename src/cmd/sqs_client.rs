//! A small client of the SQS JSON protocol over one keep-alive HTTP/1.1 connection, unsigned
//! (for a loopback server without credentials, or one started by this process): what
//! `weir queue` and `weir bench sqs` speak.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Largest response read.
const RESPONSE_BYTES_MAX: usize = 16 << 20;

/// One connection.
pub struct SqsClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
}

impl SqsClient {
    pub fn connect(addr: &str) -> Result<SqsClient> {
        let stream = TcpStream::connect(addr)
            .with_context(|| format!("cannot reach the SQS API on {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(SqsClient {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            host: addr.to_string(),
        })
    }

    /// The URL of a queue on this server.
    pub fn url(&self, queue: &str) -> String {
        format!("http://{}/000000000000/{queue}", self.host)
    }

    /// Calls an action; an SQS error becomes an error saying its code and message.
    pub fn call(&mut self, action: &str, body: &Value) -> Result<Value> {
        let body = body.to_string();
        write!(
            self.writer,
            "POST / HTTP/1.1\r\nHost: {}\r\nX-Amz-Target: AmazonSQS.{action}\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        )?;
        let mut status = String::new();
        self.reader.read_line(&mut status)?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("the SQS API closed the connection");
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().context("a bad Content-Length")?;
                }
            }
        }
        if length > RESPONSE_BYTES_MAX {
            bail!("a {length}-byte response (at most {RESPONSE_BYTES_MAX})");
        }
        let mut buf = vec![0; length];
        self.reader.read_exact(&mut buf)?;
        let v: Value =
            serde_json::from_slice(&buf).context("the SQS API answered with bad JSON")?;
        if !status.contains(" 200 ") {
            let code = v["__type"]
                .as_str()
                .and_then(|t| t.rsplit('#').next())
                .unwrap_or("error");
            bail!("{code}: {}", v["message"].as_str().unwrap_or_default());
        }
        Ok(v)
    }
}
