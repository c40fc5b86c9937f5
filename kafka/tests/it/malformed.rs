//! Malformed frames as raw bytes: each gets an error response or closes its own connection,
//! never anything else; other connections keep working. And a property test: random frames
//! never take the server down.

use std::io::Write;

use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};

use crate::client::TestServer;

fn still_serves(server: &TestServer) -> anyhow::Result<()> {
    let mut c = server.connect()?;
    let r = c.call(&MetadataRequest::default().with_topics(None), 4)?;
    assert_eq!(r.brokers.len(), 1);
    Ok(())
}

#[test]
fn bad_frames_close_only_their_own_connection() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let mut bystander = server.connect()?;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("oversized length", vec![0x7f, 0xff, 0xff, 0xff, 0, 0]),
        ("negative length", vec![0xff, 0xff, 0xff, 0xf0]),
        ("too short for a header", vec![0, 0, 0, 2, 0, 18]),
        (
            "unknown API key",
            vec![0, 0, 0, 10, 0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0, 0],
        ),
        // Produce v7 whose body stops after the header.
        (
            "truncated body",
            vec![0, 0, 0, 10, 0, 0, 0, 7, 0, 0, 0, 1, 0xff, 0xff],
        ),
        // Produce v2: below what this server implements.
        (
            "unsupported version",
            vec![0, 0, 0, 10, 0, 0, 0, 2, 0, 0, 0, 1, 0xff, 0xff],
        ),
    ];
    for (what, bytes) in cases {
        let mut c = server.connect()?;
        c.stream.write_all(&bytes)?;
        assert!(c.is_closed(), "{what}: the connection should be closed");
    }
    let r = bystander.call(&ApiVersionsRequest::default(), 3)?;
    assert_eq!(r.error_code, 0);
    still_serves(&server)
}

#[test]
fn an_unknown_api_versions_version_gets_the_supported_list_in_v0() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let mut c = server.connect()?;
    // ApiVersions v9 (unknown), header v2 with an empty tag section, then an empty body.
    let frame = [0u8, 0, 0, 11, 0, 18, 0, 9, 0, 0, 0, 42, 0xff, 0xff, 0];
    c.stream.write_all(&frame)?;
    let mut body = c.read_frame()?;
    use kafka_protocol::protocol::Decodable;
    let header = kafka_protocol::messages::ResponseHeader::decode(&mut body, 0)?;
    assert_eq!(header.correlation_id, 42);
    let r = kafka_protocol::messages::ApiVersionsResponse::decode(&mut body, 0)?;
    assert_eq!(r.error_code, 35, "UNSUPPORTED_VERSION");
    assert!(r
        .api_keys
        .iter()
        .any(|k| k.api_key == 18 && k.max_version == 3));
    // The connection stays open: the client retries with a version both sides have.
    let r = c.call(&ApiVersionsRequest::default(), 3)?;
    assert_eq!(r.error_code, 0);
    Ok(())
}

/// A small deterministic generator, so a failure replays from the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_frames_never_take_the_server_down() -> anyhow::Result<()> {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe_u64);
    println!("seed {seed} (replay with SEED={seed})");
    let server = TestServer::start()?;
    let mut rng = Rng(seed | 1);
    for _ in 0..200 {
        let len = 10 + (rng.next() % 120) as usize;
        let mut frame = (len as i32).to_be_bytes().to_vec();
        // A real API key and a plausible version, then random bytes: reaches the decoders.
        // Fetch, JoinGroup and SyncGroup are left out: a random but valid one may legally wait
        // (a long poll, a rebalance); CreateTopics too (it may ask for thousands of partitions).
        let key = [0u16, 2, 3, 8, 9, 10, 12, 18, 20, 22][(rng.next() % 10) as usize];
        frame.extend_from_slice(&key.to_be_bytes());
        frame.extend_from_slice(&((rng.next() % 10) as i16).to_be_bytes());
        for _ in 4..len {
            frame.push(rng.next() as u8);
        }
        let mut c = server.connect()?;
        c.stream.write_all(&frame)?;
        c.stream.shutdown(std::net::Shutdown::Write)?;
        // Whatever the outcome (a response or a close), the read must end.
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut c.stream, &mut sink);
    }
    still_serves(&server)
}
