//! Harnesses for the decoders that read what a peer, a file or a command line hands cohort:
//! stream framing, chunk reassembly, every role's wire messages, node-set expressions, policy
//! files and checks, the local lookup protocol, node key files, and the web console's cookies,
//! forms and queries. Each must answer any bytes with a value or
//! a typed error, never a panic, and what it accepts must survive being written out again.

use cohort_core::admin::AdminRequest;
use cohort_core::channel::chunk::{Reassembler, split};
use cohort_core::channel::frame::{FrameDecoder, MAX_FRAME_LEN, encode_frame};
use cohort_core::exec::nodeset::{MAX_PATTERN_LEN, NodeSet};
use cohort_core::exec::wire::{GatewayReply, GatewayWire, HostFrame, HostWire, KdcReply, KdcRequest};
use cohort_core::member::messages::MemberMessage;
use cohort_core::node::parse_request;
use cohort_core::policy::checks::Check;
use cohort_core::policy::policy_file::PolicyFile;
use cohort_core::policy::wire::PolicyWire;
use cohort_core::web::{ConsoleKeys, Method, WebRequest};
use cohort_core::wire::{self, Envelope};
use cohort_core::{NodeKeys, WallClock};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Stream bytes in pieces the first byte decides: frames come out whole or an error stops the
/// stream, and a frame never exceeds the limit. Then the bytes framed must come back as sent.
pub fn frame(data: &[u8]) {
    let Some((&piece, stream)) = data.split_first() else { return };
    let piece = usize::from(piece).max(1);
    let mut decoder = FrameDecoder::new();
    'stream: for bytes in stream.chunks(piece) {
        decoder.push(bytes);
        loop {
            match decoder.next_frame() {
                Ok(Some(body)) => assert!(!body.is_empty() && body.len() <= MAX_FRAME_LEN),
                Ok(None) => break,
                Err(_) => break 'stream,
            }
        }
    }
    let _ = decoder.finish();

    if (1..=MAX_FRAME_LEN).contains(&stream.len()) {
        let mut framed = Vec::new();
        encode_frame(stream, &mut framed);
        let mut decoder = FrameDecoder::new();
        decoder.push(&framed);
        assert_eq!(decoder.next_frame(), Ok(Some(stream)), "a frame comes back as sent");
        assert_eq!(decoder.buffered(), 0);
    }
}

/// Chunks (each a length byte then that many bytes) under a limit the first two bytes set: no
/// message longer than the limit ever comes out. Then a message split into chunks must come
/// back whole.
pub fn chunk(data: &[u8]) {
    let Some((limit, mut rest)) = data.split_first_chunk::<2>() else { return };
    let limit = usize::from(u16::from_be_bytes(*limit));
    let mut reassembler = Reassembler::new(limit);
    while let Some((&len, tail)) = rest.split_first() {
        let (piece, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        match reassembler.push(piece) {
            Ok(Some(message)) => assert!(message.len() <= limit, "a message past the limit came out"),
            Ok(None) => {}
            Err(_) => break,
        }
    }

    let message = &data[2..];
    let mut whole = Reassembler::new(message.len());
    let mut out = None;
    for piece in split(message) {
        assert!(out.is_none(), "a message came out before its last chunk");
        out = whole.push(&piece).expect("the chunks of a message within the limit");
    }
    assert_eq!(out.as_deref(), Some(message), "a split message comes back whole");
}

/// One wire message of the type the first byte picks: any bytes decode to a message or a typed
/// error, and a message decoded is written out the same way twice.
pub fn wire(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 10 {
        0 => round_trip::<Envelope>(bytes),
        1 => round_trip::<AdminRequest>(bytes),
        2 => round_trip::<GatewayWire>(bytes),
        3 => round_trip::<GatewayReply>(bytes),
        4 => round_trip::<KdcRequest>(bytes),
        5 => round_trip::<KdcReply>(bytes),
        6 => round_trip::<HostWire>(bytes),
        7 => round_trip::<HostFrame>(bytes),
        8 => round_trip::<PolicyWire>(bytes),
        _ => member_message(bytes),
    }
}

fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) {
    let Ok(value) = wire::decode::<T>(bytes) else { return };
    let again = wire::encode(&value).expect("a decoded message encodes");
    let back: T = wire::decode(&again).expect("an encoded message decodes");
    assert_eq!(wire::encode(&back).expect("encodes"), again, "decoding then encoding is stable");
}

/// A member's message, through its own envelope check.
pub fn member_message(data: &[u8]) {
    let Ok(message) = MemberMessage::from_wire(data) else { return };
    let again = message.to_wire().expect("a decoded member message encodes");
    let back = MemberMessage::from_wire(&again).expect("an encoded member message decodes");
    assert_eq!(back.to_wire().expect("encodes"), again, "decoding then encoding is stable");
}

/// A node-set expression, with a group and a group that names itself: a set or a typed error,
/// and a set printed and parsed again is the same set.
pub fn nodeset(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let groups = |name: &str| match name {
        "web" => Some("web[01-20]".to_owned()),
        "loop" => Some("@loop,n1".to_owned()),
        _ => None,
    };
    let Ok(set) = NodeSet::parse(&text, &groups) else { return };
    let printed = set.to_string();
    // A set of scattered names may print longer than a pattern may be: a limit, not a finding.
    if printed.len() > MAX_PATTERN_LEN {
        return;
    }
    let again = NodeSet::parse(&printed, &groups).expect("a printed node set parses");
    assert_eq!(again.len(), set.len(), "`{printed}` names as many nodes as the set it came from");
    assert_eq!(again.to_string(), printed);
}

/// A policy file (TOML).
pub fn policy_file(data: &[u8]) {
    let _ = PolicyFile::parse(&String::from_utf8_lossy(data));
}

/// One policy check line.
pub fn policy_check(data: &[u8]) {
    let _ = Check::parse(&String::from_utf8_lossy(data));
}

/// One line of the local lookup protocol.
pub fn lookup_request(data: &[u8]) {
    let _ = parse_request(&String::from_utf8_lossy(data));
}

/// A node key file: keys or a typed error; keys read are written out and read back the same.
pub fn key_file(data: &[u8]) {
    let Ok(keys) = NodeKeys::from_key_file(&String::from_utf8_lossy(data)) else { return };
    let written = keys.to_key_file();
    let again = NodeKeys::from_key_file(&written).expect("a written key file reads");
    assert_eq!(again.public(), keys.public(), "a key file read back names the same keys");
}

/// What a browser sends the console besides the path: the `Cookie` header, a form body and a
/// query. No cookie the gateway did not seal ever opens: the fuzzer has no key, so an opened
/// cookie would be a forgery.
pub fn web_fields(data: &[u8]) {
    let third = data.len() / 3;
    let (cookie, rest) = data.split_at(third);
    let (body, query) = rest.split_at(third);
    let request = WebRequest {
        method: Method::Post,
        path: "/".into(),
        query: String::from_utf8_lossy(query).into_owned(),
        headers: vec![
            ("cookie".into(), cookie.to_vec()),
            ("content-type".into(), b"application/x-www-form-urlencoded".to_vec()),
        ],
        body: body.to_vec(),
        peer: "192.0.2.1".into(),
    };
    let _ = request.form();
    let _ = request.query_pairs();
    let keys = ConsoleKeys::derive(&NodeKeys::from_secrets([1; 32], [2; 32]));
    for name in [cohort_core::web::SESSION_COOKIE, cohort_core::web::LOGIN_COOKIE] {
        if let Some(value) = request.cookie(name) {
            assert!(keys.open(value, WallClock::from_unix_millis(0)).is_err(), "a forged cookie opened");
        }
    }
    assert!(keys.open(&String::from_utf8_lossy(cookie), WallClock::from_unix_millis(0)).is_err());
}
