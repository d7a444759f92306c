//! The two kinds of stream the driver carries: TCP (channels between nodes, operators, clients)
//! and Unix sockets (the local lookup service). Owns binding the local socket with its mode and
//! group, and reading, writing and registering either kind alike. It never looks at the bytes.

use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

/// Who may use the local lookup socket: its owner and its group.
const LOCAL_MODE: u32 = 0o660;

/// A connected stream of either kind.
#[derive(Debug)]
pub enum StreamSocket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl StreamSocket {
    /// A TCP stream that sends each write at once: every write is a whole frame, and Nagle's
    /// wait for an acknowledgement would put a delayed ACK (tens of milliseconds) into every
    /// request and answer.
    pub fn tcp(stream: TcpStream) -> io::Result<StreamSocket> {
        stream.set_nodelay(true)?;
        Ok(StreamSocket::Tcp(stream))
    }

    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            StreamSocket::Tcp(s) => s.take_error(),
            StreamSocket::Unix(s) => s.take_error(),
        }
    }

    pub fn shutdown(&self) {
        let _ = match self {
            StreamSocket::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            StreamSocket::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for StreamSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            StreamSocket::Tcp(s) => s.read(buf),
            StreamSocket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for StreamSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StreamSocket::Tcp(s) => s.write(buf),
            StreamSocket::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            StreamSocket::Tcp(s) => s.flush(),
            StreamSocket::Unix(s) => s.flush(),
        }
    }
}

impl Source for StreamSocket {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            StreamSocket::Tcp(s) => s.register(registry, token, interests),
            StreamSocket::Unix(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            StreamSocket::Tcp(s) => s.reregister(registry, token, interests),
            StreamSocket::Unix(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            StreamSocket::Tcp(s) => s.deregister(registry),
            StreamSocket::Unix(s) => s.deregister(registry),
        }
    }
}

/// A listening socket of either kind.
#[derive(Debug)]
pub enum ListenSocket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl ListenSocket {
    pub fn accept(&self) -> io::Result<StreamSocket> {
        match self {
            ListenSocket::Tcp(l) => l.accept().and_then(|(s, _)| StreamSocket::tcp(s)),
            ListenSocket::Unix(l) => l.accept().map(|(s, _)| StreamSocket::Unix(s)),
        }
    }
}

impl Source for ListenSocket {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            ListenSocket::Tcp(l) => l.register(registry, token, interests),
            ListenSocket::Unix(l) => l.register(registry, token, interests),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            ListenSocket::Tcp(l) => l.reregister(registry, token, interests),
            ListenSocket::Unix(l) => l.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            ListenSocket::Tcp(l) => l.deregister(registry),
            ListenSocket::Unix(l) => l.deregister(registry),
        }
    }
}

/// Binds the local lookup socket at `path`, mode 0660, in group `group` when given. A socket
/// left by an earlier run is replaced; any other file at `path` is an error, never removed.
pub fn bind_local(path: &Path, group: Option<u32>) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way; move it or choose another lookup_socket",
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(LOCAL_MODE))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    Ok(listener)
}
