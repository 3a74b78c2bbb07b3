//! The serving side of a library sync: answers a member's `GetNode` and
//! `GetRecords` from our current snapshot and stored records.
//!
//! Blocking (reads sled): callers run it through `Tasks::blocking`.

use super::diff::MAX_ENTRIES;
use crate::index::snapshot::{self, LEAF_MAX};
use crate::index::{Index, Snapshot};
use crate::mesh::{NodeReply, Request, Response};
use crate::model::Hash32;

/// Largest reply a node builds (under the wire limit).
const REPLY_BUDGET: usize = 6 << 20;

/// Answer one sync request against `snap`, the snapshot we announced.
pub fn answer(ix: &Index, snap: &Snapshot, req: Request) -> Response {
    match req {
        Request::GetNode {
            root,
            path,
            max_entries,
            with_records,
        } => {
            if root != snap.root {
                return Response::Error(format!("stale root; the root is now {}", snap.root));
            }
            let run = snapshot::subtree(&snap.entries, &path);
            let limit = (max_entries as usize).clamp(LEAF_MAX, 4 * MAX_ENTRIES as usize);
            if run.len() > limit {
                let mut c = [Hash32([0; 32]); 16];
                for (h, part) in c.iter_mut().zip(snapshot::children(run, path.len())) {
                    *h = snapshot::node_hash(part, path.len() + 1);
                }
                return Response::Node(NodeReply {
                    root,
                    children: Some(Box::new(c)),
                    entries: vec![],
                    records: vec![],
                });
            }
            let mut records = vec![];
            if with_records {
                let mut budget = REPLY_BUDGET;
                for (id, _) in run {
                    match ix.record_bytes(id) {
                        Ok(Some(r)) if r.len() <= budget => {
                            budget -= r.len();
                            records.push(r);
                        }
                        // Over budget or gone: the peer asks by id.
                        _ => {
                            records.clear();
                            break;
                        }
                    }
                }
            }
            Response::Node(NodeReply {
                root,
                children: None,
                entries: run.to_vec(),
                records,
            })
        }
        Request::GetCover(_)
        | Request::GetUserOps(_)
        | Request::PushUserOps(_)
        | Request::GetBlobRecords(_) => Response::Error("not a sync request".into()),
        Request::GetRecords(ids) => {
            let mut out = vec![];
            let mut budget = REPLY_BUDGET;
            for id in ids {
                match ix.record_bytes(&id) {
                    Ok(Some(r)) if r.len() <= budget => {
                        budget -= r.len();
                        out.push(r);
                    }
                    Ok(Some(_)) => break,
                    Ok(None) => {}
                    Err(e) => return Response::Error(e.to_string()),
                }
            }
            Response::Records(out)
        }
    }
}
