//! How typed keys and values become bytes in topics: [`Serde`], with JSON, UTF-8 text and raw
//! bytes provided. Others plug in by implementing the trait.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Turns a `T` into bytes and back. Errors are messages; the engine adds where they happened.
pub trait Serde<T>: Send + Sync + 'static {
    /// Encodes a value.
    fn serialize(&self, value: &T) -> Result<Vec<u8>, String>;
    /// Decodes a value.
    fn deserialize(&self, bytes: &[u8]) -> Result<T, String>;
}

/// JSON via serde.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl<T: Serialize + DeserializeOwned> Serde<T> for Json {
    fn serialize(&self, value: &T) -> Result<Vec<u8>, String> {
        serde_json::to_vec(value).map_err(|e| format!("JSON encoding failed: {e}"))
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<T, String> {
        serde_json::from_slice(bytes)
            .map_err(|e| format!("not valid JSON for the expected type: {e}"))
    }
}

/// Plain UTF-8 text (not JSON-quoted).
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8;

impl Serde<String> for Utf8 {
    fn serialize(&self, value: &String) -> Result<Vec<u8>, String> {
        Ok(value.as_bytes().to_vec())
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<String, String> {
        String::from_utf8(bytes.to_vec()).map_err(|e| format!("not valid UTF-8: {e}"))
    }
}

/// The bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawBytes;

impl Serde<Bytes> for RawBytes {
    fn serialize(&self, value: &Bytes) -> Result<Vec<u8>, String> {
        Ok(value.to_vec())
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<Bytes, String> {
        Ok(Bytes::copy_from_slice(bytes))
    }
}
