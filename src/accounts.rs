//! The accounts people log in with from a browser (the web player on
//! `--web`) and, later, from Subsonic apps: names and passwords, kept in
//! the data dir.
//!
//! Passwords are stored **sealed, not hashed**: the Subsonic API's
//! token auth sends `md5(password + salt)` with a fresh salt, which only a
//! server that can recover the password can check (Navidrome stores them
//! the same way). Each password is sealed with ChaCha20-Poly1305 under a
//! key of its own file (`users.key`, 0600), bound to its user's name, so a
//! copy of `users.json` alone reveals nothing and a sealed password cannot
//! be moved to another name. Both files are written atomically and only
//! the owner may read them.
//!
//! The CLI writes the accounts (`tunemesh user add|rm|passwd`), whether a
//! node runs or not; a running node reads the file at each login, so a
//! change counts at once. Writers take `users.lock`.
//!
//! Must never: log or print a password, compare one in time that depends
//! on its content, or be called on an async runtime thread (every function
//! here does blocking file I/O).

use crate::fsutil::{write_atomic, FileMode};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Longest password accepted (bytes): far beyond any real one, small
/// enough that a login request stays small.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A failure reading or changing the accounts.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// No account has that name.
    #[error("no account named {0:?}")]
    NoSuchUser(String),
    /// An account with that name exists already.
    #[error("an account named {0:?} exists already")]
    Exists(String),
    /// A name that cannot be an account's.
    #[error("{0}")]
    BadName(String),
    /// A password that cannot be stored.
    #[error("{0}")]
    BadPassword(String),
    /// A file cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds what it should not (or the key does not open it).
    #[error("{} is damaged: {reason}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// An account's name: 1 to 64 characters, letters, digits and `.`, `_`,
/// `-`, `@` (what Subsonic apps and URLs carry without escaping trouble).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);

impl UserName {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for UserName {
    type Err = AccountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
        if s.is_empty() || s.chars().count() > 64 || !s.chars().all(ok) {
            return Err(AccountError::BadName(format!(
                "{s:?} is not an account name: use 1 to 64 letters, digits, '.', '_', '-' or '@'"
            )));
        }
        Ok(UserName(s.to_string()))
    }
}

impl std::fmt::Display for UserName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password in memory; its `Debug` says nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// A password to store: not empty, at most [`MAX_PASSWORD_BYTES`].
    pub fn new(p: String) -> Result<Password, AccountError> {
        if p.is_empty() {
            return Err(AccountError::BadPassword("the password is empty".into()));
        }
        if p.len() > MAX_PASSWORD_BYTES {
            return Err(AccountError::BadPassword(format!(
                "the password is longer than {MAX_PASSWORD_BYTES} bytes"
            )));
        }
        Ok(Password(p))
    }

    /// The password itself (to compute a Subsonic token with).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(…)")
    }
}

/// What `user ls` shows of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// Its name.
    pub name: UserName,
    /// When it was made (Unix ms).
    pub created_unix_ms: u64,
}

/// The accounts file, as written.
#[derive(Default, Serialize, Deserialize)]
struct File {
    version: u32,
    users: Vec<Stored>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Stored {
    name: String,
    created_unix_ms: u64,
    /// The 12-byte nonce, hex.
    nonce: String,
    /// The password sealed under the key with the name as associated
    /// data, hex.
    sealed: String,
    /// blake3 of the account's API key (Subsonic `apiKey`), hex; none
    /// until `tunemesh user apikey` makes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_key: Option<String>,
}

/// The accounts of one data dir.
#[derive(Debug, Clone)]
pub struct Accounts {
    dir: PathBuf,
}

impl Accounts {
    /// The accounts kept in `dir` (the node's data dir). Reads nothing yet.
    pub fn new(dir: impl Into<PathBuf>) -> Accounts {
        Accounts { dir: dir.into() }
    }

    fn users_path(&self) -> PathBuf {
        self.dir.join("users.json")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("users.key")
    }

    /// Every account, by name.
    pub fn list(&self) -> Result<Vec<UserInfo>, AccountError> {
        let mut out: Vec<UserInfo> = self
            .read()?
            .users
            .into_iter()
            .filter_map(|u| {
                Some(UserInfo {
                    name: u.name.parse().ok()?,
                    created_unix_ms: u.created_unix_ms,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Whether no account exists (`--web` refuses to start then).
    pub fn is_empty(&self) -> Result<bool, AccountError> {
        Ok(self.read()?.users.is_empty())
    }

    /// Make an account.
    pub fn add(&self, name: &UserName, password: &Password) -> Result<(), AccountError> {
        self.change(|file, key| {
            if file.users.iter().any(|u| u.name == name.0) {
                return Err(AccountError::Exists(name.0.clone()));
            }
            file.users.push(seal(key, name, password, now_ms())?);
            Ok(())
        })
    }

    /// Give an account a new password.
    pub fn set_password(&self, name: &UserName, password: &Password) -> Result<(), AccountError> {
        self.change(|file, key| {
            let u = file
                .users
                .iter_mut()
                .find(|u| u.name == name.0)
                .ok_or_else(|| AccountError::NoSuchUser(name.0.clone()))?;
            let api_key = u.api_key.take();
            *u = seal(key, name, password, u.created_unix_ms)?;
            u.api_key = api_key;
            Ok(())
        })
    }

    /// Remove an account.
    pub fn remove(&self, name: &UserName) -> Result<(), AccountError> {
        self.change(|file, _| {
            let before = file.users.len();
            file.users.retain(|u| u.name != name.0);
            if file.users.len() == before {
                return Err(AccountError::NoSuchUser(name.0.clone()));
            }
            Ok(())
        })
    }

    /// Make a new API key for `name` (for Subsonic apps' `apiKey`), which
    /// replaces the old one; only its hash is kept, so it is shown once.
    pub fn new_api_key(&self, name: &UserName) -> Result<String, AccountError> {
        let mut raw = [0u8; 24];
        getrandom::fill(&mut raw)
            .map_err(|e| AccountError::BadPassword(format!("no randomness for a key: {e}")))?;
        let key = data_encoding::BASE32_NOPAD
            .encode(&raw)
            .to_ascii_lowercase();
        let hash = blake3::hash(key.as_bytes()).to_hex().to_string();
        self.change(|file, _| {
            let u = file
                .users
                .iter_mut()
                .find(|u| u.name == name.0)
                .ok_or_else(|| AccountError::NoSuchUser(name.0.clone()))?;
            u.api_key = Some(hash);
            Ok(())
        })?;
        Ok(key)
    }

    /// The account whose API key is `key`, if any.
    pub fn user_of_api_key(&self, key: &str) -> Result<Option<UserName>, AccountError> {
        let h = blake3::hash(key.trim().as_bytes()).to_hex().to_string();
        Ok(self
            .read()?
            .users
            .into_iter()
            .find(|u| u.api_key.as_deref().is_some_and(|k| k == h))
            .and_then(|u| u.name.parse().ok()))
    }

    /// The password of `name`, unsealed; `None` when there is no such
    /// account. For checks that need the password itself (Subsonic token
    /// auth); a plain login uses [`Accounts::verify`].
    pub fn password(&self, name: &str) -> Result<Option<Password>, AccountError> {
        let file = self.read()?;
        let Some(u) = file.users.iter().find(|u| u.name == name) else {
            return Ok(None);
        };
        let key = self.key(KeyUse::Existing)?;
        unseal(&key, u)
            .map(Some)
            .map_err(|reason| AccountError::Damaged {
                path: self.users_path(),
                reason,
            })
    }

    /// Whether `password` is the password of `name`. Compares in constant
    /// time; an unknown name costs the same as a wrong password.
    pub fn verify(&self, name: &str, password: &str) -> Result<bool, AccountError> {
        let stored = self.password(name)?;
        let want = blake3::hash(stored.as_ref().map_or("\u{0}", |p| p.expose()).as_bytes());
        let got = blake3::hash(password.as_bytes());
        // blake3::Hash compares in constant time.
        Ok(stored.is_some() && want == got)
    }

    fn read(&self) -> Result<File, AccountError> {
        let path = self.users_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| AccountError::Damaged {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
            Err(source) => Err(AccountError::Io { path, source }),
        }
    }

    /// Read, change and write the file under the writers' lock.
    fn change(
        &self,
        f: impl FnOnce(&mut File, &Key) -> Result<(), AccountError>,
    ) -> Result<(), AccountError> {
        let io = |path: PathBuf| move |source| AccountError::Io { path, source };
        std::fs::create_dir_all(&self.dir).map_err(io(self.dir.clone()))?;
        let lock_path = self.dir.join("users.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(lock_path.clone()))?;
        fs2::FileExt::lock_exclusive(&lock).map_err(io(lock_path))?;
        let key = self.key(KeyUse::CreateIfMissing)?;
        let mut file = self.read()?;
        f(&mut file, &key)?;
        file.version = 1;
        let text = serde_json::to_vec_pretty(&file).map_err(|e| AccountError::Damaged {
            path: self.users_path(),
            reason: e.to_string(),
        })?;
        let path = self.users_path();
        write_atomic(&path, &text, FileMode::OwnerOnly).map_err(io(path))
        // The lock goes with `lock`.
    }

    fn key(&self, use_: KeyUse) -> Result<Key, AccountError> {
        let path = self.key_path();
        match std::fs::read(&path) {
            Ok(b) if b.len() == 32 => Ok(*Key::from_slice(&b)),
            Ok(_) => Err(AccountError::Damaged {
                path,
                reason: "the key is not 32 bytes".into(),
            }),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && use_ == KeyUse::CreateIfMissing =>
            {
                let mut b = [0u8; 32];
                getrandom::fill(&mut b).map_err(|e| AccountError::Io {
                    path: path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                crate::fsutil::create_atomic(&path, &b, FileMode::OwnerOnly)
                    .map_err(|source| AccountError::Io { path, source })?;
                Ok(*Key::from_slice(&b))
            }
            Err(source) => Err(AccountError::Io { path, source }),
        }
    }
}

#[derive(PartialEq, Eq)]
enum KeyUse {
    Existing,
    CreateIfMissing,
}

fn seal(key: &Key, name: &UserName, pw: &Password, created: u64) -> Result<Stored, AccountError> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce)
        .map_err(|e| AccountError::BadPassword(format!("no randomness to seal it with: {e}")))?;
    let sealed = ChaCha20Poly1305::new(key)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: pw.0.as_bytes(),
                aad: name.0.as_bytes(),
            },
        )
        .map_err(|_| AccountError::BadPassword("cannot seal the password".into()))?;
    Ok(Stored {
        name: name.0.clone(),
        created_unix_ms: created,
        nonce: data_encoding::HEXLOWER.encode(&nonce),
        sealed: data_encoding::HEXLOWER.encode(&sealed),
        api_key: None,
    })
}

fn unseal(key: &Key, u: &Stored) -> Result<Password, String> {
    let hex = |s: &str| {
        data_encoding::HEXLOWER
            .decode(s.as_bytes())
            .map_err(|e| format!("account {:?}: {e}", u.name))
    };
    let nonce = hex(&u.nonce)?;
    if nonce.len() != 12 {
        return Err(format!("account {:?}: the nonce is not 12 bytes", u.name));
    }
    let plain = ChaCha20Poly1305::new(key)
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &hex(&u.sealed)?,
                aad: u.name.as_bytes(),
            },
        )
        .map_err(|_| {
            format!(
                "account {:?}: its password does not open with users.key",
                u.name
            )
        })?;
    String::from_utf8(plain)
        .map(Password)
        .map_err(|_| format!("account {:?}: its password is not UTF-8", u.name))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> UserName {
        s.parse().unwrap()
    }

    fn pw(s: &str) -> Password {
        Password::new(s.into()).unwrap()
    }

    #[test]
    fn add_verify_change_and_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Accounts::new(tmp.path());
        assert!(a.is_empty().unwrap());
        a.add(&name("ana"), &pw("correct horse")).unwrap();
        assert!(matches!(
            a.add(&name("ana"), &pw("x")),
            Err(AccountError::Exists(_))
        ));
        assert!(a.verify("ana", "correct horse").unwrap());
        assert!(!a.verify("ana", "correct hors").unwrap());
        assert!(!a.verify("bob", "correct horse").unwrap());
        assert_eq!(
            a.password("ana").unwrap().unwrap().expose(),
            "correct horse"
        );
        a.set_password(&name("ana"), &pw("battery staple")).unwrap();
        assert!(!a.verify("ana", "correct horse").unwrap());
        assert!(a.verify("ana", "battery staple").unwrap());
        a.add(&name("bob"), &pw("b")).unwrap();
        let names: Vec<String> = a.list().unwrap().into_iter().map(|u| u.name.0).collect();
        assert_eq!(names, ["ana", "bob"]);
        a.remove(&name("ana")).unwrap();
        assert!(matches!(
            a.remove(&name("ana")),
            Err(AccountError::NoSuchUser(_))
        ));
        assert!(!a.verify("ana", "battery staple").unwrap());
    }

    #[test]
    fn the_file_alone_reveals_no_password_and_sealed_ones_cannot_move() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Accounts::new(tmp.path());
        a.add(&name("ana"), &pw("hunter2-secret")).unwrap();
        a.add(&name("bob"), &pw("other")).unwrap();
        let text = std::fs::read_to_string(tmp.path().join("users.json")).unwrap();
        assert!(!text.contains("hunter2"));
        // Give bob ana's sealed password: it must not open as bob's.
        let mut f: File = serde_json::from_str(&text).unwrap();
        let (n, s) = (f.users[0].nonce.clone(), f.users[0].sealed.clone());
        f.users[1].nonce = n;
        f.users[1].sealed = s;
        std::fs::write(
            tmp.path().join("users.json"),
            serde_json::to_vec(&f).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            a.verify("bob", "hunter2-secret"),
            Err(AccountError::Damaged { .. })
        ));
        // Another key opens nothing.
        std::fs::write(tmp.path().join("users.key"), [7u8; 32]).unwrap();
        assert!(a.password("ana").is_err());
    }

    #[test]
    fn names_and_passwords_are_checked() {
        for bad in ["", "a b", "x/y", &"n".repeat(65), "semi;colon"] {
            assert!(bad.parse::<UserName>().is_err(), "{bad:?}");
        }
        for good in ["ana", "Ana.Maria_2", "me@home", "josé"] {
            assert!(good.parse::<UserName>().is_ok(), "{good:?}");
        }
        assert!(Password::new(String::new()).is_err());
        assert!(Password::new("x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert_eq!(format!("{:?}", pw("secret")), "Password(…)");
    }

    #[cfg(unix)]
    #[test]
    fn only_the_owner_may_read_the_files() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let a = Accounts::new(tmp.path());
        a.add(&name("ana"), &pw("p")).unwrap();
        for f in ["users.json", "users.key"] {
            let m = std::fs::metadata(tmp.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o777, 0o600, "{f}");
        }
    }
}
