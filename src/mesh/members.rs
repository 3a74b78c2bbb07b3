//! The signed member list of a mesh.
//!
//! A mesh is named by its founder's device id. Its member list is a set of
//! operations (add a device, revoke a device), each signed by the member who
//! made it. A device is a member if it is the founder or some add names it,
//! and no revoke names it. Operations are only ever added, so two members
//! merge their lists by union in any order and end up equal; revocation is
//! final for a device id (a revoked device must make a new identity to be
//! invited again).
//!
//! An operation is accepted only if its signature verifies, it names this
//! mesh, and its issuer is a member in the receiver's view when it arrives.
//! A revoked device still holds its key, so operations it signs after its
//! revocation reached a member are refused by that member.
//!
//! Must never accept an operation it has not verified, and never store one
//! that names another mesh.

use crate::proto;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const SIGNING_CONTEXT: &[u8] = b"tunemesh.member-op.v1";

/// A member as the list describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Device {
    /// Its device id.
    pub id: String,
    /// Its name when added (or when it last listed its addresses).
    pub name: String,
    /// "home" or "phone".
    pub role: String,
    /// Where it said it can be reached.
    pub addrs: Vec<String>,
    /// The member that added it.
    pub added_by: String,
    /// When.
    pub added_at_unix_ms: i64,
}

/// What the member list fails with.
#[derive(Debug, thiserror::Error)]
pub enum MembersError {
    /// The saved list cannot be read or does not verify.
    #[error("cannot read the member list {path}: {reason}")]
    Load {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The list cannot be saved.
    #[error("cannot save the member list: {0}")]
    Save(std::io::Error),
    /// An operation this device may not make.
    #[error("{0}")]
    Rejected(String),
}

/// What an operation does to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Add it (or list its new name and addresses).
    Add,
    /// Revoke it, for good. Its user operations up to `user_ops_kept` (by
    /// sequence number: what the revoker held) stay valid everywhere; later
    /// ones are refused.
    Revoke {
        /// The revoked device's operations the revoker held.
        user_ops_kept: u64,
    },
}

#[derive(Clone)]
struct Op {
    wire: proto::MemberOp,
    body: proto::MemberOpBody,
    issuer: PeerId,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn peer(bytes: &[u8]) -> Option<PeerId> {
    PeerId::from_bytes(bytes).ok()
}

/// Check an operation's signature and decode it (no membership check).
fn verify(op: &proto::MemberOp) -> Result<Op, String> {
    let key = PublicKey::try_decode_protobuf(&op.signer_key)
        .map_err(|e| format!("bad signer key: {e}"))?;
    let mut msg = SIGNING_CONTEXT.to_vec();
    msg.extend_from_slice(&op.body);
    if !key.verify(&msg, &op.signature) {
        return Err("bad signature".into());
    }
    let body = proto::MemberOpBody::decode(op.body.as_slice())
        .map_err(|e| format!("malformed operation: {e}"))?;
    peer(&body.device).ok_or("operation names no valid device")?;
    Ok(Op {
        wire: op.clone(),
        body,
        issuer: key.to_peer_id(),
    })
}

/// The member list of one mesh.
#[derive(Clone)]
pub struct Members {
    mesh: PeerId,
    /// Accepted operations by signature (unique per operation).
    ops: BTreeMap<Vec<u8>, Op>,
}

impl Members {
    /// A new mesh founded by `key`'s device, with the founder as sole member.
    pub fn found(key: &Keypair, name: &str, role: &str, addrs: Vec<String>) -> Members {
        let mesh = key.public().to_peer_id();
        let mut m = Members {
            mesh,
            ops: BTreeMap::new(),
        };
        m.issue(key, mesh, Change::Add, name, role, addrs)
            .expect("the founder is a member");
        m
    }

    pub fn mesh(&self) -> PeerId {
        self.mesh
    }

    fn revoked(&self) -> BTreeSet<PeerId> {
        self.ops
            .values()
            .filter(|o| o.body.revoke)
            .filter_map(|o| peer(&o.body.device))
            .collect()
    }

    /// May user operation number `seq` of device `p` be accepted? Yes from
    /// a member; from a revoked device only those its revokers held (the
    /// highest number any revocation kept), so every member keeps the same
    /// ones whatever it had received before the revocation.
    pub fn accepts_user_op(&self, p: &PeerId, seq: u64) -> bool {
        self.user_ops_kept(p).is_none_or(|kept| seq <= kept)
    }

    /// How many user operations of `p` are kept: `None` (all) for a
    /// member, what its revocations keep for a revoked device, 0 for a
    /// device that never was a member.
    pub fn user_ops_kept(&self, p: &PeerId) -> Option<u64> {
        if self.is_member(p) {
            return None;
        }
        Some(
            self.ops
                .values()
                .filter(|o| o.body.revoke && peer(&o.body.device) == Some(*p))
                .map(|o| o.body.user_ops_kept)
                .max()
                .unwrap_or(0),
        )
    }

    pub fn is_member(&self, p: &PeerId) -> bool {
        let added = *p == self.mesh
            || self
                .ops
                .values()
                .any(|o| !o.body.revoke && peer(&o.body.device) == Some(*p));
        added && !self.revoked().contains(p)
    }

    /// Current members, each with its latest add (name, role, addresses).
    pub fn devices(&self) -> Vec<Device> {
        let revoked = self.revoked();
        let mut latest: BTreeMap<PeerId, &Op> = BTreeMap::new();
        for o in self.ops.values().filter(|o| !o.body.revoke) {
            let Some(d) = peer(&o.body.device) else {
                continue;
            };
            if revoked.contains(&d) {
                continue;
            }
            let e = latest.entry(d).or_insert(o);
            if o.body.at_unix_ms > e.body.at_unix_ms {
                *e = o;
            }
        }
        latest
            .into_iter()
            .map(|(d, o)| Device {
                id: d.to_string(),
                name: o.body.name.clone(),
                role: o.body.role.clone(),
                addrs: o
                    .body
                    .addrs
                    .iter()
                    .filter_map(|a| libp2p::Multiaddr::try_from(a.clone()).ok())
                    .map(|a| a.to_string())
                    .collect(),
                added_by: o.issuer.to_string(),
                added_at_unix_ms: o.body.at_unix_ms,
            })
            .collect()
    }

    pub fn member_ids(&self) -> Vec<PeerId> {
        self.devices()
            .iter()
            .filter_map(|d| d.id.parse().ok())
            .collect()
    }

    /// Sign and add an operation as `key`'s device (which must be a member).
    pub fn issue(
        &mut self,
        key: &Keypair,
        device: PeerId,
        change: Change,
        name: &str,
        role: &str,
        addrs: Vec<String>,
    ) -> Result<(), MembersError> {
        let issuer = key.public().to_peer_id();
        if !self.is_member(&issuer) {
            return Err(MembersError::Rejected(
                "this device is no longer a member of its mesh".into(),
            ));
        }
        let body = proto::MemberOpBody {
            mesh: self.mesh.to_bytes(),
            device: device.to_bytes(),
            revoke: matches!(change, Change::Revoke { .. }),
            user_ops_kept: match change {
                Change::Revoke { user_ops_kept } => user_ops_kept,
                Change::Add => 0,
            },
            name: name.into(),
            role: role.into(),
            addrs: addrs
                .iter()
                .filter_map(|a| a.parse::<libp2p::Multiaddr>().ok())
                .map(|a| a.to_vec())
                .collect(),
            at_unix_ms: now_ms(),
        }
        .encode_to_vec();
        let mut msg = SIGNING_CONTEXT.to_vec();
        msg.extend_from_slice(&body);
        let signature = key
            .sign(&msg)
            .map_err(|e| MembersError::Rejected(format!("cannot sign: {e}")))?;
        let wire = proto::MemberOp {
            body,
            signer_key: key.public().encode_protobuf(),
            signature,
        };
        let op = verify(&wire).map_err(MembersError::Rejected)?;
        self.ops.insert(wire.signature.clone(), op);
        Ok(())
    }

    /// Merge operations received from a member. Returns how many were new;
    /// operations that fail verification or come from non-members are
    /// skipped with a logged reason.
    pub fn merge(&mut self, list: &proto::MemberList) -> usize {
        let mut pending: Vec<Op> = Vec::new();
        for w in &list.ops {
            if self.ops.contains_key(&w.signature) {
                continue;
            }
            match verify(w) {
                Ok(op) if op.body.mesh == self.mesh.to_bytes() => pending.push(op),
                Ok(_) => tracing::warn!("member operation for another mesh ignored"),
                Err(e) => tracing::warn!("member operation refused: {e}"),
            }
        }
        // Accept in waves: an add may make the issuer of another op a member.
        let mut added = 0;
        loop {
            let before = pending.len();
            pending.retain(|op| {
                if self.is_member(&op.issuer) {
                    self.ops.insert(op.wire.signature.clone(), op.clone());
                    added += 1;
                    false
                } else {
                    true
                }
            });
            if pending.len() == before {
                break;
            }
        }
        for op in pending {
            tracing::warn!("member operation from non-member {} refused", op.issuer);
        }
        added
    }

    /// Adopt `list` as the list of mesh `mesh` (joining it). Every operation
    /// must verify and chain back to the founder.
    pub fn adopt(mesh: PeerId, list: &proto::MemberList) -> Members {
        let mut m = Members {
            mesh,
            ops: BTreeMap::new(),
        };
        m.merge(list);
        m
    }

    pub fn to_proto(&self) -> proto::MemberList {
        proto::MemberList {
            ops: self.ops.values().map(|o| o.wire.clone()).collect(),
        }
    }

    /// Load the list saved at `path`, if any.
    pub fn load(path: &Path) -> Result<Option<Members>, MembersError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(MembersError::Load {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        let err = |reason: String| MembersError::Load {
            path: path.display().to_string(),
            reason,
        };
        let saved =
            proto::SavedMembers::decode(bytes.as_slice()).map_err(|e| err(e.to_string()))?;
        let mesh = peer(&saved.mesh).ok_or_else(|| err("bad mesh id".into()))?;
        let list = saved.list.unwrap_or_default();
        let m = Members::adopt(mesh, &list);
        if m.ops.len() != list.ops.len() {
            return Err(err(format!(
                "{} of its {} operations do not verify",
                list.ops.len() - m.ops.len(),
                list.ops.len()
            )));
        }
        Ok(Some(m))
    }

    /// Save atomically (a crash leaves the old list or the new one).
    pub fn save(&self, path: &Path) -> Result<(), MembersError> {
        let saved = proto::SavedMembers {
            mesh: self.mesh.to_bytes(),
            list: Some(self.to_proto()),
        };
        let bytes = saved.encode_to_vec();
        crate::fsutil::write_atomic(path, &bytes, crate::fsutil::FileMode::OwnerOnly)
            .map_err(MembersError::Save)
    }
}

/// Saves member lists in the order asked, on blocking threads owned by a
/// task tracker, so that no fsync runs on a runtime thread and a later list
/// never loses to an earlier one. Each save hands back a [`Durable`] to
/// await before the change it carries is acknowledged.
#[derive(Clone)]
pub(super) struct Persister(tokio::sync::mpsc::UnboundedSender<SaveJob>);

struct SaveJob {
    list: Members,
    path: std::path::PathBuf,
    done: tokio::sync::oneshot::Sender<Result<(), MembersError>>,
}

/// Resolves once a saved list is on disk (or failed to get there).
pub(super) struct Durable(tokio::sync::oneshot::Receiver<Result<(), MembersError>>);

impl Durable {
    /// Wait for the save.
    pub(super) async fn wait(self) -> Result<(), MembersError> {
        self.0.await.unwrap_or_else(|_| {
            Err(MembersError::Save(std::io::Error::other(
                "the member list saver stopped",
            )))
        })
    }
}

impl Persister {
    /// Start the saver task on `tasks`; at `cancel` it saves what is
    /// queued, then stops.
    pub(super) fn start(
        tasks: &tokio_util::task::TaskTracker,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Persister {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<SaveJob>();
        let t = tasks.clone();
        tasks.spawn(async move {
            loop {
                let job = tokio::select! {
                    biased;
                    job = rx.recv() => job,
                    _ = cancel.cancelled() => {
                        rx.close();
                        rx.recv().await
                    }
                };
                let Some(SaveJob { list, path, done }) = job else {
                    break;
                };
                let r = t
                    .spawn_blocking(move || list.save(&path))
                    .await
                    .unwrap_or_else(|e| Err(MembersError::Save(std::io::Error::other(e))));
                let _ = done.send(r);
            }
        });
        Persister(tx)
    }

    /// Queue `list` to be saved at `path`.
    pub(super) fn save(&self, list: Members, path: std::path::PathBuf) -> Durable {
        let (done, rx) = tokio::sync::oneshot::channel();
        let _ = self.0.send(SaveJob { list, path, done });
        Durable(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_revoke_merge() {
        let home = Keypair::generate_ed25519();
        let phone = Keypair::generate_ed25519();
        let laptop = Keypair::generate_ed25519();
        let (hp, pp, lp) = (
            home.public().to_peer_id(),
            phone.public().to_peer_id(),
            laptop.public().to_peer_id(),
        );
        let mut a = Members::found(&home, "home", "home", vec![]);
        assert!(a.is_member(&hp) && !a.is_member(&pp));
        a.issue(&home, pp, Change::Add, "phone", "phone", vec![])
            .unwrap();
        // The phone adopts the list, then adds the laptop itself.
        let mut b = Members::adopt(hp, &a.to_proto());
        assert!(b.is_member(&pp));
        b.issue(&phone, lp, Change::Add, "laptop", "phone", vec![])
            .unwrap();
        assert_eq!(a.merge(&b.to_proto()), 1);
        assert!(a.is_member(&lp));
        // Concurrent changes merge in any order.
        a.issue(
            &home,
            lp,
            Change::Revoke { user_ops_kept: 0 },
            "",
            "",
            vec![],
        )
        .unwrap();
        let c = Keypair::generate_ed25519().public().to_peer_id();
        b.issue(&phone, c, Change::Add, "c", "phone", vec![])
            .unwrap();
        let mut a2 = a.clone();
        a2.merge(&b.to_proto());
        b.merge(&a.to_proto());
        assert_eq!(a2.devices(), b.devices());
        assert!(!b.is_member(&lp) && b.is_member(&c));
        // The revoked laptop can no longer add anyone.
        let mut l = Members::adopt(hp, &a.to_proto());
        assert!(l.issue(&laptop, c, Change::Add, "x", "x", vec![]).is_err());
    }

    #[test]
    fn forged_and_foreign_ops_are_refused() {
        let home = Keypair::generate_ed25519();
        let stranger = Keypair::generate_ed25519();
        let mut a = Members::found(&home, "home", "home", vec![]);
        // A stranger's own mesh op, replayed into ours: wrong mesh.
        let s = Members::found(&stranger, "s", "home", vec![]);
        assert_eq!(a.merge(&s.to_proto()), 0);
        // A stranger signing an add for our mesh: not a member.
        let mut forged = Members {
            mesh: a.mesh(),
            ops: BTreeMap::new(),
        };
        let body = proto::MemberOpBody {
            mesh: a.mesh().to_bytes(),
            device: stranger.public().to_peer_id().to_bytes(),
            ..Default::default()
        }
        .encode_to_vec();
        let mut msg = SIGNING_CONTEXT.to_vec();
        msg.extend_from_slice(&body);
        let wire = proto::MemberOp {
            signature: stranger.sign(&msg).unwrap(),
            body,
            signer_key: stranger.public().encode_protobuf(),
        };
        forged
            .ops
            .insert(wire.signature.clone(), verify(&wire).unwrap());
        assert_eq!(a.merge(&forged.to_proto()), 0);
        // A tampered body fails the signature.
        let mut tampered = a.to_proto();
        tampered.ops[0].body.push(0);
        let mut fresh = Members::adopt(a.mesh(), &tampered);
        assert_eq!(fresh.merge(&tampered), 0);
        assert!(!fresh.is_member(&stranger.public().to_peer_id()));
    }
}
