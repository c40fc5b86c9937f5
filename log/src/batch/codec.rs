//! Decompression of a batch's records section: gzip (1), snappy (2, raw or in the xerial
//! framing the Java client writes), lz4 (3, the LZ4 frame format) and zstd (4), Kafka's codecs.
//!
//! Compressed batches are stored and served as their producer sent them; only readers that
//! need the records (consumers, the engine, compaction, validation on append) decompress, into
//! a buffer capped at [`DECOMPRESSED_BYTES_MAX`] so a crafted batch cannot make a reader
//! allocate without bound.

use std::io::Read;

use super::BatchError;

/// Codec ids (attribute bits 0–2).
pub const CODEC_NONE: i16 = 0;
/// gzip.
pub const CODEC_GZIP: i16 = 1;
/// snappy.
pub const CODEC_SNAPPY: i16 = 2;
/// lz4 (frame format).
pub const CODEC_LZ4: i16 = 3;
/// zstd.
pub const CODEC_ZSTD: i16 = 4;

/// Most bytes a batch's records may decompress to. A batch is at most
/// [`super::BATCH_BYTES_MAX`] on disk; clients' batches are far smaller, and a ratio above
/// this ceiling is a decompression bomb, refused as a malformed batch.
pub const DECOMPRESSED_BYTES_MAX: usize = 256 * 1024 * 1024;

/// The xerial snappy stream header (the Java client's `SnappyOutputStream`).
const XERIAL_MAGIC: &[u8] = &[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Magic, version and compatible version: 16 bytes before the first chunk.
const XERIAL_HEADER_LEN: usize = 16;

/// The records section of a batch with codec `codec`, decompressed.
pub fn decompress(codec: i16, data: &[u8]) -> Result<Vec<u8>, BatchError> {
    let fail = |reason: String| BatchError::Codec { codec, reason };
    match codec {
        CODEC_GZIP => read_capped(flate2::read::MultiGzDecoder::new(data), codec),
        CODEC_SNAPPY => snappy(data).map_err(fail),
        CODEC_LZ4 => {
            let decoder = lz4::Decoder::new(data).map_err(|e| fail(e.to_string()))?;
            read_capped(decoder, codec)
        }
        CODEC_ZSTD => {
            let decoder =
                zstd::stream::read::Decoder::new(data).map_err(|e| fail(e.to_string()))?;
            read_capped(decoder, codec)
        }
        other => Err(BatchError::Compressed(other)),
    }
}

fn read_capped(reader: impl Read, codec: i16) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    reader
        .take(DECOMPRESSED_BYTES_MAX as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BatchError::Codec {
            codec,
            reason: e.to_string(),
        })?;
    if out.len() > DECOMPRESSED_BYTES_MAX {
        return Err(too_large(codec));
    }
    Ok(out)
}

fn too_large(codec: i16) -> BatchError {
    BatchError::Codec {
        codec,
        reason: format!("decompresses to more than {DECOMPRESSED_BYTES_MAX} bytes"),
    }
}

/// Raw snappy, or the xerial framing: a 16-byte header, then chunks of (u32 BE length, raw
/// snappy block).
fn snappy(data: &[u8]) -> Result<Vec<u8>, String> {
    if !data.starts_with(XERIAL_MAGIC) {
        return snappy_block(data, 0);
    }
    let mut out = Vec::new();
    let mut at = XERIAL_HEADER_LEN.min(data.len());
    while at < data.len() {
        let len_bytes: [u8; 4] = data
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or("truncated xerial chunk length")?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let chunk = data
            .get(at + 4..at + 4 + len)
            .ok_or("xerial chunk runs past the batch")?;
        let block = snappy_block(chunk, out.len())?;
        out.extend_from_slice(&block);
        at += 4 + len;
    }
    Ok(out)
}

fn snappy_block(block: &[u8], already: usize) -> Result<Vec<u8>, String> {
    let len = snap::raw::decompress_len(block).map_err(|e| e.to_string())?;
    if already + len > DECOMPRESSED_BYTES_MAX {
        return Err(format!(
            "decompresses to more than {DECOMPRESSED_BYTES_MAX} bytes"
        ));
    }
    snap::raw::Decoder::new()
        .decompress_vec(block)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TEXT: &[u8] = b"records records records records records records";

    #[test]
    fn every_codec_round_trips() -> Result<(), Box<dyn std::error::Error>> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(TEXT)?;
        assert_eq!(decompress(CODEC_GZIP, &gz.finish()?)?, TEXT);

        let raw = snap::raw::Encoder::new().compress_vec(TEXT)?;
        assert_eq!(decompress(CODEC_SNAPPY, &raw)?, TEXT);
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        for half in [&TEXT[..10], &TEXT[10..]] {
            let block = snap::raw::Encoder::new().compress_vec(half)?;
            xerial.extend_from_slice(&(block.len() as u32).to_be_bytes());
            xerial.extend_from_slice(&block);
        }
        assert_eq!(decompress(CODEC_SNAPPY, &xerial)?, TEXT);

        let mut lz = lz4::EncoderBuilder::new().build(Vec::new())?;
        lz.write_all(TEXT)?;
        let (lz, result) = lz.finish();
        result?;
        assert_eq!(decompress(CODEC_LZ4, &lz)?, TEXT);

        assert_eq!(
            decompress(CODEC_ZSTD, &zstd::bulk::compress(TEXT, 3)?)?,
            TEXT
        );
        Ok(())
    }

    #[test]
    fn garbage_and_unknown_codecs_are_errors() {
        for codec in [CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD] {
            assert!(
                decompress(codec, b"not compressed at all").is_err(),
                "codec {codec}"
            );
        }
        assert_eq!(decompress(5, TEXT), Err(BatchError::Compressed(5)));
    }
}
