//! The chunked transfer coding (RFC 9112 §7.1), decoded only to find where a body ends: the
//! bytes themselves are forwarded as they came (a request body is decoded whole only when
//! it is replayed).

/// Where a chunked body stands, fed its bytes in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunked {
    state: State,
    /// Data bytes seen so far (framing not counted).
    data: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size line: `digits` hex digits so far.
    Size {
        digits: u8,
        size: u64,
    },
    /// In the chunk extensions, up to the line's end.
    Ext {
        size: u64,
    },
    /// After the `\r` of a chunk-size line.
    SizeLf {
        size: u64,
    },
    /// In a chunk's data: this many bytes left.
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerLine,
    EndLf,
    Done,
}

/// The bytes are not valid chunked framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked framing")]
pub(crate) struct ChunkedError;

// === impl Chunked ===

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size { digits: 0, size: 0 },
            data: 0,
        }
    }
}

impl Chunked {
    /// Takes the next bytes of the body: `Some(n)` when the body ends after the first `n`
    /// of them, `None` when all of them belong to it and more are needed.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, ChunkedError> {
        self.feed_into(bytes, None)
    }

    /// Like [`Chunked::feed`], also appending the data bytes to `data` when given.
    fn feed_into(
        &mut self,
        bytes: &[u8],
        mut data: Option<&mut Vec<u8>>,
    ) -> Result<Option<usize>, ChunkedError> {
        let mut at = 0;
        while at < bytes.len() {
            if let State::Data(left) = self.state {
                let available = u64::try_from(bytes.len() - at).unwrap_or(u64::MAX);
                let take = left.min(available);
                let end = at + usize::try_from(take).expect("at most the slice's length");
                if let Some(data) = data.as_deref_mut() {
                    data.extend_from_slice(&bytes[at..end]);
                }
                at = end;
                self.data += take;
                self.state = if take == left {
                    State::DataCr
                } else {
                    State::Data(left - take)
                };
                continue;
            }
            let byte = bytes[at];
            at += 1;
            self.state = step(self.state, byte)?;
            if self.state == State::Done {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }

    /// Whether the whole body has been seen.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The data bytes seen so far.
    pub(crate) fn data_len(&self) -> u64 {
        self.data
    }
}

/// The data of a whole chunked body (trailers dropped, as the hyper path drops them).
pub(crate) fn decode(body: &[u8]) -> Result<Vec<u8>, ChunkedError> {
    let mut data = Vec::with_capacity(body.len());
    match Chunked::default().feed_into(body, Some(&mut data))? {
        Some(_) => Ok(data),
        None => Err(ChunkedError),
    }
}

fn step(state: State, byte: u8) -> Result<State, ChunkedError> {
    let after_size = |size: u64| {
        if size == 0 {
            State::TrailerStart
        } else {
            State::Data(size)
        }
    };
    Ok(match (state, byte) {
        (State::Size { digits, size }, _) if byte.is_ascii_hexdigit() => {
            if digits >= 15 {
                return Err(ChunkedError);
            }
            let digit = char::from(byte).to_digit(16).ok_or(ChunkedError)?;
            State::Size {
                digits: digits + 1,
                size: size * 16 + u64::from(digit),
            }
        }
        (State::Size { digits: 0, .. }, _) => return Err(ChunkedError),
        (State::Size { size, .. }, b';' | b' ' | b'\t') => State::Ext { size },
        (State::Size { size, .. } | State::Ext { size }, b'\r') => State::SizeLf { size },
        (State::Size { size, .. } | State::Ext { size } | State::SizeLf { size }, b'\n') => {
            after_size(size)
        }
        (State::Ext { size }, _) => State::Ext { size },
        (State::DataCr, b'\r') => State::DataLf,
        (State::DataLf, b'\n') => State::Size { digits: 0, size: 0 },
        (State::TrailerStart, b'\r') => State::EndLf,
        (State::TrailerStart | State::EndLf, b'\n') => State::Done,
        (State::TrailerLine, b'\n') => State::TrailerStart,
        (State::TrailerStart | State::TrailerLine, _) => State::TrailerLine,
        _ => return Err(ChunkedError),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end_of(body: &[u8], split: usize) -> Result<Option<usize>, ChunkedError> {
        let mut chunked = Chunked::default();
        let (first, rest) = body.split_at(split);
        if let Some(n) = chunked.feed(first)? {
            return Ok(Some(n));
        }
        Ok(chunked.feed(rest)?.map(|n| n + split))
    }

    #[test]
    fn finds_the_end_whatever_the_split() {
        let body =
            b"5\r\nhello\r\na;ext=1\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\nGET / HTTP/1.1";
        let end = body.len() - b"GET / HTTP/1.1".len();
        for split in 0..body.len() {
            assert_eq!(end_of(body, split), Ok(Some(end)), "split at {split}");
        }
        assert_eq!(end_of(b"0\r\n\r\n", 2), Ok(Some(5)));
    }

    #[test]
    fn waits_for_more_and_refuses_garbage() {
        assert_eq!(end_of(b"5\r\nhel", 1), Ok(None));
        assert_eq!(end_of(b"5\r\nhello\r\n0\r\n", 4), Ok(None));
        assert_eq!(end_of(b"x\r\n", 0), Err(ChunkedError));
        assert_eq!(end_of(b"5\r\nhelloXX", 0), Err(ChunkedError));
        assert_eq!(end_of(b"ffffffffffffffffff\r\n", 0), Err(ChunkedError));
    }

    #[test]
    fn decodes_and_counts_the_data() {
        let body = b"5\r\nhello\r\na;ext=1\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n";
        assert_eq!(decode(body), Ok(b"hello0123456789".to_vec()));
        let mut chunked = Chunked::default();
        assert_eq!(chunked.feed(body), Ok(Some(body.len())));
        assert_eq!(chunked.data_len(), 15);
        assert_eq!(decode(b"5\r\nhello\r\n"), Err(ChunkedError));
    }
}
