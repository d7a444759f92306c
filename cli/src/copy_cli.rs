//! `cohort copy SRC... DEST -w HOSTS`: sends files to many hosts under the same login, tickets,
//! ACL (a copy permission per destination directory), ceilings and audit trail as `cohort exec`.
//! Each host writes each file whole (a temporary file renamed over the target), with the source's
//! permission bits, owned by the run-as user; the audit record keeps each file's size and
//! SHA-256. This module reads and checks the local files; it decides nothing a host or the
//! gateway decides.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{Context, bail};
use cohort_core::exec::task::{COPY_MODE_BITS, CopyFile, MAX_COPY_BYTES, Task};

use crate::exec_client::{RunArgs, run};

#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The files to send, then where they go on each host. With one file, DEST is the file's
    /// path there, unless it ends in `/`; with several, DEST is a directory and each keeps its
    /// name. `%h` in DEST is each host's name. The directory must exist on the host.
    #[arg(required = true, num_args = 2.., value_name = "SRC... DEST")]
    pub paths: Vec<PathBuf>,
}

/// `cohort copy`: the status to exit with (0 when every host placed every file; see `run`).
pub fn copy(args: &CopyArgs) -> anyhow::Result<u8> {
    let files = files(&args.paths)?;
    let count = files.len();
    let task = Task::Copy { files };
    task.check().context("cannot send these files")?;
    eprintln!("sending {count} file(s) to each host");
    run(&args.run, task)
}

/// The files to send, each with its path on the hosts.
fn files(paths: &[PathBuf]) -> anyhow::Result<Vec<CopyFile>> {
    let Some((dest, sources)) = paths.split_last() else { bail!("give SRC... DEST") };
    let dest = dest.to_str().context("DEST is not UTF-8; name the destination in UTF-8")?;
    if !dest.starts_with('/') {
        bail!("DEST `{dest}` is not absolute; give the full path on the hosts, e.g. /tmp/{dest}");
    }
    let into_directory = sources.len() > 1 || dest.ends_with('/');
    let mut total = 0usize;
    let mut files = Vec::with_capacity(sources.len());
    for source in sources {
        let shown = source.display();
        let meta = std::fs::metadata(source).with_context(|| format!("cannot read `{shown}`"))?;
        if !meta.is_file() {
            bail!("`{shown}` is not a regular file; cohort copy sends files (not directories)");
        }
        total = total.saturating_add(usize::try_from(meta.len()).unwrap_or(usize::MAX));
        if total > MAX_COPY_BYTES {
            bail!(
                "the files come to more than {MAX_COPY_BYTES} bytes, the most one copy carries; send fewer at once"
            );
        }
        let content = std::fs::read(source).with_context(|| format!("cannot read `{shown}`"))?;
        let mode = meta.permissions().mode() & COPY_MODE_BITS;
        let path = if into_directory {
            let name = source.file_name().and_then(|n| n.to_str()).with_context(|| {
                format!("`{shown}` has no UTF-8 file name to keep; give one file and a DEST path")
            })?;
            format!("{}/{name}", dest.trim_end_matches('/'))
        } else {
            dest.to_owned()
        };
        files.push(CopyFile { path, mode, content });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_goes_to_dest_several_go_into_it_with_their_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.sh"), dir.path().join("b"));
        std::fs::write(&a, b"#!/bin/sh\n").expect("a");
        std::fs::write(&b, b"data").expect("b");
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
        let one = files(&[a.clone(), "/tmp/run.sh".into()]).expect("one");
        assert_eq!(one[0].path, "/tmp/run.sh");
        assert_eq!(one[0].mode, 0o755, "no set-id bit is sent");
        let several = files(&[a.clone(), b.clone(), "/srv/x/".into()]).expect("several");
        let paths: Vec<&str> = several.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["/srv/x/a.sh", "/srv/x/b"]);
        let into = files(&[b.clone(), "/srv/x/".into()]).expect("into a directory");
        assert_eq!(into[0].path, "/srv/x/b");
    }

    #[test]
    fn bad_sources_and_destinations_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = files(&[dir.path().to_owned(), "/tmp/x".into()]).expect_err("a directory");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").expect("f");
        let err = files(&[f.clone(), "tmp/x".into()]).expect_err("relative");
        assert!(err.to_string().contains("not absolute"), "{err}");
        let err = files(&[dir.path().join("nosuch"), "/tmp/x".into()]).expect_err("missing");
        assert!(err.to_string().contains("nosuch"), "{err:#}");
    }
}
