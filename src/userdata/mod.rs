//! The owner's own state, shared by every device: stars, ratings, plays,
//! playlists and the play queue.
//!
//! Each device writes an append-only log of operations ([`op`]), signed
//! with its device key by `mesh`; members exchange what the other lacks by
//! version vector. [`views`] folds the operations of every device into
//! one state that is the same whatever order they arrive in.
//!
//! Must never: touch sled, files or the network itself (the node stores
//! and sends), or let an operation change the state twice.

pub mod hlc;
pub mod op;
pub mod position;
pub mod views;

#[cfg(test)]
mod tests;

pub use hlc::{Clock, Hlc};
pub use op::{
    Body, EntryId, Item, Op, OpId, Play, PlaylistId, Queue, SignedOp, Stamp, VersionVector,
};
pub use position::Position;
pub use views::{Applied, EntryView, PlayStats, PlaylistView, Views};
