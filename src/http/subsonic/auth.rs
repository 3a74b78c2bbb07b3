//! Who a Subsonic request is: the credentials it carries, read the way the
//! spec and the apps in the field send them (`u`+`p` plain or `enc:` hex;
//! `u`+`t`+`s`, the md5 of password and salt; `apiKey`), then checked
//! against the accounts. Pure parsing here; the check needs the accounts.

use super::Failure;

/// Credentials as a request gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `u` and `p` (decoded from `enc:` hex).
    Password {
        /// The account.
        user: String,
        /// The password.
        password: String,
    },
    /// `u`, `t` = md5(password + salt) in hex, and `s`.
    Token {
        /// The account.
        user: String,
        /// The token, lowercase hex.
        token: String,
        /// The salt.
        salt: String,
    },
    /// `apiKey` (the `apiKeyAuthentication` extension).
    ApiKey(String),
}

/// Decode `enc:`-hex: UTF-8 when the bytes are, else Latin-1 (what old
/// clients send for non-ASCII passwords).
fn decode_enc(hex: &str) -> Option<String> {
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex.as_bytes())
        .ok()?;
    Some(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => e.into_bytes().iter().map(|&b| char::from(b)).collect(),
    })
}

/// Read the credentials from the request's parameters (`get` answers one
/// parameter by name).
pub fn credentials<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Credentials, Failure> {
    let (u, p, t, s, key) = (get("u"), get("p"), get("t"), get("s"), get("apiKey"));
    if let Some(k) = key {
        if u.is_some() || p.is_some() || t.is_some() {
            return Err(Failure::new(
                43,
                "give either apiKey or u with p or t, not both",
            ));
        }
        return Ok(Credentials::ApiKey(k.to_string()));
    }
    let Some(user) = u.filter(|u| !u.is_empty()) else {
        return Err(Failure::new(10, "required parameter is missing: u"));
    };
    let user = user.to_string();
    match (p, t) {
        (Some(_), Some(_)) => Err(Failure::new(43, "give either p or t and s, not both")),
        (Some(p), None) => {
            let password = match p.strip_prefix("enc:") {
                Some(hex) => {
                    decode_enc(hex).ok_or_else(|| Failure::new(40, "wrong username or password"))?
                }
                None => p.to_string(),
            };
            Ok(Credentials::Password { user, password })
        }
        (None, Some(t)) => {
            let Some(salt) = s else {
                return Err(Failure::new(10, "required parameter is missing: s"));
            };
            Ok(Credentials::Token {
                user,
                token: t.to_ascii_lowercase(),
                salt: salt.to_string(),
            })
        }
        (None, None) => Err(Failure::new(
            10,
            "required parameter is missing: p, or t and s",
        )),
    }
}

/// md5(password + salt), lowercase hex: the token a client computes.
pub fn token_of(password: &str, salt: &str) -> String {
    use md5::Digest;
    let mut h = md5::Md5::new();
    h.update(password.as_bytes());
    h.update(salt.as_bytes());
    data_encoding::HEXLOWER.encode(&h.finalize())
}

/// Constant-time comparison of two short strings (by hashing both).
pub fn same(a: &str, b: &str) -> bool {
    blake3::hash(a.as_bytes()) == blake3::hash(b.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn creds(q: &[(&str, &str)]) -> Result<Credentials, u32> {
        let m: HashMap<&str, &str> = q.iter().copied().collect();
        credentials(|k| m.get(k).copied()).map_err(|f| f.code)
    }

    #[test]
    fn every_way_in_and_every_wrong_one() {
        assert_eq!(
            creds(&[("u", "ana"), ("p", "sesame")]),
            Ok(Credentials::Password {
                user: "ana".into(),
                password: "sesame".into()
            })
        );
        // enc: hex, UTF-8 and (when not UTF-8) Latin-1.
        assert_eq!(
            creds(&[("u", "ana"), ("p", "enc:73c3a9")]),
            Ok(Credentials::Password {
                user: "ana".into(),
                password: "sé".into()
            })
        );
        assert_eq!(
            creds(&[("u", "ana"), ("p", "enc:73e9")]),
            Ok(Credentials::Password {
                user: "ana".into(),
                password: "sé".into()
            })
        );
        assert_eq!(creds(&[("u", "ana"), ("p", "enc:zz")]), Err(40));
        assert_eq!(
            creds(&[("u", "ana"), ("t", "ABC"), ("s", "x")]),
            Ok(Credentials::Token {
                user: "ana".into(),
                token: "abc".into(),
                salt: "x".into()
            })
        );
        assert_eq!(
            creds(&[("apiKey", "k")]),
            Ok(Credentials::ApiKey("k".into()))
        );
        assert_eq!(creds(&[("apiKey", "k"), ("u", "ana")]), Err(43));
        assert_eq!(
            creds(&[("u", "ana"), ("p", "x"), ("t", "y"), ("s", "z")]),
            Err(43)
        );
        assert_eq!(creds(&[("u", "ana"), ("t", "y")]), Err(10));
        assert_eq!(creds(&[("u", "ana")]), Err(10));
        assert_eq!(creds(&[("p", "x")]), Err(10));
        // The spec's own example: password "sesame", salt "c19b2d".
        assert_eq!(
            token_of("sesame", "c19b2d"),
            "26719a1196d2a940705a59634eb18eab"
        );
    }
}
