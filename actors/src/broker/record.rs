//! One record of a partition log: `len u32 | crc32 u32 | offset u64 | payload`, little-endian,
//! the CRC covering offset and payload. Pure functions, so recovery and fuzzing share them.

/// Bytes of a record header: length, CRC and offset.
pub const RECORD_HEADER_BYTES: u64 = 16;

/// Why bytes are not the record expected at an offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than a header.
    #[error("truncated header")]
    TruncatedHeader,
    /// The header names another offset.
    #[error("record carries offset {0}")]
    WrongOffset(u64),
    /// The header claims more than any record may hold.
    #[error("record length {0} over the limit")]
    TooLong(u64),
    /// Fewer bytes than the header claims.
    #[error("record of {0} bytes is cut short")]
    Truncated(u64),
    /// The checksum does not match.
    #[error("checksum mismatch")]
    Checksum,
}

/// Total length (header included) of the record at the start of `bytes`, from its header alone.
pub fn record_len(bytes: &[u8], expected: u64, max_record_bytes: u64) -> Result<u64, RecordError> {
    let header = bytes
        .get(..RECORD_HEADER_BYTES as usize)
        .ok_or(RecordError::TruncatedHeader)?;
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[0..4]);
    let len = u64::from(u32::from_le_bytes(len));
    let mut off = [0u8; 8];
    off.copy_from_slice(&header[8..16]);
    let offset = u64::from_le_bytes(off);
    if offset != expected {
        return Err(RecordError::WrongOffset(offset));
    }
    if len > max_record_bytes {
        return Err(RecordError::TooLong(len));
    }
    Ok(RECORD_HEADER_BYTES + len)
}

/// The payload of the record at offset `expected` at the start of `bytes` and the record's
/// total length, checksum verified.
pub fn decode_record(
    bytes: &[u8],
    expected: u64,
    max_record_bytes: u64,
) -> Result<(&[u8], u64), RecordError> {
    let total = record_len(bytes, expected, max_record_bytes)?;
    let record = bytes
        .get(..total as usize)
        .ok_or(RecordError::Truncated(total))?;
    let mut sum = [0u8; 4];
    sum.copy_from_slice(&record[4..8]);
    let payload = &record[RECORD_HEADER_BYTES as usize..];
    if crc(expected, payload) != u32::from_le_bytes(sum) {
        return Err(RecordError::Checksum);
    }
    Ok((payload, total))
}

/// The bytes of the record at `offset`: length, checksum, offset (little-endian), payload.
pub fn encode_record(offset: u64, payload: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(RECORD_HEADER_BYTES as usize + payload.len());
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&crc(offset, payload).to_le_bytes());
    rec.extend_from_slice(&offset.to_le_bytes());
    rec.extend_from_slice(payload);
    rec
}

/// Position of an intact record for offset `expected` anywhere in `bytes` (the search for
/// acknowledged records behind damage).
pub fn find_record(bytes: &[u8], expected: u64, max_record_bytes: u64) -> Option<usize> {
    let needle = expected.to_le_bytes();
    (0..bytes.len().saturating_sub(RECORD_HEADER_BYTES as usize - 1)).find(|&i| {
        bytes.get(i + 8..i + 16) == Some(&needle[..])
            && decode_record(&bytes[i..], expected, max_record_bytes).is_ok()
    })
}

fn crc(offset: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&offset.to_le_bytes());
    h.update(payload);
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Records decode to what was encoded; any single flipped bit is detected; arbitrary
        /// bytes decode to an error, never a panic or an allocation they claim.
        #[test]
        fn record_decoding(
            offset in 0u64..1 << 40,
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            flip in 0usize..2400,
            garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let rec = encode_record(offset, &payload);
            let decoded = decode_record(&rec, offset, 1 << 20);
            proptest::prop_assert_eq!(decoded, Ok((&payload[..], rec.len() as u64)));
            let mut bad = rec.clone();
            let bit = flip % (bad.len() * 8);
            bad[bit / 8] ^= 1 << (bit % 8);
            proptest::prop_assert!(decode_record(&bad, offset, 1 << 20).is_err());
            proptest::prop_assert!(decode_record(&rec[..rec.len() - 1], offset, 1 << 20).is_err());
            let _ = decode_record(&garbage, offset, 1 << 20);
            let mut behind = garbage.clone();
            behind.extend_from_slice(&rec);
            proptest::prop_assert!(find_record(&behind, offset, 1 << 20).is_some());
        }
    }
}
