//! The command line's shape: every command, argument and help text (clap).
//!
//! Owns: names, defaults and help of arguments; `--help` prints exactly
//! these doc comments.
//!
//! Must never: do the commands' work (that is the sibling modules').

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// tunemesh: your music, indexed once, on all your devices.
#[derive(Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Where the index and node state live [default: the platform data dir,
    /// e.g. ~/.local/share/tunemesh]
    #[arg(long, global = true, env = "TUNEMESH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// More log output (repeat for more); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Add folders to the library and index every audio file below them.
    /// Without folders, rescan every library folder. Unchanged files (same
    /// size and mtime) are not read again.
    Scan(ScanArgs),
    /// Keep the index current while the library folders change (Ctrl-C stops).
    Watch(WatchArgs),
    /// List every indexed track; with --all, the merged library of every
    /// device of the mesh (asks the running node).
    Ls(LsArgs),
    /// Search titles, artists and albums (case and accents ignored).
    Search(SearchArgs),
    /// Show one track; ID may be any unique prefix of the track id.
    Show(ShowArgs),
    /// Show the index snapshot root hash and counts.
    Status(StatusArgs),
    /// List the files and folders that could not be indexed.
    Errors(ErrorsArgs),
    /// Run this device's node until Ctrl-C: the mesh, LAN discovery, the
    /// local HTTP API, and (home) indexing and watching its folders.
    Serve(ServeArgs),
    /// Run a relay for your meshes on a public host: members that cannot
    /// reach each other directly connect through it, then try to punch a
    /// direct path. It forwards end-to-end encrypted bytes only and holds
    /// no music; it serves only members of the meshes given.
    Relay(RelayArgs),
    /// Print a one-time ticket that lets another device join this mesh.
    Invite(InviteArgs),
    /// Join the mesh of the device that printed TICKET.
    Join(JoinArgs),
    /// List the devices of the mesh (the signed member list).
    Devices(DevicesArgs),
    /// List the peers this node sees: path (lan, direct, relayed) and RTT.
    Peers(PeersArgs),
    /// Download a track of the merged library (from whichever device holds
    /// it). The file appears only when whole; an original is checked
    /// against its track id.
    Get(GetArgs),
    /// Open the web player of the running node in this desktop's browser,
    /// logged in by a one-time code (good for 2 minutes, once).
    Open(OpenArgs),
    /// Accounts for the web player on other PCs (`serve --web`) and for
    /// Subsonic apps (`/rest/`: password, token or `user apikey`).
    #[command(subcommand)]
    User(UserCommand),
    /// Transcode a file or an indexed track to Ogg Opus, as the home node
    /// streams it (an Opus or MP3 source at or below the bitrate is copied
    /// as it is). Whole-track transcodes go through the transcode cache.
    Transcode(TranscodeArgs),
    /// Star tracks, albums or artists (on every device of the mesh). ID is
    /// any unique id prefix; `album:ID` or `artist:ID` picks the kind.
    Star(ItemsArgs),
    /// Remove stars.
    Unstar(ItemsArgs),
    /// List what is starred, latest first.
    Starred(JsonArgs),
    /// Rate a track, album or artist 1-5 (0 clears the rating).
    Rate(RateArgs),
    /// Play counts: the most played tracks and the latest plays of every
    /// device (offline plays count with the time they happened).
    Plays(PlaysArgs),
    /// Playlists, shared by every device (edits made apart are merged).
    #[command(subcommand)]
    Playlist(PlaylistCommand),
    /// The offline mirror of this device: pinned music kept here,
    /// compressed (Opus 96 kb/s by default), within a byte budget, playable
    /// when no other device is reachable.
    #[command(subcommand)]
    Offline(OfflineCommand),
}

/// `tunemesh offline …`.
#[derive(Subcommand)]
pub enum OfflineCommand {
    /// Pin KIND [ID]: track, album, artist or playlist with an ID (any
    /// unique prefix; a playlist's name), or `starred`, `library`. Pins
    /// follow their source: tracks added to a pinned album or playlist are
    /// fetched, removed ones dropped.
    Add(OfflineAddArgs),
    /// Unpin KIND [ID]; its copies go unless another pin needs them.
    Rm(OfflinePinArgs),
    /// List the pins, oldest first (the order the budget is filled in).
    Ls(JsonArgs),
    /// Set the space pinned copies may take (e.g. 4GiB, 500MB).
    Budget(OfflineBudgetArgs),
    /// Which paths downloads may use: lan, direct (the default: no relay)
    /// or any.
    Policy(OfflinePolicyArgs),
    /// Where the mirror stands: space, tracks done, queued, failed (with
    /// reasons), downloads in progress, why it waits.
    Status(JsonArgs),
}

/// What a pin names.
#[derive(Args)]
pub struct OfflinePinArgs {
    /// track, album, artist, playlist, starred or library.
    pub kind: String,
    /// The id (unique prefix) or playlist name; none for starred, library.
    pub id: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `tunemesh offline add`.
#[derive(Args)]
pub struct OfflineAddArgs {
    #[command(flatten)]
    /// What to pin.
    pub pin: OfflinePinArgs,
    /// Opus kb/s of the copies, or `original` for the files as they are.
    #[arg(long, default_value = "96")]
    pub bitrate: String,
}

/// `tunemesh offline budget`.
#[derive(Args)]
pub struct OfflineBudgetArgs {
    /// A size: 4GiB, 500MB, 2G, or bytes.
    pub size: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `tunemesh offline policy`.
#[derive(Args)]
pub struct OfflinePolicyArgs {
    /// lan, direct or any.
    pub policy: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Just `--json`.
#[derive(Args)]
pub struct JsonArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tunemesh star` and `unstar`.
#[derive(Args)]
pub struct ItemsArgs {
    /// Track, album or artist ids (unique prefixes will do).
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tunemesh rate`.
#[derive(Args)]
pub struct RateArgs {
    /// A track, album or artist id (a unique prefix will do).
    pub id: String,
    /// 1 to 5; 0 clears the rating.
    #[arg(value_parser = clap::value_parser!(u8).range(0..=5))]
    pub rating: u8,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tunemesh plays`.
#[derive(Args)]
pub struct PlaysArgs {
    /// How many of each list.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<PlaysCommand>,
}

/// `tunemesh plays …`.
#[derive(Subcommand)]
pub enum PlaysCommand {
    /// Record a play (for scripts: a scrobble from another player).
    Add(PlayAddArgs),
}

/// Arguments of `tunemesh plays add`.
#[derive(Args)]
pub struct PlayAddArgs {
    /// The track id (a unique prefix will do).
    pub id: String,
    /// When it started, RFC 3339 (`2026-12-04T09:30:00Z`,
    /// `2026-12-04T10:30:00+01:00`) [default: now].
    #[arg(long)]
    pub at: Option<String>,
    /// How long it played, in ms [default: the whole track].
    #[arg(long)]
    pub ms: Option<u32>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `tunemesh playlist …`. NAME is a playlist's name, or its id when two
/// share a name; positions count from 1.
#[derive(Subcommand)]
pub enum PlaylistCommand {
    /// List the playlists.
    Ls(JsonArgs),
    /// Show a playlist's entries in order.
    Show(PlaylistArgs),
    /// Make a playlist, optionally with tracks.
    Create(PlaylistTracksArgs),
    /// Add tracks at the end (or before position --at).
    Add(PlaylistAddArgs),
    /// Remove the entries at these positions (all as the list is now).
    Rm(PlaylistRmArgs),
    /// Move the entry at position FROM to position TO.
    Mv(PlaylistMvArgs),
    /// Rename a playlist.
    Rename(PlaylistRenameArgs),
    /// Delete a playlist (on every device).
    Delete(PlaylistArgs),
}

/// A playlist.
#[derive(Args)]
pub struct PlaylistArgs {
    /// Its name (or id).
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A playlist and tracks.
#[derive(Args)]
pub struct PlaylistTracksArgs {
    /// Its name.
    pub name: String,
    /// Track ids (unique prefixes will do).
    pub ids: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tunemesh playlist add`.
#[derive(Args)]
pub struct PlaylistAddArgs {
    /// Its name (or id).
    pub name: String,
    /// Track ids (unique prefixes will do).
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Insert before this position instead of at the end.
    #[arg(long)]
    pub at: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tunemesh playlist rm`.
#[derive(Args)]
pub struct PlaylistRmArgs {
    /// Its name (or id).
    pub name: String,
    /// Positions, from 1.
    #[arg(required = true)]
    pub positions: Vec<usize>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tunemesh playlist mv`.
#[derive(Args)]
pub struct PlaylistMvArgs {
    /// Its name (or id).
    pub name: String,
    /// The entry's position now.
    pub from: usize,
    /// Its new position.
    pub to: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tunemesh playlist rename`.
#[derive(Args)]
pub struct PlaylistRenameArgs {
    /// Its name (or id).
    pub name: String,
    /// The new name.
    pub new_name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tunemesh scan`.
#[derive(Args)]
pub struct ScanArgs {
    /// Folders to add to the library and scan [default: rescan all library folders].
    pub dirs: Vec<PathBuf>,
    /// Print one JSON object with the summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
    /// Re-read every file, changed or not.
    #[arg(long)]
    pub force: bool,
    /// Reader threads [default: number of CPUs].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Longest time one file may take, in seconds.
    #[arg(long, default_value_t = 30)]
    pub file_timeout: u64,
    /// After the scan, keep watching the library folders for changes.
    #[arg(long)]
    pub watch: bool,
}

/// Arguments of `tunemesh watch`.
#[derive(Args)]
pub struct WatchArgs {
    /// Folders to add before watching; default: the library folders.
    pub dirs: Vec<PathBuf>,
    /// Quiet period before a burst of changes is rescanned, in ms.
    #[arg(long, default_value_t = 500)]
    pub debounce_ms: u64,
    /// Print a JSON summary line after each rescan.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tunemesh ls`.
#[derive(Args)]
pub struct LsArgs {
    #[arg(long)]
    pub json: bool,
    /// The merged library of all devices (needs `tunemesh serve`).
    #[arg(long)]
    pub all: bool,
}

/// Arguments of `tunemesh search`.
#[derive(Args)]
pub struct SearchArgs {
    /// Words to find (all must match, in any of title, artist, album).
    #[arg(required = true)]
    pub query: Vec<String>,
    #[arg(long)]
    pub json: bool,
    /// Most results to show.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

/// Arguments of `tunemesh show`.
#[derive(Args)]
pub struct ShowArgs {
    /// Track id, or any unique prefix of it.
    pub id: String,
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tunemesh status`.
#[derive(Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
    /// Also check every cross-reference of the index; exit 1 if broken.
    #[arg(long)]
    pub verify: bool,
}

/// Arguments of `tunemesh errors`.
#[derive(Args)]
pub struct ErrorsArgs {
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tunemesh serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Library folders to add (home); the ones added before are kept.
    pub dirs: Vec<PathBuf>,
    /// home: indexes and serves its folders (default when folders are
    /// given, or already known); phone: consumes the mesh's library.
    #[arg(long, value_parser = ["home", "phone"])]
    pub role: Option<String>,
    /// Mesh listen address, repeatable [default: all interfaces, random
    /// TCP and QUIC ports].
    #[arg(long)]
    pub listen: Vec<String>,
    /// Address of the local HTTP API (loopback only; port 0 for any).
    #[arg(long, default_value = "127.0.0.1:7380", env = "TUNEMESH_API")]
    pub api: std::net::SocketAddr,
    /// Do not discover or announce on the LAN (mDNS).
    #[arg(long)]
    pub no_mdns: bool,
    /// Name shown to the other devices, kept for later runs [default:
    /// the name given before, else the host name].
    #[arg(long)]
    pub name: Option<String>,
    /// Size limit of the transcode cache, in MiB.
    #[arg(long, default_value_t = tunemesh::cache::DEFAULT_LIMIT >> 20)]
    pub cache_mib: u64,
    /// A relay to be reachable through when away from home, repeatable:
    /// its address as `tunemesh relay` prints it (ending in
    /// /p2p/<relay id>). Kept for later runs; `--relay none` forgets.
    #[arg(long)]
    pub relay: Vec<String>,
    /// Do not ask the router for a port mapping (UPnP; home only).
    #[arg(long)]
    pub no_upnp: bool,
    /// Also serve the web player on this address (e.g. 0.0.0.0:8080), for
    /// browsers on other PCs; they log in with an account (`tunemesh user
    /// add`). Refused while no account exists.
    #[arg(long, env = "TUNEMESH_WEB")]
    pub web: Option<std::net::SocketAddr>,
    /// A host name browsers use for the `--web` address (e.g. music.lan),
    /// repeatable; IP addresses and this host's name always work.
    #[arg(long)]
    pub web_host: Vec<String>,
}

/// Arguments of `tunemesh relay`.
#[derive(Args)]
pub struct RelayArgs {
    /// Listen address, repeatable [default: /ip4/0.0.0.0/udp/4001/quic-v1
    /// and /ip4/0.0.0.0/tcp/4001].
    #[arg(long)]
    pub listen: Vec<String>,
    /// The relay's public address, repeatable (e.g.
    /// /ip4/203.0.113.7/udp/4001/quic-v1): reservations carry it, so
    /// give it whenever the host is behind a NAT or has several addresses.
    #[arg(long)]
    pub external: Vec<String>,
    /// Id of a mesh to serve, repeatable (`tunemesh status` shows it).
    #[arg(long, required = true)]
    pub mesh: Vec<String>,
    /// Longest life of one relayed connection, in hours.
    #[arg(long, default_value_t = 12)]
    pub max_circuit_hours: u64,
}

/// Arguments of `tunemesh invite`.
#[derive(Args)]
pub struct InviteArgs {
    /// Minutes until the ticket expires.
    #[arg(long, default_value_t = 10)]
    pub ttl_min: u64,
    /// Print only the ticket (no QR code, no help text).
    #[arg(long)]
    pub quiet: bool,
}

/// Arguments of `tunemesh join`.
#[derive(Args)]
pub struct JoinArgs {
    pub ticket: String,
}

/// Arguments of `tunemesh devices`.
#[derive(Args)]
pub struct DevicesArgs {
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<DevicesCommand>,
}

/// Arguments of `tunemesh peers`.
#[derive(Args)]
pub struct PeersArgs {
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tunemesh get`.
#[derive(Args)]
pub struct GetArgs {
    /// Track id, or any unique prefix of it.
    pub id: String,
    /// Output file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Opus bitrate in kb/s.
    #[arg(long, default_value_t = 128, conflicts_with = "original")]
    pub bitrate: u32,
    /// The original file, byte for byte.
    #[arg(long)]
    pub original: bool,
}

/// Arguments of `tunemesh transcode`.
#[derive(Args)]
pub struct TranscodeArgs {
    /// A file path, or a track id (any unique prefix) from the index.
    pub input: String,
    /// Output file (written whole or not at all); `-` for stdout.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Opus bitrate in kb/s, VBR (64, 96, 128, 192 or any value in
    /// 16..=256), or `original` for the file as it is.
    #[arg(long, default_value = "128")]
    pub bitrate: String,
    /// Start this many seconds into the track (a fresh stream from there).
    #[arg(long, default_value_t = 0.0)]
    pub start: f64,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Always transcode, even an Opus or MP3 source that already fits.
    #[arg(long)]
    pub no_passthrough: bool,
    /// Neither read nor fill the transcode cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Size limit of the transcode cache, in MiB.
    #[arg(long, default_value_t = tunemesh::cache::DEFAULT_LIMIT >> 20)]
    pub cache_mib: u64,
}

#[derive(Subcommand)]
pub enum DevicesCommand {
    /// Revoke a device: every member stops talking to it.
    Remove {
        /// Device id (as `tunemesh devices` shows it).
        id: String,
    },
}

/// Arguments of `tunemesh open`.
#[derive(Args)]
pub struct OpenArgs {
    /// Only print the login URL; do not start a browser.
    #[arg(long)]
    pub print: bool,
}

/// `tunemesh user …`.
#[derive(Subcommand)]
pub enum UserCommand {
    /// Make an account (the password is asked for, or read from stdin).
    Add(UserPasswordArgs),
    /// List the accounts.
    Ls(UserLsArgs),
    /// Remove an account (its browsers are logged out).
    Rm(UserNameArgs),
    /// Give an account a new password.
    Passwd(UserPasswordArgs),
    /// Print a new API key for an account, for Subsonic apps that log in
    /// with one (`apiKey`); it replaces the account's old key.
    Apikey(UserNameArgs),
}

/// An account's name and where its password comes from.
#[derive(Args)]
pub struct UserPasswordArgs {
    /// The account's name.
    pub name: String,
    /// Read the password from the first line of stdin instead of asking.
    #[arg(long)]
    pub password_stdin: bool,
}

/// An account's name.
#[derive(Args)]
pub struct UserNameArgs {
    /// The account's name.
    pub name: String,
}

/// Arguments of `tunemesh user ls`.
#[derive(Args)]
pub struct UserLsArgs {
    /// One JSON array on stdout.
    #[arg(long)]
    pub json: bool,
}
