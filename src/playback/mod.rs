//! Playback: getting a track's bytes to a player, from this device or a
//! member.
//!
//! - `local`: the pump from the streamer (original, passthrough, cache, a
//!   live encode) to an async reader, one chunk per blocking job;
//! - `serve`: a member's stream request answered from our files;
//! - `fetch`: a remote stream from the best online holder (lowest round
//!   trip first), resumed across connection changes (`resume`), and
//!   checked against the track id when it is the original (`verify`).
//!
//! Must never: hand a player bytes of an original that are not the track
//! (the reader fails at the end instead), park a blocking-pool thread on a
//! paused reader, or serve a track this device does not hold.

mod fetch;
mod local;
mod resume;
mod serve;
pub mod verify;

pub use fetch::by_round_trip;

use crate::index::{Index, IndexError};
use crate::mesh::{self, MeshError};
use crate::model::Track;
use crate::stream::Streamer;
use crate::tasks::{Stopped, Tasks};
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::AsyncRead;

/// Chunk size of audio streams (mesh frames and the local pump).
const CHUNK: usize = 64 << 10;

/// Why a track cannot be played.
#[derive(Debug, thiserror::Error)]
pub enum PlaybackError {
    /// No holder is online, or every holder refused (the reasons joined).
    #[error("{0}")]
    Unavailable(String),
    /// The mesh failed.
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// Our index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The node is stopping.
    #[error(transparent)]
    Stopped(#[from] Stopped),
}

/// An audio stream for a player.
pub struct PlayStream {
    /// The track.
    pub track: Arc<Track>,
    /// Content type (`audio/ogg`, `audio/flac`, …).
    pub mime: String,
    /// Length of the whole stream, when known.
    pub total_len: Option<u64>,
    /// `total_len` is final: byte ranges may be served.
    pub complete: bool,
    /// How it is made: original, passthrough, cache, live, excerpt.
    pub via: String,
    /// "local" or the serving device's id.
    pub source: String,
    /// The bytes.
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
}

/// The playback service of a node.
#[derive(Clone)]
pub struct Playback {
    index: Arc<Index>,
    client: mesh::Client,
    streamer: Arc<Streamer>,
    tasks: Tasks,
}

impl Playback {
    /// Playback from `index`'s files through `streamer`, and from members
    /// through `client`.
    pub fn new(
        index: Arc<Index>,
        client: mesh::Client,
        streamer: Arc<Streamer>,
        tasks: Tasks,
    ) -> Playback {
        Playback {
            index,
            client,
            streamer,
            tasks,
        }
    }
}
