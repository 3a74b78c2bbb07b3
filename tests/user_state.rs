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
    // A batch bigger than one request (3000 plays, ~600 KB) arrives whole.
    let batch = (0..3000)
        .map(|i| Play {
            track: track(20 + (i % 50) as u8),
            started_ms: hour_ago + i,
            ms_played: 1000,
        })
        .collect();
    laptop.record_plays(batch).await.unwrap();
    wait_for("the 3000 plays at the phone", 30, || {
        phone.user_state(|v| v.play_count()) == 3001
    })
    .await;

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

// ----- a daemon: the CLI, the HTTP API's guards, kill -9 -----------------------

fn http(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let resp = agent
        .run(req.body(body.unwrap_or("").as_bytes().to_vec()).unwrap())
        .unwrap();
    let status = resp.status().as_u16();
    (
        status,
        resp.into_body().read_to_string().unwrap_or_default(),
    )
}

#[test]
fn cli_and_api_of_the_shared_state_and_nothing_lost_to_kill_9() {
    use common::daemon::Daemon;
    use common::Tm;
    let music = tempfile::tempdir().unwrap();
    common::copy_tree(&common::fixtures(), music.path());
    let d = Daemon::start(
        Tm::new(),
        &[music.path().to_str().unwrap(), "--role", "home"],
    );
    common::daemon::wait_until("the scan", 30, || {
        d.json(&["ls", "--all", "--json"])
            .as_array()
            .is_some_and(|a| a.len() == 10)
    });
    let lib = d.json(&["ls", "--all", "--json"]);
    let ids: Vec<String> = lib
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    let short = |i: usize| ids[i][..8].to_string();

    // Stars by prefix, an album by its kind, a rating.
    d.tm.ok(&["star", &short(0), &short(1)]);
    let album = lib[2]["album_id"].as_str().unwrap().to_string();
    d.tm.ok(&["star", &format!("album:{}", &album[..6])]);
    d.tm.ok(&["rate", &short(0), "4"]);
    assert!(
        !d.tm.run(&["rate", &short(0), "6"]).status.success(),
        "a rating of 6 is refused"
    );
    let s = d.json(&["starred", "--json"]);
    let starred: Vec<&str> = s["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(starred.len(), 2);
    assert!(starred.contains(&ids[0].as_str()) && starred.contains(&ids[1].as_str()));
    assert_eq!(s["albums"][0]["id"], album.as_str());
    let t0 = s["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == ids[0].as_str())
        .unwrap();
    assert_eq!(t0["rating"], 4);
    assert!(t0["starred_at_ms"].as_u64().is_some());
    d.tm.ok(&["unstar", &short(1)]);
    assert_eq!(
        d.json(&["starred", "--json"])["tracks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Plays with their times; an older one never moves "last played" back.
    d.tm.ok(&[
        "plays",
        "add",
        &short(3),
        "--at",
        "2026-01-02T03:04:05Z",
        "--ms",
        "1500",
    ]);
    d.tm.ok(&[
        "plays",
        "add",
        &short(3),
        "--at",
        "2025-01-01T00:00:00+01:00",
    ]);
    assert!(!d
        .tm
        .run(&["plays", "add", &short(3), "--at", "yesterday"])
        .status
        .success());
    let p = d.json(&["plays", "--json"]);
    assert_eq!(p["total"], 2);
    assert_eq!(p["most"][0]["id"], ids[3].as_str());
    assert_eq!(p["most"][0]["count"], 2);
    assert_eq!(p["most"][0]["last_played_ms"], 1_767_323_045_000u64);
    assert_eq!(p["recent"][1]["started_ms"], 1_735_686_000_000u64);
    // The API's listings show each track's count.
    let (url, token) = d.api();
    let (st, body) = http(
        "GET",
        &format!("{url}/api/tracks?limit=100"),
        Some(&token),
        None,
    );
    assert_eq!(st, 200);
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let t3 = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == ids[3].as_str())
        .unwrap();
    assert_eq!(t3["play_count"], 2);

    // Playlists: create, add, move, remove, rename, delete.
    d.tm.ok(&["playlist", "create", "Mix", &short(4), &short(5)]);
    d.tm.ok(&["playlist", "add", "Mix", &short(6), &short(7)]);
    d.tm.ok(&["playlist", "add", "Mix", &short(8), "--at", "1"]);
    d.tm.ok(&["playlist", "mv", "Mix", "5", "2"]);
    d.tm.ok(&["playlist", "rm", "Mix", "3", "4"]);
    let order = |v: &serde_json::Value| -> Vec<String> {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    // [4 5 6 7] → 8 first [8 4 5 6 7] → 5th to 2nd [8 7 4 5 6] → rm 3, 4 [8 7 6].
    let m = d.json(&["playlist", "show", "Mix", "--json"]);
    assert_eq!(
        order(&m),
        vec![ids[8].clone(), ids[7].clone(), ids[6].clone()]
    );
    assert!(
        !d.tm
            .run(&["playlist", "mv", "Mix", "9", "1"])
            .status
            .success(),
        "no 9th entry"
    );
    d.tm.ok(&["playlist", "rename", "Mix", "Road trip"]);
    let ls = d.json(&["playlist", "ls", "--json"]);
    assert_eq!(ls[0]["name"], "Road trip");
    assert_eq!(ls[0]["entry_count"], 3);

    // The API: auth on every route, bad bodies refused, sizes bounded.
    for (m, path) in [
        ("GET", "/api/starred"),
        ("POST", "/api/star"),
        ("GET", "/api/plays"),
        ("GET", "/api/playlists"),
        ("PUT", "/api/queue"),
    ] {
        let (st, _) = http(m, &format!("{url}{path}"), None, Some("{\"ids\":[]}"));
        assert_eq!(st, 401, "{m} {path} without auth");
    }
    let (st, _) = http(
        "POST",
        &format!("{url}/api/rate"),
        Some(&token),
        Some(&format!("{{\"id\":\"{}\",\"rating\":9}}", ids[0])),
    );
    assert_eq!(st, 400);
    let (st, _) = http(
        "POST",
        &format!("{url}/api/star"),
        Some(&token),
        Some("{\"ids\":[\"zzzz\"]}"),
    );
    assert_eq!(st, 400);
    let (st, _) = http(
        "GET",
        &format!("{url}/api/playlists/nope"),
        Some(&token),
        None,
    );
    assert_eq!(st, 404);
    let many = format!(
        "{{\"ids\":[{}]}}",
        vec![format!("\"{}\"", ids[0]); 5001].join(",")
    );
    let (st, _) = http(
        "POST",
        &format!("{url}/api/star"),
        Some(&token),
        Some(&many),
    );
    assert_eq!(st, 400, "over 5000 ids at once");
    let (st, _) = http(
        "PUT",
        &format!("{url}/api/queue"),
        Some(&token),
        Some(&format!(
            "{{\"ids\":[\"{}\"],\"current\":0,\"position_ms\":1234}}",
            ids[2]
        )),
    );
    assert_eq!(st, 204);
    let (_, q) = http("GET", &format!("{url}/api/queue"), Some(&token), None);
    let q: serde_json::Value = serde_json::from_str(&q).unwrap();
    assert_eq!(
        (q["ids"][0].as_str(), q["position_ms"].as_u64()),
        (Some(ids[2].as_str()), Some(1234))
    );

    // kill -9 right after acknowledged changes: none is lost.
    for i in 0..5 {
        d.tm.ok(&["star", &short(i)]);
    }
    d.tm.ok(&["playlist", "delete", "Road trip"]);
    let mut d = d;
    d.child.kill().unwrap(); // SIGKILL
    d.child.wait().unwrap();
    let tm = std::mem::replace(&mut d.tm, Tm::new());
    drop(d);
    let _ = std::fs::remove_file(tm.data.path().join("api.json"));
    let d = Daemon::start(tm, &["--role", "home"]);
    let s = d.json(&["starred", "--json"]);
    assert_eq!(s["tracks"].as_array().unwrap().len(), 5, "{s}");
    assert!(d
        .json(&["playlist", "ls", "--json"])
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(d.json(&["plays", "--json"])["total"], 2);
    let tm = d.stop();
    tm.verify();
}
