//! Following a stream of WebSocket frames byte by byte, to know where one ends: the proxy
//! may only put its own close frame between two frames.

/// The close frame the proxy sends a client before its machine stops: status 1001 "going
/// away", unmasked (server to client).
pub(super) const CLOSE_GOING_AWAY: &[u8] = b"\x88\x0c\x03\xe9going away";

/// Where a stream of frames is: inside a header (the bytes read so far) or a payload.
#[derive(Debug, Default)]
pub(super) struct Frames {
    header: Vec<u8>,
    remaining: u64,
}

// === impl Frames ===

impl Frames {
    /// Whether the next byte starts a frame.
    pub(super) fn at_boundary(&self) -> bool {
        self.header.is_empty() && self.remaining == 0
    }

    /// Follows `data` and returns how many of its bytes were taken: all of them, or with
    /// `stop_at_boundary` only those up to the first frame boundary.
    pub(super) fn advance(&mut self, data: &[u8], stop_at_boundary: bool) -> usize {
        let mut at = 0;
        loop {
            if (stop_at_boundary && self.at_boundary()) || at == data.len() {
                return at;
            }
            let available = data.len() - at;
            if self.remaining > 0 {
                let take = usize::try_from(self.remaining).map_or(available, |r| r.min(available));
                at += take;
                self.remaining -= take as u64;
                continue;
            }
            self.header.push(data[at]);
            at += 1;
            if header_len(&self.header) == Some(self.header.len()) {
                self.remaining = payload_len(&self.header);
                self.header.clear();
            }
        }
    }
}

/// The length of a frame header, once its first two bytes are known.
fn header_len(header: &[u8]) -> Option<usize> {
    let second = *header.get(1)?;
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    Some(2 + extended + mask)
}

/// The payload length of a complete header.
fn payload_len(header: &[u8]) -> u64 {
    match header[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&header[2..10]);
            u64::from_be_bytes(bytes)
        }
        short => u64::from(short),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload_len: usize, masked: bool) -> Vec<u8> {
        let mut out = vec![0x82];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload_len {
            0..=125 => out.push(mask_bit | u8::try_from(payload_len).expect("short")),
            126..=65535 => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&u16::try_from(payload_len).expect("u16").to_be_bytes());
            }
            _ => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(payload_len as u64).to_be_bytes());
            }
        }
        if masked {
            out.extend_from_slice(&[1, 2, 3, 4]);
        }
        out.extend(std::iter::repeat_n(7, payload_len));
        out
    }

    #[test]
    fn finds_boundaries_across_chunks() {
        let mut stream = frame(5, false);
        let first = stream.len();
        stream.extend(frame(300, false));
        let second = stream.len();
        stream.extend(frame(70_000, true));
        stream.extend(frame(0, false));

        // Fed one byte at a time, the boundaries are where the frames end.
        let mut frames = Frames::default();
        let mut boundaries = Vec::new();
        for (i, byte) in stream.iter().enumerate() {
            assert_eq!(frames.advance(&[*byte], false), 1);
            if frames.at_boundary() {
                boundaries.push(i + 1);
            }
        }
        assert_eq!(boundaries[..2], [first, second]);
        assert_eq!(boundaries.len(), 4);

        // Stopping at a boundary takes only the rest of the current frame.
        let mut frames = Frames::default();
        assert_eq!(frames.advance(&stream[..3], false), 3);
        assert!(!frames.at_boundary());
        assert_eq!(frames.advance(&stream[3..], true), first - 3);
        assert!(frames.at_boundary());
        assert_eq!(frames.advance(&stream[first..first + 1], true), 0);
    }

    #[test]
    fn the_close_frame_is_well_formed() {
        let mut frames = Frames::default();
        assert_eq!(
            frames.advance(CLOSE_GOING_AWAY, false),
            CLOSE_GOING_AWAY.len()
        );
        assert!(frames.at_boundary());
        assert_eq!(&CLOSE_GOING_AWAY[2..4], &1001_u16.to_be_bytes());
    }
}
