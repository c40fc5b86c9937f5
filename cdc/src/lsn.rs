//! [`Lsn`]: a PostgreSQL log sequence number, written `X/Y` (two hex halves of 32 bits).

use std::fmt;

/// A position in PostgreSQL's write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses `X/Y`.
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.trim().split_once('/')?;
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        (hi <= u64::from(u32::MAX) && lo <= u64::from(u32::MAX)).then_some(Lsn(hi << 32 | lo))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_parse_and_print_as_postgres_writes_them() {
        let l = Lsn::parse("0/1538D48").expect("parses");
        assert_eq!(l, Lsn(0x1538D48));
        assert_eq!(l.to_string(), "0/1538D48");
        assert_eq!(Lsn::parse("16/B374D848").map(|l| l.0), Some(0x16_B374_D848));
        assert!(Lsn::parse("x/1").is_none() && Lsn::parse("1").is_none());
        assert!(Lsn(1) < Lsn(1 << 32));
    }
}
