//! Who a request acts for, decided before any handler runs.
//!
//! Owns: where a token may be given (`Authorization: Bearer …` or a
//! `token=` query parameter, for players that take only a URL; loopback
//! only) and the comparison (of blake3 hashes, so timing says nothing
//! about the token); the session cookie as the other way in, with the
//! same-origin rule for changes; which routes need the owner.
//!
//! Must never: log a token, or let a request without the right one through.

use super::guard::{self, Listener};
use super::web::session::Principal;
use super::{ApiError, AppState};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The middleware: find who the request is (token, else session cookie),
/// put the [`Principal`] into its extensions and run it; else answer 401
/// (403 for a cookie-borne change from another origin).
pub(super) async fn auth(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let by_token = matches!(s.listener, Listener::Loopback)
        && token_of(&req).is_some_and(|t| blake3::hash(t.as_bytes()) == s.token);
    let who = if by_token {
        Some(Principal::Owner)
    } else {
        match s.web.principal(req.headers()) {
            Some(_) if !guard::same_origin(req.method(), req.headers()) => {
                return ApiError(
                    StatusCode::FORBIDDEN,
                    "a change from another site is refused".into(),
                )
                .into_response();
            }
            p => p,
        }
    };
    match who {
        Some(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        None => ApiError(
            StatusCode::UNAUTHORIZED,
            "log in (tunemesh open), or give the token (see api.json in the data dir)".into(),
        )
        .into_response(),
    }
}

/// Routes behind this need the owner (the token, or a login code's
/// session): devices, invitations, login codes.
pub(super) async fn owner_only(req: Request, next: Next) -> Response {
    match req.extensions().get::<Principal>() {
        Some(Principal::Owner) => next.run(req).await,
        _ => ApiError(
            StatusCode::FORBIDDEN,
            "only the device's owner may do this".into(),
        )
        .into_response(),
    }
}

/// The token a request carries: the bearer header, else the query's.
fn token_of(req: &Request) -> Option<&str> {
    let from_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    from_header.or_else(|| {
        req.uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, auth: Option<&str>) -> Request {
        let mut b = axum::http::Request::builder().uri(uri);
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn the_token_comes_from_the_header_else_the_query() {
        assert_eq!(
            token_of(&req("/api/status", Some("Bearer abc"))),
            Some("abc")
        );
        assert_eq!(
            token_of(&req("/stream/x?bitrate=96&token=t1", None)),
            Some("t1")
        );
        assert_eq!(
            token_of(&req("/x?token=q", Some("Bearer h"))),
            Some("h"),
            "the header wins"
        );
        assert_eq!(token_of(&req("/x", Some("Basic abc"))), None);
        assert_eq!(token_of(&req("/x?tokens=1", None)), None);
    }
}
