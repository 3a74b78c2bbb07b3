//! The owner's shared state between nodes in-process (through the `Node`
//! API): stars, plays and playlists reach every member, a forged or
//! tampered operation is refused while the rest of its batch goes on, and a
//! revoked device's later operations are refused whoever hands them on.
//! (`user_state_netns.rs` partitions real daemons.)

mod common;
use std::path::Path;
use std::time::{Duration, Instant};
use tunemesh::mesh::{Request, Response};
use tunemesh::model::TrackId;
use tunemesh::node::{Node, NodeConfig, Role};
use tunemesh::userdata::{Body, Hlc, Item, Op, OpId, Play};

fn config(dir: &Path, name: &str) -> NodeConfig {
    let mut c = NodeConfig::new(dir.to_path_buf(), Role::Phone);
    c.mdns = false;
    c.upnp = false;
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    c.name = name.into();
    c
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn starred(n: &Node, t: TrackId) -> bool {
    n.user_state(|v| v.starred_at(&Item::Track(t)).is_some())
}

fn track(n: u8) -> TrackId {
    TrackId::of(&[n])
}

/// An operation of `n` numbered as `at` would expect next from it, signed
/// by `n`'s key, not applied by `n` itself.
fn next_op(n: &Node, at_node: &Node, body: Body) -> Vec<u8> {
    let me = n.device_id();
    let seq = at_node.user_state(|v| v.version_vector().get(&me)) + 1;
    let at = Hlc::new(
        u64::try_from(std::time::UNIX_EPOCH.elapsed().unwrap().as_millis()).unwrap(),
        0,
    );
    n.mesh()
        .seal_op(Op {
            id: OpId { device: me, seq },
            at,
            body,
        })
        .wire
}

async fn push(from: &Node, to: &Node, ops: Vec<Vec<u8>>) -> Response {
    let (r, _) = from
        .mesh()
        .request(&to.device_id(), Request::PushUserOps(ops))
        .await
        .unwrap();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_state_spreads_and_refuses_forgeries_and_revoked_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let home = Node::start(config(&tmp.path().join("home"), "home"))
        .await
        .unwrap();
    let phone = Node::start(config(&tmp.path().join("phone"), "phone"))
        .await
        .unwrap();
    let laptop = Node::start(config(&tmp.path().join("laptop"), "laptop"))
        .await
        .unwrap();
    // Made alone, before joining: kept, and sent on joining.
    phone.star(vec![Item::Track(track(1))], true).await.unwrap();
    phone
        .join(&home.invite(Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    laptop
        .join(&home.invite(Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    wait_for(
        "the phone's early star at the home and the laptop",
        20,
        || starred(&home, track(1)) && starred(&laptop, track(1)),
    )
    .await;

    // A play an hour ago, made on the laptop, counts everywhere with its time.
    let hour_ago =
        i64::try_from(std::time::UNIX_EPOCH.elapsed().unwrap().as_millis()).unwrap() - 3_600_000;
    laptop
        .record_plays(vec![Play {
            track: track(2),
            started_ms: hour_ago,
            ms_played: 1000,
        }])
        .await
        .unwrap();
    wait_for("the laptop's play at the phone", 20, || {
        phone.user_state(|v| v.play_stats(&track(2)).count) == 1
    })
    .await;
    assert_eq!(
        phone.user_state(|v| v.play_stats(&track(2)).last_ms),
        hour_ago
    );

    // A playlist built on two devices at once keeps both appends.
    let pl = home
        .create_playlist("Trip", vec![track(3), track(4)])
        .await
        .unwrap();
    let id = pl.id.to_string();
    wait_for("the playlist at the phone", 20, || {
        phone.playlist(&id).is_ok_and(|p| p.entries.len() == 2)
    })
    .await;
    let (a, b) = tokio::join!(
        home.add_to_playlist(&id, vec![track(5)], None),
        phone.add_to_playlist(&id, vec![track(6)], None)
    );
    a.unwrap();
    b.unwrap();
    let order = |n: &Node| -> Vec<TrackId> {
        n.playlist(&id)
            .unwrap()
            .entries
            .iter()
            .map(|e| e.track)
            .collect()
    };
    wait_for("both appends everywhere, in one order", 20, || {
        let o = order(&home);
        o.len() == 4 && o == order(&phone) && o == order(&laptop)
    })
    .await;

    // Forged and tampered operations pushed to the home: refused, and the
    // good one of the same push is taken.
    let forged = {
        // The laptop signs an operation in the phone's name.
        let seq = home.user_state(|v| v.version_vector().get(&phone.device_id())) + 1;
        laptop
            .mesh()
            .seal_op(Op {
                id: OpId {
                    device: phone.device_id(),
                    seq,
                },
                at: Hlc::new(1, 0),
                body: Body::Star {
                    item: Item::Track(track(9)),
                    starred: true,
                },
            })
            .wire
    };
    let mut tampered = next_op(
        &laptop,
        &home,
        Body::Star {
            item: Item::Track(track(8)),
            starred: true,
        },
    );
    let at = tampered.len() - 70; // inside the body, before the signature
    tampered[at] ^= 1;
    let good = next_op(
        &laptop,
        &home,
        Body::Star {
            item: Item::Track(track(7)),
            starred: true,
        },
    );
    match push(&laptop, &home, vec![forged, tampered, good]).await {
        Response::UserOps { have, .. } => assert!(have.get(&laptop.device_id()) >= 2),
        other => panic!("the push was not answered: {other:?}"),
    }
    assert!(
        starred(&home, track(7)),
        "the good operation of the batch is kept"
    );
    assert!(!starred(&home, track(9)) && !starred(&home, track(8)));

    // Revocation: the laptop's operations up to it stay; a later one is
    // refused, even handed on by a member.
    wait_for("the laptop's operations at the phone", 20, || {
        starred(&phone, track(7))
    })
    .await;
    home.remove_device(&laptop.device_id().to_string())
        .await
        .unwrap();
    wait_for("the revocation at the phone", 20, || {
        phone.devices().len() == 2
    })
    .await;
    let late = next_op(
        &laptop,
        &home,
        Body::Star {
            item: Item::Track(track(10)),
            starred: true,
        },
    );
    for (via, to) in [(&phone, &home), (&home, &phone)] {
        push(via, to, vec![late.clone()]).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in [&home, &phone] {
        assert!(
            !starred(n, track(10)),
            "a revoked device's late star was kept"
        );
        assert!(
            starred(n, track(7)),
            "the revoked device's earlier star was lost"
        );
        assert_eq!(n.user_state(|v| v.play_stats(&track(2)).count), 1);
    }

    // Restarted, a node has everything it acknowledged.
    let phone_dir = tmp.path().join("phone");
    let want = phone.user_state(|v| (v.starred(), v.playlists(), v.play_count()));
    phone.shutdown().await;
    drop(phone);
    let phone = Node::start(config(&phone_dir, "phone")).await.unwrap();
    assert_eq!(
        phone.user_state(|v| (v.starred(), v.playlists(), v.play_count())),
        want
    );

    for n in [laptop, phone, home] {
        tokio::time::timeout(Duration::from_secs(20), n.shutdown())
            .await
            .expect("shutdown hangs");
    }
}
