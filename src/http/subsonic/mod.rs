//! The OpenSubsonic API under `/rest/`: the phone and desktop apps people
//! already use (DSub, Symfonium, Tempo, Feishin…) become tunemesh players.
//!
//! Owns: reading a request the way those apps send it (`/rest/NAME` and
//! `/rest/NAME.view`, GET or form POST, repeated parameters), its
//! credentials (see [`auth`]), the answer's format (see [`response`]), the
//! spec's error codes (always HTTP 200, also for binary endpoints), and
//! mapping our ids and objects onto the spec's.
//!
//! Must never: answer anything but `ping`-like discovery without valid
//! credentials, put a file-system path in an answer, or keep state of its
//! own (stars, plays, playlists and the queue are the shared state's).

pub mod auth;
mod browse;
mod ids;
mod media;
pub mod response;
mod state;

use super::web::ClientAddr;
use super::AppState;
use crate::accounts::UserName;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use response::{Elem, Format};

/// Largest form body accepted (a createPlaylist of thousands of ids fits).
const MAX_FORM: usize = 1 << 20;

/// A Subsonic error: the spec's code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// 10 missing parameter, 40 wrong credentials, 42/43/44 auth
    /// mechanism errors, 50 not allowed, 70 not found, 0 anything else.
    pub code: u32,
    /// What went wrong.
    pub message: String,
}

impl Failure {
    /// A failure with `code`.
    pub fn new(code: u32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    fn missing(name: &str) -> Failure {
        Failure::new(10, format!("required parameter is missing: {name}"))
    }

    fn not_found(what: impl std::fmt::Display) -> Failure {
        Failure::new(70, format!("{what} not found"))
    }
}

impl From<crate::node::NodeError> for Failure {
    fn from(e: crate::node::NodeError) -> Failure {
        use crate::node::NodeError;
        match e {
            NodeError::NotFound(m) => Failure::new(70, m),
            NodeError::BadRequest(m) => Failure::new(0, m),
            other => Failure::new(0, other.to_string()),
        }
    }
}

/// A request's parameters, query and form body together, in order
/// (several have repeated names: `id`, `songIdToAdd`…).
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>, form: &[u8]) -> Params {
        let mut v: Vec<(String, String)> = Vec::new();
        for src in [query.unwrap_or("").as_bytes(), form] {
            v.extend(form_urlencoded(src));
        }
        Params(v)
    }

    /// The first value of `k`.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    /// Every value of `k`.
    pub fn all(&self, k: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of `k`, required.
    pub fn need(&self, k: &str) -> Result<&str, Failure> {
        self.get(k).ok_or_else(|| Failure::missing(k))
    }

    /// `k` as a number, with a default; a value that is not one fails.
    pub fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Result<T, Failure> {
        match self.get(k) {
            None | Some("") => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| Failure::new(0, format!("parameter {k} is not a number: {v:?}"))),
        }
    }

    /// `k` as a bool (`true`/`false`), with a default.
    pub fn flag(&self, k: &str, default: bool) -> bool {
        match self.get(k) {
            Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            _ => default,
        }
    }
}

/// `a=b&c=d` decoding (`+` is a space, `%XX` a byte; bad escapes kept).
fn form_urlencoded(src: &[u8]) -> Vec<(String, String)> {
    fn dec(s: &[u8]) -> String {
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            match s[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < s.len() => {
                    match std::str::from_utf8(&s[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    src.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(i) => (dec(&p[..i]), dec(&p[i + 1..])),
            None => (dec(p), String::new()),
        })
        .collect()
}

/// What a handler answers: a document, or bytes (stream, cover).
pub(super) enum Reply {
    /// Children of the root of a success document.
    Doc(Vec<(&'static str, Elem)>),
    /// A binary answer, as it is.
    Raw(Response),
}

/// Who is asking, and with what.
pub(super) struct Ctx {
    /// The node's state (node, accounts).
    pub(super) s: AppState,
    /// The account the credentials name.
    pub(super) user: UserName,
    /// The parameters.
    pub(super) p: Params,
    /// The request's headers (Range).
    pub(super) headers: HeaderMap,
}

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/rest/{name}", get(endpoint).post(endpoint))
}

fn answer(doc: &Elem, format: &Format) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, format.content_type()),
            (header::CACHE_CONTROL, "no-store"),
        ],
        response::render(doc, format),
    )
        .into_response()
}

async fn endpoint(
    State(s): State<AppState>,
    Extension(ClientAddr(from)): Extension<ClientAddr>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = if body.len() <= MAX_FORM {
        &body[..]
    } else {
        &[][..]
    };
    let p = Params::parse(query.as_deref(), form);
    let format = Format::of(p.get("f"), p.get("callback"));
    let name = name.strip_suffix(".view").unwrap_or(&name).to_string();
    if body.len() > MAX_FORM {
        return answer(&response::failed(0, "the form is too large"), &format);
    }
    // Discovery needs no credentials (the spec says so for this one).
    if name == "getOpenSubsonicExtensions" {
        let doc = response::ok(vec![]).list("openSubsonicExtensions", browse::extensions());
        return answer(&doc, &format);
    }
    let user = match check(&s, &p, from.ip()).await {
        Ok(u) => u,
        Err(f) => return answer(&response::failed(f.code, &f.message), &format),
    };
    let ctx = Ctx {
        s,
        user,
        p,
        headers,
    };
    match dispatch(&name, &ctx).await {
        Ok(Reply::Doc(payload)) => answer(&response::ok(payload), &format),
        Ok(Reply::Raw(r)) => r,
        Err(f) => answer(&response::failed(f.code, &f.message), &format),
    }
}

/// Check the credentials against the accounts (blocking reads, off the
/// runtime), through the failed-login brake the web player uses.
async fn check(s: &AppState, p: &Params, from: std::net::IpAddr) -> Result<UserName, Failure> {
    use auth::Credentials;
    let creds = auth::credentials(|k| p.get(k))?;
    let now = std::time::Instant::now();
    if s.web.sessions().may_try(from, now).is_err() {
        return Err(Failure::new(
            40,
            "too many failed logins: try again in a minute",
        ));
    }
    let by_key = matches!(creds, Credentials::ApiKey(_));
    let accounts = s.web.accounts.clone();
    let found = s
        .web
        .tasks
        .blocking(
            move || -> Result<Option<UserName>, crate::accounts::AccountError> {
                Ok(match creds {
                    Credentials::Password { user, password } => accounts
                        .verify(&user, &password)?
                        .then(|| user.parse().ok())
                        .flatten(),
                    Credentials::Token { user, token, salt } => accounts
                        .password(&user)?
                        .filter(|pw| auth::same(&auth::token_of(pw.expose(), &salt), &token))
                        .and_then(|_| user.parse().ok()),
                    Credentials::ApiKey(k) => accounts.user_of_api_key(&k)?,
                })
            },
        )
        .await
        .map_err(|e| Failure::new(0, e.to_string()))?
        .map_err(|e| Failure::new(0, e.to_string()))?;
    match found {
        Some(u) => Ok(u),
        None => {
            s.web.sessions().failed(from, now);
            Err(if by_key {
                Failure::new(44, "invalid API key")
            } else {
                Failure::new(40, "wrong username or password")
            })
        }
    }
}

/// An empty list `item` under `tag`.
fn empty(tag: &'static str, item: &'static str) -> Reply {
    Reply::Doc(vec![(tag, Elem::new().list(item, vec![]))])
}

async fn dispatch(name: &str, c: &Ctx) -> Result<Reply, Failure> {
    match name {
        "ping" => Ok(Reply::Doc(vec![])),
        "getLicense" => Ok(Reply::Doc(vec![(
            "license",
            Elem::new()
                .attr("valid", true)
                .attr("email", "")
                .attr("licenseExpires", "2099-12-31T00:00:00.000Z"),
        )])),
        "getUser" => browse::user(c),
        "getMusicFolders" => Ok(browse::music_folders()),
        "getScanStatus" | "startScan" => Ok(browse::scan_status(c)),
        "getArtists" | "getIndexes" => browse::artists(c, name),
        "getArtist" => browse::artist_page(c).await,
        "getAlbum" => browse::album_page(c).await,
        "getSong" => browse::song_page(c).await,
        "getMusicDirectory" => browse::directory(c).await,
        "getArtistInfo" | "getArtistInfo2" => Ok(browse::artist_info(name)),
        "getAlbumInfo" | "getAlbumInfo2" => Ok(browse::album_info()),
        "getGenres" => browse::genres(c),
        "getAlbumList" | "getAlbumList2" => browse::album_list(c, name).await,
        "getRandomSongs" => browse::random_songs(c).await,
        "getSongsByGenre" => browse::songs_by_genre(c).await,
        "search2" | "search3" => browse::search(c, name).await,
        "getStarred" | "getStarred2" => state::starred(c, name).await,
        "star" => state::star(c, true).await,
        "unstar" => state::star(c, false).await,
        "setRating" => state::rate(c).await,
        "scrobble" => state::scrobble(c).await,
        "getPlaylists" => state::playlists(c).await,
        "getPlaylist" => state::playlist(c).await,
        "createPlaylist" => state::create_playlist(c).await,
        "updatePlaylist" => state::update_playlist(c).await,
        "deletePlaylist" => state::delete_playlist(c).await,
        "getPlayQueue" => state::play_queue(c).await,
        "savePlayQueue" => state::save_play_queue(c).await,
        "stream" => media::stream(c, media::Kind::Stream).await,
        "download" => media::stream(c, media::Kind::Download).await,
        "getCoverArt" => media::cover(c).await,
        "getLyrics" => media::lyrics(c).await,
        "getLyricsBySongId" => media::lyrics_by_song(c).await,
        "getTopSongs" => browse::top_songs(c).await,
        "getSimilarSongs" | "getSimilarSongs2" => Ok(browse::similar(name)),
        // What this server does not keep, answered empty and valid: apps ask
        // for these at start and some stop at an error.
        "getNowPlaying" => Ok(empty("nowPlaying", "entry")),
        "getBookmarks" => Ok(empty("bookmarks", "bookmark")),
        "getInternetRadioStations" => Ok(empty("internetRadioStations", "internetRadioStation")),
        "getPodcasts" => Ok(empty("podcasts", "channel")),
        "getNewestPodcasts" => Ok(empty("newestPodcasts", "episode")),
        "getShares" => Ok(empty("shares", "share")),
        "getChatMessages" => Ok(empty("chatMessages", "chatMessage")),
        "getVideos" => Ok(empty("videos", "video")),
        other => Err(Failure::new(
            0,
            format!("{other} is not supported by this server"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes at all: parsed without a panic, every value text.
        #[test]
        fn any_query_or_form_parses(q in proptest::collection::vec(any::<u8>(), 0..300), f in proptest::collection::vec(any::<u8>(), 0..300)) {
            let qs = String::from_utf8_lossy(&q).into_owned();
            let p = Params::parse(Some(&qs), &f);
            let _ = (p.get("id"), p.all("id"), p.num("size", 0usize), p.flag("x", false));
            let _ = auth::credentials(|k| p.get(k));
        }
    }

    #[test]
    fn parameters_from_query_and_form() {
        let p = Params::parse(
            Some("u=ana&id=1&id=2&q=a+b%20c%zz"),
            b"songIdToAdd=x&songIdToAdd=y&flag",
        );
        assert_eq!(p.get("u"), Some("ana"));
        assert_eq!(p.all("id"), vec!["1", "2"]);
        assert_eq!(p.get("q"), Some("a b c%zz"));
        assert_eq!(p.all("songIdToAdd"), vec!["x", "y"]);
        assert_eq!(p.get("flag"), Some(""));
        assert_eq!(p.num("size", 10u32), Ok(10));
        assert!(Params::parse(Some("size=x"), b"")
            .num("size", 10u32)
            .is_err());
        assert_eq!(Params::parse(Some("n=%"), b"").get("n"), Some("%"));
        assert_eq!(Params::parse(Some("n=%4"), b"").get("n"), Some("%4"));
        assert_eq!(Params::parse(Some("n=%C3%A9"), b"").get("n"), Some("é"));
    }
}
