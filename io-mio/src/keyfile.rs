//! Node key files on disk. Owns writing them with mode 0600 (never over an existing file unless
//! asked) and refusing, on read, a file that group or others can access. The text format itself
//! belongs to core ([`NodeKeys::to_key_file`]).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cohort_core::NodeKeys;
use cohort_core::identity::KeyFileError;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileIoError {
    #[error("{path} already exists; pass --force to replace it (the old key is lost)")]
    Exists { path: PathBuf },
    #[error(
        "{path} has mode {mode:04o}: a key file must not be accessible by group or others; \
         fix it with `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Format { path: PathBuf, source: KeyFileError },
}

/// Writes `keys` to `path` with mode 0600. Refuses to replace an existing file unless `force`;
/// with `force` the new file replaces the old atomically (write beside it, fsync, rename).
pub fn write_key_file(path: &Path, keys: &NodeKeys, force: bool) -> Result<(), KeyFileIoError> {
    let io_err = |source| KeyFileIoError::Io { path: path.to_owned(), source };
    let text = keys.to_key_file();
    if !force {
        let mut file =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    KeyFileIoError::Exists { path: path.to_owned() }
                } else {
                    io_err(e)
                }
            })?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(io_err)?;
        return Ok(());
    }
    let mut staging = path.as_os_str().to_owned();
    staging.push(".tmp");
    let staging = PathBuf::from(staging);
    let _ = fs::remove_file(&staging);
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(&staging).map_err(io_err)?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(io_err)?;
    fs::rename(&staging, path).map_err(io_err)
}

/// Reads the key file at `path`, refusing one that group or others can read or write.
pub fn read_key_file(path: &Path) -> Result<NodeKeys, KeyFileIoError> {
    let io_err = |source| KeyFileIoError::Io { path: path.to_owned(), source };
    let meta = fs::metadata(path).map_err(io_err)?;
    if !meta.is_file() {
        return Err(KeyFileIoError::NotAFile { path: path.to_owned() });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileIoError::TooOpen { path: path.to_owned(), mode });
    }
    // Bounded read: a key file is a few hundred bytes; core rejects anything over its limit.
    let text = fs::read_to_string(path).map_err(io_err)?;
    NodeKeys::from_key_file(&text).map_err(|source| KeyFileIoError::Format { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::rng::seeded;

    #[test]
    fn written_keys_read_back_and_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        let keys = NodeKeys::generate(&mut seeded(1));
        write_key_file(&path, &keys, false).expect("written");
        let mode = fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_key_file(&path).expect("reads").public(), keys.public());
    }

    #[test]
    fn an_existing_file_is_kept_unless_forced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        let first = NodeKeys::generate(&mut seeded(1));
        let second = NodeKeys::generate(&mut seeded(2));
        write_key_file(&path, &first, false).expect("written");
        assert!(matches!(write_key_file(&path, &second, false), Err(KeyFileIoError::Exists { .. })));
        assert_eq!(read_key_file(&path).expect("reads").public(), first.public());
        write_key_file(&path, &second, true).expect("forced");
        assert_eq!(read_key_file(&path).expect("reads").public(), second.public());
        assert_eq!(fs::metadata(&path).expect("exists").permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_group_readable_file_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        write_key_file(&path, &NodeKeys::generate(&mut seeded(3)), false).expect("written");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = read_key_file(&path).unwrap_err();
        assert!(matches!(err, KeyFileIoError::TooOpen { mode: 0o640, .. }));
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
