//! Request framing: a 4-byte big-endian length, then that many bytes. [`FrameReader`] keeps
//! partial reads in its own buffer, so reading is cancel-safe inside `select!` ("need more
//! bytes" is `Ok(None)`, not an error), and checks the length prefix against
//! [`FRAME_BYTES_MAX`] before reserving any memory for the body.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::ConnError;
use crate::limits::FRAME_BYTES_MAX;

/// Smallest request: api key, api version, correlation id, client id length.
const REQUEST_HEADER_MIN: i32 = 10;

/// Reads length-prefixed frames from a socket.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    /// A complete frame's body if the buffer holds one.
    pub(crate) fn try_frame(&mut self) -> Result<Option<Bytes>, ConnError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        check_len(len)?;
        let len = len as usize;
        if self.buf.len() < 4 + len {
            self.buf.reserve(4 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(4);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Reads more bytes; `Ok(false)` at end of stream. Cancel-safe.
    pub(crate) async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
    ) -> Result<bool, ConnError> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(64 * 1024);
        }
        Ok(rd.read_buf(&mut self.buf).await? > 0)
    }

    /// True if bytes of an unfinished frame are buffered.
    pub(crate) fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

fn check_len(len: i32) -> Result<(), ConnError> {
    if len < REQUEST_HEADER_MIN {
        return Err(ConnError::FrameTooShort(len));
    }
    if len as i64 > FRAME_BYTES_MAX as i64 {
        return Err(ConnError::FrameTooLarge {
            len: len as i64,
            max: FRAME_BYTES_MAX,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &[u8]) -> FrameReader {
        FrameReader {
            buf: BytesMut::from(bytes),
        }
    }

    #[test]
    fn a_partial_frame_is_not_an_error() -> Result<(), ConnError> {
        let mut r = reader(&[0, 0, 0, 12, 0, 18]);
        assert!(r.try_frame()?.is_none());
        assert!(r.has_partial());
        Ok(())
    }

    #[test]
    fn oversized_and_negative_lengths_are_refused_before_allocating() {
        let mut r = reader(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(matches!(
            r.try_frame(),
            Err(ConnError::FrameTooLarge { .. })
        ));
        assert!(r.buf.capacity() < 1024);
        let mut r = reader(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(r.try_frame(), Err(ConnError::FrameTooShort(-1))));
    }

    #[test]
    fn frames_come_out_whole_and_in_order() -> Result<(), ConnError> {
        let mut bytes = vec![0, 0, 0, 10];
        bytes.extend_from_slice(&[1; 10]);
        bytes.extend_from_slice(&[0, 0, 0, 11]);
        bytes.extend_from_slice(&[2; 11]);
        let mut r = reader(&bytes);
        assert_eq!(r.try_frame()?.as_deref(), Some(&[1u8; 10][..]));
        assert_eq!(r.try_frame()?.as_deref(), Some(&[2u8; 11][..]));
        assert!(r.try_frame()?.is_none());
        Ok(())
    }
}
