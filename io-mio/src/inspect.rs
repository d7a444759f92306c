//! Looks at a file for a policy check: its kind, permission bits, owner and group (with their
//! names), size and, when asked, its first bytes. It owns only the system calls and reports
//! plain facts; whether they pass is judged in core.

use std::path::Path;

use cohort_core::policy::checks::{FileFacts, MAX_READ};
/// What is at `path` (following links), for a policy check: the facts only, no judgement.
/// `Ok(None)` when nothing is there; with `read`, the first [`MAX_READ`] bytes of a file.
pub fn inspect(path: &Path, read: bool) -> Result<Option<FileFacts>, String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let owner = nix::unistd::User::from_uid(meta.uid().into()).ok().flatten().map(|u| u.name);
    let group = nix::unistd::Group::from_gid(meta.gid().into()).ok().flatten().map(|g| g.name);
    let content = match read && meta.is_file() {
        false => None,
        true => {
            let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut bytes = Vec::new();
            file.take(MAX_READ as u64)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Some(bytes)
        }
    };
    Ok(Some(FileFacts {
        is_file: meta.is_file(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        owner,
        group,
        size: meta.len(),
        content,
    }))
}
