//! Stream framing: each frame is a big-endian u32 length followed by that many bytes (one Noise
//! message). Owns splitting a byte stream back into frames under a size limit. It must never
//! allocate for a length it has not checked against the limit, and never panic on any input.

/// The largest frame body: one Noise message (snow's `MAXMSGLEN`).
pub const MAX_FRAME_LEN: usize = 65_535;

/// Bytes in a length prefix.
pub const PREFIX_LEN: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length prefix says {len} bytes, over the {max}-byte limit")]
    Oversized { len: u64, max: usize },
    #[error("frame length prefix says 0 bytes; every frame carries a Noise message")]
    Empty,
    #[error("stream ended inside a frame ({have} of {need} bytes)")]
    Truncated { have: usize, need: usize },
}

/// Prefixes `body` with its length. `body` must be at most [`MAX_FRAME_LEN`] (the channel only
/// frames Noise messages, which snow caps at that size).
pub fn encode_frame(body: &[u8], out: &mut Vec<u8>) {
    debug_assert!(body.len() <= MAX_FRAME_LEN);
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    out.reserve(PREFIX_LEN + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
}

/// Reassembles frames from stream bytes delivered in arbitrary pieces.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already handed out as frames; compacted lazily so a burst of many frames
    /// costs one copy, not one per frame.
    consumed: usize,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends stream bytes. The caller bounds how much it feeds between calls to
    /// [`next_frame`](Self::next_frame); the decoder never holds more than one frame plus that.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.consumed > 0 && self.consumed >= self.buffer.len() / 2 {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame's body, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let pending = &self.buffer[self.consumed..];
        let Some(prefix) = pending.first_chunk::<PREFIX_LEN>() else {
            return Ok(None);
        };
        let declared = u32::from_be_bytes(*prefix);
        if u64::from(declared) > MAX_FRAME_LEN as u64 {
            return Err(FrameError::Oversized { len: u64::from(declared), max: MAX_FRAME_LEN });
        }
        let len = declared as usize;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        let Some(body) = pending.get(PREFIX_LEN..PREFIX_LEN + len) else {
            return Ok(None);
        };
        self.consumed += PREFIX_LEN + len;
        Ok(Some(body))
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buffer.len() - self.consumed
    }

    /// Called when the stream ends: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        let pending = &self.buffer[self.consumed..];
        if pending.is_empty() {
            return Ok(());
        }
        let need = pending
            .first_chunk::<PREFIX_LEN>()
            .map_or(PREFIX_LEN, |p| PREFIX_LEN + u32::from_be_bytes(*p) as usize);
        Err(FrameError::Truncated { have: pending.len(), need })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_pushes_come_back_whole() {
        let mut wire = Vec::new();
        encode_frame(b"hello", &mut wire);
        encode_frame(b"world!", &mut wire);
        let mut decoder = FrameDecoder::new();
        let mut got = Vec::new();
        for byte in &wire {
            decoder.push(std::slice::from_ref(byte));
            while let Some(frame) = decoder.next_frame().expect("valid stream") {
                got.push(frame.to_vec());
            }
        }
        assert_eq!(got, vec![b"hello".to_vec(), b"world!".to_vec()]);
        assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn an_oversized_prefix_is_rejected_before_the_body_arrives() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&u32::MAX.to_be_bytes());
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::Oversized { len: u64::from(u32::MAX), max: MAX_FRAME_LEN })
        );
        // Nothing beyond the four prefix bytes was ever reserved.
        assert!(decoder.buffer.capacity() < 1024);
    }

    #[test]
    fn a_stream_ending_inside_a_frame_is_truncated() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&[0, 0, 0, 9, 1, 2]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.finish(), Err(FrameError::Truncated { have: 6, need: 13 }));
    }
}
