//! Framing of the runner protocol.
//!
//! A connection starts with a preamble in each direction: the magic bytes `ESRP` and the protocol version
//! (u16, big endian). These six bytes never change, so peers of different versions can always tell each other
//! apart and say so. Then comes the secure channel (`secure.rs`), and inside it every frame is `kind: u8`,
//! `length: u32` (big endian), then `length` bytes: kind 0 is a JSON message, kind 1 raw data (file uploads).
//! A frame longer than the reader's cap is refused before anything is allocated, and a frame's buffer grows
//! only as its bytes really arrive.

use std::io::{Read, Write};

/// First bytes of every connection.
pub const MAGIC: [u8; 4] = *b"ESRP";
/// Protocol version this build speaks (2: Noise channel keyed by the token; 1: HMAC challenge, plaintext).
pub const PROTOCOL_VERSION: u16 = 2;
/// Largest frame a client accepts from a runner (a 50 000-sample trace in compact columns fits easily).
pub const MAX_MESSAGE_BYTES: u32 = 256 * 1024 * 1024;
/// Size of the data frames a file is uploaded in (the runner refuses larger ones).
pub const CHUNK_BYTES: usize = 256 * 1024;

const KIND_MESSAGE: u8 = 0;
const KIND_DATA: u8 = 1;

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A JSON message.
    Message(Vec<u8>),
    /// Raw bytes.
    Data(Vec<u8>),
}

/// What can go wrong on the wire.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The connection failed or closed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer is not an edgescope runner or client.
    #[error("the peer does not speak the edgescope runner protocol (bad magic bytes)")]
    BadMagic,
    /// A frame over the cap.
    #[error("frame of {length} bytes exceeds the limit of {cap} bytes")]
    TooLarge {
        /// Announced length.
        length: u32,
        /// The cap.
        cap: u32,
    },
    /// An unknown frame kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
}

/// Writes the preamble.
pub fn write_preamble(writer: &mut impl Write) -> std::io::Result<()> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    writer.write_all(&bytes)?;
    writer.flush()
}

/// Reads the peer's preamble and returns its protocol version.
pub fn read_preamble(reader: &mut impl Read) -> Result<u16, WireError> {
    let mut bytes = [0u8; 6];
    reader.read_exact(&mut bytes)?;
    if bytes[..4] != MAGIC {
        return Err(WireError::BadMagic);
    }
    Ok(u16::from_be_bytes([bytes[4], bytes[5]]))
}

/// Writes one frame.
pub fn write_frame(writer: &mut impl Write, frame: &Frame) -> std::io::Result<()> {
    let (kind, payload) = match frame {
        Frame::Message(p) => (KIND_MESSAGE, p),
        Frame::Data(p) => (KIND_DATA, p),
    };
    let length = u32::try_from(payload.len()).map_err(|_| std::io::Error::other("frame larger than 4 GiB"))?;
    let mut header = [0u8; 5];
    header[0] = kind;
    header[1..].copy_from_slice(&length.to_be_bytes());
    writer.write_all(&header)?;
    writer.write_all(payload)?;
    writer.flush()
}

/// Reads one frame of at most `cap` bytes.
pub fn read_frame(reader: &mut impl Read, cap: u32) -> Result<Frame, WireError> {
    let mut header = [0u8; 5];
    reader.read_exact(&mut header)?;
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if header[0] != KIND_MESSAGE && header[0] != KIND_DATA {
        return Err(WireError::UnknownKind(header[0]));
    }
    if length > cap {
        return Err(WireError::TooLarge { length, cap });
    }
    // Grow with the bytes that really arrive, never to what the header announced.
    let mut payload = Vec::with_capacity((length as usize).min(64 * 1024));
    Read::take(&mut *reader, u64::from(length)).read_to_end(&mut payload)?;
    if payload.len() != length as usize {
        return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(if header[0] == KIND_MESSAGE { Frame::Message(payload) } else { Frame::Data(payload) })
}

/// Decodes the first frame of `buffer` (for parsers fed from a byte buffer): `Ok(None)` when more bytes are
/// needed, else the frame and the bytes it used.
pub fn decode_frame(buffer: &[u8], cap: u32) -> Result<Option<(Frame, usize)>, WireError> {
    if buffer.len() < 5 {
        return Ok(None);
    }
    let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]);
    if buffer[0] != KIND_MESSAGE && buffer[0] != KIND_DATA {
        return Err(WireError::UnknownKind(buffer[0]));
    }
    if length > cap {
        return Err(WireError::TooLarge { length, cap });
    }
    let end = (length as usize).checked_add(5).ok_or(WireError::TooLarge { length, cap })?;
    if buffer.len() < end {
        return Ok(None);
    }
    let payload = buffer[5..end].to_vec();
    let frame = if buffer[0] == KIND_MESSAGE { Frame::Message(payload) } else { Frame::Data(payload) };
    Ok(Some((frame, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut bytes = Vec::new();
        write_preamble(&mut bytes).expect("write");
        write_frame(&mut bytes, &Frame::Message(b"{}".to_vec())).expect("write");
        write_frame(&mut bytes, &Frame::Data(vec![7; 10])).expect("write");
        let mut reader = bytes.as_slice();
        assert_eq!(read_preamble(&mut reader).expect("preamble"), PROTOCOL_VERSION);
        assert_eq!(read_frame(&mut reader, 100).expect("frame"), Frame::Message(b"{}".to_vec()));
        assert_eq!(read_frame(&mut reader, 100).expect("frame"), Frame::Data(vec![7; 10]));
    }

    #[test]
    fn oversized_frames_are_refused_before_allocation() {
        let bytes = [0u8, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(read_frame(&mut bytes.as_slice(), 1024), Err(WireError::TooLarge { .. })));
        assert!(matches!(read_preamble(&mut b"HTTP/1".as_slice()), Err(WireError::BadMagic)));
    }
}
