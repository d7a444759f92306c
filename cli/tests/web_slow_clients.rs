//! The web console under a slow-client attack: hundreds of connections from one address, each
//! sending a byte a second and never finishing a request. The console keeps answering other
//! browsers over HTTPS (certificate checked against the one `cohort init` made), the CLI path
//! keeps running commands, the slow connections are cut once their time for a request head is
//! up, and the gateway's resident memory stays bounded.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use std::time::{Duration, Instant};

use common::{Processes, cohort, init_web_site, start_node};

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the node's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A TLS client that trusts only the certificate at `cert` (the one `cohort init` made).
fn tls_client(cert: &Path) -> Result<rustls::ClientConnection, String> {
    let pem = std::fs::read(cert).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())
}

/// `GET /login` over HTTPS from 127.0.0.1, the certificate checked: the status.
fn fetch_login(port: u16, cert: &Path) -> Result<u16, String> {
    let mut tls = tls_client(cert)?;
    let mut socket = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let mut stream = rustls::Stream::new(&mut tls, &mut socket);
    stream
        .write_all(b"GET /login HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        // A peer that closes without close_notify still gave its whole answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let head = String::from_utf8_lossy(&answer);
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in `{head}`"))
}

#[test]
fn slow_clients_do_not_stop_the_console_or_the_cli_and_memory_stays_bounded() {
    let (dir, web_port, _) = init_web_site(5, false);
    let root = dir.path().join("c");
    let nodes = Processes(vec![start_node(&root, "m0"), start_node(&root, "exec")]);
    let gateway = nodes.pid("m0").expect("the gateway's process");
    let cert = root.join("m0/web.crt");
    let started = Instant::now();
    while fetch_login(web_port, &cert) != Ok(200) {
        assert!(started.elapsed() < Duration::from_secs(20), "the console never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let state = dir.path().join("client");
    let state = state.to_str().expect("utf-8");
    let cluster = root.join("cluster.toml");
    let password = root.join("alice.password");
    let login = [
        "login",
        "--state-dir",
        state,
        "--cluster",
        cluster.to_str().expect("utf-8"),
        "-u",
        "alice",
        "--password-file",
        password.to_str().expect("utf-8"),
    ];
    let started = Instant::now();
    while !cohort(&login).status.success() {
        assert!(started.elapsed() < Duration::from_secs(20), "the gateway never took a login");
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = resident_kib(gateway);

    // 300 connections from three other addresses, each completing its TLS handshake, starting
    // a request and then sending one byte of its head a second, never finishing it.
    let mut slow: Vec<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> = Vec::new();
    let mut refused = 0;
    for i in 0..300u16 {
        let from = SocketAddr::from(([127, 0, 0, 2 + (i % 3) as u8], 0));
        let opened = bind_from(from, web_port).ok_or("no connection".to_owned()).and_then(|mut socket| {
            socket.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
            let mut tls = tls_client(&cert)?;
            while tls.is_handshaking() {
                tls.complete_io(&mut socket).map_err(|e| e.to_string())?;
            }
            let mut stream = rustls::StreamOwned::new(tls, socket);
            stream
                .write_all(b"GET /login HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ")
                .map_err(|e| e.to_string())?;
            Ok(stream)
        });
        match opened {
            Ok(stream) => slow.push(stream),
            Err(_) => refused += 1,
        }
    }
    for stream in &slow {
        stream.sock.set_read_timeout(Some(Duration::from_millis(5))).expect("a read timeout");
    }
    let attack_started = Instant::now();
    let mut peak = before;
    let mut console_ok = 0;
    let mut cli_ok = 0;
    while attack_started.elapsed() < Duration::from_secs(14) {
        for stream in &mut slow {
            let _ = stream.write_all(b"x");
        }
        if fetch_login(web_port, &cert) == Ok(200) {
            console_ok += 1;
        }
        let exec = ["exec", "--state-dir", state, "-w", "h[01-05]", "--", "true"];
        if cohort(&exec).status.success() {
            cli_ok += 1;
        }
        peak = peak.max(resident_kib(gateway));
        std::thread::sleep(Duration::from_millis(500));
    }
    // Each admitted slow connection was cut once its time for a head (10 s) was up.
    let mut cut = 0;
    for stream in &mut slow {
        let mut scratch = [0u8; 256];
        let closed = loop {
            match stream.read(&mut scratch) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    break false;
                }
                Err(_) => break true,
            }
        };
        cut += usize::from(closed);
    }
    eprintln!(
        "gateway resident memory: {before} KiB before, {peak} KiB at most under attack; console answered \
         {console_ok}, CLI ran {cli_ok}; {} slow connections admitted (32 per address), {refused} refused, {cut} cut",
        slow.len()
    );
    assert!(console_ok >= 10, "the console kept answering: {console_ok}");
    assert!(cli_ok >= 10, "the CLI path kept running commands: {cli_ok}");
    assert!(slow.len() <= 3 * 32 && refused >= 300 - 3 * 32, "each address got its share: {} in", slow.len());
    assert_eq!(cut, slow.len(), "every slow connection was cut");
    assert!(peak < before + 64 * 1024, "memory stayed bounded: {before} KiB → {peak} KiB");
}

/// A connection to the console from `from` (another loopback address), so the attack counts
/// against its own address's share.
fn bind_from(from: SocketAddr, port: u16) -> Option<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    socket.bind(&from.into()).ok()?;
    socket.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into()).ok()?;
    Some(socket.into())
}
