//! Files that appear whole or not at all: the one implementation of "write
//! a temporary file beside the target, fsync it, rename it over the target,
//! fsync the folder".
//!
//! A reader (or a restart after a crash or power loss) sees the old file or
//! the new one, never a mix or a truncated one; a failed write leaves
//! nothing behind but, at worst, a `.tunemesh-*.part` file in the target's
//! folder after a crash (a running process removes its own on error).
//!
//! Responsible for durability and for the mode a new file gets. It must
//! never know what it writes (formats belong to their modules), and every
//! function here blocks (file I/O, fsync): call it from a blocking thread,
//! never from an async runtime thread.

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::path::Path;

/// Who may read a file written here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileMode {
    /// As `std::fs::write` would create it: 0666 less the process umask.
    Default,
    /// Its owner alone (0600): keys, tokens, member lists.
    OwnerOnly,
}

impl FileMode {
    fn permissions(self) -> Option<Permissions> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            Some(Permissions::from_mode(match self {
                FileMode::Default => 0o666,
                FileMode::OwnerOnly => 0o600,
            }))
        }
        #[cfg(not(unix))]
        {
            let _ = self;
            None
        }
    }
}

/// Replace (or create) `path` with `bytes`, atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: FileMode) -> io::Result<()> {
    write_atomic_with(path, mode, |f| f.write_all(bytes))
}

/// Replace (or create) `path` with what `fill` writes into the file it is
/// given (a stream copied, a serializer), atomically and durably. If
/// `fill` fails, `path` is left as it was and the temporary file is
/// removed; its error is returned.
pub fn write_atomic_with<E: From<io::Error>>(
    path: &Path,
    mode: FileMode,
    fill: impl FnOnce(&mut File) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = filled(path, mode, fill)?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_parent(path)?;
    Ok(())
}

/// Create `path` with `bytes`, atomically and durably, unless it exists:
/// then it is left alone and the error is [`io::ErrorKind::AlreadyExists`]
/// (two first runs racing keep the file that won).
pub fn create_atomic(path: &Path, bytes: &[u8], mode: FileMode) -> io::Result<()> {
    let tmp = filled(path, mode, |f| f.write_all(bytes))?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    sync_parent(path)
}

/// A temporary file beside `path` with `mode`, filled by `fill` and synced.
fn filled<E: From<io::Error>>(
    path: &Path,
    mode: FileMode,
    fill: impl FnOnce(&mut File) -> Result<(), E>,
) -> Result<tempfile::NamedTempFile, E> {
    let mut b = tempfile::Builder::new();
    b.prefix(".tunemesh-").suffix(".part");
    if let Some(p) = mode.permissions() {
        b.permissions(p);
    }
    let mut tmp = b.tempfile_in(parent(path))?;
    fill(tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Make a rename (or a creation) of `path` durable by syncing its folder
/// (a no-op where folders cannot be opened as files). For files written,
/// synced and renamed elsewhere: the transcode cache's part files, which
/// readers follow while they grow.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(parent(path))?.sync_all()?;
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_file_is_whole_or_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.pb");
        // A failed write of a new file leaves nothing.
        let half = write_atomic_with(&path, FileMode::Default, |f| {
            f.write_all(b"half of it")?;
            Err(io::Error::other("the writer failed"))
        });
        assert_eq!(half.unwrap_err().to_string(), "the writer failed");
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
        write_atomic(&path, b"first", FileMode::Default).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        // A failed replacement leaves the old file as it was.
        let half = write_atomic_with(&path, FileMode::Default, |f| {
            f.write_all(b"sec")?;
            Err(io::Error::other("no"))
        });
        assert!(half.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        write_atomic(&path, b"second, longer", FileMode::Default).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        assert_eq!(names(dir.path()), ["state.pb"], "no temporary file is left");
    }

    #[test]
    fn create_keeps_what_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        create_atomic(&path, b"winner", FileMode::OwnerOnly).unwrap();
        let e = create_atomic(&path, b"loser", FileMode::OwnerOnly).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"winner");
        assert_eq!(names(dir.path()), ["key"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_mode_is_the_one_asked_for() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let private = dir.path().join("token");
        write_atomic(&private, b"secret", FileMode::OwnerOnly).unwrap();
        assert_eq!(mode(&private), 0o600);
        // Replacing a file gives the new one the mode asked for.
        write_atomic(&private, b"secret 2", FileMode::OwnerOnly).unwrap();
        assert_eq!(mode(&private), 0o600);
        let plain = dir.path().join("out.opus");
        let reference = dir.path().join("reference");
        std::fs::write(&reference, b"").unwrap();
        write_atomic(&plain, b"music", FileMode::Default).unwrap();
        assert_eq!(
            mode(&plain),
            mode(&reference),
            "as fs::write, umask applied"
        );
        // A bare file name writes in the working folder's terms.
        assert_eq!(parent(Path::new("x")), Path::new("."));
    }
}
