//! kcat-style output formats: `%t %p %o %k %s %T %h %%` and the escapes `\n \t \\`.
//!
//! Parsed once into segments, so formatting a record is a loop over a few pieces.

use std::io::{self, Write};

use weir_log::RecordView;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Timestamp,
    Headers,
}

/// A parsed output format.
#[derive(Debug, Clone)]
pub struct Format(Vec<Piece>);

impl Format {
    /// Parses a format string; unknown placeholders are an error naming them.
    pub fn parse(s: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let p = match chars.next() {
                        Some('t') => Piece::Topic,
                        Some('p') => Piece::Partition,
                        Some('o') => Piece::Offset,
                        Some('k') => Piece::Key,
                        Some('s') => Piece::Value,
                        Some('T') => Piece::Timestamp,
                        Some('h') => Piece::Headers,
                        Some('%') => {
                            text.push(b'%');
                            continue;
                        }
                        other => {
                            return Err(format!(
                            "unknown placeholder `%{}` in format; use %t %p %o %k %s %T %h or %%",
                            other.map(String::from).unwrap_or_default()
                        ))
                        }
                    };
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(p);
                }
                '\\' => match chars.next() {
                    Some('n') => text.push(b'\n'),
                    Some('t') => text.push(b'\t'),
                    Some('r') => text.push(b'\r'),
                    Some('\\') => text.push(b'\\'),
                    Some(other) => {
                        text.push(b'\\');
                        let mut buf = [0u8; 4];
                        text.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                    }
                    None => text.push(b'\\'),
                },
                other => {
                    let mut buf = [0u8; 4];
                    text.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Format(pieces))
    }

    /// Writes one record read from the log.
    pub fn write(
        &self,
        out: &mut impl Write,
        topic: &str,
        partition: u32,
        r: &RecordView<'_>,
    ) -> io::Result<()> {
        let headers: Vec<(&[u8], Option<&[u8]>)> = r.headers().map_while(Result::ok).collect();
        self.write_fields(
            out,
            &Fields {
                topic,
                partition,
                offset: r.offset.0,
                timestamp: r.timestamp.0,
                key: r.key,
                value: r.value,
                headers,
            },
        )
    }

    /// Writes one record given by its fields.
    pub fn write_fields(&self, out: &mut impl Write, f: &Fields<'_>) -> io::Result<()> {
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.write_all(t)?,
                Piece::Topic => out.write_all(f.topic.as_bytes())?,
                Piece::Partition => write!(out, "{}", f.partition)?,
                Piece::Offset => write!(out, "{}", f.offset)?,
                Piece::Key => out.write_all(f.key.unwrap_or_default())?,
                Piece::Value => out.write_all(f.value.unwrap_or_default())?,
                Piece::Timestamp => write!(out, "{}", f.timestamp)?,
                Piece::Headers => {
                    for (i, (k, v)) in f.headers.iter().enumerate() {
                        if i > 0 {
                            out.write_all(b",")?;
                        }
                        out.write_all(k)?;
                        out.write_all(b"=")?;
                        out.write_all(v.unwrap_or_default())?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The fields a format can print.
#[derive(Debug)]
pub struct Fields<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: i64,
    /// Timestamp (ms).
    pub timestamp: i64,
    /// Key.
    pub key: Option<&'a [u8]>,
    /// Value.
    pub value: Option<&'a [u8]>,
    /// Headers.
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kcat_placeholders_and_escapes() {
        let f = Format::parse("%t/%p@%o %k=%s %T\\t100%%\\n").expect("valid");
        assert_eq!(f.0.len(), 12);
        assert!(Format::parse("%x").is_err());
        let f = Format::parse("%s\\n").expect("default");
        assert_eq!(f.0, vec![Piece::Value, Piece::Text(b"\n".to_vec())]);
    }
}
