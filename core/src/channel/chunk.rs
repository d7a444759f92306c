//! Chunking of application messages larger than one Noise message. Owns the one-byte chunk
//! marker and reassembly under the caller's message-size limit. It must never let a peer make it
//! hold more than that limit.

use super::frame::MAX_FRAME_LEN;

/// snow's AEAD tag on every transport message.
pub(super) const TAG_LEN: usize = 16;
/// One marker byte opens every chunk's plaintext.
const MARKER_LEN: usize = 1;
/// Application bytes that fit in one chunk.
pub const CHUNK_DATA_LEN: usize = MAX_FRAME_LEN - TAG_LEN - MARKER_LEN;

const MORE: u8 = 0x01;
const LAST: u8 = 0x00;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("empty chunk: every chunk starts with a marker byte")]
    Empty,
    #[error("unknown chunk marker {0:#04x}")]
    BadMarker(u8),
    #[error("message exceeds the {limit}-byte limit")]
    TooLarge { limit: usize },
}

/// Splits `message` into chunk plaintexts: marker byte then data. An empty message is one chunk.
pub fn split(message: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let count = message.len().div_ceil(CHUNK_DATA_LEN).max(1);
    (0..count).map(move |i| {
        let start = i * CHUNK_DATA_LEN;
        let end = (start + CHUNK_DATA_LEN).min(message.len());
        let mut chunk = Vec::with_capacity(MARKER_LEN + end - start);
        chunk.push(if i + 1 == count { LAST } else { MORE });
        chunk.extend_from_slice(&message[start..end]);
        chunk
    })
}

/// Collects chunks into whole messages.
#[derive(Debug)]
pub struct Reassembler {
    limit: usize,
    partial: Vec<u8>,
}

impl Reassembler {
    pub fn new(limit: usize) -> Self {
        Reassembler { limit, partial: Vec::new() }
    }

    /// Takes one chunk plaintext; returns a message when this chunk completes one.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Option<Vec<u8>>, ChunkError> {
        let (&marker, data) = chunk.split_first().ok_or(ChunkError::Empty)?;
        if marker != MORE && marker != LAST {
            return Err(ChunkError::BadMarker(marker));
        }
        if self.partial.len().saturating_add(data.len()) > self.limit {
            return Err(ChunkError::TooLarge { limit: self.limit });
        }
        self.partial.extend_from_slice(data);
        Ok((marker == LAST).then(|| std::mem::take(&mut self.partial)))
    }

    /// True while a message has started but not finished.
    pub fn in_progress(&self) -> bool {
        !self.partial.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_reassemble_round_trip_at_chunk_boundaries() {
        for len in [0, 1, CHUNK_DATA_LEN - 1, CHUNK_DATA_LEN, CHUNK_DATA_LEN + 1, 3 * CHUNK_DATA_LEN] {
            let message: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut r = Reassembler::new(usize::MAX);
            let mut out = None;
            for chunk in split(&message) {
                assert!(chunk.len() <= CHUNK_DATA_LEN + MARKER_LEN);
                assert!(out.is_none(), "a message completed before its last chunk");
                out = r.push(&chunk).expect("valid chunk");
            }
            assert_eq!(out.as_deref(), Some(&message[..]), "length {len}");
        }
    }

    #[test]
    fn a_peer_cannot_exceed_the_limit() {
        let mut r = Reassembler::new(10);
        assert_eq!(r.push(&[MORE; 8]), Ok(None));
        assert_eq!(r.push(&[MORE; 8]), Err(ChunkError::TooLarge { limit: 10 }));
    }
}
