//! What one run does on each of its hosts: run a command (argv, no shell, with the bytes its
//! standard input reads and the variables the client passed) or place files (`cohort copy`).
//! Owns the task types, the bounds a task must keep, `%h` substitution, and what the audit trail
//! keeps of the data a task carries: its size and SHA-256, never the bytes. It never decides who
//! may run a task or pass a variable (the ACL does) and never touches a file or a process (the
//! driver does).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::child_env::{VarError, check_vars};

/// The most standard input one run may carry to its hosts.
pub const MAX_STDIN: usize = 1024 * 1024;
/// The most file content one copy may carry (all its files together): it travels inside one
/// channel message to every host.
pub const MAX_COPY_BYTES: usize = 2 * 1024 * 1024;
/// The most files one copy may place.
pub const MAX_COPY_FILES: usize = 64;
/// The permission bits a copied file may carry: no set-user-ID, set-group-ID or sticky bit, so a
/// copy can never plant a privileged program.
pub const COPY_MODE_BITS: u32 = 0o777;

/// What every host of a run does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Task {
    /// Run `argv` (no shell); it reads `stdin`, then end of file. `env` are the variables the
    /// client passes, set on top of the run-as user's reset environment if its ACL lets each
    /// through (see [`crate::child_env`]); their values are taken as they are (no `%h`).
    Run { argv: Vec<String>, stdin: Vec<u8>, env: Vec<(String, String)> },
    /// Write each file whole, replacing what is there atomically.
    Copy { files: Vec<CopyFile> },
}

/// One file of a copy: where it goes, its permission bits, and its bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyFile {
    /// Absolute and plain (see [`super::acl::is_plain_absolute`]); `%h` stands for the host.
    pub path: String,
    /// Permission bits, within [`COPY_MODE_BITS`].
    pub mode: u32,
    pub content: Vec<u8>,
}

impl std::fmt::Debug for CopyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The bytes may be anything (a key, a binary): a trace names them by size and digest.
        write!(
            f,
            "CopyFile {{ path: {:?}, mode: {:o}, {} }}",
            self.path,
            self.mode,
            short_digest(&self.content)
        )
    }
}

/// Why a task is malformed, whoever is asked to run it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error("no command given")]
    NoCommand,
    #[error("standard input of {len} bytes; a run carries at most {MAX_STDIN}")]
    StdinTooLarge { len: usize },
    #[error("no file to copy")]
    NoFiles,
    #[error("{count} files in one copy; at most {MAX_COPY_FILES}")]
    TooManyFiles { count: usize },
    #[error("{total} bytes to copy; one copy carries at most {MAX_COPY_BYTES} (split it, or use a package)")]
    CopyTooLarge { total: usize },
    #[error(
        "`{path}`: mode {mode:o} has bits beyond {COPY_MODE_BITS:o} (no setuid, setgid or sticky bit is copied)"
    )]
    BadMode { path: String, mode: u32 },
    #[error("`{0}` is named twice in one copy")]
    Duplicate(String),
    #[error("{0}")]
    Env(VarError),
}

/// What the audit trail keeps of one piece of data a task carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataDigest {
    pub what: DataKind,
    pub size: u64,
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataKind {
    /// The command's standard input.
    Stdin,
    /// A file a copy placed.
    File { path: String, mode: u32 },
    /// A variable the client passed to the command's environment (its value is what is sized
    /// and hashed).
    Env { name: String },
}

impl std::fmt::Display for DataDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.what {
            DataKind::Stdin => write!(f, "stdin")?,
            DataKind::File { path, mode } => write!(f, "{path} mode {mode:o}")?,
            DataKind::Env { name } => write!(f, "env {name}")?,
        }
        write!(f, " {} B sha256 {}", self.size, hex::encode(self.sha256))
    }
}

fn short_digest(bytes: &[u8]) -> String {
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    format!("{} B sha256 {}", bytes.len(), hex::encode(&digest[..8]))
}

impl Task {
    /// Whether the task keeps every bound, before anyone acts on it. Paths are the ACL's to judge.
    pub fn check(&self) -> Result<(), TaskError> {
        match self {
            Task::Run { argv, stdin, env } => {
                if argv.is_empty() {
                    return Err(TaskError::NoCommand);
                }
                if stdin.len() > MAX_STDIN {
                    return Err(TaskError::StdinTooLarge { len: stdin.len() });
                }
                check_vars(env).map_err(TaskError::Env)?;
            }
            Task::Copy { files } => {
                if files.is_empty() {
                    return Err(TaskError::NoFiles);
                }
                if files.len() > MAX_COPY_FILES {
                    return Err(TaskError::TooManyFiles { count: files.len() });
                }
                let total = files.iter().fold(0usize, |sum, f| sum.saturating_add(f.content.len()));
                if total > MAX_COPY_BYTES {
                    return Err(TaskError::CopyTooLarge { total });
                }
                let mut seen = std::collections::BTreeSet::new();
                for file in files {
                    if file.mode & !COPY_MODE_BITS != 0 {
                        return Err(TaskError::BadMode { path: file.path.clone(), mode: file.mode });
                    }
                    if !seen.insert(file.path.as_str()) {
                        return Err(TaskError::Duplicate(file.path.clone()));
                    }
                }
            }
        }
        Ok(())
    }

    /// The task as `host` runs it: `%h` in the command's arguments and in the copy's paths
    /// stands for the host's name (as in ClusterShell), and `%%` for one `%`.
    pub fn for_host(&self, host: &str) -> Task {
        match self {
            Task::Run { argv, stdin, env } => Task::Run {
                argv: argv.iter().map(|a| substitute(a, host)).collect(),
                stdin: stdin.clone(),
                env: env.clone(),
            },
            Task::Copy { files } => Task::Copy {
                files: files
                    .iter()
                    .map(|f| CopyFile { path: substitute(&f.path, host), ..f.clone() })
                    .collect(),
            },
        }
    }

    /// The command the audit record names: argv for a run, none for a copy (its files are in
    /// [`Task::digests`]).
    pub fn argv(&self) -> &[String] {
        match self {
            Task::Run { argv, .. } => argv,
            Task::Copy { .. } => &[],
        }
    }

    /// The variables the client passes (none for a copy).
    pub fn env(&self) -> &[(String, String)] {
        match self {
            Task::Run { env, .. } => env,
            Task::Copy { .. } => &[],
        }
    }

    /// The size and digest of every piece of data the task carries: the standard input (when
    /// there is any) and each passed variable's value, or each file.
    pub fn digests(&self) -> Vec<DataDigest> {
        let digest = |what: DataKind, bytes: &[u8]| DataDigest {
            what,
            size: bytes.len() as u64,
            sha256: Sha256::digest(bytes).into(),
        };
        match self {
            Task::Run { stdin, env, .. } => {
                let input = (!stdin.is_empty()).then(|| digest(DataKind::Stdin, stdin));
                let vars = env
                    .iter()
                    .map(|(name, value)| digest(DataKind::Env { name: name.clone() }, value.as_bytes()));
                input.into_iter().chain(vars).collect()
            }
            Task::Copy { files } => files
                .iter()
                .map(|f| digest(DataKind::File { path: f.path.clone(), mode: f.mode }, &f.content))
                .collect(),
        }
    }

    /// Hashes the task into `h` unambiguously: a tag per kind and a length before every part,
    /// so no argument can pass for input or a variable, and no file for another.
    pub(crate) fn hash_into(&self, h: &mut Sha256) {
        let part = |h: &mut Sha256, bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        match self {
            Task::Run { argv, stdin, env } => {
                h.update([1u8]);
                h.update((argv.len() as u64).to_be_bytes());
                for arg in argv {
                    part(h, arg.as_bytes());
                }
                part(h, stdin);
                h.update((env.len() as u64).to_be_bytes());
                for (name, value) in env {
                    part(h, name.as_bytes());
                    part(h, value.as_bytes());
                }
            }
            Task::Copy { files } => {
                h.update([2u8]);
                h.update((files.len() as u64).to_be_bytes());
                for file in files {
                    part(h, file.path.as_bytes());
                    h.update(file.mode.to_be_bytes());
                    part(h, &file.content);
                }
            }
        }
    }
}

/// `text` with `%h` replaced by `host` and `%%` by `%`, in one pass left to right (so `%%h` is
/// a literal `%h`); any other `%` stays as it is (`date +%d` keeps its `%d`).
fn substitute(text: &str, host: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('%', Some('h')) => {
                chars.next();
                out.push_str(host);
            }
            ('%', Some('%')) => {
                chars.next();
                out.push('%');
            }
            (c, _) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(files: &[(&str, u32, &[u8])]) -> Task {
        Task::Copy {
            files: files
                .iter()
                .map(|(path, mode, content)| CopyFile {
                    path: (*path).into(),
                    mode: *mode,
                    content: content.to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn bounds_are_checked_with_a_reason() {
        assert_eq!(Task::Run { argv: vec![], stdin: vec![], env: vec![] }.check(), Err(TaskError::NoCommand));
        let big = Task::Run { argv: vec!["cat".into()], stdin: vec![0; MAX_STDIN + 1], env: vec![] };
        assert_eq!(big.check(), Err(TaskError::StdinTooLarge { len: MAX_STDIN + 1 }));
        assert_eq!(copy(&[]).check(), Err(TaskError::NoFiles));
        assert!(matches!(copy(&[("/tmp/a", 0o4755, b"x")]).check(), Err(TaskError::BadMode { .. })));
        assert_eq!(
            copy(&[("/tmp/a", 0o644, b"x"), ("/tmp/a", 0o644, b"y")]).check(),
            Err(TaskError::Duplicate("/tmp/a".into()))
        );
        let huge = vec![0u8; MAX_COPY_BYTES / 2 + 1];
        let two = copy(&[("/tmp/a", 0o644, &huge), ("/tmp/b", 0o644, &huge)]);
        assert!(matches!(two.check(), Err(TaskError::CopyTooLarge { .. })));
        assert_eq!(copy(&[("/tmp/a", 0o755, b"x")]).check(), Ok(()));
        let env = vec![("BAD-NAME".to_owned(), "x".to_owned())];
        let bad_env = Task::Run { argv: vec!["env".into()], stdin: vec![], env };
        assert!(matches!(bad_env.check(), Err(TaskError::Env(_))));
    }

    #[test]
    fn percent_h_names_the_host_in_arguments_and_paths() {
        let run = Task::Run { argv: vec!["touch".into(), "/tmp/f-%h".into()], stdin: vec![], env: vec![] };
        assert_eq!(run.for_host("h07").argv(), ["touch", "/tmp/f-h07"]);
        let Task::Copy { files } = copy(&[("/tmp/%h/f", 0o600, b"x")]).for_host("h07") else {
            panic!("a copy")
        };
        assert_eq!(files[0].path, "/tmp/h07/f");
    }

    #[test]
    fn percent_percent_is_one_percent_and_other_escapes_stay() {
        assert_eq!(substitute("date +%h-%d", "h01"), "date +h01-%d");
        assert_eq!(substitute("date +%%h-%d", "h01"), "date +%h-%d");
        assert_eq!(substitute("100%%", "h01"), "100%");
        assert_eq!(substitute("%%%h", "h01"), "%h01");
        assert_eq!(substitute("a%", "h01"), "a%");
    }

    #[test]
    fn digests_name_each_piece_of_data_and_never_hold_it() {
        assert!(Task::Run { argv: vec!["true".into()], stdin: vec![], env: vec![] }.digests().is_empty());
        let with_input =
            Task::Run { argv: vec!["cat".into()], stdin: b"hello\n".to_vec(), env: vec![] }.digests();
        assert_eq!(with_input.len(), 1);
        assert_eq!(with_input[0].what, DataKind::Stdin);
        assert_eq!(with_input[0].size, 6);
        assert_eq!(hex::encode(with_input[0].sha256), hex::encode(Sha256::digest(b"hello\n")));
        let env = vec![("LANG".to_owned(), "C.UTF-8".to_owned())];
        let with_env = Task::Run { argv: vec!["env".into()], stdin: vec![], env }.digests();
        assert_eq!(with_env.len(), 1);
        assert_eq!(with_env[0].what, DataKind::Env { name: "LANG".into() });
        assert!(with_env[0].to_string().starts_with("env LANG 7 B sha256 "), "{}", with_env[0]);
        let files = copy(&[("/tmp/a", 0o640, b"abc")]).digests();
        assert_eq!(files[0].what, DataKind::File { path: "/tmp/a".into(), mode: 0o640 });
        assert!(files[0].to_string().starts_with("/tmp/a mode 640 3 B sha256 ba7816bf"));
    }

    #[test]
    fn the_hash_keeps_kinds_files_and_arguments_apart() {
        let hash = |t: &Task| {
            let mut h = Sha256::new();
            t.hash_into(&mut h);
            <[u8; 32]>::from(h.finalize())
        };
        let a = copy(&[("/tmp/a", 0o644, b"xy")]);
        let b = copy(&[("/tmp/a", 0o600, b"xy")]);
        let c = copy(&[("/tmp/a", 0o644, b"x"), ("/tmp/b", 0o644, b"y")]);
        let run = Task::Run { argv: vec!["/tmp/a".into()], stdin: b"xy".to_vec(), env: vec![] };
        let var = |name: &str, value: &str| vec![(name.to_owned(), value.to_owned())];
        let with_env = Task::Run { argv: vec!["/tmp/a".into()], stdin: b"xy".to_vec(), env: var("A", "B") };
        let other_env = Task::Run { argv: vec!["/tmp/a".into()], stdin: b"xy".to_vec(), env: var("AB", "") };
        let arg_not_env = Task::Run {
            argv: vec!["/tmp/a".into(), "A".into(), "B".into()],
            stdin: b"xy".to_vec(),
            env: vec![],
        };
        let hashes =
            [hash(&a), hash(&b), hash(&c), hash(&run), hash(&with_env), hash(&other_env), hash(&arg_not_env)];
        for (i, x) in hashes.iter().enumerate() {
            for y in &hashes[i + 1..] {
                assert_ne!(x, y);
            }
        }
    }
}
