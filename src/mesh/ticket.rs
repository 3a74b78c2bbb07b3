//! Invitation tickets: `TM1` followed by the base32 of a `Ticket` message
//! (inviter's device id and addresses, a 32-byte one-time secret, expiry,
//! mesh id). Upper-case base32 keeps QR codes in their compact alphanumeric
//! mode and survives being read aloud or retyped.

use crate::proto;
use libp2p::{Multiaddr, PeerId};
use prost::Message;

const PREFIX: &str = "TM1";

/// A decoded ticket.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub inviter: PeerId,
    pub addrs: Vec<Multiaddr>,
    pub secret: [u8; 32],
    pub expires_unix_ms: i64,
    pub mesh: PeerId,
}

/// A string that is not a ticket.
#[derive(Debug, thiserror::Error)]
#[error("not a tunemesh ticket: {0}")]
pub struct TicketError(String);

impl Ticket {
    pub fn encode(&self) -> String {
        let msg = proto::Ticket {
            peer: self.inviter.to_bytes(),
            addrs: self.addrs.iter().map(|a| a.to_vec()).collect(),
            secret: self.secret.to_vec(),
            expires_unix_ms: self.expires_unix_ms,
            mesh: self.mesh.to_bytes(),
        };
        format!(
            "{PREFIX}{}",
            data_encoding::BASE32_NOPAD.encode(&msg.encode_to_vec())
        )
    }

    pub fn decode(s: &str) -> Result<Ticket, TicketError> {
        let s: String = s
            .split_whitespace()
            .collect::<String>()
            .to_ascii_uppercase();
        let body = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| TicketError(format!("it does not start with {PREFIX}")))?;
        if body.len() > 8192 {
            return Err(TicketError("too long".into()));
        }
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.as_bytes())
            .map_err(|e| TicketError(format!("bad base32: {e}")))?;
        let t = proto::Ticket::decode(bytes.as_slice()).map_err(|e| TicketError(e.to_string()))?;
        Ok(Ticket {
            inviter: PeerId::from_bytes(&t.peer).map_err(|e| TicketError(e.to_string()))?,
            addrs: t
                .addrs
                .into_iter()
                .filter_map(|a| Multiaddr::try_from(a).ok())
                .collect(),
            secret: t
                .secret
                .try_into()
                .map_err(|_| TicketError("bad secret".into()))?,
            expires_unix_ms: t.expires_unix_ms,
            mesh: PeerId::from_bytes(&t.mesh).map_err(|e| TicketError(e.to_string()))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let p = PeerId::random();
        let t = Ticket {
            inviter: p,
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
            secret: [9; 32],
            expires_unix_ms: 123,
            mesh: p,
        };
        let s = t.encode();
        assert!(s.starts_with("TM1"));
        let back = Ticket::decode(&format!(" {}\n", s.to_lowercase())).unwrap();
        assert_eq!(back.inviter, p);
        assert_eq!(back.addrs, t.addrs);
        assert_eq!(back.secret, t.secret);
        for bad in ["", "TM1", "TM1!!!", "XX1AAAA", &s[..s.len() / 2]] {
            assert!(Ticket::decode(bad).is_err(), "{bad:?}");
        }
    }
}
