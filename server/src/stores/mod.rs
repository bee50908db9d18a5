//! Store backends for the server: the embedded `redb` file store (the default), the shared
//! Redis store, and, from core, the in-memory store.

pub mod redb;
pub mod redis;

/// How the embedded and Redis backends lay out a value: the entry's expiry (8-byte
/// big-endian Unix seconds), then the caller's bytes. Expiry is judged against the
/// caller's `now`, never the backend's clock.
pub(crate) mod record {
    use heartgate_core::clock::UnixTime;

    /// Bytes of the expiry prefix.
    pub(crate) const EXPIRY_LEN: usize = 8;

    /// A record too short to hold its expiry (damaged, or written by something else).
    #[derive(Debug, Clone, Copy, thiserror::Error)]
    #[error("heartgate record without its expiry")]
    pub(crate) struct Malformed;

    /// The record of `value`, live until `expires_at`.
    pub(crate) fn encode(value: &[u8], expires_at: UnixTime) -> Vec<u8> {
        let mut r = Vec::with_capacity(EXPIRY_LEN + value.len());
        r.extend_from_slice(&expires_at.secs().to_be_bytes());
        r.extend_from_slice(value);
        r
    }

    /// The value of `record` if it is live at `now`.
    pub(crate) fn live_value(record: &[u8], now: UnixTime) -> Result<Option<&[u8]>, Malformed> {
        let (expiry, value) = record.split_first_chunk::<EXPIRY_LEN>().ok_or(Malformed)?;
        Ok((now.secs() < i64::from_be_bytes(*expiry)).then_some(value))
    }
}
