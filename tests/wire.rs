//! Hostile wire input against a real home node, from a raw libp2p client:
//! oversized, truncated, malformed and out-of-range control messages from a
//! member are refused with an error reply and the home keeps serving; a
//! stranger gets nothing on either protocol.

mod common;
use common::*;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{identity::Keypair, Multiaddr, PeerId, StreamProtocol};
use prost::Message;
use std::path::Path;
use std::time::{Duration, Instant};
use tunemesh::node::{Node, NodeConfig, Role};
use tunemesh::stream::Bitrate;

const CTL: StreamProtocol = StreamProtocol::new("/tunemesh/ctl/1");
const AUDIO: StreamProtocol = StreamProtocol::new("/tunemesh/stream/1");

// Hand-written mirrors of the few messages sent here (proto/tunemesh/v1/mesh.proto).
#[derive(Clone, PartialEq, prost::Message)]
struct GetRecords {
    #[prost(bytes = "vec", repeated, tag = "1")]
    ids: Vec<Vec<u8>>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct GetNode {
    #[prost(bytes = "vec", tag = "1")]
    root: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    path: Vec<u8>,
    #[prost(uint32, tag = "3")]
    max_entries: u32,
}
#[derive(Clone, PartialEq, prost::Message)]
struct CtlRequest {
    #[prost(message, optional, tag = "3")]
    get_node: Option<GetNode>,
    #[prost(message, optional, tag = "4")]
    get_records: Option<GetRecords>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct CtlResponse {
    #[prost(string, optional, tag = "1")]
    error: Option<String>,
    #[prost(bytes = "vec", optional, tag = "4")]
    node: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    records: Option<Vec<u8>>,
}

fn config(dir: &Path, role: Role, lib: Option<&Path>) -> NodeConfig {
    let mut c = NodeConfig::new(dir.to_path_buf(), role);
    c.mdns = false;
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    if let Some(l) = lib {
        c.dirs = vec![l.to_path_buf()];
    }
    c
}

/// A bare libp2p client with `key`, connected to `addr`.
async fn raw_client(
    key: Keypair,
    addr: Multiaddr,
) -> (libp2p_stream::Control, tokio::task::JoinHandle<()>) {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.dial(addr).unwrap();
    let control = swarm.behaviour().new_control();
    let task = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (control, task)
}

async fn send_raw(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    frame: &[u8],
) -> Result<Vec<u8>, String> {
    let mut s = control
        .open_stream(peer, CTL)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(frame).await.map_err(|e| e.to_string())?;
    // Half-close: whatever was not sent is never coming.
    s.close().await.map_err(|e| e.to_string())?;
    let mut out = vec![];
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn error_of(reply: &[u8]) -> String {
    let r = CtlResponse::decode_length_delimited(reply).expect("a well-formed reply");
    r.error.expect("an error reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_messages_are_refused_and_the_node_keeps_working() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    copy_tree(&fixtures(), &lib);
    let home = Node::start(config(&tmp.path().join("home"), Role::Home, Some(&lib)))
        .await
        .unwrap();
    let t = Instant::now();
    while home.status().tracks < 10 {
        assert!(t.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let phone_dir = tmp.path().join("phone");
    let phone = Node::start(config(&phone_dir, Role::Phone, None))
        .await
        .unwrap();
    phone
        .join(&home.invite(Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    phone.shutdown().await;
    drop(phone);

    // The phone's own key, in a bare client: a member speaking garbage.
    let key =
        Keypair::from_protobuf_encoding(&std::fs::read(phone_dir.join("identity.key")).unwrap())
            .unwrap();
    let home_id: PeerId = home.device_id().to_string().parse().unwrap();
    let addr: Multiaddr = home.status().listen[0].parse().unwrap();
    let (mut ctl, task) = raw_client(key, addr.clone()).await;

    // 1. A length prefix claiming 1 GiB: refused from the prefix alone.
    let mut frame = vec![];
    prost::encoding::encode_varint(1 << 30, &mut frame);
    frame.extend_from_slice(&[0; 16]);
    let r = send_raw(&mut ctl, home_id, &frame).await;
    let e = error_of(&r.expect("an answer to an oversized frame"));
    assert!(e.contains("limit"), "{e}");
    // 2. Bytes that are not protobuf.
    let e = error_of(
        &send_raw(&mut ctl, home_id, &[4, 0xff, 0xff, 0xff, 0xff])
            .await
            .unwrap(),
    );
    assert!(e.contains("bad request"), "{e}");
    // 3. A frame cut short (the stream ends inside it).
    let e = error_of(&send_raw(&mut ctl, home_id, &[50, 1, 2, 3]).await.unwrap());
    assert!(e.contains("ended inside"), "{e}");
    // 4. Well-formed but out of range: too many ids, a bad trie path.
    let many = CtlRequest {
        get_records: Some(GetRecords {
            ids: vec![vec![7; 32]; 5000],
        }),
        ..Default::default()
    };
    let e = error_of(
        &send_raw(&mut ctl, home_id, &many.encode_length_delimited_to_vec())
            .await
            .unwrap(),
    );
    assert!(e.contains("too many"), "{e}");
    let bad_path = CtlRequest {
        get_node: Some(GetNode {
            root: vec![0; 32],
            path: vec![16, 200],
            max_entries: 10,
        }),
        ..Default::default()
    };
    let e = error_of(
        &send_raw(
            &mut ctl,
            home_id,
            &bad_path.encode_length_delimited_to_vec(),
        )
        .await
        .unwrap(),
    );
    assert!(e.contains("bad trie path"), "{e}");
    // 5. A stale root is an error, not a crash.
    let stale = CtlRequest {
        get_node: Some(GetNode {
            root: vec![1; 32],
            path: vec![],
            max_entries: 10,
        }),
        ..Default::default()
    };
    let e = error_of(
        &send_raw(&mut ctl, home_id, &stale.encode_length_delimited_to_vec())
            .await
            .unwrap(),
    );
    assert!(e.contains("stale root"), "{e}");
    // 6. A valid request still works on the same connection.
    let ok = CtlRequest {
        get_records: Some(GetRecords { ids: vec![] }),
        ..Default::default()
    };
    let r = send_raw(&mut ctl, home_id, &ok.encode_length_delimited_to_vec())
        .await
        .unwrap();
    let r = CtlResponse::decode_length_delimited(r.as_slice()).unwrap();
    assert!(r.error.is_none() && r.records.is_some());
    task.abort();

    // 7. A stranger: the connection is closed; neither protocol answers.
    let (mut ctl, task) = raw_client(Keypair::generate_ed25519(), addr).await;
    let r = send_raw(&mut ctl, home_id, &ok.encode_length_delimited_to_vec()).await;
    assert!(
        r.as_ref().map_or(true, |b| b.is_empty()
            || error_of(b).contains("not a member")),
        "{r:?}"
    );
    let audio = ctl.open_stream(home_id, AUDIO).await;
    if let Ok(mut s) = audio {
        let _ = s.write_all(&[2, 8, 1]).await;
        let mut out = vec![];
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        assert!(
            out.is_empty(),
            "a stranger got {} bytes of audio stream",
            out.len()
        );
    }
    task.abort();

    // The home still serves its members.
    let phone = Node::start(config(&phone_dir, Role::Phone, None))
        .await
        .unwrap();
    let t = Instant::now();
    loop {
        let lib = phone.library().await.unwrap();
        if lib.len() == 10 && lib.iter().all(|t| t.sources.iter().any(|s| s.online)) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the phone lost the home"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = phone.library().await.unwrap()[0].track.id.to_hex();
    let mut s = phone
        .open_stream(&id, Bitrate::Original, 0, 0)
        .await
        .unwrap();
    let mut b = vec![];
    tokio::io::AsyncReadExt::read_to_end(&mut s.reader, &mut b)
        .await
        .unwrap();
    assert_eq!(blake3::hash(&b).to_hex().as_str(), id);
    phone.shutdown().await;
    home.shutdown().await;
}
