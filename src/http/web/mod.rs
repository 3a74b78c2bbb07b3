//! The web player: its files at `/` and `/assets/…`, and the login that
//! turns a one-time code or an account's password into a session cookie.
//!
//! Owns: the session cookie (name, attributes), the login endpoints
//! (`/api/web/login`, `/logout`, `/me`, and `/code` for `tunemesh open`),
//! the shell and its assets.
//!
//! Must never: put a code, a session id or a password into a URL, a log
//! or an answer body other than the cookie; read the accounts on a runtime
//! thread (they are files: [`Tasks::blocking`]).

pub mod assets;
pub mod session;

use super::dto::{LoginCodeView, LoginRequest, MeView};
use super::{ApiError, ApiResult, AppState};
use crate::tasks::Tasks;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use session::{Principal, Refusal, Sessions};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

/// The session cookie's name.
pub const COOKIE: &str = "tunemesh_session";

/// The address a request came from (put in by the accept loop).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// What the web side of the API shares across requests and listeners.
pub struct Web {
    /// Codes, sessions, failure counts.
    pub(super) sessions: Mutex<Sessions>,
    /// The accounts (files in the data dir).
    pub(super) accounts: crate::accounts::Accounts,
    /// Owner of the blocking reads of the accounts.
    pub(super) tasks: Tasks,
}

impl Web {
    /// The web side of a node whose accounts are `accounts`.
    pub fn new(accounts: crate::accounts::Accounts) -> Web {
        Web {
            sessions: Mutex::new(Sessions::default()),
            accounts,
            tasks: Tasks::new(),
        }
    }

    pub(in crate::http) fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // A panic while holding it leaves plain data: keep going.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Who the session in `headers`' cookie is, if it is live.
    pub(super) fn principal(&self, headers: &HeaderMap) -> Option<Principal> {
        let id = cookie(headers, COOKIE)?;
        self.sessions().check(id, Instant::now())
    }
}

/// The value of cookie `name` in a request's headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Routes anyone may reach: the shell, its files, login and `me`.
pub(super) fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/", get(shell))
        .route("/index.html", get(shell))
        .route("/assets/{version}/{name}", get(asset))
        .route("/api/web/me", get(me))
        .route("/api/web/login", post(login))
        .route("/api/web/logout", post(logout))
}

/// Routes for the owner only.
pub(super) fn owner_routes() -> Router<AppState> {
    Router::new().route("/api/web/code", post(code))
}

fn serve_file(r: &'static assets::Ready, headers: &HeaderMap, cache: &'static str) -> Response {
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == r.etag))
    {
        return (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, r.etag.clone()),
                (header::CACHE_CONTROL, cache.into()),
            ],
        )
            .into_response();
    }
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut resp = if gzip {
        ([(header::CONTENT_ENCODING, "gzip")], r.gzip.clone()).into_response()
    } else {
        r.plain.into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(r.mime),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static(cache),
    );
    h.insert(
        header::VARY,
        header::HeaderValue::from_static("Accept-Encoding"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&r.etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

async fn shell(headers: HeaderMap) -> Response {
    serve_file(assets::shell(), &headers, "no-cache")
}

async fn asset(Path((version, name)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let Some(r) = assets::file(&name) else {
        return not_found().await;
    };
    let cache = if version == assets::version() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    serve_file(r, &headers, cache)
}

/// The answer to an unknown route: a JSON error under `/api/`, a page
/// elsewhere.
pub(super) async fn fallback(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return ApiError(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {}", uri.path()),
        )
        .into_response();
    }
    not_found().await
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><meta charset=utf-8><title>Not found · tunemesh</title>\
         <h1>Not found</h1><p>Nothing lives here. <a href=\"/\">Back to the player</a>.</p>\n",
    )
        .into_response()
}

async fn me(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Json<MeView>> {
    let accounts = s.web.accounts.clone();
    let has_accounts = s
        .web
        .tasks
        .blocking(move || accounts.is_empty().map(|e| !e))
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        .unwrap_or(false);
    let who = s.web.principal(&headers);
    Ok(Json(MeView {
        user: who.as_ref().map(|p| p.label().to_string()),
        owner: who == Some(Principal::Owner),
        accounts: has_accounts,
    }))
}

fn session_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        session::SESSION_MAX.as_secs()
    )
}

async fn login(
    State(s): State<AppState>,
    Extension(ClientAddr(from)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    // A login from another site (login CSRF) is refused like any change.
    if !super::guard::same_origin(&axum::http::Method::POST, &headers) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "cross-site login refused".into(),
        ));
    }
    let req: LoginRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad login request: {e}")))?;
    let ip: IpAddr = from.ip();
    let now = Instant::now();
    if let Err(Refusal::Slow(wait)) = s.web.sessions().may_try(ip, now) {
        let secs = wait.as_secs().max(1);
        let mut r = ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed logins: try again in {secs} s"),
        )
        .into_response();
        r.headers_mut().insert(header::RETRY_AFTER, secs.into());
        return Ok(r);
    }
    let who = match req {
        LoginRequest::Code { code } => s
            .web
            .sessions()
            .redeem(&code, now)
            .map(|id| (id, Principal::Owner)),
        LoginRequest::Password { user, password } => {
            let accounts = s.web.accounts.clone();
            let (u, p) = (user.clone(), password);
            let ok = s
                .web
                .tasks
                .blocking(move || accounts.verify(&u, &p))
                .await
                .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            match (ok, user.parse()) {
                (true, Ok(name)) => {
                    let p = Principal::User(name);
                    s.web.sessions().open(p.clone(), now).map(|id| (id, p))
                }
                _ => None,
            }
        }
    };
    let Some((id, p)) = who else {
        s.web.sessions().failed(ip, now);
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "wrong, used or expired code, or wrong name or password".into(),
        ));
    };
    let mut resp = Json(MeView {
        user: Some(p.label().to_string()),
        owner: p == Principal::Owner,
        accounts: true,
    })
    .into_response();
    if let Ok(v) = header::HeaderValue::from_str(&session_cookie(&id)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

async fn logout(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if !super::guard::same_origin(&axum::http::Method::POST, &headers) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "cross-site logout refused".into(),
        ));
    }
    if let Some(id) = cookie(&headers, COOKIE) {
        s.web.sessions().close(id);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        header::HeaderValue::from_static(
            "tunemesh_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        ),
    );
    Ok(resp)
}

async fn code(State(s): State<AppState>) -> ApiResult<Json<LoginCodeView>> {
    let code = s
        .web
        .sessions()
        .new_code(Instant::now())
        .ok_or_else(|| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "no randomness".into()))?;
    Ok(Json(LoginCodeView {
        code,
        expires_in_s: session::CODE_TTL.as_secs(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            "a=1; tunemesh_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "tunemesh"), None);
        let c = session_cookie("x");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(attr), "{c}");
        }
    }
}
