//! Starting commands from a thread of their own, with a descriptor table of its own, while the
//! event loop goes on. Spawning copies the spawning thread's descriptor table into the child,
//! whose exec then closes every descriptor marked close-on-exec, one by one: an exec node serving
//! a thousand hosts holds thousands of sockets, and paying for each of them on every command cost
//! more than the rest of the spawn. The spawner thread unshares its table when it starts, before
//! the node opens its sockets, so the commands it starts copy a handful; what it copied from the
//! loop's table then, it closes at once, in its own table only.
//!
//! The loop hands a request over and goes on: the account lookups, the program's search on the
//! `PATH` and the spawn itself happen on this thread. Each outcome comes back on a datagram
//! socket the loop watches, a started command's output pipes attached (SCM_RIGHTS), and its
//! `Child` on a channel beside it.
//!
//! Owns that thread and the hand-over. It never decides what runs or as whom: it starts what the
//! [`SpawnRequest`] says. Where the kernel refuses to unshare, the thread works on the shared
//! table as is. A command started but never collected (the node stopping) is killed, never left.

use std::io::{self, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use cohort_core::node::ChildId;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};

use crate::launch::{ChildError, SpawnRequest};

/// A command that started, with the read ends of its standard output and error.
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// One request the spawner finished with: the command started, or why it did not.
#[derive(Debug)]
pub struct Finished {
    pub id: ChildId,
    pub outcome: Result<Spawned, ChildError>,
}

struct Job {
    id: ChildId,
    request: SpawnRequest,
}

/// The spawner thread and the loop's ends of the hand-over. See the module docs.
#[derive(Debug)]
pub struct Spawner {
    jobs: Option<mpsc::Sender<Job>>,
    started: mpsc::Receiver<(ChildId, Result<Child, ChildError>)>,
    /// The loop's end of the socket each outcome is announced on. `None` once stopping.
    news: Option<mio::net::UnixDatagram>,
    own_table: bool,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Spawner {
    /// Starts the spawner thread. Call it before opening the node's sockets: what is open now
    /// is what every command's spawn copies.
    pub fn start() -> io::Result<Spawner> {
        let (news, theirs) = UnixDatagram::pair()?;
        news.set_nonblocking(true)?;
        let (jobs, take) = mpsc::channel::<Job>();
        let (report, started) = mpsc::channel();
        let (ready, unshared) = mpsc::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        // `theirs` stays open in the loop's table too (unshare copies, it cannot move), one
        // descriptor the loop never uses; the thread's copy closes when it ends.
        let thread = std::thread::Builder::new().name("spawner".into()).spawn(move || {
            let own_table = match unshare_table(theirs.as_raw_fd()) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "commands start with the event loop's descriptor table (could not unshare it)");
                    false
                }
            };
            if ready.send(own_table).is_ok() {
                serve(&take, &report, &theirs, &stop);
            }
        })?;
        let own_table =
            unshared.recv().map_err(|_| io::Error::other("the spawner thread stopped before it began"))?;
        Ok(Spawner {
            jobs: Some(jobs),
            started,
            news: Some(mio::net::UnixDatagram::from_std(news)),
            own_table,
            stopping,
            thread: Some(thread),
        })
    }

    /// Whether commands start from a descriptor table of their own.
    pub fn has_own_table(&self) -> bool {
        self.own_table
    }

    /// Hands `request` to the spawner thread; its outcome comes back as a [`Finished`] for `id`.
    pub fn submit(&self, id: ChildId, request: SpawnRequest) -> Result<(), ChildError> {
        let jobs = self.jobs.as_ref().ok_or(ChildError::SpawnerGone)?;
        jobs.send(Job { id, request }).map_err(|_| ChildError::SpawnerGone)
    }

    /// The socket to watch for readability: each outcome is announced on it.
    pub fn news(&mut self) -> Option<&mut mio::net::UnixDatagram> {
        self.news.as_mut()
    }

    /// The next outcome announced, if one waits; never blocks. Call until `None` on each wake.
    pub fn next_finished(&mut self) -> io::Result<Option<Finished>> {
        let Some(news) = &self.news else { return Ok(None) };
        let Some((id, pipes)) = receive_news(news)? else { return Ok(None) };
        let gone = || io::Error::other("the spawner announced a command it did not hand over");
        // Sent before the announcement: it is there.
        let (reported, outcome) = self.started.try_recv().map_err(|_| gone())?;
        if reported != id {
            return Err(gone());
        }
        let outcome = match (outcome, pipes) {
            (Ok(child), Some((stdout, stderr))) => Ok(Spawned { child, stdout, stderr }),
            (Ok(mut child), None) => {
                kill_and_reap(&mut child);
                Err(ChildError::Spawn {
                    program: String::new(),
                    source: io::Error::other("the command's output pipes did not come back"),
                })
            }
            (Err(e), _) => Err(e),
        };
        Ok(Some(Finished { id, outcome }))
    }
}

impl Drop for Spawner {
    /// Nothing more starts; what started and was never collected is killed and reaped.
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.jobs = None;
        // A thread waiting to announce gives up once the loop's end is closed.
        self.news = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        while let Ok((_, outcome)) = self.started.try_recv() {
            if let Ok(mut child) = outcome {
                kill_and_reap(&mut child);
            }
        }
    }
}

/// SIGKILL to the command's process group (it leads one), then its exit collected.
fn kill_and_reap(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.wait();
}

/// The spawner thread: each request started, its outcome reported, then announced with the
/// output pipes attached; until the loop hangs up or stops.
fn serve(
    take: &mpsc::Receiver<Job>,
    report: &mpsc::Sender<(ChildId, Result<Child, ChildError>)>,
    news: &UnixDatagram,
    stopping: &AtomicBool,
) {
    while let Ok(Job { id, request }) = take.recv() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let outcome = request.command().and_then(|command| {
            start(command, &request.stdin)
                .map_err(|source| ChildError::Spawn { program: request.program().to_owned(), source })
        });
        let (child, pipes) = match outcome {
            Ok(Spawned { child, stdout, stderr }) => (Ok(child), Some((stdout, stderr))),
            Err(e) => (Err(e), None),
        };
        if report.send((id, child)).is_err() {
            return;
        }
        // Closed here once sent: from then on only the loop holds them.
        if announce(news, id, pipes.as_ref()).is_err() {
            return;
        }
    }
}

/// Unshares this thread's descriptor table, then closes in it what it copied but `keep`.
fn unshare_table(keep: RawFd) -> io::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FILES).map_err(io::Error::from)?;
    close_copies(keep)
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

/// A started command's standard output and error, read ends.
type OutputPipes = (OwnedFd, OwnedFd);

/// Announces the outcome for `id`: its number, and the output pipes of a started command.
fn announce(socket: &UnixDatagram, id: ChildId, pipes: Option<&OutputPipes>) -> io::Result<()> {
    let number = id.0.to_le_bytes();
    let fds = pipes.map(|(stdout, stderr)| [stdout.as_fd(), stderr.as_fd()]);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if let Some(fds) = &fds {
        if !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("no room for two descriptors in the control buffer"));
        }
    }
    rustix::net::sendmsg(socket, &[IoSlice::new(&number)], &mut control, SendFlags::empty())?;
    Ok(())
}

/// The next announcement, if one waits: its child's number and output pipes, if it has them.
fn receive_news<S: AsFd>(socket: &S) -> io::Result<Option<(ChildId, Option<OutputPipes>)>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut number = [0u8; 8];
    let received = match rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut number)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    ) {
        Ok(received) => received,
        Err(rustix::io::Errno::AGAIN) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut fds = Vec::with_capacity(2);
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if received.bytes != number.len() {
        return Err(io::Error::other("the spawner sent a short announcement"));
    }
    let id = ChildId(u64::from_le_bytes(number));
    let mut fds = fds.into_iter();
    match (fds.next(), fds.next(), fds.next()) {
        (Some(stdout), Some(stderr), None) => Ok(Some((id, Some((stdout, stderr))))),
        (None, _, _) => Ok(Some((id, None))),
        _ => Err(io::Error::other("the spawner sent other than a command's two output pipes")),
    }
}

#[cfg(test)]
impl Spawner {
    /// The next outcome announced, waited for (up to ten seconds): for tests, which have no loop.
    pub(crate) fn wait_finished(&mut self) -> Finished {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(finished) = self.next_finished().expect("the announcement reads") {
                return finished;
            }
            assert!(std::time::Instant::now() < deadline, "the spawner announced nothing");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::{Duration, Instant};

    use cohort_core::child_env::ChildEnvironment;

    fn request(argv: &[&str], stdin: &[u8]) -> SpawnRequest {
        SpawnRequest {
            argv: argv.iter().map(|w| (*w).to_owned()).collect(),
            run_as: None,
            env: ChildEnvironment::Inherit { vars: Vec::new() },
            stdin: stdin.to_vec(),
        }
    }

    fn run(spawner: &mut Spawner, argv: &[&str], stdin: &[u8]) -> Result<Spawned, ChildError> {
        spawner.submit(ChildId(1), request(argv, stdin)).expect("handed over");
        let Finished { id, outcome } = spawner.wait_finished();
        assert_eq!(id, ChildId(1));
        outcome
    }

    fn output(spawned: Spawned) -> (Vec<u8>, Vec<u8>, Option<i32>) {
        let Spawned { mut child, stdout, stderr } = spawned;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        std::fs::File::from(stdout).read_to_end(&mut out).expect("reads stdout");
        std::fs::File::from(stderr).read_to_end(&mut err).expect("reads stderr");
        (out, err, child.wait().expect("waits").code())
    }

    /// How many descriptors a command found open, from what it printed.
    fn count(spawned: Spawned) -> usize {
        let (out, _, code) = output(spawned);
        assert_eq!(code, Some(0));
        String::from_utf8(out).expect("utf-8").trim().parse().expect("a count")
    }

    const COUNT_FDS: [&str; 3] = ["sh", "-c", "ls /proc/$$/fd | wc -l"];

    /// Sockets the loop opens after the spawner started are not in the table a command's spawn
    /// copies. Made inheritable here so that a command would find them if they were: one started
    /// on this thread does.
    #[test]
    fn commands_start_from_the_spawners_own_table_and_their_output_comes_back_to_the_caller() {
        let mut spawner = Spawner::start().expect("the thread starts");
        assert!(spawner.has_own_table(), "the kernel let the thread unshare");
        let sockets: Vec<std::net::UdpSocket> =
            (0..200).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("binds")).collect();
        for socket in &sockets {
            rustix::io::fcntl_setfd(socket, rustix::io::FdFlags::empty()).expect("clears close-on-exec");
        }
        let command = request(&COUNT_FDS, &[]).command().expect("a command");
        let here = count(start(command, &[]).expect("spawns here"));
        let spawned = count(run(&mut spawner, &COUNT_FDS, &[]).expect("spawns"));
        assert!(here >= 200, "a command started here finds the sockets: {here}");
        assert!(spawned < 20, "a command the spawner started finds {spawned} descriptors");

        let started = run(&mut spawner, &["sh", "-c", "cat; echo err >&2; exit 7"], b"from stdin\n");
        let (out, err, code) = output(started.expect("spawns"));
        assert_eq!((out.as_slice(), err.as_slice(), code), (&b"from stdin\n"[..], &b"err\n"[..], Some(7)));
    }

    /// Requests handed over together each come back once, under their own number, in order.
    #[test]
    fn many_requests_in_flight_each_come_back_under_their_own_number() {
        let mut spawner = Spawner::start().expect("the thread starts");
        for n in 0..40 {
            let word = format!("{n}");
            spawner.submit(ChildId(100 + n), request(&["echo", &word], &[])).expect("handed over");
        }
        for n in 0..40 {
            let Finished { id, outcome } = spawner.wait_finished();
            assert_eq!(id, ChildId(100 + n));
            let (out, _, code) = output(outcome.expect("spawns"));
            assert_eq!((String::from_utf8_lossy(&out).trim(), code), (format!("{n}").as_str(), Some(0)));
        }
        assert!(spawner.next_finished().expect("reads").is_none());
    }

    /// What the loop had open when the spawner started, and closes later, is closed for good: a
    /// port it listened on can be bound again while the spawner lives.
    #[test]
    fn a_socket_the_loop_closes_is_not_held_open_by_the_spawner() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let addr = listener.local_addr().expect("an address");
        let spawner = Spawner::start().expect("the thread starts");
        assert!(spawner.has_own_table());
        drop(listener);
        std::net::TcpListener::bind(addr).expect("the port is free again");
        drop(spawner);
    }

    #[test]
    fn a_command_that_cannot_start_says_why_and_the_spawner_goes_on() {
        let mut spawner = Spawner::start().expect("the thread starts");
        let missing = run(&mut spawner, &["/no/such/program"], &[]).expect_err("no program");
        assert!(
            matches!(&missing, ChildError::Spawn { program, source }
                if program == "/no/such/program" && source.kind() == io::ErrorKind::NotFound),
            "{missing}"
        );
        assert!(matches!(run(&mut spawner, &[], &[]), Err(ChildError::EmptyCommand)));
        let (out, _, code) = output(run(&mut spawner, &["true"], &[]).expect("spawns"));
        assert_eq!((out.len(), code), (0, Some(0)));
    }

    /// A command that started but was never collected does not outlive the spawner.
    #[test]
    fn a_command_never_collected_is_killed_when_the_spawner_stops() {
        let dir = tempfile::tempdir().expect("a directory");
        let pidfile = dir.path().join("pid");
        let script = format!("echo $$ > {}; exec sleep 300", pidfile.display());
        let spawner = Spawner::start().expect("the thread starts");
        spawner.submit(ChildId(1), request(&["sh", "-c", &script], &[])).expect("handed over");
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse().ok()) {
                break pid;
            }
            assert!(Instant::now() < deadline, "the command never started");
            std::thread::sleep(Duration::from_millis(5));
        };
        drop(spawner);
        // Killed and reaped: no such process any more.
        assert_eq!(nix::sys::signal::kill(Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH));
    }
}
