//! Places a copied file on this host: each directory on the path opened in turn without following
//! a symbolic link, a new temporary file created beside the target (never an existing one),
//! written, given its mode and owner, synced, renamed over the target, and the directory synced,
//! so a reader sees the old file or the new one, never half of either. It owns only the system
//! calls: whether the file may be written there was decided in core, by the ACL.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{CWD, Mode, OFlags};

use crate::launch::resolve_run_as;

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("not an absolute path to a file")]
    NotAbsolute,
    #[error("`{dir}` is a symbolic link or not a directory; give the real path")]
    NotPlainDirectory { dir: String },
    #[error("cannot open directory `{dir}`: {source}")]
    Directory { dir: String, source: io::Error },
    #[error("{0}")]
    Owner(String),
    #[error("could not {step}: {source}")]
    Io { step: &'static str, source: io::Error },
}

/// Temporary names differ within this process as well as across processes.
static NEXT_TEMPORARY: AtomicU64 = AtomicU64::new(0);

/// Writes `contents` at `path` (absolute) with permission bits `mode`, owned by `owner`.
pub fn place_file(path: &str, contents: &[u8], mode: u32, owner: &str) -> Result<(), PlaceError> {
    let ids = resolve_run_as(owner).map_err(|e| PlaceError::Owner(e.to_string()))?;
    let rest = path.strip_prefix('/').ok_or(PlaceError::NotAbsolute)?;
    let (dirs, name) = match rest.rsplit_once('/') {
        Some((dirs, name)) => (dirs.split('/').collect::<Vec<_>>(), name),
        None => (Vec::new(), rest),
    };
    if name.is_empty() {
        return Err(PlaceError::NotAbsolute);
    }
    let dir = open_directory(&dirs)?;
    let temporary =
        format!(".{name}.cohort-{}-{}", std::process::id(), NEXT_TEMPORARY.fetch_add(1, Ordering::Relaxed));
    let created = rustix::fs::openat(
        &dir,
        temporary.as_str(),
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| PlaceError::Io { step: "create a temporary file beside it", source: e.into() })?;
    let written = fill(std::fs::File::from(created), contents, mode, ids).and_then(|()| {
        rustix::fs::renameat(&dir, temporary.as_str(), &dir, name)
            .map_err(|e| PlaceError::Io { step: "rename it into place", source: e.into() })
    });
    if written.is_err() {
        // The half-made file goes; the target was never touched.
        let _ = rustix::fs::unlinkat(&dir, temporary.as_str(), rustix::fs::AtFlags::empty());
        return written;
    }
    rustix::fs::fsync(&dir).map_err(|e| PlaceError::Io { step: "sync its directory", source: e.into() })
}

/// Opens `/` and then each of `dirs` beneath the last, refusing a link at every step.
fn open_directory(dirs: &[&str]) -> Result<OwnedFd, PlaceError> {
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
    let mut fd = rustix::fs::openat(CWD, "/", flags, Mode::empty())
        .map_err(|e| PlaceError::Directory { dir: "/".into(), source: e.into() })?;
    let mut walked = String::new();
    for part in dirs {
        walked.push('/');
        walked.push_str(part);
        fd = rustix::fs::openat(&fd, *part, flags, Mode::empty()).map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
                PlaceError::NotPlainDirectory { dir: walked.clone() }
            }
            e => PlaceError::Directory { dir: walked.clone(), source: e.into() },
        })?;
    }
    Ok(fd)
}

fn fill(
    mut file: std::fs::File,
    contents: &[u8],
    mode: u32,
    ids: Option<(u32, u32)>,
) -> Result<(), PlaceError> {
    let io = |step: &'static str| move |source: io::Error| PlaceError::Io { step, source };
    file.write_all(contents).map_err(io("write it"))?;
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(io("give it its owner"))?;
    }
    // After the owner: a change of owner clears set-id bits, and the mode is set whole here.
    file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io("set its mode"))?;
    file.sync_all().map_err(io("sync it"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn me() -> String {
        crate::launch::current_user().expect("a passwd entry")
    }

    #[test]
    fn a_file_is_placed_whole_with_its_mode_and_replaces_the_old_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"old contents that are longer").expect("old");
        let path = path.to_str().expect("utf-8");
        place_file(path, b"new\n", 0o640, &me()).expect("placed");
        assert_eq!(std::fs::read(path).expect("read"), b"new\n");
        assert_eq!(std::fs::metadata(path).expect("meta").mode() & 0o7777, 0o640);
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_link_on_the_way_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("link")).expect("symlink");
        let path = dir.path().join("link/f");
        let err = place_file(path.to_str().expect("utf-8"), b"x", 0o644, &me()).expect_err("refused");
        assert!(matches!(err, PlaceError::NotPlainDirectory { .. }), "{err}");
        assert!(err.to_string().contains("link"), "{err}");
        assert_eq!(std::fs::read_dir(elsewhere.path()).expect("list").count(), 0);
    }

    #[test]
    fn a_link_at_the_target_is_replaced_and_its_target_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").expect("victim");
        std::os::unix::fs::symlink(&victim, dir.path().join("f")).expect("symlink");
        place_file(dir.path().join("f").to_str().expect("utf-8"), b"new", 0o600, &me()).expect("placed");
        assert_eq!(std::fs::read(&victim).expect("read"), b"keep");
        assert_eq!(std::fs::read(dir.path().join("f")).expect("read"), b"new");
    }

    #[test]
    fn a_missing_directory_or_another_owner_fails_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nosuch/f");
        let err = place_file(path.to_str().expect("utf-8"), b"x", 0o644, &me()).expect_err("refused");
        assert!(err.to_string().contains("nosuch"), "{err}");
        if !nix::unistd::geteuid().is_root() {
            let path = dir.path().join("f");
            let err = place_file(path.to_str().expect("utf-8"), b"x", 0o644, "root").expect_err("refused");
            assert!(err.to_string().contains("not root"), "{err}");
        }
    }
}
