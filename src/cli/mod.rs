//! The `tunemesh` binary's commands, one module per group: [`scan`] (the
//! local index: scan, watch, ls, search, show, status, errors), [`serve`]
//! (the node and the relay), [`remote`] (commands that talk to a running
//! node through its HTTP API), [`web`] (`open` and `user`), [`transcode`],
//! and [`output`] (how things are
//! printed). [`args`] is the command line's shape.
//!
//! Owns: the binary's dependencies (clap, indicatif, qrcode, ureq,
//! tracing-subscriber, directories, anyhow), output formats, exit codes.
//!
//! Must never: hold logic an app embedding the library would need too
//! (that goes into the library, e.g. `node::state`).

pub mod args;
pub mod mine;
pub mod offline;
pub mod output;
pub mod remote;
pub mod scan;
pub mod serve;
pub mod transcode;
pub mod web;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use tunemesh::index::Index;

/// The data dir: `--data-dir` (or `TUNEMESH_DATA_DIR`), else the platform's.
pub fn data_dir(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = given {
        return Ok(d.to_path_buf());
    }
    let dirs = directories::ProjectDirs::from("", "", "tunemesh")
        .context("cannot find a data directory; pass --data-dir")?;
    Ok(dirs.data_dir().to_path_buf())
}

/// The index of the data dir, created if need be.
pub fn open_index(dir: &Path) -> Result<Index> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(Index::open(dir)?)
}
