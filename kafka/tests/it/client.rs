//! A minimal blocking Kafka client for tests: one request, one response, over a real socket.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use weir_kafka::{Broker, ServerConfig, ServerHandle};

/// A server on a free loopback port over a fresh data directory.
pub struct TestServer {
    pub handle: Option<ServerHandle>,
    pub addr: SocketAddr,
    pub log: weir_log::Log,
    pub _dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start() -> anyhow::Result<TestServer> {
        let dir = tempfile::tempdir()?;
        let log = weir_log::Log::open(dir.path())?;
        let (groups, txns) = weir_coord::start(&log)?;
        let broker: Arc<Broker> = Broker::new(log.clone(), groups, txns, true);
        let config = ServerConfig {
            kafka_listen: Some("127.0.0.1:0".into()),
            kafka_advertised: None,
            http_listen: Some("127.0.0.1:0".into()),
            control: None,
        };
        let handle = ServerHandle::start(broker, &config)?;
        let addr = handle
            .kafka_addr()
            .ok_or_else(|| anyhow::anyhow!("no Kafka address"))?;
        Ok(TestServer {
            handle: Some(handle),
            addr,
            log,
            _dir: dir,
        })
    }

    pub fn connect(&self) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn { stream, next_id: 1 })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }
}

/// One client connection.
pub struct Conn {
    pub stream: TcpStream,
    next_id: i32,
}

impl Conn {
    /// Sends a request at `version` and decodes its response.
    pub fn call<R: Request>(&mut self, req: &R, version: i16) -> anyhow::Result<R::Response> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = encode_request(req, version, id)?;
        self.stream.write_all(&frame)?;
        let mut body = self.read_frame()?;
        let header_version = ApiKey::try_from(R::KEY)
            .map_err(|_| anyhow::anyhow!("key"))?
            .response_header_version(version);
        let header_version = if R::KEY == ApiKey::ApiVersions as i16 {
            0
        } else {
            header_version
        };
        let header = ResponseHeader::decode(&mut body, header_version)?;
        anyhow::ensure!(
            header.correlation_id == id,
            "correlation id {} != {id}",
            header.correlation_id
        );
        R::Response::decode(&mut body, version)
    }

    /// Reads one response frame's bytes.
    pub fn read_frame(&mut self) -> anyhow::Result<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body)?;
        Ok(Bytes::from(body))
    }

    /// True once the server closed the connection (a read returns end of stream).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

pub fn encode_request<R: Request>(req: &R, version: i16, id: i32) -> anyhow::Result<Bytes> {
    let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow::anyhow!("key"))?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(id)
        .with_client_id(Some(StrBytes::from_static_str("weir-test")));
    let hv = api.request_header_version(version);
    let size = header.compute_size(hv)? + req.compute_size(version)?;
    let mut buf = BytesMut::with_capacity(size + 4);
    buf.put_i32(size as i32);
    header.encode(&mut buf, hv)?;
    req.encode(&mut buf, version)?;
    Ok(buf.freeze())
}
