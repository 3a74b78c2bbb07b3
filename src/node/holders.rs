//! Where tracks are: this device and the members (names, online), for
//! labelling catalog entries; and the catalog filled from the index at
//! start.

use super::Mine;
use super::{LibraryTrack, NodeError, Source};
use crate::catalog::{AlbumId, Catalog, CatalogTrack};
use crate::index::{self, Index};
use crate::mesh::{self, DeviceId};
use crate::model::Track;
use crate::tasks::Tasks;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// This device and the members, for labelling where tracks are.
pub(super) struct Holders {
    pub(super) me: DeviceId,
    pub(super) name: String,
    pub(super) online: HashSet<DeviceId>,
    pub(super) names: HashMap<String, String>,
}

impl Holders {
    pub(super) fn source(&self, d: DeviceId) -> Source {
        if d == self.me {
            return Source {
                device: d.to_string(),
                name: self.name.clone(),
                local: true,
                online: true,
            };
        }
        let device = d.to_string();
        Source {
            name: self.names.get(&device).cloned().unwrap_or_default(),
            online: self.online.contains(&d),
            local: false,
            device,
        }
    }

    pub(super) fn label(&self, t: CatalogTrack, track: Arc<Track>) -> LibraryTrack {
        LibraryTrack {
            mine: Mine::default(),
            offline: false,
            sources: t.holders.iter().map(|d| self.source(*d)).collect(),
            album: t.album,
            track,
        }
    }
}

/// Fill the catalog from the index: this device's tracks, then the stored
/// catalogs of current members.
pub(super) async fn load_catalog(
    tasks: &Tasks,
    index: &Arc<Index>,
    catalog: &Arc<Catalog>,
    client: &mesh::Client,
) -> Result<(), NodeError> {
    let (ix, cat, client) = (index.clone(), catalog.clone(), client.clone());
    tasks
        .blocking(move || -> Result<(), index::IndexError> {
            let me = client.device_id();
            let seen = ix.first_seen()?;
            cat.remember_first_seen(seen.into_iter().map(|(a, t)| (AlbumId(a), t)));
            let mut fresh = vec![];
            let mut batch = Vec::with_capacity(4096);
            for t in ix.tracks() {
                batch.push(t?);
                if batch.len() == 4096 {
                    let b = std::mem::take(&mut batch);
                    fresh.extend(cat.apply(me, b, &[]));
                }
            }
            fresh.extend(cat.apply(me, batch, &[]));
            for p in ix.remote_peers()? {
                let Some(d) = DeviceId::from_bytes(&p).filter(|d| *d != me && client.is_member(d))
                else {
                    continue;
                };
                fresh.extend(cat.apply(d, ix.remote_tracks(&p)?, &[]));
            }
            ix.set_first_seen(fresh.iter().map(|(a, t)| (a.0, *t)))
        })
        .await??;
    Ok(())
}
