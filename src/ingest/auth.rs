//! Who may post webhooks: shared-secret tokens and HMAC signatures, checked before anything is
//! parsed or stored.
//!
//! A request is let in when it carries one of `auth_tokens` (as a path segment
//! `/t/<token>/webhooks/...`, a `?token=` query parameter, or `Authorization: Bearer <token>`),
//! or a valid HMAC-SHA256 signature of its body made with one of `hmac_secrets` (in
//! `hmac_header`, hex or base64; with `hmac_timestamp_header` set, the signed text is
//! `<timestamp>.<body>` and the timestamp must be within `hmac_tolerance_secs` of now). Several
//! secrets can be valid at once, so one can be rotated without downtime. With neither configured,
//! every request is let in; `serve` only allows that on a loopback address. Invariant: secrets
//! are compared in constant time and never appear in errors, logs, metrics or stored paths.

use axum::http::HeaderMap;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Config;

/// Why a request was refused (the metric label and the 401 message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error(
        "missing credentials: send a token (path /t/<token>/..., ?token= or Authorization: Bearer) or a signature"
    )]
    Missing,
    #[error("invalid token")]
    WrongToken,
    #[error("invalid signature")]
    BadSignature,
    #[error("signature timestamp missing, malformed or outside the allowed window")]
    StaleTimestamp,
}

impl AuthFailure {
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "unauthorized_missing",
            AuthFailure::WrongToken => "unauthorized_token",
            AuthFailure::BadSignature => "unauthorized_signature",
            AuthFailure::StaleTimestamp => "unauthorized_timestamp",
        }
    }
}

/// The credentials a request carries, apart from its headers and body.
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    /// The `<token>` of a `/t/<token>/...` path.
    pub path_token: Option<&'a str>,
    /// The raw query string.
    pub query: Option<&'a str>,
}

/// The configured secrets.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: Vec<Vec<u8>>,
    hmac_secrets: Vec<Vec<u8>>,
    hmac_header: String,
    hmac_timestamp_header: Option<String>,
    hmac_tolerance_secs: i64,
}

impl Auth {
    pub fn from_config(config: &Config) -> Auth {
        Auth {
            tokens: config
                .auth_tokens
                .iter()
                .map(|t| t.as_bytes().to_vec())
                .collect(),
            hmac_secrets: config
                .hmac_secrets
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            hmac_header: config.hmac_header.to_ascii_lowercase(),
            hmac_timestamp_header: config
                .hmac_timestamp_header
                .as_ref()
                .map(|h| h.to_ascii_lowercase()),
            hmac_tolerance_secs: config.hmac_tolerance_secs as i64,
        }
    }

    /// Whether any secret is configured.
    pub fn is_enabled(&self) -> bool {
        !self.tokens.is_empty() || !self.hmac_secrets.is_empty()
    }

    /// Lets the request in, or says why not. `now_secs` is the current Unix time.
    pub fn check(
        &self,
        presented: Presented<'_>,
        headers: &HeaderMap,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), AuthFailure> {
        if !self.is_enabled() {
            return Ok(());
        }
        let offered = offered_tokens(presented, headers);
        if offered.iter().any(|t| {
            self.tokens
                .iter()
                .any(|secret| constant_time_eq(t.as_bytes(), secret))
        }) {
            return Ok(());
        }
        let signature = headers
            .get(self.hmac_header.as_str())
            .and_then(|v| v.to_str().ok());
        if let (Some(signature), false) = (signature, self.hmac_secrets.is_empty()) {
            return self.check_signature(signature, headers, body, now_secs);
        }
        if offered.is_empty() {
            Err(AuthFailure::Missing)
        } else {
            Err(AuthFailure::WrongToken)
        }
    }

    /// What can be checked before the body is read: `true` when no secret is configured or the
    /// request carries a valid token. A body over the size limit is never read whole, so its
    /// HMAC signature cannot be checked; it counts as authenticated only by a token.
    pub fn token_valid(&self, presented: Presented<'_>, headers: &HeaderMap) -> bool {
        !self.is_enabled()
            || offered_tokens(presented, headers).iter().any(|t| {
                self.tokens
                    .iter()
                    .any(|secret| constant_time_eq(t.as_bytes(), secret))
            })
    }

    /// Whether a header carries credentials and must never be stored: `Authorization`,
    /// `Proxy-Authorization`, cookies, the HMAC signature and timestamp headers, any name that
    /// mentions a token, secret, signature, key or auth, and any value holding a configured
    /// secret.
    pub fn is_credential_header(&self, name: &str, value: &[u8]) -> bool {
        let name = name.to_ascii_lowercase();
        const NAMED: [&str; 9] = [
            "auth",
            "cookie",
            "token",
            "secret",
            "signature",
            "key",
            "password",
            "session",
            "credential",
        ];
        NAMED.iter().any(|part| name.contains(part))
            || name == self.hmac_header
            || self.hmac_timestamp_header.as_deref() == Some(name.as_str())
            || self
                .tokens
                .iter()
                .chain(&self.hmac_secrets)
                .any(|secret| !secret.is_empty() && contains(value, secret))
    }

    fn check_signature(
        &self,
        signature: &str,
        headers: &HeaderMap,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), AuthFailure> {
        let signature = signature.trim();
        let signature = signature.strip_prefix("sha256=").unwrap_or(signature);
        let given = decode_hex(signature)
            .or_else(|| {
                base64::engine::general_purpose::STANDARD
                    .decode(signature)
                    .ok()
            })
            .ok_or(AuthFailure::BadSignature)?;
        let mut signed = Vec::with_capacity(body.len() + 24);
        if let Some(name) = &self.hmac_timestamp_header {
            let stamp = headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .ok_or(AuthFailure::StaleTimestamp)?;
            let secs: i64 = stamp
                .trim()
                .parse()
                .map_err(|_| AuthFailure::StaleTimestamp)?;
            // `abs_diff`: any `i64` a client sends, however far off, is a stale timestamp.
            if now_secs.abs_diff(secs) > self.hmac_tolerance_secs.unsigned_abs() {
                return Err(AuthFailure::StaleTimestamp);
            }
            signed.extend_from_slice(stamp.trim().as_bytes());
            signed.push(b'.');
        }
        signed.extend_from_slice(body);
        let valid = self.hmac_secrets.iter().any(|secret| {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
            mac.update(&signed);
            mac.verify_slice(&given).is_ok()
        });
        if valid {
            Ok(())
        } else {
            Err(AuthFailure::BadSignature)
        }
    }
}

/// The tokens a request offers: its path token, `?token=` and `Authorization: Bearer`.
fn offered_tokens(presented: Presented<'_>, headers: &HeaderMap) -> Vec<String> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let query_token = presented.query.and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("token="))
            .map(|value| percent_decode(value, true))
    });
    [
        presented.path_token.map(str::to_string),
        query_token,
        bearer.map(str::to_string),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The `<token>` of a `/t/<token>/...` path, percent-decoded as the router decodes it.
pub fn path_token(path: &str) -> Option<String> {
    let (token, _) = path.strip_prefix("/t/")?.split_once('/')?;
    Some(percent_decode(token, false))
}

/// Decodes the `%XX` escapes of a query value or path segment, and `+` (a space) in a query.
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request path with the secret of `/t/<token>/...` replaced, fit to store and log.
pub fn redact_path(path: &str) -> String {
    match path
        .strip_prefix("/t/")
        .and_then(|rest| rest.split_once('/'))
    {
        Some((_, rest)) => format!("/t/***/{rest}"),
        None => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(tokens: &[&str], hmac: &[&str], timestamp: bool) -> Auth {
        Auth {
            tokens: tokens.iter().map(|t| t.as_bytes().to_vec()).collect(),
            hmac_secrets: hmac.iter().map(|t| t.as_bytes().to_vec()).collect(),
            hmac_header: "x-signature".into(),
            hmac_timestamp_header: timestamp.then(|| "x-timestamp".to_string()),
            hmac_tolerance_secs: 300,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn sign(secret: &str, text: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(text);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn tokens_in_the_path_query_or_header_and_rotation() {
        let a = auth(&["old-secret", "new-secret"], &[], false);
        let none = HeaderMap::new();
        let p = |path_token, query| Presented { path_token, query };
        assert_eq!(a.check(p(Some("new-secret"), None), &none, b"", 0), Ok(()));
        assert_eq!(
            a.check(p(None, Some("x=1&token=old-secret")), &none, b"", 0),
            Ok(())
        );
        assert_eq!(
            a.check(
                p(None, None),
                &headers(&[("authorization", "Bearer new-secret")]),
                b"",
                0
            ),
            Ok(())
        );
        assert_eq!(
            a.check(p(Some("guess"), None), &none, b"", 0),
            Err(AuthFailure::WrongToken)
        );
        assert_eq!(
            a.check(p(None, None), &none, b"", 0),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            auth(&[], &[], false).check(p(None, None), &none, b"", 0),
            Ok(()),
            "open when nothing is configured"
        );
    }

    #[test]
    fn signatures_in_hex_or_base64_with_a_replay_window() {
        let a = auth(&[], &["k1", "k2"], true);
        let body = br#"[{"id":1}]"#;
        let text = [b"1000.".as_slice(), body].concat();
        let hex = sign("k2", &text);
        let b64 = base64::engine::general_purpose::STANDARD.encode(decode_hex(&hex).unwrap());
        let p = Presented::default();
        for sig in [hex.clone(), format!("sha256={hex}"), b64] {
            let h = headers(&[("x-signature", &sig), ("x-timestamp", "1000")]);
            assert_eq!(a.check(p, &h, body, 1100), Ok(()), "{sig}");
        }
        let h = headers(&[("x-signature", &hex), ("x-timestamp", "1000")]);
        assert_eq!(
            a.check(p, &h, body, 1400),
            Err(AuthFailure::StaleTimestamp),
            "replayed too late"
        );
        assert_eq!(
            a.check(p, &h, b"[{\"id\":2}]", 1100),
            Err(AuthFailure::BadSignature),
            "another body"
        );
        let h = headers(&[("x-signature", &hex)]);
        assert_eq!(
            a.check(p, &h, body, 1100),
            Err(AuthFailure::StaleTimestamp),
            "no timestamp"
        );
        // The farthest timestamps are stale too (a difference that overflowed `i64` wrapped
        // into the window).
        for far in [i64::MIN.to_string(), i64::MAX.to_string()] {
            let h = headers(&[("x-signature", &hex), ("x-timestamp", &far)]);
            assert_eq!(
                a.check(p, &h, body, 1100),
                Err(AuthFailure::StaleTimestamp),
                "{far}"
            );
        }
        let h = headers(&[("x-signature", &sign("k3", &text)), ("x-timestamp", "1000")]);
        assert_eq!(
            a.check(p, &h, body, 1100),
            Err(AuthFailure::BadSignature),
            "unknown secret"
        );
    }

    #[test]
    fn helpers() {
        assert!(
            constant_time_eq(b"abc", b"abc")
                && !constant_time_eq(b"abc", b"abd")
                && !constant_time_eq(b"ab", b"abc")
        );
        assert_eq!(
            redact_path("/t/s3cr3t/webhooks/iclosed/callBooked"),
            "/t/***/webhooks/iclosed/callBooked"
        );
        assert_eq!(redact_path("/webhooks/iclosed"), "/webhooks/iclosed");
        assert_eq!(percent_decode("a%2Bb+c%zz", true), "a+b c%zz");
        assert_eq!(
            path_token("/t/a%2Fb+c/webhooks/iclosed").as_deref(),
            Some("a/b+c")
        );
        assert_eq!(path_token("/webhooks/iclosed"), None);
    }
}
