//! AWS Signature Version 4, verified: the canonical request rebuilt from the method, path,
//! query, the headers the client says it signed and the body's SHA-256; the string to sign
//! with the request's time and credential scope; the signing key derived from the configured
//! secret by the HMAC chain (date, region, service, `aws4_request`); the signatures compared
//! in constant time. A request more than [`CLOCK_SKEW_MAX_S`] away from our clock is refused
//! as SQS refuses it.
//!
//! With no credentials configured (allowed on a loopback listener only, with a warning at
//! start) any request is accepted, signed or not.

use std::collections::BTreeMap;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::error::SqsError;

/// How far a request's `X-Amz-Date` may be from our clock (AWS's 15 minutes).
pub const CLOCK_SKEW_MAX_S: i64 = 15 * 60;

/// Access keys and their secrets.
#[derive(Clone, Default)]
pub struct Credentials {
    keys: BTreeMap<String, String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("Credentials")
            .field("access_keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Credentials {
    /// One access key and its secret.
    pub fn single(access_key: impl Into<String>, secret: impl Into<String>) -> Credentials {
        Credentials {
            keys: BTreeMap::from([(access_key.into(), secret.into())]),
        }
    }

    /// Whether none are configured (then requests are not checked).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// What a signature covers.
#[derive(Debug)]
pub struct SignedRequest<'a> {
    /// `POST`.
    pub method: &'a str,
    /// The path (`/`).
    pub path: &'a str,
    /// The raw query string (without `?`).
    pub query: &'a str,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: &'a [u8],
}

impl SignedRequest<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Checks a request's signature; returns the region it was signed for (empty when none).
pub fn verify(
    creds: &Credentials,
    req: &SignedRequest<'_>,
    now_s: i64,
) -> Result<String, SqsError> {
    let auth = req.header("authorization");
    if creds.is_empty() {
        return Ok(auth
            .and_then(|a| parse_auth(a).ok())
            .map(|a| a.region)
            .unwrap_or_default());
    }
    let Some(auth) = auth else {
        return Err(SqsError::auth(
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        ));
    };
    let a = parse_auth(auth)?;
    let Some(secret) = creds.keys.get(&a.access_key) else {
        return Err(SqsError::auth(
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        ));
    };
    let amz_date = req
        .header("x-amz-date")
        .ok_or_else(|| SqsError::auth("IncompleteSignature", "X-Amz-Date is missing"))?;
    let when = parse_amz_date(amz_date).ok_or_else(|| {
        SqsError::auth("IncompleteSignature", format!("bad X-Amz-Date {amz_date}"))
    })?;
    if (when - now_s).abs() > CLOCK_SKEW_MAX_S {
        return Err(SqsError::auth(
            "RequestExpired",
            format!("Request has expired: X-Amz-Date {amz_date} is more than 15 minutes from the server's time"),
        ));
    }
    let expected = signature(secret, req, &a, amz_date);
    if !constant_time_eq(expected.as_bytes(), a.signature.as_bytes()) {
        return Err(SqsError::auth(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
        ));
    }
    Ok(a.region)
}

struct Authorization {
    access_key: String,
    date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
}

fn parse_auth(value: &str) -> Result<Authorization, SqsError> {
    let bad = || {
        SqsError::auth(
            "IncompleteSignature",
            format!("malformed Authorization header: {value}"),
        )
    };
    let rest = value.strip_prefix("AWS4-HMAC-SHA256").ok_or_else(bad)?;
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or_else(bad)?;
        fields.insert(k, v);
    }
    let credential = fields.get("Credential").ok_or_else(bad)?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = scope[..] else {
        return Err(bad());
    };
    Ok(Authorization {
        access_key: access_key.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers: fields
            .get("SignedHeaders")
            .ok_or_else(bad)?
            .split(';')
            .map(str::to_string)
            .collect(),
        signature: fields.get("Signature").ok_or_else(bad)?.to_string(),
    })
}

fn signature(secret: &str, req: &SignedRequest<'_>, a: &Authorization, amz_date: &str) -> String {
    let mut canonical = format!(
        "{}\n{}\n{}\n",
        req.method,
        req.path,
        canonical_query(req.query)
    );
    for name in &a.signed_headers {
        let value = req.header(name).unwrap_or_default();
        let collapsed = value.split_whitespace().collect::<Vec<_>>().join(" ");
        canonical.push_str(&format!("{name}:{collapsed}\n"));
    }
    let payload = req
        .header("x-amz-content-sha256")
        .map(str::to_string)
        .unwrap_or_else(|| hex(&Sha256::digest(req.body)));
    canonical.push_str(&format!("\n{}\n{payload}", a.signed_headers.join(";")));
    let scope = format!("{}/{}/{}/aws4_request", a.date, a.region, a.service);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), a.date.as_bytes());
    for part in [a.region.as_str(), a.service.as_str(), "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    hex(&hmac(&key, to_sign.as_bytes()))
}

/// The query's parameters sorted by name, as SigV4 signs them (already URI-encoded by the
/// client; SQS's JSON protocol sends none).
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    pairs.sort_unstable();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `20261206T043000Z` as epoch seconds.
fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_to_epoch_seconds() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20000301T000001Z"), Some(951_868_801));
        assert_eq!(parse_amz_date("2000-03-01"), None);
    }

    /// The example of AWS's SigV4 documentation ("GET" of IAM ListUsers), computed with the
    /// documented secret: our signer must produce the documented signature.
    #[test]
    fn the_documented_example_signature() {
        let req = SignedRequest {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            headers: vec![
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded; charset=utf-8".into(),
                ),
                ("host".into(), "iam.amazonaws.com".into()),
                ("x-amz-date".into(), "20150830T123600Z".into()),
            ],
            body: b"",
        };
        let auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";
        let a = parse_auth(auth).expect("parses");
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        assert_eq!(signature(secret, &req, &a, "20150830T123600Z"), a.signature);
        let creds = Credentials::single("AKIDEXAMPLE", secret);
        let mut with_auth = req;
        with_auth
            .headers
            .push(("authorization".into(), auth.into()));
        let now = parse_amz_date("20150830T123600Z").expect("date");
        assert_eq!(verify(&creds, &with_auth, now).as_deref(), Ok("us-east-1"));
        assert_eq!(
            verify(&creds, &with_auth, now + 3600).map_err(|e| e.code),
            Err("RequestExpired")
        );
        let wrong = Credentials::single("AKIDEXAMPLE", "not the secret");
        assert_eq!(
            verify(&wrong, &with_auth, now).map_err(|e| e.code),
            Err("SignatureDoesNotMatch")
        );
        let other = Credentials::single("SOMEONEELSE", secret);
        assert_eq!(
            verify(&other, &with_auth, now).map_err(|e| e.code),
            Err("InvalidClientTokenId")
        );
    }
}
