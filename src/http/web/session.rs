//! Who a browser is: one-time login codes, sessions, and the brake on
//! password guessing.
//!
//! - A **login code** (`tunemesh open`) is 128 random bits, good once and
//!   for [`CODE_TTL`]; it becomes an owner session.
//! - A **session** is 256 random bits in an HttpOnly, SameSite=Strict
//!   cookie. Only its blake3 hash is kept, so the table says nothing an
//!   attacker could replay. It ends after [`SESSION_IDLE`] unused, after
//!   [`SESSION_MAX`] in any case, or at logout. Sessions live in memory: a
//!   restarted node asks browsers to log in again.
//! - **Login attempts** are counted per client address and in all: past
//!   [`FAILS_PER_ADDR`] (or [`FAILS_TOTAL`]) failures in [`FAIL_WINDOW`],
//!   logins are refused until the window has passed.
//!
//! Pure bookkeeping with an injected clock: no I/O, no async, no axum.

use crate::accounts::UserName;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a login code is good for.
pub const CODE_TTL: Duration = Duration::from_secs(120);
/// A session unused this long ends.
pub const SESSION_IDLE: Duration = Duration::from_secs(14 * 24 * 3600);
/// A session ends this long after login, used or not.
pub const SESSION_MAX: Duration = Duration::from_secs(90 * 24 * 3600);
/// Failed logins one address may make per window.
pub const FAILS_PER_ADDR: u32 = 5;
/// Failed logins from everywhere per window.
pub const FAILS_TOTAL: u32 = 30;
/// The window failed logins are counted in.
pub const FAIL_WINDOW: Duration = Duration::from_secs(60);
/// Sessions kept at most; the least recently used go first.
const MAX_SESSIONS: usize = 1024;
/// Codes outstanding at most.
const MAX_CODES: usize = 64;

/// Who a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The device's owner: the API token, or a session from a login code.
    /// May do everything, devices and invitations included.
    Owner,
    /// A person with an account: browse, search, play.
    User(UserName),
}

impl Principal {
    /// The name the player shows.
    pub fn label(&self) -> &str {
        match self {
            Principal::Owner => "owner",
            Principal::User(u) => u.as_str(),
        }
    }
}

/// A secret as it travels (a code or a session id): lowercase base32, no
/// padding.
fn fresh_secret(bytes: usize) -> Option<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).ok()?;
    Some(data_encoding::BASE32_NOPAD.encode(&b).to_ascii_lowercase())
}

fn key_of(secret: &str) -> blake3::Hash {
    blake3::hash(secret.as_bytes())
}

struct Session {
    who: Principal,
    created: Instant,
    used: Instant,
}

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong, used or expired code, or wrong name or password.
    Wrong,
    /// Too many failures lately; try again after this long.
    Slow(Duration),
}

/// The codes, sessions and failure counts of one node.
#[derive(Default)]
pub struct Sessions {
    codes: HashMap<blake3::Hash, Instant>,
    sessions: HashMap<blake3::Hash, Session>,
    fails: HashMap<IpAddr, (Instant, u32)>,
    fails_total: (Option<Instant>, u32),
}

impl Sessions {
    /// A new login code, good once within [`CODE_TTL`] from `now`; `None`
    /// when the system has no randomness.
    pub fn new_code(&mut self, now: Instant) -> Option<String> {
        self.codes
            .retain(|_, made| now.duration_since(*made) < CODE_TTL);
        if self.codes.len() >= MAX_CODES {
            let oldest = self.codes.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.codes.remove(&k);
            }
        }
        let code = fresh_secret(16)?;
        self.codes.insert(key_of(&code), now);
        Some(code)
    }

    /// Whether `addr` may try to log in now.
    pub fn may_try(&mut self, addr: IpAddr, now: Instant) -> Result<(), Refusal> {
        let window_left = |since: Instant| FAIL_WINDOW.saturating_sub(now.duration_since(since));
        if let (Some(since), n) = self.fails_total {
            if now.duration_since(since) >= FAIL_WINDOW {
                self.fails_total = (None, 0);
            } else if n >= FAILS_TOTAL {
                return Err(Refusal::Slow(window_left(since)));
            }
        }
        if let Some(&(since, n)) = self.fails.get(&addr) {
            if now.duration_since(since) >= FAIL_WINDOW {
                self.fails.remove(&addr);
            } else if n >= FAILS_PER_ADDR {
                return Err(Refusal::Slow(window_left(since)));
            }
        }
        Ok(())
    }

    /// Count a failed login from `addr`.
    pub fn failed(&mut self, addr: IpAddr, now: Instant) {
        if self.fails.len() > 4096 {
            self.fails
                .retain(|_, (since, _)| now.duration_since(*since) < FAIL_WINDOW);
        }
        let e = self.fails.entry(addr).or_insert((now, 0));
        e.1 += 1;
        let t = &mut self.fails_total;
        t.0.get_or_insert(now);
        t.1 += 1;
    }

    /// Trade a login code for an owner session id: `None` for a wrong,
    /// used or expired code.
    pub fn redeem(&mut self, code: &str, now: Instant) -> Option<String> {
        let made = self.codes.remove(&key_of(code.trim()))?;
        if now.duration_since(made) >= CODE_TTL {
            return None;
        }
        self.open(Principal::Owner, now)
    }

    /// A new session for `who`; its id goes into the cookie.
    pub fn open(&mut self, who: Principal, now: Instant) -> Option<String> {
        self.expire(now);
        if self.sessions.len() >= MAX_SESSIONS {
            let lru = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| *k);
            if let Some(k) = lru {
                self.sessions.remove(&k);
            }
        }
        let id = fresh_secret(32)?;
        self.sessions.insert(
            key_of(&id),
            Session {
                who,
                created: now,
                used: now,
            },
        );
        Some(id)
    }

    /// Who the session `id` is, if it is live (and mark it used).
    pub fn check(&mut self, id: &str, now: Instant) -> Option<Principal> {
        let k = key_of(id);
        let s = self.sessions.get_mut(&k)?;
        if now.duration_since(s.used) >= SESSION_IDLE
            || now.duration_since(s.created) >= SESSION_MAX
        {
            self.sessions.remove(&k);
            return None;
        }
        s.used = now;
        Some(s.who.clone())
    }

    /// End the session `id` (logout).
    pub fn close(&mut self, id: &str) {
        self.sessions.remove(&key_of(id));
    }

    /// End every session of `user` (their account was removed).
    pub fn close_user(&mut self, user: &UserName) {
        self.sessions
            .retain(|_, s| s.who != Principal::User(user.clone()));
    }

    fn expire(&mut self, now: Instant) {
        self.sessions.retain(|_, s| {
            now.duration_since(s.used) < SESSION_IDLE && now.duration_since(s.created) < SESSION_MAX
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_good_once_and_only_for_two_minutes() {
        let t0 = Instant::now();
        let mut s = Sessions::default();
        let code = s.new_code(t0).unwrap();
        assert!(code.len() >= 26);
        assert_eq!(s.redeem("not-it", t0), None);
        let id = s.redeem(&code, t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(s.check(&id, t0), Some(Principal::Owner));
        assert_eq!(s.redeem(&code, t0), None, "used once");
        let late = s.new_code(t0).unwrap();
        assert_eq!(s.redeem(&late, t0 + CODE_TTL), None, "expired");
    }

    #[test]
    fn sessions_end_when_idle_too_long_after_logout_and_at_their_maximum() {
        let t0 = Instant::now();
        let mut s = Sessions::default();
        let ana = Principal::User("ana".parse().unwrap());
        let id = s.open(ana.clone(), t0).unwrap();
        assert_eq!(s.check(&id, t0 + SESSION_IDLE / 2), Some(ana.clone()));
        // Used halfway, so still live a little after the first idle span.
        assert_eq!(
            s.check(&id, t0 + SESSION_IDLE + Duration::from_secs(1)),
            Some(ana.clone())
        );
        assert_eq!(s.check("forged", t0), None);
        s.close(&id);
        assert_eq!(s.check(&id, t0), None);

        let id = s.open(ana.clone(), t0).unwrap();
        assert_eq!(s.check(&id, t0 + SESSION_IDLE * 2), None, "idle");
        // Used every day, it still ends at the maximum.
        let id = s.open(ana.clone(), t0).unwrap();
        let mut t = t0;
        while t < t0 + SESSION_MAX - Duration::from_secs(86400) {
            t += Duration::from_secs(86400);
            assert!(s.check(&id, t).is_some());
        }
        assert_eq!(s.check(&id, t0 + SESSION_MAX), None);
        let id = s.open(ana.clone(), t0).unwrap();
        s.close_user(&"ana".parse().unwrap());
        assert_eq!(s.check(&id, t0), None);
    }

    #[test]
    fn failed_logins_are_braked_per_address_and_in_all() {
        let t0 = Instant::now();
        let mut s = Sessions::default();
        let a: IpAddr = "192.168.1.5".parse().unwrap();
        let b: IpAddr = "192.168.1.6".parse().unwrap();
        for _ in 0..FAILS_PER_ADDR {
            assert_eq!(s.may_try(a, t0), Ok(()));
            s.failed(a, t0);
        }
        assert!(matches!(s.may_try(a, t0), Err(Refusal::Slow(_))));
        assert_eq!(s.may_try(b, t0), Ok(()), "another address may still try");
        assert_eq!(s.may_try(a, t0 + FAIL_WINDOW), Ok(()), "the window passed");
        // Many addresses together hit the total.
        let mut s = Sessions::default();
        for i in 0..FAILS_TOTAL {
            let ip = IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8]);
            assert_eq!(s.may_try(ip, t0), Ok(()));
            s.failed(ip, t0);
        }
        assert!(matches!(
            s.may_try(IpAddr::from([10, 9, 9, 9]), t0),
            Err(Refusal::Slow(_))
        ));
    }
}
