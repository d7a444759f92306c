//! The wire format of application messages: one protocol-version byte, then a postcard-encoded
//! serde value. Owns the version check, the size bound and canonical decoding (no trailing
//! bytes). It never trusts a byte: every decode returns a typed [`WireError`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The application protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Largest encoded application message (matches the channel's default message limit): a 16 MiB
/// configuration with room for what travels around it.
pub const MAX_MESSAGE_LEN: usize = 17 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty message: expected a protocol version byte")]
    Empty,
    #[error(
        "protocol version {got} is not supported (this build speaks {PROTOCOL_VERSION}); upgrade the older side"
    )]
    UnsupportedVersion { got: u8 },
    #[error("message of {len} bytes is over the {limit}-byte limit")]
    TooLarge { len: usize, limit: usize },
    #[error("message does not decode: {0}")]
    Decode(String),
    #[error("message has {0} trailing bytes after a complete value")]
    TrailingBytes(usize),
    #[error("message does not encode: {0}")]
    Encode(String),
}

/// Encodes `value` behind the version byte.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    encode_bounded(value, MAX_MESSAGE_LEN)
}

/// Decodes a value encoded by [`encode`], rejecting any other version and any trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    decode_bounded(bytes, MAX_MESSAGE_LEN)
}

/// [`encode`] under a limit of the caller's (a stored record, not a message).
pub fn encode_bounded<T: Serialize>(value: &T, limit: usize) -> Result<Vec<u8>, WireError> {
    let out =
        postcard::to_extend(value, vec![PROTOCOL_VERSION]).map_err(|e| WireError::Encode(e.to_string()))?;
    if out.len() > limit {
        return Err(WireError::TooLarge { len: out.len(), limit });
    }
    Ok(out)
}

/// [`decode`] under a limit of the caller's.
pub fn decode_bounded<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, WireError> {
    if bytes.len() > limit {
        return Err(WireError::TooLarge { len: bytes.len(), limit });
    }
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion { got: version });
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| WireError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// The role of a node that owns a message. One node process may host several roles; the
/// the node dispatches on this tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RoleTag {
    Member,
    PolicyMaster,
    PolicyLocal,
    PolicyAgent,
    Kdc,
    Gateway,
    ExecDaemon,
    AuditCollector,
    Admin,
}

/// What travels on a channel: the owning role and that role's own encoded message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub role: RoleTag,
    pub body: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let env = Envelope { role: RoleTag::ExecDaemon, body: vec![1, 2, 3] };
        let bytes = encode(&env).expect("encodes");
        assert_eq!(bytes[0], PROTOCOL_VERSION);
        assert_eq!(decode::<Envelope>(&bytes), Ok(env));
    }

    #[test]
    fn bad_input_gets_a_typed_error() {
        assert_eq!(decode::<Envelope>(&[]), Err(WireError::Empty));
        assert_eq!(decode::<Envelope>(&[9, 0, 0]), Err(WireError::UnsupportedVersion { got: 9 }));
        assert!(matches!(decode::<Envelope>(&[PROTOCOL_VERSION, 200]), Err(WireError::Decode(_))));
        let mut bytes = encode(&Envelope { role: RoleTag::Member, body: vec![] }).expect("encodes");
        bytes.push(0);
        assert_eq!(decode::<Envelope>(&bytes), Err(WireError::TrailingBytes(1)));
    }

    #[test]
    fn a_length_beyond_the_input_is_an_error_not_an_allocation() {
        // role Member (0), then a body length varint of u32::MAX and no body.
        let bytes = [PROTOCOL_VERSION, 0, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(matches!(decode::<Envelope>(&bytes), Err(WireError::Decode(_))));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn role() -> impl Strategy<Value = RoleTag> {
            prop::sample::select(vec![
                RoleTag::Member,
                RoleTag::PolicyMaster,
                RoleTag::PolicyLocal,
                RoleTag::PolicyAgent,
                RoleTag::Kdc,
                RoleTag::Gateway,
                RoleTag::ExecDaemon,
                RoleTag::AuditCollector,
                RoleTag::Admin,
            ])
        }

        proptest! {
            #[test]
            fn any_envelope_round_trips(role in role(), body in prop::collection::vec(any::<u8>(), 0..2048)) {
                let env = Envelope { role, body };
                prop_assert_eq!(decode::<Envelope>(&encode(&env).expect("encodes")), Ok(env));
            }

            #[test]
            fn random_bytes_decode_to_an_error_or_a_value_that_re_encodes_identically(
                bytes in prop::collection::vec(any::<u8>(), 0..512)
            ) {
                // Canonical form: whatever decodes must encode back to exactly the same bytes.
                if let Ok(env) = decode::<Envelope>(&bytes) {
                    prop_assert_eq!(encode(&env).expect("encodes"), bytes);
                }
            }
        }
    }
}
