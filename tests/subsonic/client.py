"""The Subsonic API driven by a real third-party client library
(py-opensonic, `libopensonic` on PyPI), the way an app would: every auth
mechanism, browsing, search, streams, stars, scrobbles, playlists, the
play queue and the error codes. Run by tests/subsonic/main.rs, which
passes the node's address and an account, then checks the files this
writes (ffprobe, blake3) and the node's own state.

Usage: client.py PORT USER PASSWORD APIKEY OUTDIR
Prints one JSON object of findings on its last line; exits 1 on failure.
"""
import json
import sys
import urllib.parse
import urllib.request

import libopensonic
from libopensonic import errors

port, user, password, api_key, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
port = int(port)
base = "http://127.0.0.1"
found = {}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def conn(**kw):
    return libopensonic.Connection(base, port=port, app_name="tunemesh-test", **kw)


# ----- every way in ----------------------------------------------------------
token = conn(username=user, password=password)  # md5(password + salt) token auth
check(token.ping(), "token auth")
legacy = conn(username=user, password=password, legacy_auth=True)  # u + p (enc: hex)
check(legacy.ping(), "password auth")
keyed = conn(api_key=api_key)
check(keyed.ping(), "apiKey auth")
old = conn(username=user, password=password, legacy_auth=True, api_version="1.2.0")
check(old.ping(), "an old client version")
exts = {e.name for e in token.get_open_subsonic_extensions()}
check({"formPost", "apiKeyAuthentication", "transcodeOffset"} <= exts, f"extensions {exts}")

c = token

# ----- errors: the spec's codes -------------------------------------------------


def code_of(f):
    """The library's exception class for the server's error code."""
    try:
        f()
    except errors.SonicError as e:
        return type(e).__name__
    return None


def raw(params):
    q = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{base}:{port}/rest/ping?{q}") as r:
        return json.load(r)["subsonic-response"]


found["wrong_password"] = raw({"u": user, "p": "nope", "v": "1.16.1", "c": "t", "f": "json"})["error"]["code"]
found["both_mechanisms"] = raw({"u": user, "p": password, "t": "x", "s": "y", "v": "1.16.1", "c": "t", "f": "json"})["error"]["code"]
found["bad_api_key"] = raw({"apiKey": "nope", "v": "1.16.1", "c": "t", "f": "json"})["error"]["code"]
found["no_user"] = raw({"p": password, "v": "1.16.1", "c": "t", "f": "json"})["error"]["code"]
check((found["wrong_password"], found["both_mechanisms"], found["bad_api_key"], found["no_user"]) == (40, 43, 44, 10), f"auth codes {found}")
found["album_not_found"] = code_of(lambda: c.get_album("al-" + "0" * 32))
found["missing_id"] = code_of(lambda: c.get_album(None))
found["other_user"] = code_of(lambda: c.get_user("someone-else"))
check(
    (found["album_not_found"], found["missing_id"], found["other_user"]) == ("DataNotFoundError", "ParameterError", "AuthError"),
    f"codes 70, 10, 50: {found}",
)

# ----- browsing ---------------------------------------------------------------
artists = [a for ix in c.get_artists().index for a in ix.artist]
check(len(artists) >= 3, f"artists {artists}")
alpha = next(a for a in artists if a.name == "Alpha Artist")
artist = c.get_artist(alpha.id)
check(artist.album and artist.album[0].name == "First Album", f"artist {artist}")
album = c.get_album(artist.album[0].id)
titles = [s.title for s in album.song]
check(titles[:2] == ["Opening", "Sigur Rós Tribute"] and len(titles) == 3, f"album order {titles}")
check(all(isinstance(s.duration, int) and s.size > 0 for s in album.song), "song fields typed")
song = c.get_song(album.song[1].id)
check(song.title == "Sigur Rós Tribute", "getSong")
for kind in ["random", "newest", "highest", "frequent", "recent", "alphabeticalByName", "alphabeticalByArtist", "starred"]:
    c.get_album_list2(kind, size=50)
    c.get_album_list(kind, size=50)
by_year = c.get_album_list2("byYear", size=50, from_year=1900, to_year=2100)
check(by_year, "byYear")
genres = c.get_genres()
check(genres, "genres")
by_genre = c.get_album_list2("byGenre", size=50, genre=genres[0].value)
check(by_genre, "byGenre")
check(c.get_songs_by_genre(genres[0].value, count=50), "getSongsByGenre")
check(len(c.get_random_songs(size=3)) == 3, "random songs")
# A query without its accents finds the title with them.
hit = c.search3("sigur ros")
check([s.title for s in hit.song] == ["Sigur Rós Tribute"], f"search3 {hit.song}")
check(c.search2("sigur ros").song, "search2")
# An empty query lists everything, paged (clients sync the library so).
everything, offset = [], 0
while True:
    page = c.search3("", artist_count=0, album_count=0, song_count=4, song_offset=offset).song or []
    everything += page
    if len(page) < 4:
        break
    offset += 4
found["songs_by_empty_search"] = len({s.id for s in everything})
check(c.get_music_directory(alpha.id).child, "getMusicDirectory")
check(c.get_artist_info2(alpha.id) is not None, "artist info")
# What apps ask at start: valid, empty where nothing is kept.
for call in [c.get_now_playing, c.get_bookmarks, c.get_internet_radio_stations, c.get_podcasts, c.get_shares]:
    call()
check(c.get_similar_songs2(alpha.id) == [], "no similar songs (nothing is looked up online)")

# ----- streams: a transcode, an original, timeOffset, Range ---------------------
target = album.song[1]


def fetch(params, headers=None, path="stream"):
    url, form = c.get_stream_url(target.id, **params)
    url = url.replace("/stream", "/" + path) if path != "stream" else url
    req = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), headers=headers or {})
    with urllib.request.urlopen(req) as r:
        return r.status, dict(r.headers), r.read()


st, h, opus = fetch({"max_bit_rate": 96})
check(st == 200 and opus[:4] == b"OggS", f"transcode {st} {h}")
open(f"{out}/transcode.opus", "wb").write(opus)
st, h, orig = fetch({"tformat": "raw"})
check(st == 200, "raw")
open(f"{out}/original.bin", "wb").write(orig)
st, h, part = fetch({"tformat": "raw"}, {"Range": "bytes=100-199"})
check(st == 206 and part == orig[100:200], f"range {st} {h}")
# A seek into the 20 s tone (the transcodeOffset extension).
tone = c.search3("twenty seconds").song[0]
url, form = c.get_stream_url(tone.id, max_bit_rate=96, time_offset=5)
with urllib.request.urlopen(urllib.request.Request(url, data=urllib.parse.urlencode(form).encode())) as r:
    open(f"{out}/offset.opus", "wb").write(r.read())
found["tone_duration"] = tone.duration
st, h, dl = fetch({}, path="download")
check(dl == orig, "download is the original")
cover = c.get_cover_art(album.cover_art, size=64) if album.cover_art else None
found["cover"] = album.cover_art is not None
found["song_id"] = target.id

# ----- stars, ratings, scrobbles ------------------------------------------------
check(c.star(sids=[target.id], album_ids=[album.id]), "star")
s2 = c.get_starred2()
check([s.id for s in s2.song] == [target.id] and [a.id for a in s2.album] == [album.id], f"starred2 {s2}")
check(c.set_rating(target.id, 4), "setRating")
check(c.get_song(target.id).user_rating == 4, "rating shown")
check(c.scrobble(target.id, submission=False), "now playing")
# The library takes seconds and sends the spec's milliseconds.
check(c.scrobble(target.id, listen_time=1_700_000_000), "scrobble with a time")
found["play_count"] = c.get_song(target.id).play_count
top = c.get_top_songs("alpha artist")
check([s.id for s in top] == [target.id], f"top songs by plays {top}")
check(c.unstar(album_ids=[album.id]), "unstar")

# ----- playlists ------------------------------------------------------------
ids = [s.id for s in album.song]
check(c.create_playlist(name="Trip", song_ids=ids), "createPlaylist")
pl = next(p for p in c.get_playlists() if p.name == "Trip")
check(pl.song_count == 3 and pl.duration >= 2, f"playlist listing {pl}")
got = c.get_playlist(pl.id)
check([e.id for e in got.entry] == ids, f"playlist {got}")
# Remove two at once (indices against one view), add one.
check(c.update_playlist(pl.id, name="Road trip", song_ids_to_add=[ids[0]], song_indices_to_remove=[0, 2]), "updatePlaylist")
got = c.get_playlist(pl.id)
check(got.name == "Road trip" and [e.id for e in got.entry] == [ids[1], ids[0]], f"after update {[e.id for e in got.entry]}")
# createPlaylist with an id: the playlist becomes exactly these songs.
check(c.create_playlist(playlist_id=pl.id, song_ids=[ids[2], ids[1]]), "createPlaylist with playlistId")
got = c.get_playlist(pl.id)
check([e.id for e in got.entry] == [ids[2], ids[1]], f"after replace {[e.id for e in got.entry]}")
found["playlist_id"] = pl.id

# ----- the play queue -----------------------------------------------------------
check(c.save_play_queue(ids, current=ids[1], position=1234), "savePlayQueue")
q = c.get_play_queue()
check([e.id for e in q.entry] == ids and q.current == ids[1] and q.position == 1234, f"queue {q}")

print(json.dumps(found))
