//! The limits of the HTTP/2 engine, with their defaults and the reasons for them.

use std::time::{Duration, Instant};

/// Every bound the HTTP/2 engine enforces. [`Limits::default`] is what a listener gets
/// unless configured otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// SETTINGS_MAX_CONCURRENT_STREAMS: streams the client may have open at once; one more
    /// is refused (REFUSED_STREAM). 100 is what RFC 9113 §6.5.2 recommends as a floor and
    /// what browsers expect; each stream is one upstream connection at most.
    pub max_concurrent_streams: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: a request's decoded header list (name + value + 32
    /// per field, RFC 9113 §6.5.2), counted while decoding. Larger requests get 431.
    pub max_header_list_size: u32,
    /// The largest encoded header block (HEADERS + CONTINUATION) buffered before decoding;
    /// past it the connection is closed (ENHANCE_YOUR_CALM). Twice the list size: Huffman
    /// can make a block longer than the list it encodes, never by much for real fields.
    pub max_header_block: u32,
    /// CONTINUATION frames in one header block (CVE-2024-27316). A real client splits a
    /// block at SETTINGS_MAX_FRAME_SIZE: 8 frames carry the largest block we accept.
    pub max_continuations: u32,
    /// SETTINGS_MAX_FRAME_SIZE we accept: the RFC's minimum, 16 KiB.
    pub max_frame_size: u32,
    /// SETTINGS_HEADER_TABLE_SIZE: the HPACK dynamic table the client may use (RFC 7541's
    /// default; every client encodes for it).
    pub header_table_size: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE: request body bytes a client may send on one stream
    /// before we grant more. 256 KiB at a 50 ms round trip is 5 MiB/s per upload, enough
    /// for Matrix media, while a stream whose upstream is slow holds at most this much.
    pub initial_stream_window: u32,
    /// The connection's receive window: request body bytes in flight over all streams.
    /// 1 MiB caps what one connection can make us hold however many streams it opens,
    /// and lets four uploads run at full stream window.
    pub connection_window: u32,
    /// The client has this long to acknowledge our SETTINGS (SETTINGS_TIMEOUT).
    pub settings_timeout: Duration,
    /// A connection with no stream open this long is closed with GOAWAY (also the time
    /// the client has to send its preface).
    pub idle_timeout: Duration,
    /// A response stream that cannot send because the client's window stays at zero this
    /// long is reset (CANCEL): a client that never reads cannot hold it forever.
    pub send_stall_timeout: Duration,
    /// How long the graceful shutdown waits for the PING after its first GOAWAY before
    /// sending the final one.
    pub shutdown_ping_timeout: Duration,
    /// The window over which abuse counters count.
    pub abuse_window: Duration,
    /// Stream resets per window, sent by the client (Rapid Reset, CVE-2023-44487) or
    /// provoked by it (invalid frames on open streams, MadeYouReset, CVE-2025-8671, and
    /// refused streams), before the connection is closed with ENHANCE_YOUR_CALM.
    pub max_resets: u32,
    /// SETTINGS frames per window.
    pub max_settings: u32,
    /// PINGs per window.
    pub max_pings: u32,
    /// PRIORITY and unknown-type frames per window (ignored frames).
    pub max_ignored_frames: u32,
    /// Empty DATA frames without END_STREAM per window.
    pub max_empty_data: u32,
    /// WINDOW_UPDATE frames per window beyond two per DATA frame we sent in it.
    pub max_window_updates: u32,
    /// Request header lists over the size limit per window (HPACK bombs are answered
    /// 431 each; a client that keeps sending them is closed).
    pub max_oversized_headers: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent_streams: 100,
            max_header_list_size: 64 * 1024,
            max_header_block: 128 * 1024,
            max_continuations: 32,
            max_frame_size: super::frame::DEFAULT_MAX_FRAME_SIZE,
            header_table_size: 4096,
            initial_stream_window: 256 * 1024,
            connection_window: 1024 * 1024,
            settings_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_stall_timeout: Duration::from_secs(60),
            shutdown_ping_timeout: Duration::from_secs(5),
            abuse_window: Duration::from_secs(10),
            max_resets: 200,
            max_settings: 100,
            max_pings: 100,
            max_ignored_frames: 1000,
            max_empty_data: 200,
            max_window_updates: 1000,
            max_oversized_headers: 10,
        }
    }
}

/// `t + d`, or a time so far ahead it never comes when that does not fit (a configured
/// "never" must not panic).
pub(super) fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(t)
}
