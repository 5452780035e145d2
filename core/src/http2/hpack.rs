//! HPACK (RFC 7541) behind a small interface: [`Decoder::decode`] turns a header block
//! into (name, value) pairs under a header-list-size limit counted while decoding, and
//! [`Encoder::encode`] writes a response's header list.
//!
//! The decoder never holds more than its dynamic table (at most our
//! SETTINGS_HEADER_TABLE_SIZE) plus the fields of one list within the limit: a block whose
//! decoded size (RFC 9113 §6.5.2: name + value + 32 per field) passes the limit stops
//! being collected at that field — it is still parsed to the end, because the dynamic
//! table must stay in step with the peer's, but referencing a large entry a thousand
//! times (an "HPACK bomb") costs a counter, not memory.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use super::huffman;

/// RFC 7541 §4.1: each entry's size counts 32 octets of overhead.
pub const ENTRY_OVERHEAD: usize = 32;

/// Scratch space kept between blocks; more is freed after the block that needed it.
const SCRATCH_KEEP: usize = 4096;

/// A header block that breaks RFC 7541: a connection error COMPRESSION_ERROR (RFC 9113
/// §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HpackError(pub &'static str);

/// What a block decoded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// Every field is in the output list.
    Complete,
    /// The list passed the size limit: the output list was emptied and collection
    /// stopped (the table is still up to date). `size` is the decoded size seen, capped
    /// at the first field past the limit.
    TooLarge { size: usize },
}

/// RFC 7541 Appendix A.
static STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The first static-table index (1-based) with this name, or 0.
fn static_name_index(name: &[u8]) -> usize {
    match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b":status" => 8,
        b"accept-charset" => 15,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept-ranges" => 18,
        b"accept" => 19,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"authorization" => 23,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"cookie" => 32,
        b"date" => 33,
        b"etag" => 34,
        b"expect" => 35,
        b"expires" => 36,
        b"from" => 37,
        b"host" => 38,
        b"if-match" => 39,
        b"if-modified-since" => 40,
        b"if-none-match" => 41,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"max-forwards" => 47,
        b"proxy-authenticate" => 48,
        b"proxy-authorization" => 49,
        b"range" => 50,
        b"referer" => 51,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"transfer-encoding" => 57,
        b"user-agent" => 58,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => 0,
    }
}

/// The dynamic table (§2.3.2): newest first, sizes counted per §4.1.
#[derive(Debug, Default)]
struct DynamicTable {
    entries: VecDeque<(Bytes, Bytes)>,
    size: usize,
    max: usize,
}

impl DynamicTable {
    fn new(max: usize) -> Self {
        DynamicTable {
            entries: VecDeque::new(),
            size: 0,
            max,
        }
    }

    fn set_max(&mut self, max: usize) {
        self.max = max;
        self.evict_to(max);
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.entries.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + ENTRY_OVERHEAD,
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }

    /// §4.4: an entry larger than the table empties it and is not added.
    fn insert(&mut self, name: Bytes, value: Bytes) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max - size);
        self.size += size;
        self.entries.push_front((name, value));
    }

    fn get(&self, index: usize) -> Option<&(Bytes, Bytes)> {
        self.entries.get(index)
    }
}

fn static_entry(index: usize) -> Option<(Bytes, Bytes)> {
    let (n, v) = STATIC_TABLE.get(index.checked_sub(1)?)?;
    Some((
        Bytes::from_static(n.as_bytes()),
        Bytes::from_static(v.as_bytes()),
    ))
}

/// A cursor over a header block.
struct Input<'a> {
    block: &'a Bytes,
    pos: usize,
}

impl Input<'_> {
    fn peek(&self) -> Option<u8> {
        self.block.get(self.pos).copied()
    }

    /// §5.1: an integer with an `n`-bit prefix. Values past 2^32 are refused (nothing we
    /// accept is near that), so a run of continuation octets cannot overflow.
    fn integer(&mut self, n: u8) -> Result<usize, HpackError> {
        let first = self.peek().ok_or(HpackError("truncated integer"))?;
        self.pos += 1;
        let max_prefix = (1u32 << n) - 1;
        let mut value = u32::from(first) & max_prefix;
        if value < max_prefix {
            return Ok(value as usize);
        }
        let mut shift = 0u32;
        loop {
            let b = self.peek().ok_or(HpackError("truncated integer"))?;
            self.pos += 1;
            let add = u64::from(b & 0x7f) << shift;
            let sum = u64::from(value) + add;
            value = u32::try_from(sum).map_err(|_| HpackError("integer too large"))?;
            if b & 0x80 == 0 {
                return Ok(value as usize);
            }
            shift += 7;
            if shift > 28 {
                return Err(HpackError("integer too long"));
            }
        }
    }

    /// §5.2: a string literal; raw strings are handles on the block (no copy).
    fn string(&mut self, scratch: &mut Vec<u8>) -> Result<Bytes, HpackError> {
        let huffman = self.peek().ok_or(HpackError("truncated string"))? & 0x80 != 0;
        let len = self.integer(7)?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.block.len())
            .ok_or(HpackError("string longer than the block"))?;
        let raw = self.block.slice(self.pos..end);
        self.pos = end;
        if !huffman {
            return Ok(raw);
        }
        scratch.clear();
        huffman::decode(&raw, scratch).map_err(|e| match e {
            huffman::HuffmanError::Eos => HpackError("EOS in a Huffman string"),
            huffman::HuffmanError::BadPadding => HpackError("bad Huffman padding"),
        })?;
        Ok(Bytes::copy_from_slice(scratch))
    }
}

/// The decoding side of one connection.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// Our SETTINGS_HEADER_TABLE_SIZE: size updates above it are errors.
    max_allowed: usize,
    scratch: Vec<u8>,
}

impl Decoder {
    /// `max_table_size` is the SETTINGS_HEADER_TABLE_SIZE we advertise.
    pub fn new(max_table_size: usize) -> Self {
        Decoder {
            table: DynamicTable::new(max_table_size),
            max_allowed: max_table_size,
            scratch: Vec::new(),
        }
    }

    /// The dynamic table's current size (§4.1), for tests and memory accounting.
    pub fn table_size(&self) -> usize {
        self.table.size
    }

    /// Decodes one complete header block into `out` (appended), stopping collection
    /// once the decoded size passes `max_list_size`.
    pub fn decode(
        &mut self,
        block: &Bytes,
        max_list_size: usize,
        out: &mut Vec<(Bytes, Bytes)>,
    ) -> Result<Decoded, HpackError> {
        let mut input = Input { block, pos: 0 };
        let mut size = 0usize;
        let mut too_large = false;
        let mut fields = 0usize;
        let mut updates = 0usize;
        let start = out.len();
        while let Some(first) = input.peek() {
            let (name, value, index) = if first & 0x80 != 0 {
                // §6.1 indexed field.
                let i = input.integer(7)?;
                let (n, v) = self.lookup(i)?;
                (n, v, false)
            } else if first & 0xc0 == 0x40 {
                // §6.2.1 literal with incremental indexing.
                let (n, v) = self.literal(&mut input, 6)?;
                (n, v, true)
            } else if first & 0xe0 == 0x20 {
                // §6.3 dynamic table size update: only before the first field, at most
                // twice (the smallest, then the final size: §4.2).
                if fields > 0 {
                    return Err(HpackError("table size update after a field"));
                }
                updates += 1;
                if updates > 2 {
                    return Err(HpackError("more than two table size updates"));
                }
                let new = input.integer(5)?;
                if new > self.max_allowed {
                    return Err(HpackError("table size update above our setting"));
                }
                self.table.set_max(new);
                continue;
            } else {
                // §6.2.2 without indexing, §6.2.3 never indexed.
                let (n, v) = self.literal(&mut input, 4)?;
                (n, v, false)
            };
            fields += 1;
            if !too_large {
                size = size.saturating_add(name.len() + value.len() + ENTRY_OVERHEAD);
                if size > max_list_size {
                    too_large = true;
                    out.truncate(start);
                    out.shrink_to(start.max(16));
                } else {
                    out.push((name.clone(), value.clone()));
                }
            }
            if index {
                self.table.insert(name, value);
            }
        }
        // One huge Huffman string must not stay with the connection for its life.
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = Vec::new();
        }
        Ok(if too_large {
            Decoded::TooLarge { size }
        } else {
            Decoded::Complete
        })
    }

    fn lookup(&self, index: usize) -> Result<(Bytes, Bytes), HpackError> {
        if index == 0 {
            return Err(HpackError("index 0"));
        }
        if index <= STATIC_TABLE.len() {
            return static_entry(index).ok_or(HpackError("bad static index"));
        }
        self.table
            .get(index - STATIC_TABLE.len() - 1)
            .cloned()
            .ok_or(HpackError("index past the dynamic table"))
    }

    fn literal(&mut self, input: &mut Input<'_>, prefix: u8) -> Result<(Bytes, Bytes), HpackError> {
        let name_index = input.integer(prefix)?;
        let name = if name_index == 0 {
            input.string(&mut self.scratch)?
        } else {
            self.lookup(name_index)?.0
        };
        let value = input.string(&mut self.scratch)?;
        Ok((name, value))
    }
}

/// How the encoder treats a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Indexing {
    Incremental,
    Without,
    Never,
}

fn indexing_for(name: &[u8]) -> Indexing {
    match name {
        // Secrets must not be guessable through the table (§7.1.3).
        b"set-cookie" | b"authorization" | b"proxy-authorization" | b"cookie" => Indexing::Never,
        // Values that change with every response would only churn the table.
        b"content-length" | b"date" | b"etag" | b"last-modified" | b"x-request-id" | b"age"
        | b"expires" | b"content-range" | b"location" => Indexing::Without,
        _ => Indexing::Incremental,
    }
}

/// The encoding side of one connection: responses we send.
#[derive(Debug)]
pub struct Encoder {
    table: DynamicTable,
    /// The most we use: min(our own cap, the peer's SETTINGS_HEADER_TABLE_SIZE).
    cap: usize,
    /// A size change to announce at the start of the next block (§4.2): the smallest
    /// size set since the last block, and the final one.
    pending: Option<(usize, usize)>,
    scratch: Vec<u8>,
    /// A name being lower-cased.
    lower: Vec<u8>,
}

/// The most table we keep for our responses, whatever the peer allows.
pub const ENCODER_TABLE_CAP: usize = 4096;

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        Encoder {
            // The peer's initial SETTINGS_HEADER_TABLE_SIZE is 4096 (§6.5.2).
            table: DynamicTable::new(ENCODER_TABLE_CAP.min(4096)),
            cap: ENCODER_TABLE_CAP.min(4096),
            pending: None,
            scratch: Vec::new(),
            lower: Vec::new(),
        }
    }

    /// The peer's SETTINGS_HEADER_TABLE_SIZE changed.
    pub fn set_peer_table_size(&mut self, size: u32) {
        let new = (size as usize).min(ENCODER_TABLE_CAP);
        if new == self.cap && self.pending.is_none() {
            return;
        }
        self.cap = new;
        self.pending = Some(match self.pending {
            Some((low, _)) => (low.min(new), new),
            None => (new, new),
        });
    }

    /// Encodes `fields` as they are, as one header block appended to `out`.
    pub fn encode<'a>(
        &mut self,
        fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        out: &mut BytesMut,
    ) {
        self.encode_inner(fields, false, out);
    }

    /// [`Encoder::encode`], with names lower-cased (RFC 9113 §8.2.1) — without an
    /// allocation when they already are.
    pub fn encode_lowercase<'a>(
        &mut self,
        fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        out: &mut BytesMut,
    ) {
        self.encode_inner(fields, true, out);
    }

    fn encode_inner<'a>(
        &mut self,
        fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        lowercase: bool,
        out: &mut BytesMut,
    ) {
        if let Some((low, last)) = self.pending.take() {
            if low < last {
                write_integer(out, 0x20, 5, low);
                self.table.set_max(low);
            }
            write_integer(out, 0x20, 5, last);
            self.table.set_max(last);
        }
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = Vec::new();
        }
        for (name, value) in fields {
            if lowercase && name.iter().any(u8::is_ascii_uppercase) {
                let mut lower = std::mem::take(&mut self.lower);
                lower.clear();
                lower.extend(name.iter().map(u8::to_ascii_lowercase));
                self.field(&lower, value, out);
                self.lower = lower;
            } else {
                self.field(name, value, out);
            }
        }
    }

    fn field(&mut self, name: &[u8], value: &[u8], out: &mut BytesMut) {
        let mut name_index = static_name_index(name);
        if name_index > 0 {
            // Entries of one name are adjacent; only a few carry a value.
            for (i, (n, v)) in STATIC_TABLE.iter().enumerate().skip(name_index - 1) {
                if n.as_bytes() != name {
                    break;
                }
                if !v.is_empty() && v.as_bytes() == value {
                    write_integer(out, 0x80, 7, i + 1);
                    return;
                }
            }
        }
        let mode = indexing_for(name);
        if mode == Indexing::Incremental {
            for (i, (n, v)) in self.table.entries.iter().enumerate() {
                if n.as_ref() == name && v.as_ref() == value {
                    write_integer(out, 0x80, 7, STATIC_TABLE.len() + 1 + i);
                    return;
                }
            }
        }
        if name_index == 0 && mode == Indexing::Incremental {
            if let Some(i) = self
                .table
                .entries
                .iter()
                .position(|(n, _)| n.as_ref() == name)
            {
                name_index = STATIC_TABLE.len() + 1 + i;
            }
        }
        let (flags, prefix) = match mode {
            Indexing::Incremental => (0x40, 6),
            Indexing::Without => (0x00, 4),
            Indexing::Never => (0x10, 4),
        };
        write_integer(out, flags, prefix, name_index);
        if name_index == 0 {
            self.string(name, out);
        }
        self.string(value, out);
        if mode == Indexing::Incremental {
            self.table
                .insert(Bytes::copy_from_slice(name), Bytes::copy_from_slice(value));
        }
    }

    fn string(&mut self, s: &[u8], out: &mut BytesMut) {
        let coded = huffman::encoded_len(s);
        if coded < s.len() {
            self.scratch.clear();
            huffman::encode(s, &mut self.scratch);
            write_integer(out, 0x80, 7, self.scratch.len());
            out.put_slice(&self.scratch);
        } else {
            write_integer(out, 0x00, 7, s.len());
            out.put_slice(s);
        }
    }
}

/// §5.1: `value` with an `n`-bit prefix, the first octet's other bits set to `flags`.
pub fn write_integer(out: &mut BytesMut, flags: u8, n: u8, value: usize) {
    let max_prefix = (1usize << n) - 1;
    if value < max_prefix {
        out.put_u8(flags | value as u8);
        return;
    }
    out.put_u8(flags | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 0x80 {
        out.put_u8((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    out.put_u8(rest as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Bytes {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect::<Vec<u8>>()
            .into()
    }

    fn decode_all(d: &mut Decoder, block: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let r = d
            .decode(&hex(block), usize::MAX, &mut out)
            .expect("decodes");
        assert_eq!(r, Decoded::Complete);
        out.into_iter()
            .map(|(n, v)| {
                (
                    String::from_utf8(n.to_vec()).expect("utf8"),
                    String::from_utf8(v.to_vec()).expect("utf8"),
                )
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn table(d: &Decoder) -> Vec<(String, String)> {
        d.table
            .entries
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn static_name_index_agrees_with_the_table() {
        for (i, (n, _)) in STATIC_TABLE.iter().enumerate() {
            let first = STATIC_TABLE
                .iter()
                .position(|(m, _)| m == n)
                .map_or(0, |p| p + 1);
            assert_eq!(static_name_index(n.as_bytes()), first, "{n} at {}", i + 1);
        }
        assert_eq!(static_name_index(b"x-unknown"), 0);
    }

    #[test]
    fn rfc7541_c_1_integers() {
        for (flags, n, value, expect) in [
            (0u8, 5u8, 10usize, "0a"),
            (0, 5, 1337, "1f9a0a"),
            (0, 8, 42, "2a"),
        ] {
            let mut out = BytesMut::new();
            write_integer(&mut out, flags, n, value);
            assert_eq!(out.freeze(), hex(expect));
            let block = hex(expect);
            let mut input = Input {
                block: &block,
                pos: 0,
            };
            assert_eq!(input.integer(n), Ok(value));
        }
    }

    #[test]
    fn rfc7541_c_2_field_representations() {
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode_all(
                &mut d,
                "400a637573746f6d2d6b65790d637573746f6d2d686561646572"
            ),
            pairs(&[("custom-key", "custom-header")])
        );
        assert_eq!(d.table_size(), 55);
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode_all(&mut d, "040c2f73616d706c652f70617468"),
            pairs(&[(":path", "/sample/path")])
        );
        assert_eq!(d.table_size(), 0);
        assert_eq!(
            decode_all(&mut d, "100870617373776f726406736563726574"),
            pairs(&[("password", "secret")])
        );
        assert_eq!(d.table_size(), 0);
        assert_eq!(decode_all(&mut d, "82"), pairs(&[(":method", "GET")]));
        assert_eq!(d.table_size(), 0);
    }

    /// C.3 (raw) and C.4 (Huffman) are the same three requests.
    fn requests(blocks: [&str; 3]) {
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode_all(&mut d, blocks[0]),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(d.table_size(), 57);
        assert_eq!(
            decode_all(&mut d, blocks[1]),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        assert_eq!(d.table_size(), 110);
        assert_eq!(
            decode_all(&mut d, blocks[2]),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(
            table(&d),
            pairs(&[
                ("custom-key", "custom-value"),
                ("cache-control", "no-cache"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(d.table_size(), 164);
    }

    #[test]
    fn rfc7541_c_3_requests_without_huffman() {
        requests([
            "828684410f7777772e6578616d706c652e636f6d",
            "828684be58086e6f2d6361636865",
            "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
        ]);
    }

    #[test]
    fn rfc7541_c_4_requests_with_huffman() {
        requests([
            "828684418cf1e3c2e5f23a6ba0ab90f4ff",
            "828684be5886a8eb10649cbf",
            "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
        ]);
    }

    /// C.5 (raw) and C.6 (Huffman): three responses with a 256-octet table, so entries
    /// are evicted.
    fn responses(blocks: [&str; 3]) {
        let mut d = Decoder::new(256);
        let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
        let loc = "https://www.example.com";
        assert_eq!(
            decode_all(&mut d, blocks[0]),
            pairs(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", date1),
                ("location", loc)
            ])
        );
        assert_eq!(d.table_size(), 222);
        assert_eq!(
            decode_all(&mut d, blocks[1]),
            pairs(&[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", date1),
                ("location", loc)
            ])
        );
        assert_eq!(d.table_size(), 222);
        let cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
        assert_eq!(
            decode_all(&mut d, blocks[2]),
            pairs(&[
                (":status", "200"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
                ("location", loc),
                ("content-encoding", "gzip"),
                ("set-cookie", cookie)
            ])
        );
        assert_eq!(
            table(&d),
            pairs(&[
                ("set-cookie", cookie),
                ("content-encoding", "gzip"),
                ("date", "Mon, 21 Oct 2013 20:13:22 GMT")
            ])
        );
        assert_eq!(d.table_size(), 215);
    }

    #[test]
    fn rfc7541_c_5_responses_without_huffman() {
        responses([
            "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d546e1768747470733a2f2f7777772e6578616d706c652e636f6d",
            "4803333037c1c0bf",
            "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69707738666f6f3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d333630303b2076657273696f6e3d31",
        ]);
    }

    #[test]
    fn rfc7541_c_6_responses_with_huffman() {
        responses([
            "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3",
            "4883640effc1c0bf",
            "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
        ]);
    }

    fn decode_err(d: &mut Decoder, block: &[u8]) -> HpackError {
        d.decode(&Bytes::copy_from_slice(block), usize::MAX, &mut Vec::new())
            .expect_err("must fail")
    }

    #[test]
    fn rfc7541_errors_are_compression_errors() {
        let mut d = Decoder::new(4096);
        assert_eq!(decode_err(&mut d, &[0x80]), HpackError("index 0"));
        assert_eq!(
            decode_err(&mut d, &[0xbe]),
            HpackError("index past the dynamic table")
        );
        assert_eq!(
            decode_err(&mut d, &[0x82, 0x20]),
            HpackError("table size update after a field")
        );
        assert_eq!(
            decode_err(&mut d, &[0x3f, 0xe2, 0x1f]),
            HpackError("table size update above our setting")
        );
        assert_eq!(
            decode_err(&mut d, &[0x20, 0x20, 0x20]),
            HpackError("more than two table size updates")
        );
        assert_eq!(
            decode_err(&mut d, &[0x40, 0x05, b'a']),
            HpackError("string longer than the block")
        );
        assert_eq!(
            decode_err(&mut d, &[0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            HpackError("integer too long")
        );
        assert_eq!(
            decode_err(&mut d, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            HpackError("integer too large")
        );
        assert_eq!(decode_err(&mut d, &[0xff]), HpackError("truncated integer"));
        assert_eq!(
            decode_err(&mut d, &[0x40, 0x81, 0x00, 0x00]),
            HpackError("bad Huffman padding")
        );
        // Two updates (down, then up within our setting) are fine; so is 0.
        let mut out = Vec::new();
        assert_eq!(
            d.decode(
                &Bytes::from_static(&[0x20, 0x3f, 0xe1, 0x1f, 0x82]),
                100,
                &mut out
            ),
            Ok(Decoded::Complete)
        );
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn hpack_bomb_is_cut_at_the_list_limit_with_bounded_memory() {
        // One 4000-byte entry, then 10 000 one-byte references to it: 40 MB decoded.
        let mut block = BytesMut::new();
        block.put_slice(&[0x40, 0x01, b'x']);
        write_integer(&mut block, 0x00, 7, 4000);
        block.put_slice(&[b'a'; 4000]);
        for _ in 0..10_000 {
            block.put_u8(0xbe);
        }
        let mut d = Decoder::new(4096);
        let mut out = Vec::new();
        let r = d.decode(&block.freeze(), 65_536, &mut out);
        match r {
            Ok(Decoded::TooLarge { size }) => assert!(size <= 65_536 + 4033, "{size}"),
            other => panic!("{other:?}"),
        }
        assert!(out.is_empty());
        assert!(out.capacity() <= 16, "collection storage dropped");
        assert!(d.table_size() <= 4096);
        // The table stayed in step: the next block can still reference the entry.
        let mut out = Vec::new();
        assert_eq!(
            d.decode(&Bytes::from_static(&[0xbe]), 65_536, &mut out),
            Ok(Decoded::Complete)
        );
        assert_eq!(out[0].1.len(), 4000);
    }

    #[test]
    fn encoder_announces_table_size_changes_at_the_next_block() {
        let mut e = Encoder::new();
        let mut d = Decoder::new(4096);
        let fields: [(&[u8], &[u8]); 2] = [(b"server", b"mxgate"), (b"x-a", b"b")];
        let mut out = BytesMut::new();
        e.encode(fields, &mut out);
        e.encode(fields, &mut out);
        e.set_peer_table_size(0);
        e.set_peer_table_size(100);
        let mut second = BytesMut::new();
        e.encode(fields, &mut second);
        // Smallest (0) then final (100) size.
        assert_eq!(&second[..2], &[0x20, 0x3f]);
        let mut got = Vec::new();
        let block = out.freeze();
        assert!(d.decode(&block, usize::MAX, &mut got).is_ok());
        assert!(d.decode(&second.freeze(), usize::MAX, &mut got).is_ok());
        assert_eq!(got.len(), 6);
        assert!(d.table_size() <= 100);
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(
            lists in proptest::collection::vec(
                proptest::collection::vec(
                    ("[a-z:-]{1,20}|server|content-type|set-cookie|date",
                     proptest::collection::vec(any::<u8>(), 0..60)),
                    0..12),
                1..5),
            peer_size in prop_oneof![Just(4096u32), Just(0u32), 0u32..5000],
        ) {
            let mut e = Encoder::new();
            let mut d = Decoder::new(4096);
            e.set_peer_table_size(peer_size);
            for list in &lists {
                let mut block = BytesMut::new();
                e.encode(list.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())), &mut block);
                let mut out = Vec::new();
                prop_assert_eq!(d.decode(&block.freeze(), usize::MAX, &mut out), Ok(Decoded::Complete));
                let got: Vec<(Vec<u8>, Vec<u8>)> =
                    out.into_iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
                let want: Vec<(Vec<u8>, Vec<u8>)> =
                    list.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.clone())).collect();
                prop_assert_eq!(got, want);
                prop_assert!(d.table_size() <= (peer_size as usize).min(ENCODER_TABLE_CAP));
            }
        }

        #[test]
        fn arbitrary_blocks_never_panic_and_stay_bounded(
            block in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut d = Decoder::new(4096);
            let mut out = Vec::new();
            let _ = d.decode(&Bytes::from(block), 1024, &mut out);
            prop_assert!(d.table_size() <= 4096);
            let total: usize = out.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
            prop_assert!(total <= 1024);
        }
    }
}
