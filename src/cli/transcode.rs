//! `tunemesh transcode`: a file or an indexed track to Ogg Opus, as the
//! home node streams it, through the transcode cache.
//!
//! Owns: writing the output whole or not at all (or to stdout).
//!
//! Must never: leave a partial output file behind.

use super::args::TranscodeArgs;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;
use tunemesh::cache::Cache;
use tunemesh::catalog::Prefix;
use tunemesh::fsutil::{self, FileMode};
use tunemesh::model::Track;
use tunemesh::stream::Bitrate;
use tunemesh::stream::{Profile, Stream, StreamRequest, Streamer, Via};

/// `tunemesh transcode`.
pub fn transcode(dir: &Path, a: TranscodeArgs) -> Result<()> {
    let profile = Profile::from(
        a.bitrate
            .parse::<Bitrate>()
            .with_context(|| format!("--bitrate {}", a.bitrate))?,
    );
    let track = find_track(dir, &a.input)?;
    let cache = if a.no_cache {
        None
    } else {
        Some(Cache::open(&dir.join("cache"), a.cache_mib << 20)?)
    };
    let streamer = Streamer::new(cache);
    let mut req = StreamRequest::new(profile);
    req.start = a.start;
    req.duration = a.duration;
    req.passthrough = !a.no_passthrough;
    let mut stream = streamer.open(&track, &req)?;
    tracing::info!(via = ?stream.via, mime = stream.mime, "transcode");
    write_output(&mut stream, &a.output)?;
    if let Some(c) = streamer.cache() {
        c.wait_idle();
    }
    if a.output != Path::new("-") {
        eprintln!(
            "{}: {} ({})",
            a.output.display(),
            match stream.via {
                Via::Original => "original file",
                Via::Passthrough => "source copied as it is (already fits the bitrate)",
                Via::CacheHit => "from the transcode cache",
                Via::Encode => "transcoded, now cached",
                Via::Live => "transcoded",
            },
            stream.mime
        );
    }
    Ok(())
}

/// A track from a file path (read as a scan would), or from the index by id
/// prefix.
fn find_track(dir: &Path, input: &str) -> Result<Track> {
    let path = Path::new(input);
    if path.exists() {
        return tunemesh::library::read_track(path).map_err(|e| anyhow::anyhow!(e));
    }
    let prefix: Prefix = input
        .parse()
        .with_context(|| format!("{input}: no such file"))?;
    let index = super::open_index(dir)?;
    let id = prefix.pick(index.ids_with(&prefix)?.into_iter())?;
    index
        .track(&id)?
        .with_context(|| format!("track {id} vanished from the index"))
}

/// Copy a stream to `-` (stdout) or to a file that appears only when whole.
fn write_output(stream: &mut Stream, output: &Path) -> Result<()> {
    if output == Path::new("-") {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        std::io::copy(stream, &mut out).context("transcode failed")?;
        out.flush()?;
        return Ok(());
    }
    fsutil::write_atomic_with(output, FileMode::Default, |f| -> Result<()> {
        std::io::copy(stream, f).context("transcode failed")?;
        Ok(())
    })
    .with_context(|| format!("cannot write {}", output.display()))
}
