//! The connection table's tests: congestion, backlog, deadlines and slow peers.
use super::*;
use crate::rng::seeded;

/// Moves every transmit from one table to the other; `ack` says whether the sender's driver
/// reports the bytes written (a peer that reads) or sits on them (one that does not).
fn shuttle(now: Now, from: &mut Connections, to: &mut Connections, pair: (ConnId, ConnId), ack: bool) {
    while let Some(out) = from.poll_output() {
        if let Output::Transmit { conn, bytes } = out {
            if ack {
                from.written(conn, bytes.len());
            }
            let target = if conn == pair.0 { pair.1 } else { pair.0 };
            to.received(now, target, bytes);
        }
    }
}

/// Two tables with `b` dialled into `a`'s listener and the handshake done, under `limits`;
/// returns them and `b`'s connection.
fn connected(limits: ConnLimits) -> (Connections, Connections, ConnId) {
    let now = Now::ZERO;
    let (ka, kb) = (NodeKeys::generate(&mut seeded(1)), NodeKeys::generate(&mut seeded(2)));
    let mut a = Connections::new(seeded(3));
    let mut b = Connections::new(seeded(4));
    let trust: TrustSet = [kb.public()].into_iter().collect();
    let listener = a.listen("test", "a".into(), ka.clone(), trust, limits);
    let cb = b.connect(now, "a".into(), &kb, ka.public(), Owner::Link(0), limits).expect("dials");
    let ca = ConnId::inbound(1);
    a.accepted(now, listener, ca);
    for _ in 0..4 {
        shuttle(now, &mut b, &mut a, (cb, ca), true);
        shuttle(now, &mut a, &mut b, (ca, cb), true);
    }
    assert!(a.peer_of(ca).is_some() && b.peer_of(cb).is_some(), "handshake done");
    (a, b, cb)
}

#[test]
fn a_connection_the_peer_does_not_drain_is_congested_until_it_catches_up() {
    let (_a, mut b, cb) = connected(ConnLimits::default());

    // 2 MiB that the driver has not written yet: over the high-water mark.
    b.send(cb, &vec![7; 2 * 1024 * 1024]);
    let mut held = 0;
    while let Some(out) = b.poll_output() {
        if let Output::Transmit { bytes, .. } = out {
            held += bytes.len();
        }
    }
    assert!(b.congested(cb));
    assert!(!std::iter::from_fn(|| b.poll_event()).any(|e| matches!(e, ConnEvent::Drained { .. })));
    // The driver writes it out: below the low-water mark, the producer hears it may go on.
    b.written(cb, held);
    assert!(!b.congested(cb));
    let drained = std::iter::from_fn(|| b.poll_event())
        .any(|e| e == ConnEvent::Drained { conn: cb, owner: Owner::Link(0) });
    assert!(drained);
}

#[test]
fn a_peer_that_never_reads_is_dropped_whole_at_the_backlog_limit() {
    let (_a, mut b, cb) = connected(ConnLimits { max_backlog: 3 * 1024 * 1024, ..ConnLimits::default() });
    for _ in 0..4 {
        b.send(cb, &vec![1; 1024 * 1024]);
    }
    let outputs: Vec<Output> = std::iter::from_fn(|| b.poll_output()).collect();
    assert!(outputs.iter().any(|o| matches!(o, Output::Log(Event::NotReading { .. }))));
    assert!(outputs.contains(&Output::Close { conn: cb }));
    // Nothing after the drop: a frame skipped mid-stream would read as forgery at the peer.
    let last_transmit = outputs.iter().rposition(|o| matches!(o, Output::Transmit { .. }));
    let drop = outputs.iter().position(|o| matches!(o, Output::Log(Event::NotReading { .. })));
    assert!(last_transmit < drop);
}

/// What `b` transmits for one message `len` bytes long, whole.
fn wire_bytes(b: &mut Connections, cb: ConnId, len: usize) -> Vec<u8> {
    b.send(cb, &vec![5; len]);
    let mut bytes = Vec::new();
    while let Some(out) = b.poll_output() {
        if let Output::Transmit { bytes: more, .. } = out {
            bytes.extend(more);
        }
    }
    bytes
}

/// Feeds `bytes` to `a`'s end `piece` bytes a second, up to `for_secs`; the time it closed.
fn trickle(a: &mut Connections, bytes: &[u8], piece: usize, for_secs: u64) -> Option<(u64, Vec<Output>)> {
    let ca = ConnId::inbound(1);
    for (second, chunk) in bytes.chunks(piece).enumerate().take(usize::try_from(for_secs).unwrap_or(0)) {
        let second = u64::try_from(second).unwrap_or(u64::MAX);
        let now = Now::ZERO.after(Duration::from_secs(second));
        if a.poll_timeout().is_some_and(|at| at <= now.mono) {
            a.handle_timeout(now);
        }
        let outputs: Vec<Output> = std::iter::from_fn(|| a.poll_output()).collect();
        if outputs.contains(&Output::Close { conn: ca }) {
            return Some((second, outputs));
        }
        a.received(now, ca, chunk.to_vec());
    }
    None
}

/// `b` says hello, whole, so `a` counts it as a peer that spoke in time.
fn greeted(a: &mut Connections, b: &mut Connections, cb: ConnId) {
    let hello = wire_bytes(b, cb, 16);
    a.received(Now::ZERO, ConnId::inbound(1), hello);
    assert!(std::iter::from_fn(|| a.poll_event()).any(|e| matches!(e, ConnEvent::Message { .. })));
}

#[test]
fn a_peer_sending_a_byte_a_second_is_closed_when_its_frame_is_not_whole_in_time() {
    let (mut a, mut b, cb) = connected(ConnLimits::default());
    greeted(&mut a, &mut b, cb);
    let bytes = wire_bytes(&mut b, cb, 200);
    let (second, outputs) = trickle(&mut a, &bytes, 1, 120).expect("closed");
    assert_eq!(second, 30, "thirty seconds after its first byte");
    let log = Event::SlowFrame { conn: ConnId::inbound(1), timeout_ms: 30_000 };
    assert!(outputs.contains(&Output::Log(log)), "{outputs:?}");
}

#[test]
fn a_long_message_arriving_steadily_is_never_cut_for_slowness() {
    let (mut a, mut b, cb) = connected(ConnLimits::default());
    greeted(&mut a, &mut b, cb);
    // 4 MiB at 40 KiB a second: a frame is always half-read, and each is whole in two seconds.
    let bytes = wire_bytes(&mut b, cb, 4 * 1024 * 1024);
    assert_eq!(trickle(&mut a, &bytes, 40 * 1024, 200), None);
    let whole = std::iter::from_fn(|| a.poll_event())
        .any(|e| matches!(e, ConnEvent::Message { bytes, .. } if bytes.len() == 4 * 1024 * 1024));
    assert!(whole, "the message arrived");
}

/// The filed deadlines always give what asking every connection would.
#[test]
fn the_next_deadline_is_what_a_scan_of_every_connection_gives() {
    let scan = |t: &Connections| t.conns.values().filter_map(Conn::deadline).min();
    let limits = ConnLimits { idle: Some(Duration::from_secs(7)), ..ConnLimits::default() };
    let (mut a, mut b, cb) = connected(limits);
    let ca = ConnId::inbound(1);
    assert!(a.poll_timeout().is_some());
    assert_eq!((a.poll_timeout(), b.poll_timeout()), (scan(&a), scan(&b)));
    // A message heard later moves the idle deadline on.
    let later = Now { mono: Instant::ZERO + Duration::from_secs(3), ..Now::ZERO };
    b.send(cb, b"hello");
    shuttle(later, &mut b, &mut a, (cb, ca), true);
    assert_eq!(a.poll_timeout(), Some(later.mono + Duration::from_secs(7)));
    assert_eq!((a.poll_timeout(), b.poll_timeout()), (scan(&a), scan(&b)));
    // Past the idle limit: closed, and its deadline gone with it.
    let idle = Now { mono: later.mono + Duration::from_secs(8), ..Now::ZERO };
    a.handle_timeout(idle);
    assert_eq!(a.open(), 0);
    assert_eq!((a.poll_timeout(), a.deadlines.len()), (None, 0));
    b.closed(idle, cb, None);
    assert_eq!((b.poll_timeout(), b.deadlines.len()), (None, 0));
}
