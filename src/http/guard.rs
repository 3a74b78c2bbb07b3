//! What every request passes before auth: the DNS-rebinding guard (the
//! `Host` a request names), the cross-site guard (the `Origin` of a
//! state-changing request made with a cookie), and the headers every
//! answer carries (Content-Security-Policy and friends).
//!
//! - **Rebinding.** A page on `evil.example` whose name is re-pointed at
//!   127.0.0.1 reaches our port with `Host: evil.example`. So the loopback
//!   listener answers only Hosts that name loopback (`localhost`,
//!   `*.localhost`, 127.0.0.0/8, `[::1]`), and the LAN listener only IP
//!   literals (an attacker cannot make a browser send one for its own
//!   page) and the names it was configured with.
//! - **Cross-site requests.** The session cookie is SameSite=Strict; on
//!   top of that a request with a cookie that may change something (any
//!   method but GET, HEAD, OPTIONS) must come with an `Origin` equal to
//!   its own (`http://` + Host), or `Sec-Fetch-Site: same-origin`.
//! - No CORS headers are ever sent, so other origins cannot read answers.
//!
//! Must never: let a request through whose Host it did not check.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;
use std::sync::Arc;

/// Which listener a request came in on, and so which Hosts it may name.
#[derive(Debug, Clone)]
pub enum Listener {
    /// The loopback API (and player): loopback names only.
    Loopback,
    /// The `--web` listener on the LAN: IP literals, loopback names, and
    /// these names (lowercase, no port).
    Lan(Arc<Vec<String>>),
}

/// The Content-Security-Policy of every answer: our own scripts, styles,
/// images and audio only; no inline script, no framing, no plugins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; font-src 'self'; \
manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The host part of a `Host` value (no port), lowercase; IPv6 keeps its
/// brackets. `None` when it is not a plausible host.
pub fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        let end = rest.find(']')?;
        let after = &rest[end + 1..];
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        format!("[{}]", &rest[..end])
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) if is_port(p) && !h.contains(':') => h.to_string(),
            Some(_) => return None,
            None => host.to_string(),
        }
    };
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':');
    (!name.is_empty() && name.chars().all(ok)).then(|| name.to_ascii_lowercase())
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

fn ip_of(name: &str) -> Option<IpAddr> {
    name.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Whether a request naming `host` may be answered on `listener`.
pub fn host_allowed(listener: &Listener, host: &str) -> bool {
    let Some(name) = host_name(host) else {
        return false;
    };
    let loopback = name == "localhost"
        || name.ends_with(".localhost")
        || ip_of(&name).is_some_and(|ip| ip.is_loopback());
    match listener {
        Listener::Loopback => loopback,
        Listener::Lan(names) => loopback || ip_of(&name).is_some() || names.contains(&name),
    }
}

/// Whether a cookie-authenticated request may change something: safe
/// methods always; others only from our own origin.
pub fn same_origin(method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    match (get("origin"), get("host")) {
        (Some(origin), Some(host)) => {
            origin.eq_ignore_ascii_case(&format!("http://{host}"))
                || origin.eq_ignore_ascii_case(&format!("https://{host}"))
        }
        (None, _) => get("sec-fetch-site") == Some("same-origin"),
        _ => false,
    }
}

/// The middleware: refuse a Host this listener must not answer, and put
/// the security headers on every answer.
pub(super) async fn guard(State(l): State<Listener>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !host_allowed(&l, host) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "this address is not one this node answers (Host refused: DNS rebinding guard)\n",
        )
            .into_response();
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port_and_case() {
        assert_eq!(host_name("LocalHost:7380").as_deref(), Some("localhost"));
        assert_eq!(host_name("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(host_name("[::1]").as_deref(), Some("[::1]"));
        assert_eq!(host_name("10.0.0.2").as_deref(), Some("10.0.0.2"));
        for bad in ["", "a b", "x:port", "[::1]junk", "evil.example:1:2", "h/x"] {
            assert_eq!(host_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn loopback_answers_loopback_names_only() {
        let l = Listener::Loopback;
        for ok in [
            "127.0.0.1:7380",
            "localhost",
            "localhost:1",
            "app.localhost:9",
            "[::1]:7380",
            "127.1.2.3",
        ] {
            assert!(host_allowed(&l, ok), "{ok}");
        }
        for no in [
            "evil.example",
            "evil.example:7380",
            "192.168.1.2:7380",
            "localhost.evil.example",
            "",
        ] {
            assert!(!host_allowed(&l, no), "{no}");
        }
    }

    #[test]
    fn the_lan_listener_answers_ip_literals_and_its_names() {
        let l = Listener::Lan(Arc::new(vec!["music.lan".into(), "den".into()]));
        for ok in [
            "192.168.1.2:8080",
            "[fe80::1]:8080",
            "music.lan:8080",
            "DEN",
            "localhost:8080",
        ] {
            assert!(host_allowed(&l, ok), "{ok}");
        }
        for no in ["evil.example:8080", "music.lan.evil.example", "lan"] {
            assert!(!host_allowed(&l, no), "{no}");
        }
    }

    #[test]
    fn changes_need_our_own_origin() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        let host = ("host", "127.0.0.1:7380");
        assert!(same_origin(
            &Method::GET,
            &h(&[host, ("origin", "http://evil.example")])
        ));
        assert!(same_origin(
            &Method::POST,
            &h(&[host, ("origin", "http://127.0.0.1:7380")])
        ));
        assert!(!same_origin(
            &Method::POST,
            &h(&[host, ("origin", "http://evil.example")])
        ));
        assert!(!same_origin(
            &Method::DELETE,
            &h(&[host, ("origin", "http://127.0.0.1:7381")])
        ));
        assert!(!same_origin(&Method::POST, &h(&[host])));
        assert!(same_origin(
            &Method::POST,
            &h(&[host, ("sec-fetch-site", "same-origin")])
        ));
        assert!(!same_origin(
            &Method::POST,
            &h(&[host, ("sec-fetch-site", "cross-site")])
        ));
    }
}
