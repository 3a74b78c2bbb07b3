//! The control protocol, `/tunemesh/ctl/1`, both sides: join, announce,
//! and the library sync requests the node answers. A substream carries
//! requests and answers in turn; the asker pipelines (sends a group at
//! once, reads the answers in order) and retries the ones a broken
//! substream left unanswered.
//!
//! Must never: answer a non-member anything but a join (it is refused and
//! cut off), or retry a join (a repeated one is refused as used).

use super::client::Client;
use super::event_loop::Command;
use super::ticket::Ticket;
use super::types::{BlobAnswer, DeviceId, Event, NodeReply, Recipe, Request, Response};
use super::{now_ms, userops, wire, MeshError, CTL_TIMEOUT, REQUEST_TIMEOUT};
use crate::model::{CoverId, Hash32, TrackId};
use crate::proto;
use futures::{AsyncWriteExt, StreamExt};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::Instrument;

/// Most version vector entries a request may carry.
const MAX_DEVICES: usize = 1024;
/// Most user operations one push may carry (each is small; the request
/// frame limit bounds the bytes).
const MAX_PUSHED_OPS: usize = 4096;
/// Most recipes one blob record request may name. Each ready answer
/// carries an outboard (32 bytes per 16 KiB); the answering node answers
/// "pending" past [`MAX_OUTBOARD_REPLY`] bytes, so the reply stays under
/// the response limit.
pub const MAX_RECIPES: usize = 256;
/// Outboard bytes one blob record reply carries at most.
pub const MAX_OUTBOARD_REPLY: usize = 6 << 20;

/// The protocol name.
pub(super) const CTL: StreamProtocol = StreamProtocol::new("/tunemesh/ctl/1");

fn request_to_proto(req: Request) -> proto::CtlRequest {
    proto::CtlRequest {
        kind: Some(match req {
            Request::GetNode {
                root,
                path,
                max_entries,
                with_records,
            } => proto::ctl_request::Kind::GetNode(proto::GetNode {
                root: root.0.to_vec(),
                path,
                max_entries,
                with_records,
            }),
            Request::GetRecords(ids) => proto::ctl_request::Kind::GetRecords(proto::GetRecords {
                ids: ids.iter().map(|i| i.as_bytes().to_vec()).collect(),
            }),
            Request::GetCover(id) => proto::ctl_request::Kind::GetCover(proto::GetCover {
                id: id.as_bytes().to_vec(),
            }),
            Request::GetUserOps(have) => proto::ctl_request::Kind::GetUserOps(proto::GetUserOps {
                have: userops::vv_to_proto(&have),
            }),
            Request::PushUserOps(ops) => {
                proto::ctl_request::Kind::PushUserOps(proto::PushUserOps { ops })
            }
            Request::GetBlobRecords(recipes) => {
                proto::ctl_request::Kind::GetBlobRecords(proto::GetBlobRecords {
                    recipes: recipes
                        .iter()
                        .map(|r| proto::Recipe {
                            track: r.track.as_bytes().to_vec(),
                            kbps: r.kbps,
                        })
                        .collect(),
                })
            }
        }),
    }
}

fn response_from_proto(peer: &DeviceId, resp: proto::CtlResponse) -> Result<Response, MeshError> {
    let bad = |reason: &str| MeshError::Protocol {
        peer: *peer,
        reason: reason.into(),
    };
    Ok(match resp.kind {
        Some(proto::ctl_response::Kind::Node(n)) => {
            let root = Hash32::from_slice(&n.root).ok_or_else(|| bad("bad root"))?;
            let children = if n.children.is_empty() {
                None
            } else if n.children.len() == 16 {
                let mut c = [Hash32([0; 32]); 16];
                for (dst, src) in c.iter_mut().zip(&n.children) {
                    *dst = Hash32::from_slice(src).ok_or_else(|| bad("bad child hash"))?;
                }
                Some(Box::new(c))
            } else {
                return Err(bad("a branch must have 16 children"));
            };
            let mut entries = Vec::with_capacity(n.entries.len());
            for e in n.entries {
                entries.push((
                    TrackId::from_slice(&e.id).ok_or_else(|| bad("bad entry id"))?,
                    Hash32::from_slice(&e.hash).ok_or_else(|| bad("bad entry hash"))?,
                ));
            }
            Response::Node(NodeReply {
                root,
                children,
                entries,
                records: n.records,
            })
        }
        Some(proto::ctl_response::Kind::Records(r)) => Response::Records(r.records),
        Some(proto::ctl_response::Kind::Cover(c)) => Response::Cover {
            mime: c.mime,
            data: c.data,
        },
        Some(proto::ctl_response::Kind::UserOps(u)) => Response::UserOps {
            ops: u.ops,
            more: u.more,
            have: userops::vv_from_proto(u.have),
        },
        Some(proto::ctl_response::Kind::BlobRecords(b)) => {
            let mut out = Vec::with_capacity(b.records.len());
            for r in b.records {
                use proto::blob_record::State;
                out.push(match State::try_from(r.state) {
                    Ok(State::Ready) => BlobAnswer::Ready {
                        hash: Hash32::from_slice(&r.hash).ok_or_else(|| bad("bad blob hash"))?,
                        len: r.len,
                        outboard: r.outboard,
                    },
                    Ok(State::Pending) => BlobAnswer::Pending,
                    _ => BlobAnswer::Absent(r.error),
                });
            }
            Response::BlobRecords(out)
        }
        Some(proto::ctl_response::Kind::Error(e)) => Response::Error(e),
        _ => return Err(bad("unexpected answer")),
    })
}

fn response_to_proto(resp: Response) -> proto::ctl_response::Kind {
    match resp {
        Response::Error(e) => proto::ctl_response::Kind::Error(e),
        Response::Records(r) => {
            proto::ctl_response::Kind::Records(proto::RecordsReply { records: r })
        }
        Response::Cover { mime, data } => {
            proto::ctl_response::Kind::Cover(proto::CoverReply { mime, data })
        }
        Response::UserOps { ops, more, have } => {
            proto::ctl_response::Kind::UserOps(proto::UserOpsReply {
                ops,
                more,
                have: userops::vv_to_proto(&have),
            })
        }
        Response::BlobRecords(b) => {
            use proto::blob_record::State;
            let records = b
                .into_iter()
                .map(|a| match a {
                    BlobAnswer::Ready {
                        hash,
                        len,
                        outboard,
                    } => proto::BlobRecord {
                        state: State::Ready.into(),
                        hash: hash.0.to_vec(),
                        len,
                        outboard,
                        error: String::new(),
                    },
                    BlobAnswer::Pending => proto::BlobRecord {
                        state: State::Pending.into(),
                        ..Default::default()
                    },
                    BlobAnswer::Absent(error) => proto::BlobRecord {
                        error,
                        ..Default::default()
                    },
                })
                .collect();
            proto::ctl_response::Kind::BlobRecords(proto::BlobRecordsReply { records })
        }
        Response::Node(n) => proto::ctl_response::Kind::Node(proto::NodeReply {
            root: n.root.0.to_vec(),
            children: n
                .children
                .map(|c| c.iter().map(|h| h.0.to_vec()).collect())
                .unwrap_or_default(),
            entries: n
                .entries
                .iter()
                .map(|(id, h)| proto::Entry {
                    id: id.as_bytes().to_vec(),
                    hash: h.0.to_vec(),
                })
                .collect(),
            records: n.records,
        }),
    }
}

// ----- asking ---------------------------------------------------------------

/// Sync requests to `peer`, pipelined, with the wire bytes each took.
pub(super) async fn request_many(
    c: &Client,
    peer: DeviceId,
    reqs: Vec<Request>,
) -> Result<Vec<(Response, u64)>, MeshError> {
    let msgs: Vec<proto::CtlRequest> = reqs.into_iter().map(request_to_proto).collect();
    let answers = exchange_many(c, peer.0, &msgs).await?;
    answers
        .into_iter()
        .map(|(r, n)| Ok((response_from_proto(&peer, r)?, n)))
        .collect()
}

/// One control exchange (see [`exchange_many`]).
pub(super) async fn exchange(
    c: &Client,
    peer: PeerId,
    req: &proto::CtlRequest,
) -> Result<(proto::CtlResponse, u64), MeshError> {
    let mut r = exchange_many(c, peer, std::slice::from_ref(req)).await?;
    r.pop().ok_or(MeshError::Closed)
}

/// Control requests pipelined on one substream. When the substream breaks
/// (the remote dropped it unaccepted, a reset), the requests not yet
/// answered are sent again on a new one: every request is idempotent but
/// a join, and a repeated join is refused as used.
async fn exchange_many(
    c: &Client,
    peer: PeerId,
    reqs: &[proto::CtlRequest],
) -> Result<Vec<(proto::CtlResponse, u64)>, MeshError> {
    let mut out = Vec::with_capacity(reqs.len());
    let mut failures = 0u32;
    while out.len() < reqs.len() {
        let before = out.len();
        match pipeline(c, peer, &reqs[before..], &mut out).await {
            Ok(()) => {}
            Err((e, retry)) => {
                if out.len() > before {
                    failures = 0;
                }
                failures += 1;
                if retry == Retry::No || failures > 3 {
                    return Err(e);
                }
                tracing::debug!(%peer, "control substream failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(50 << failures)).await;
            }
        }
    }
    Ok(out)
}

/// Whether a failed exchange may succeed on a new substream.
#[derive(PartialEq, Eq)]
enum Retry {
    Yes,
    No,
}

/// Send `reqs` on a fresh substream and read their answers into `out`.
async fn pipeline(
    c: &Client,
    peer: PeerId,
    reqs: &[proto::CtlRequest],
    out: &mut Vec<(proto::CtlResponse, u64)>,
) -> Result<(), (MeshError, Retry)> {
    let perr = |reason: String| MeshError::Protocol {
        peer: DeviceId(peer),
        reason,
    };
    let s = c
        .control
        .clone()
        .open_stream(peer, CTL)
        .await
        .map_err(|e| {
            (
                MeshError::Unreachable {
                    peer: DeviceId(peer),
                    reason: e.to_string(),
                },
                Retry::Yes,
            )
        })?;
    let (mut r, mut w) = futures::AsyncReadExt::split(s);
    let writer = async {
        for q in reqs {
            wire::write(&mut w, q, wire::MAX_CTL_REQUEST).await?;
        }
        w.close().await.map_err(wire::WireError::Io)
    };
    let reader = async {
        for q in reqs {
            let read = wire::read::<proto::CtlResponse, _>(&mut r, wire::MAX_CTL_RESPONSE);
            let resp = match tokio::time::timeout(CTL_TIMEOUT, read).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) => {
                    let retry = match e {
                        wire::WireError::Closed | wire::WireError::Io(_) => Retry::Yes,
                        _ => Retry::No,
                    };
                    let e = match e {
                        wire::WireError::Closed => {
                            perr("the peer closed the request unanswered".into())
                        }
                        e => perr(e.to_string()),
                    };
                    return Err((e, retry));
                }
                Err(_) => return Err((perr("no answer in time".into()), Retry::No)),
            };
            let n = wire::framed_len(prost::Message::encoded_len(q))
                + wire::framed_len(prost::Message::encoded_len(&resp));
            out.push((resp, n as u64));
        }
        Ok(())
    };
    // The reader knows what was answered; a writer error shows there too.
    let (_, answered) = futures::join!(writer, reader);
    answered
}

/// Present `t`'s secret to its inviter (connected); the member list it
/// answers with.
pub(super) async fn join(c: &Client, t: &Ticket) -> Result<proto::MemberList, MeshError> {
    let local = c.local();
    let addrs = c.view().advertised.iter().map(|a| a.to_vec()).collect();
    let req = proto::CtlRequest {
        kind: Some(proto::ctl_request::Kind::Join(proto::Join {
            secret: t.secret.to_vec(),
            name: local.name,
            role: local.role,
            addrs,
        })),
    };
    let resp = match exchange(c, t.inviter, &req).await {
        Ok((r, _)) => r,
        // Connected, then cut off: a node with no open invitation closes
        // connections from strangers at once.
        Err(MeshError::Unreachable { .. }) | Err(MeshError::Protocol { .. }) => {
            return Err(MeshError::Refused(
                "join refused: the inviting device closed the connection (the ticket was \
                 already used, has expired, or was made by a device no longer in its mesh)"
                    .into(),
            ))
        }
        Err(e) => return Err(e),
    };
    match resp.kind {
        Some(proto::ctl_response::Kind::Joined(list)) => Ok(list),
        Some(proto::ctl_response::Kind::Error(e)) => Err(MeshError::Refused(e)),
        _ => Err(MeshError::Protocol {
            peer: DeviceId(t.inviter),
            reason: "unexpected answer to a join".into(),
        }),
    }
}

// ----- answering ------------------------------------------------------------

/// Which protocol an accept loop serves.
pub(super) enum Inbound {
    Ctl,
    Audio,
}

/// Move each inbound substream into its own task (`libp2p-stream` drops
/// what does not fit its queue of one).
pub(super) async fn accept_loop(
    c: Client,
    mut incoming: libp2p_stream::IncomingStreams,
    kind: Inbound,
) {
    while let Some((peer, stream)) = incoming.next().await {
        let c2 = c.clone();
        match kind {
            Inbound::Audio => {
                let span = tracing::info_span!("inbound", %peer, audio = true);
                c.shared
                    .spawn(async move { serve_audio(&c2, peer, stream).await }.instrument(span));
            }
            Inbound::Ctl => {
                let span = tracing::info_span!("inbound", %peer, audio = false);
                c.shared
                    .spawn(async move { serve_ctl(&c2, peer, stream).await }.instrument(span));
            }
        }
    }
}

async fn refuse(c: &Client, peer: PeerId, why: &str) {
    tracing::info!(%peer, "refused: {why}");
    let _ = c.shared.cmd.send(Command::Disconnect(peer)).await;
}

async fn serve_audio(c: &Client, peer: PeerId, s: libp2p::Stream) {
    if !c.is_member(&DeviceId(peer)) {
        return refuse(c, peer, "stream request from a non-member").await;
    }
    if let Some((open, stream)) = super::audio::accept(peer, s).await {
        let from = DeviceId(peer);
        c.shared.emit(Event::Stream { from, open, stream }).await;
    }
}

fn error(e: String) -> proto::CtlResponse {
    proto::CtlResponse {
        kind: Some(proto::ctl_response::Kind::Error(e)),
    }
}

/// Answer the requests on one control substream, in order, until the peer
/// closes its side.
async fn serve_ctl(c: &Client, peer: PeerId, mut s: libp2p::Stream) {
    let mut first = true;
    loop {
        let read = tokio::time::timeout(REQUEST_TIMEOUT, wire::read(&mut s, wire::MAX_CTL_REQUEST));
        let req: proto::CtlRequest = match read.await.unwrap_or(Err(wire::WireError::Timeout)) {
            Ok(r) => r,
            Err(wire::WireError::Closed) if !first => break,
            Err(e) => {
                tracing::warn!(%peer, "bad control request: {e}");
                let resp = error(format!("bad request: {e}"));
                let _ = wire::write(&mut s, &resp, wire::MAX_CTL_RESPONSE).await;
                break;
            }
        };
        first = false;
        let Some(kind) = answer(c, peer, req).await else {
            let resp = error("not a member of this mesh".into());
            let _ = wire::write(&mut s, &resp, wire::MAX_CTL_RESPONSE).await;
            let _ = s.close().await;
            return refuse(c, peer, "control request from a non-member").await;
        };
        let resp = proto::CtlResponse { kind: Some(kind) };
        if let Err(e) = wire::write(&mut s, &resp, wire::MAX_CTL_RESPONSE).await {
            tracing::info!(%peer, "cannot answer: {e}");
            return;
        }
    }
    let _ = s.close().await;
}

/// The answer to one control request; `None` when a non-member asks for
/// anything but a join.
async fn answer(
    c: &Client,
    peer: PeerId,
    req: proto::CtlRequest,
) -> Option<proto::ctl_response::Kind> {
    use proto::ctl_response::Kind as R;
    if !matches!(req.kind, Some(proto::ctl_request::Kind::Join(_))) && !c.is_member(&DeviceId(peer))
    {
        return None;
    }
    Some(match req.kind {
        Some(proto::ctl_request::Kind::Join(j)) => on_join(c, peer, j).await,
        Some(proto::ctl_request::Kind::Announce(a)) => {
            c.absorb(peer, a).await;
            match c.announcement_msg().kind {
                Some(proto::ctl_request::Kind::Announce(mine)) => R::Announce(mine),
                _ => R::Error("no announcement".into()),
            }
        }
        Some(proto::ctl_request::Kind::GetNode(g)) => {
            let path_ok = g.path.iter().all(|&n| n < 16) && g.path.len() <= 64;
            match (Hash32::from_slice(&g.root), path_ok) {
                (Some(root), true) => {
                    let request = Request::GetNode {
                        root,
                        path: g.path,
                        max_entries: g.max_entries,
                        with_records: g.with_records,
                    };
                    ask_node(c, peer, request).await
                }
                _ => R::Error("bad trie path or root".into()),
            }
        }
        Some(proto::ctl_request::Kind::GetRecords(g)) => {
            let ids: Option<Vec<TrackId>> = g.ids.iter().map(|i| TrackId::from_slice(i)).collect();
            match ids {
                Some(ids) if ids.len() <= 4096 => ask_node(c, peer, Request::GetRecords(ids)).await,
                _ => R::Error("bad or too many track ids".into()),
            }
        }
        Some(proto::ctl_request::Kind::GetCover(g)) => match CoverId::from_slice(&g.id) {
            Some(id) => ask_node(c, peer, Request::GetCover(id)).await,
            None => R::Error("bad cover id".into()),
        },
        Some(proto::ctl_request::Kind::GetUserOps(g)) if g.have.len() <= MAX_DEVICES => {
            ask_node(c, peer, Request::GetUserOps(userops::vv_from_proto(g.have))).await
        }
        Some(proto::ctl_request::Kind::PushUserOps(p)) if p.ops.len() <= MAX_PUSHED_OPS => {
            ask_node(c, peer, Request::PushUserOps(p.ops)).await
        }
        Some(
            proto::ctl_request::Kind::GetUserOps(_) | proto::ctl_request::Kind::PushUserOps(_),
        ) => R::Error("too many devices or operations in one request".into()),
        Some(proto::ctl_request::Kind::GetBlobRecords(g)) => {
            let recipes: Option<Vec<Recipe>> = g
                .recipes
                .iter()
                .map(|r| {
                    Some(Recipe {
                        track: TrackId::from_slice(&r.track)?,
                        kbps: r.kbps,
                    })
                })
                .collect();
            match recipes {
                Some(r) if r.len() <= MAX_RECIPES => {
                    ask_node(c, peer, Request::GetBlobRecords(r)).await
                }
                _ => R::Error("bad or too many recipes".into()),
            }
        }
        None => R::Error("unknown request (a newer tunemesh?)".into()),
    })
}

async fn ask_node(c: &Client, peer: PeerId, request: Request) -> proto::ctl_response::Kind {
    let (tx, rx) = oneshot::channel();
    c.shared
        .emit(Event::Request {
            from: DeviceId(peer),
            request,
            reply: tx,
        })
        .await;
    match rx.await {
        Ok(resp) => response_to_proto(resp),
        Err(_) => proto::ctl_response::Kind::Error("the node is shutting down".into()),
    }
}

/// Let a joiner in: redeem its invitation, add it to the list, and answer
/// with the list once it is saved.
async fn admit(
    c: &Client,
    peer: PeerId,
    j: proto::Join,
) -> Result<proto::MemberList, &'static str> {
    c.invitations().redeem(&j.secret, now_ms())?;
    let addrs = j
        .addrs
        .iter()
        .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
        .map(|a| a.to_string())
        .collect();
    let role = if j.role == "home" { "home" } else { "phone" };
    let name: String = j.name.chars().take(64).collect();
    let (list, durable) = c
        .ask(|reply| Command::Admit {
            peer,
            name,
            role: role.into(),
            addrs,
            reply,
        })
        .await
        .map_err(|_| "the mesh is shutting down")??;
    durable
        .wait()
        .await
        .map_err(|_| "cannot save the member list")?;
    Ok(list)
}

async fn on_join(c: &Client, peer: PeerId, j: proto::Join) -> proto::ctl_response::Kind {
    match admit(c, peer, j).await {
        Ok(list) => {
            tracing::info!(%peer, "joined the mesh");
            c.shared.emit(Event::MembersChanged).await;
            c.push_relays();
            c.shared.emit(Event::Connected(DeviceId(peer))).await;
            // The joiner announces itself once it has adopted the list
            // (before that, it would refuse us as a stranger); tell the
            // other members now.
            c.announce_all_except(Some(peer));
            proto::ctl_response::Kind::Joined(list)
        }
        Err(why) => {
            tracing::warn!(%peer, "join refused: {why}");
            proto::ctl_response::Kind::Error(format!("join refused: {why}"))
        }
    }
}
