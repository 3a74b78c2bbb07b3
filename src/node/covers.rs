//! Cover art: this device's covers from the index, members' covers
//! fetched through the mesh (checked against their id, kept in `covers/`
//! of the data dir), and resized copies cached beside them.

use super::{Node, NodeError};
use crate::artwork;
use crate::mesh::{Request, Response};
use crate::model::{Cover, CoverId};
use std::path::{Path, PathBuf};

/// The MIME type of an image, from its first bytes.
fn sniff(data: &[u8]) -> &'static str {
    match data {
        [0xff, 0xd8, ..] => "image/jpeg",
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [b'G', b'I', b'F', ..] => "image/gif",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "image/webp",
        _ => "application/octet-stream",
    }
}

/// What the local lookup found.
enum Found {
    /// The resized copy asked for, from the cache.
    Resized(Cover),
    /// The original (ours, or a member's kept earlier).
    Original(Cover),
    /// Nothing here: ask the members.
    Missing,
}

/// Where things of the cover cache live.
struct Paths {
    dir: PathBuf,
    /// A member's original, as fetched.
    original: PathBuf,
    /// The resized copy asked for, if a size was.
    resized: Option<PathBuf>,
}

impl Paths {
    fn new(data_dir: &Path, id: &CoverId, size: Option<u32>) -> Paths {
        let dir = data_dir.join("covers");
        Paths {
            original: dir.join(id.to_hex()),
            resized: size.map(|s| dir.join(format!("{}-{s}.jpg", id.to_hex()))),
            dir,
        }
    }
}

/// Write `data` to `path` in `dir` whole or not at all; a cache, so a
/// failure only costs the work again next time.
fn keep(dir: &Path, path: &Path, data: &[u8]) {
    let r = std::fs::create_dir_all(dir)
        .and_then(|()| crate::fsutil::write_atomic(path, data, crate::fsutil::FileMode::Default));
    if let Err(e) = r {
        tracing::warn!("cannot keep a cover in the cache: {e}");
    }
}

impl Node {
    /// A cover image by id, from this device or a member holding a track
    /// with it; with `size`, scaled so its longest side is at most that
    /// many pixels (a JPEG). `None` when nobody reachable has it.
    pub async fn cover(&self, id: CoverId, size: Option<u32>) -> Result<Option<Cover>, NodeError> {
        if let Some(size) = size.filter(|s| !artwork::SIZES.contains(s)) {
            return Err(NodeError::BadRequest(
                artwork::ArtworkError::Size(size).to_string(),
            ));
        }
        let paths = Paths::new(&self.inner.cfg.data_dir, &id, size);
        let ix = self.inner.index.clone();
        let (resized, original) = (paths.resized.clone(), paths.original.clone());
        let found = self
            .inner
            .tasks
            .blocking(move || -> Result<Found, NodeError> {
                if let Some(data) = resized.as_ref().and_then(|p| std::fs::read(p).ok()) {
                    let mime = "image/jpeg".into();
                    return Ok(Found::Resized(Cover { id, mime, data }));
                }
                if let Some(c) = ix.cover(&id)? {
                    return Ok(Found::Original(c));
                }
                Ok(match std::fs::read(&original) {
                    Ok(data) => Found::Original(Cover {
                        id,
                        mime: sniff(&data).into(),
                        data,
                    }),
                    Err(_) => Found::Missing,
                })
            })
            .await??;
        let original = match found {
            Found::Resized(c) => return Ok(Some(c)),
            Found::Original(c) => c,
            Found::Missing => match self.fetch_cover(id, &paths).await? {
                Some(c) => c,
                None => return Ok(None),
            },
        };
        let (Some(size), Some(path)) = (size, paths.resized) else {
            return Ok(Some(original));
        };
        let dir = paths.dir;
        self.inner
            .tasks
            .blocking(move || -> Result<Option<Cover>, NodeError> {
                let (mime, data) = artwork::resize(&original.data, size)
                    .map_err(|e| NodeError::Unavailable(e.to_string()))?;
                keep(&dir, &path, &data);
                Ok(Some(Cover {
                    id,
                    mime: mime.into(),
                    data,
                }))
            })
            .await?
    }

    /// Ask the online members holding a track with this cover, nearest
    /// first; keep what hashes to the id.
    async fn fetch_cover(&self, id: CoverId, paths: &Paths) -> Result<Option<Cover>, NodeError> {
        let online: std::collections::HashSet<_> =
            self.inner.client.connected_members().into_iter().collect();
        let holders: Vec<_> = self
            .inner
            .catalog
            .cover_holders(&id)
            .into_iter()
            .filter(|d| online.contains(d))
            .collect();
        for d in holders {
            match self.inner.client.request(&d, Request::GetCover(id)).await {
                Ok((Response::Cover { data, .. }, _)) if CoverId::of(&data) == id => {
                    let (dir, path, bytes) =
                        (paths.dir.clone(), paths.original.clone(), data.clone());
                    self.inner
                        .tasks
                        .blocking(move || keep(&dir, &path, &bytes))
                        .await?;
                    let mime = sniff(&data).into();
                    return Ok(Some(Cover { id, mime, data }));
                }
                Ok((Response::Cover { .. }, _)) => {
                    tracing::warn!(peer = %d, "a member sent a cover that is not {id}");
                }
                Ok((other, _)) => tracing::info!(peer = %d, "no cover {id}: {other:?}"),
                Err(e) => tracing::info!(peer = %d, "cannot ask for cover {id}: {e}"),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::sniff;

    #[test]
    fn image_types_from_their_first_bytes() {
        assert_eq!(sniff(&[0xff, 0xd8, 0xff, 0xe0]), "image/jpeg");
        assert_eq!(sniff(b"\x89PNG\r\n"), "image/png");
        assert_eq!(sniff(b"RIFF1234WEBPVP8 "), "image/webp");
        assert_eq!(sniff(b"hello"), "application/octet-stream");
    }
}
