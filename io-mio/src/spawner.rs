//! Starting commands from a thread with a descriptor table of its own. Spawning copies the
//! spawning thread's descriptor table into the child, whose exec then closes every descriptor
//! marked close-on-exec, one by one: an exec node serving a thousand hosts holds thousands of
//! sockets, and paying for each of them on every command cost more than the rest of the spawn.
//! The spawner thread unshares its table when it starts, before the node opens its sockets, so
//! the commands it starts copy a handful. The pipes a command's output comes back on are made
//! there and handed to the event loop over a Unix socket (SCM_RIGHTS). What the thread copied
//! from the loop's table when it unshared, it closes at once, in its own table only.
//!
//! Owns that thread and the hand-over. It never decides what runs or as whom: it starts the
//! `Command` it is given, with the standard input it is given. Where the kernel refuses to
//! unshare, commands start on the caller's thread as before.

use std::io::{self, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};

/// A command that started, with the read ends of its standard output and error.
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

struct Job {
    command: Command,
    stdin: Vec<u8>,
}

/// Where commands start: the spawner thread, or the caller's where unsharing was refused.
#[derive(Debug)]
pub struct Spawner(Mode);

#[derive(Debug)]
enum Mode {
    Thread {
        jobs: mpsc::Sender<Job>,
        started: mpsc::Receiver<io::Result<Child>>,
        /// This thread's end of the socket the output pipes arrive on.
        pipes: UnixStream,
    },
    Here,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("command", &self.command).finish_non_exhaustive()
    }
}

impl Spawner {
    /// Starts the spawner thread. Call it before opening the node's sockets: what is open now
    /// is what every command's spawn copies.
    pub fn start() -> Spawner {
        match Self::thread() {
            Ok(spawner) => spawner,
            Err(e) => {
                tracing::warn!(error = %e, "commands start on the event loop's thread (no descriptor table of their own)");
                Spawner::here()
            }
        }
    }

    fn thread() -> io::Result<Spawner> {
        let (pipes, theirs) = UnixStream::pair()?;
        let (jobs, take) = mpsc::channel::<Job>();
        let (report, started) = mpsc::channel();
        let (ready, unshared) = mpsc::channel();
        // `theirs` stays open in this thread's table too (unshare copies, it cannot move), one
        // descriptor the loop never uses; the thread's copy closes when the node stops.
        std::thread::Builder::new().name("spawner".into()).spawn(move || {
            let outcome = nix::sched::unshare(nix::sched::CloneFlags::CLONE_FILES)
                .map_err(io::Error::from)
                .and_then(|()| close_copies(theirs.as_raw_fd()));
            let go = outcome.is_ok();
            if ready.send(outcome).is_err() || !go {
                return;
            }
            serve(&take, &report, &theirs);
        })?;
        unshared.recv().map_err(|_| io::Error::other("the spawner thread stopped before it began"))??;
        Ok(Spawner(Mode::Thread { jobs, started, pipes }))
    }

    /// Commands start on the caller's thread.
    pub fn here() -> Spawner {
        Spawner(Mode::Here)
    }

    /// Whether commands start on a thread with a descriptor table of its own.
    pub fn has_own_table(&self) -> bool {
        matches!(self.0, Mode::Thread { .. })
    }

    /// Starts `command` with `stdin` on its standard input and its output on two pipes.
    pub fn spawn(&self, command: Command, stdin: Vec<u8>) -> io::Result<Spawned> {
        let Mode::Thread { jobs, started, pipes } = &self.0 else { return start(command, &stdin) };
        let gone = || io::Error::other("the spawner thread has stopped");
        jobs.send(Job { command, stdin }).map_err(|_| gone())?;
        let child = started.recv().map_err(|_| gone())??;
        // Sent before the child was reported: they wait on the socket.
        let (stdout, stderr) = receive_pipes(pipes)?;
        Ok(Spawned { child, stdout, stderr })
    }
}

/// The spawner thread: each job started, its output pipes sent over `pipes`, then its child
/// reported; until the loop hangs up.
fn serve(take: &mpsc::Receiver<Job>, report: &mpsc::Sender<io::Result<Child>>, pipes: &UnixStream) {
    while let Ok(Job { command, stdin }) = take.recv() {
        let outcome = start(command, &stdin).and_then(|Spawned { child, stdout, stderr }| {
            // Closed here once sent: from now on only the loop holds them.
            send_pipes(pipes, &stdout, &stderr)?;
            Ok(child)
        });
        if report.send(outcome).is_err() {
            return;
        }
    }
}

/// Closes, in the spawner's table only, every descriptor it copied from the loop's but `keep`
/// (and standard input, output and error). Kept, they would hold open for the spawner's life
/// what the loop closes: a listening socket (in a test, another node's in the same process)
/// whose port a restarted node must bind again, or a file it replaced.
fn close_copies(keep: RawFd) -> io::Result<()> {
    let copied: Vec<RawFd> = std::fs::read_dir("/proc/thread-self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The listing's own descriptor is among them, already closed: EBADF, ignored.
    for fd in copied.into_iter().filter(|fd| *fd > 2 && *fd != keep) {
        let _ = nix::unistd::close(fd);
    }
    Ok(())
}

/// Starts `command` on this thread.
fn start(mut command: Command, stdin: &[u8]) -> io::Result<Spawned> {
    let mut child =
        command.stdin(stdin_source(stdin)?).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let missing = || io::Error::other("a piped stream was not set up");
    let stdout = OwnedFd::from(child.stdout.take().ok_or_else(missing)?);
    let stderr = OwnedFd::from(child.stderr.take().ok_or_else(missing)?);
    Ok(Spawned { child, stdout, stderr })
}

/// A command's standard input: nothing, or the bytes from an unlinked file, so the loop never
/// blocks writing to a command that does not read.
fn stdin_source(bytes: &[u8]) -> io::Result<Stdio> {
    use std::io::Seek;
    if bytes.is_empty() {
        return Ok(Stdio::null());
    }
    let mut file = tempfile::tempfile()?;
    file.write_all(bytes)?;
    file.rewind()?;
    Ok(Stdio::from(file))
}

fn send_pipes(socket: &UnixStream, stdout: &OwnedFd, stderr: &OwnedFd) -> io::Result<()> {
    let fds = [stdout.as_fd(), stderr.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for two descriptors in the control buffer"));
    }
    // One byte: a message carries descriptors only alongside some data.
    rustix::net::sendmsg(socket, &[IoSlice::new(&[1])], &mut control, SendFlags::empty())?;
    Ok(())
}

fn receive_pipes(socket: &UnixStream) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let received = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if received.bytes != 1 {
        return Err(io::Error::other("the spawner's socket closed"));
    }
    let mut fds = Vec::with_capacity(2);
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    let mut fds = fds.into_iter();
    match (fds.next(), fds.next(), fds.next()) {
        (Some(stdout), Some(stderr), None) => Ok((stdout, stderr)),
        _ => Err(io::Error::other("the spawner sent other than a command's two output pipes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn output(spawned: Spawned) -> (Vec<u8>, Vec<u8>, Option<i32>) {
        let Spawned { mut child, stdout, stderr } = spawned;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        std::fs::File::from(stdout).read_to_end(&mut out).expect("reads stdout");
        std::fs::File::from(stderr).read_to_end(&mut err).expect("reads stderr");
        (out, err, child.wait().expect("waits").code())
    }

    /// How many descriptors a command started by `spawn` finds open.
    fn inherited(spawn: impl FnOnce(Command) -> io::Result<Spawned>) -> usize {
        let mut command = Command::new("sh");
        command.args(["-c", "ls /proc/$$/fd | wc -l"]);
        let (out, _, code) = output(spawn(command).expect("spawns"));
        assert_eq!(code, Some(0));
        String::from_utf8(out).expect("utf-8").trim().parse().expect("a count")
    }

    /// Sockets the loop opens after the spawner started are not in the table a command's spawn
    /// copies. Made inheritable here so that a command would find them if they were: one started
    /// on this thread does.
    #[test]
    fn commands_start_from_the_spawners_own_table_and_their_output_comes_back_to_the_caller() {
        let spawner = Spawner::start();
        assert!(spawner.has_own_table(), "the kernel let the thread unshare");
        let sockets: Vec<std::net::UdpSocket> =
            (0..200).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("binds")).collect();
        for socket in &sockets {
            rustix::io::fcntl_setfd(socket, rustix::io::FdFlags::empty()).expect("clears close-on-exec");
        }
        let here = inherited(|command| start(command, &[]));
        let spawned = inherited(|command| spawner.spawn(command, Vec::new()));
        assert!(here >= 200, "a command started here finds the sockets: {here}");
        assert!(spawned < 20, "a command the spawner started finds {spawned} descriptors");

        let mut command = Command::new("sh");
        command.args(["-c", "cat; echo err >&2; exit 7"]);
        let (out, err, code) = output(spawner.spawn(command, b"from stdin\n".to_vec()).expect("spawns"));
        assert_eq!((out.as_slice(), err.as_slice(), code), (&b"from stdin\n"[..], &b"err\n"[..], Some(7)));
    }

    /// What the loop had open when the spawner started, and closes later, is closed for good: a
    /// port it listened on can be bound again while the spawner lives.
    #[test]
    fn a_socket_the_loop_closes_is_not_held_open_by_the_spawner() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let addr = listener.local_addr().expect("an address");
        let spawner = Spawner::start();
        assert!(spawner.has_own_table());
        drop(listener);
        std::net::TcpListener::bind(addr).expect("the port is free again");
        drop(spawner);
    }

    #[test]
    fn a_command_that_cannot_start_says_why_and_the_spawner_goes_on() {
        let spawner = Spawner::start();
        let missing = spawner.spawn(Command::new("/no/such/program"), Vec::new()).expect_err("no program");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        let (out, _, code) = output(spawner.spawn(Command::new("true"), Vec::new()).expect("spawns"));
        assert_eq!((out.len(), code), (0, Some(0)));
    }
}
