//! What a command is started as: a spawn request (argv, the user to run as, the environment core
//! decided, standard input) turned into a `Command` the spawner can start. Owns the account
//! lookups that needs (the run-as user's passwd entry, whether its home is a directory) and the
//! search for a bare program name on the `PATH` the command will have. It never decides what a
//! command's environment holds or who may run it: core does; and it never starts anything.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cohort_core::child_env::{Account, ChildEnvironment};

#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("an empty command cannot run")]
    EmptyCommand,
    #[error("could not start `{program}`: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("could not watch the output of `{program}`: {source}")]
    Register { program: String, source: io::Error },
    #[error("cannot run as `{user}`: {reason}")]
    RunAs { user: String, reason: String },
    #[error("the spawner thread has stopped; restart the node")]
    SpawnerGone,
}

/// This process's user name, if its uid has a passwd entry.
pub fn current_user() -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::geteuid()).ok().flatten().map(|u| u.name)
}

/// The uid and gid to run as: switching users needs root; otherwise only the daemon's own user.
pub(crate) fn resolve_run_as(user: &str) -> Result<Option<(u32, u32)>, ChildError> {
    let fail = |reason: String| ChildError::RunAs { user: user.to_owned(), reason };
    let me = current_user().ok_or_else(|| fail("the daemon's own user has no passwd entry".into()))?;
    if me == user {
        return Ok(None);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(fail(format!("the exec daemon runs as `{me}`, not root")));
    }
    let target = nix::unistd::User::from_name(user)
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail("no such user on this host".into()))?;
    Ok(Some((target.uid.as_raw(), target.gid.as_raw())))
}

/// What `user`'s passwd entry says (name, home, shell), and whether its home is a directory now.
pub(crate) fn account_of(user: &str) -> Result<Account, ChildError> {
    let fail = |reason: String| ChildError::RunAs { user: user.to_owned(), reason };
    let entry = nix::unistd::User::from_name(user)
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail("no such user on this host".into()))?;
    Ok(Account {
        home_is_dir: entry.dir.is_dir(),
        home: entry.dir.to_string_lossy().into_owned(),
        shell: entry.shell.to_string_lossy().into_owned(),
        name: entry.name,
    })
}

/// What to start: argv (no shell), as whom, in what environment, with what on standard input.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    pub argv: Vec<String>,
    /// `None`: the user this process runs as.
    pub run_as: Option<String>,
    pub env: ChildEnvironment,
    pub stdin: Vec<u8>,
}

impl SpawnRequest {
    /// The program, for messages.
    pub fn program(&self) -> &str {
        self.argv.first().map_or("", String::as_str)
    }

    /// The command to start: `argv` with no shell, as `run_as`, in the environment and working
    /// directory `env` resolves to for `run_as`'s account, in a new process group. A bare
    /// program name is looked up here on the `PATH` that environment sets (as `execvp` would in
    /// the child) and the command given its full path with the name as typed in `argv[0]`: a
    /// bare name left for the child to look up makes the standard library fork the whole node
    /// instead of spawning without copying it.
    pub fn command(&self) -> Result<Command, ChildError> {
        let (program, args) = self.argv.split_first().ok_or(ChildError::EmptyCommand)?;
        let run_as = match &self.run_as {
            Some(user) => user.clone(),
            None => current_user().ok_or_else(|| ChildError::RunAs {
                user: String::new(),
                reason: "the daemon's own user has no passwd entry".into(),
            })?,
        };
        let ids = resolve_run_as(&run_as)?;
        let resolved = self.env.resolve(&account_of(&run_as)?);
        let path_var = resolved.vars.iter().find(|(k, _)| k == "PATH").map(|(_, v)| OsString::from(v));
        // What the child would search: its own PATH, which is this process's unless cleared.
        let search = if resolved.clear { path_var } else { path_var.or_else(|| std::env::var_os("PATH")) };
        let mut command = match search.as_deref().and_then(|path| find_program(program, path)) {
            Some(found) => {
                let mut command = Command::new(found);
                command.arg0(program);
                command
            }
            None => Command::new(program),
        };
        if let Some((uid, gid)) = ids {
            command.gid(gid).uid(uid);
        }
        if resolved.clear {
            command.env_clear();
        }
        if let Some(dir) = &resolved.dir {
            command.current_dir(dir);
        }
        command
            .args(args)
            .envs(resolved.vars.iter().map(|(k, v)| (k, v)))
            // Its own group, so a kill reaches everything it started.
            .process_group(0);
        Ok(command)
    }
}

/// The first executable regular file named `program` in the directories of `search` (a `PATH`
/// value), for a name without a slash; `None` leaves the lookup to the child, which then fails
/// with the error `execvp` gives. Relative directories in `search` are left to the child too:
/// they mean the command's working directory, which is not this process's.
fn find_program(program: &str, search: &OsStr) -> Option<PathBuf> {
    if program.is_empty() || program.contains('/') {
        return None;
    }
    search
        .as_bytes()
        .split(|b| *b == b':')
        .map(|dir| Path::new(OsStr::from_bytes(dir)))
        .take_while(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file())
        && rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_is_found_in_the_first_directory_that_has_it_executable() {
        let dir = tempfile::tempdir().expect("a directory");
        let (first, second) = (dir.path().join("a"), dir.path().join("b"));
        for d in [&first, &second] {
            std::fs::create_dir(d).expect("made");
        }
        // In the first directory but not executable: skipped, as execvp skips it.
        std::fs::write(first.join("tool"), "#!/bin/sh\n").expect("written");
        std::fs::write(second.join("tool"), "#!/bin/sh\n").expect("written");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(second.join("tool"), std::fs::Permissions::from_mode(0o755))
            .expect("made executable");
        let search = format!("{}:{}", first.display(), second.display());
        assert_eq!(find_program("tool", OsStr::new(&search)), Some(second.join("tool")));
        assert_eq!(find_program("missing", OsStr::new(&search)), None);
        // A directory of that name is not a program.
        std::fs::create_dir(first.join("dir")).expect("made");
        assert_eq!(find_program("dir", OsStr::new(&search)), None);
    }

    #[test]
    fn a_name_with_a_slash_or_a_relative_path_entry_is_left_to_the_child() {
        assert_eq!(find_program("./true", OsStr::new("/usr/bin:/bin")), None);
        assert_eq!(find_program("bin/true", OsStr::new("/usr/bin:/bin")), None);
        // `.` first: what it means is the command's working directory, so nothing is chosen here.
        assert_eq!(find_program("true", OsStr::new(".:/usr/bin:/bin")), None);
    }

    #[test]
    fn the_command_keeps_the_name_as_typed_in_argv_zero() {
        let request = SpawnRequest {
            argv: vec!["true".into(), "x".into()],
            run_as: None,
            env: ChildEnvironment::Reset { vars: Vec::new() },
            stdin: Vec::new(),
        };
        let command = request.command().expect("a command");
        assert!(Path::new(command.get_program()).is_absolute(), "{:?}", command.get_program());
        assert_eq!(command.get_args().collect::<Vec<_>>(), [OsStr::new("x")]);
    }

    #[test]
    fn another_user_needs_root_or_is_refused() {
        let request = SpawnRequest {
            argv: vec!["true".into()],
            run_as: Some("no-such-user-here".into()),
            env: ChildEnvironment::Inherit { vars: Vec::new() },
            stdin: Vec::new(),
        };
        assert!(matches!(request.command(), Err(ChildError::RunAs { .. })));
    }

    #[test]
    fn an_empty_command_is_refused() {
        let request = SpawnRequest {
            argv: Vec::new(),
            run_as: None,
            env: ChildEnvironment::Inherit { vars: Vec::new() },
            stdin: Vec::new(),
        };
        assert!(matches!(request.command(), Err(ChildError::EmptyCommand)));
    }
}
