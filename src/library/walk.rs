//! Walking library folders: yields each directory's files together (so a
//! folder image is known before its tracks are read), follows symbolic links
//! without looping, and reports what it cannot read instead of failing.

use std::collections::HashSet;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// One directory's worth of files.
pub struct DirFiles {
    pub dir: PathBuf,
    /// Regular files (symbolic links already resolved). Their metadata is
    /// there when the walk had to read it anyway (links); otherwise the
    /// caller stats only what it needs: a first scan needs nothing.
    pub files: Vec<(PathBuf, Option<Metadata>)>,
    /// The folder image (cover.jpg, folder.png ...), if there is one.
    pub folder_image: Option<(PathBuf, Metadata)>,
}

/// Something the walk could not read; the walk goes on.
pub struct WalkProblem {
    pub path: PathBuf,
    pub error: String,
    /// True when a whole folder could not be listed: what the index knows
    /// below it must be kept, not taken as deleted.
    pub unreadable_dir: bool,
}

/// Names that mark a folder image, best first; any of the extensions below.
const FOLDER_IMAGE_NAMES: &[&str] = &["cover", "folder", "front", "album", "albumart"];
const IMAGE_EXTS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif"];

fn folder_image_rank(name: &str) -> Option<usize> {
    let lower = name.to_ascii_lowercase();
    let (stem, ext) = lower.rsplit_once('.')?;
    if !IMAGE_EXTS.contains(&ext) {
        return None;
    }
    FOLDER_IMAGE_NAMES.iter().position(|n| *n == stem)
}

#[cfg(unix)]
fn dev_ino(m: &Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
fn dev_ino(_: &Metadata) -> (u64, u64) {
    (0, 0)
}

/// Walk `root` depth-first, calling `on_dir` once per directory that has
/// files, and `on_problem` for each thing that could not be read. Hidden
/// entries (names starting with '.') are skipped: they are never music
/// (`._track.mp3` is macOS resource-fork junk).
pub fn walk(
    root: &Path,
    visited: &mut HashSet<(u64, u64)>,
    mut on_dir: impl FnMut(DirFiles),
    mut on_problem: impl FnMut(WalkProblem),
) {
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        // Gone: nothing is seen, so what the index had there is removed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            on_problem(WalkProblem {
                path: root.to_path_buf(),
                error: format!("cannot read: {e}"),
                unreadable_dir: true,
            });
            return;
        }
    };
    if !meta.is_dir() {
        // A single file: its folder image still comes from its directory.
        let dir = root.parent().unwrap_or(Path::new("/")).to_path_buf();
        let folder_image = list_folder_image(&dir);
        on_dir(DirFiles {
            dir: dir.clone(),
            files: vec![(root.to_path_buf(), Some(meta))],
            folder_image,
        });
        return;
    }
    if !visited.insert(dev_ino(&meta)) {
        return;
    }
    // Each folder to visit, with the (device, inode) chain of its ancestors.
    type Ancestors = Rc<Vec<(u64, u64)>>;
    let mut stack: Vec<(PathBuf, Ancestors)> =
        vec![(root.to_path_buf(), Rc::new(vec![dev_ino(&meta)]))];
    while let Some((dir, ancestors)) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // vanished
            Err(e) => {
                on_problem(WalkProblem {
                    path: dir.clone(),
                    error: format!("cannot read folder: {e}"),
                    unreadable_dir: true,
                });
                continue;
            }
        };
        let mut files = Vec::new();
        let mut subdirs = Vec::new();
        let mut image: Option<(usize, PathBuf, Metadata)> = None;
        for entry in rd {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    on_problem(WalkProblem {
                        path: dir.clone(),
                        error: format!("cannot list folder entry: {e}"),
                        unreadable_dir: true,
                    });
                    continue;
                }
            };
            let name = entry.file_name();
            if name.as_encoded_bytes().first() == Some(&b'.') {
                continue;
            }
            let path = entry.path();
            // The entry's type comes with the listing; only folders and
            // symbolic links (followed) need a stat here.
            let Ok(ft) = entry.file_type() else { continue };
            let meta = if ft.is_file() {
                None
            } else if ft.is_dir() || ft.is_symlink() {
                let m = if ft.is_symlink() {
                    std::fs::metadata(&path)
                } else {
                    entry.metadata()
                };
                match m {
                    Ok(m) => Some(m),
                    // A dangling link, or gone since the listing.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        on_problem(WalkProblem {
                            path,
                            error: format!("cannot read: {e}"),
                            unreadable_dir: false,
                        });
                        continue;
                    }
                }
            } else {
                continue; // sockets, fifos, devices
            };
            match meta {
                Some(m) if m.is_dir() => {
                    let id = dev_ino(&m);
                    if ancestors.contains(&id) {
                        on_problem(WalkProblem {
                            error:
                                "symbolic link loop: points back to a folder above it; not followed"
                                    .into(),
                            path,
                            unreadable_dir: false,
                        });
                    } else if visited.insert(id) {
                        subdirs.push((path, id));
                    }
                }
                // A link to something that is neither file nor folder.
                Some(m) if !m.is_file() => {}
                meta => match name.to_str().and_then(folder_image_rank) {
                    Some(r) if image.as_ref().is_none_or(|(best, _, _)| r < *best) => {
                        if let Some(m) = meta.or_else(|| entry.metadata().ok()) {
                            image = Some((r, path, m));
                        }
                    }
                    Some(_) => {}
                    None => files.push((path, meta)),
                },
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        // Push in reverse so the walk visits folders in name order.
        subdirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (sub, id) in subdirs {
            let mut chain = (*ancestors).clone();
            chain.push(id);
            stack.push((sub, Rc::new(chain)));
        }
        if !files.is_empty() {
            on_dir(DirFiles {
                dir,
                files,
                folder_image: image.map(|(_, p, m)| (p, m)),
            });
        }
    }
}

fn list_folder_image(dir: &Path) -> Option<(PathBuf, Metadata)> {
    let mut best: Option<(usize, PathBuf)> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        if let Some(r) = e.file_name().to_str().and_then(folder_image_rank) {
            if best.as_ref().is_none_or(|(b, _)| r < *b) {
                best = Some((r, e.path()));
            }
        }
    }
    let (_, p) = best?;
    let m = std::fs::metadata(&p).ok()?;
    Some((p, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_image_names() {
        assert_eq!(folder_image_rank("Cover.JPG"), Some(0));
        assert_eq!(folder_image_rank("folder.png"), Some(1));
        assert_eq!(folder_image_rank("cover.txt"), None);
        assert_eq!(folder_image_rank("back.jpg"), None);
    }
}
