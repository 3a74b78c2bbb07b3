//! tunemesh: a peer-to-peer personal music mesh.
//!
//! This crate is the engine; the `tunemesh` binary is a thin CLI over it.
//! Data flows one way: [`library`] (scan folders, read tags, hash content)
//! → [`index`] (durable, content-addressed store and search). See
//! ARCHITECTURE.md for the map and the invariants.

#![warn(missing_docs)]

pub mod accounts;
pub mod artwork;
pub mod blob;
pub mod cache;
pub mod catalog;
pub mod fsutil;
pub mod http;
pub mod index;
pub mod library;
pub mod limits;
pub mod mesh;
pub mod mirror;
pub mod model;
pub mod node;
pub mod playback;
pub mod stream;
pub mod sync;
pub mod tasks;
pub mod transcode;
pub mod userdata;

/// Protobuf types generated from `proto/`. They stay at the edges (storage
/// and wire encodings); the rest of the crate speaks [`model`].
pub(crate) mod proto {
    #![allow(clippy::all, clippy::pedantic)]
    include!(concat!(env!("OUT_DIR"), "/tunemesh.v1.rs"));
}
