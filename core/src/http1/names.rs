//! The header names the proxy acts on, recognised once per header while a head is parsed:
//! validation and the rewrite both read the result instead of comparing names again.

use super::tokens::eq_ignore_case;

/// What a header's name means to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderRole {
    /// Any header the proxy passes on untouched.
    #[default]
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    Expect,
    /// `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer` (RFC 9110 §7.6.1) and
    /// `HTTP2-Settings` (an `h2c` upgrade's, RFC 7540 §3.2.1): hop-by-hop, never forwarded,
    /// with no other meaning here.
    OtherHopByHop,
    /// `X-Forwarded-For`, `X-Forwarded-Proto`: written by mxgate, never passed on.
    Forwarding,
}

impl HeaderRole {
    /// The role of `name` (any case). By length first: most names are ruled out with one
    /// comparison. Inlined into the two parse loops: called per header, the call itself
    /// showed in profiles (-140 instructions per exchange inlined).
    #[inline(always)]
    pub fn of(name: &[u8]) -> HeaderRole {
        let is = |lower: &[u8]| eq_ignore_case(name, lower);
        match name.len() {
            2 if is(b"te") => HeaderRole::OtherHopByHop,
            4 if is(b"host") => HeaderRole::Host,
            6 if is(b"expect") => HeaderRole::Expect,
            7 if is(b"upgrade") => HeaderRole::Upgrade,
            7 if is(b"trailer") => HeaderRole::OtherHopByHop,
            10 if is(b"connection") => HeaderRole::Connection,
            10 if is(b"keep-alive") => HeaderRole::OtherHopByHop,
            14 if is(b"content-length") => HeaderRole::ContentLength,
            14 if is(b"http2-settings") => HeaderRole::OtherHopByHop,
            15 if is(b"x-forwarded-for") => HeaderRole::Forwarding,
            16 if is(b"proxy-connection") => HeaderRole::OtherHopByHop,
            17 if is(b"transfer-encoding") => HeaderRole::TransferEncoding,
            17 if is(b"x-forwarded-proto") => HeaderRole::Forwarding,
            _ => HeaderRole::Other,
        }
    }

    /// Describes one connection (RFC 9110 §7.6.1): never forwarded as it came, `Upgrade`
    /// included (a tunnel's upgrade is written again by mxgate).
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            HeaderRole::Connection
                | HeaderRole::TransferEncoding
                | HeaderRole::Upgrade
                | HeaderRole::OtherHopByHop
        )
    }

    /// A `Connection` header's list must not remove this header: the message would lose its
    /// framing or its authority (a sender listing them is broken or hostile).
    pub fn never_listed(self) -> bool {
        matches!(self, HeaderRole::ContentLength | HeaderRole::Host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_recognised_in_any_case_and_nothing_else_is() {
        let known = [
            (&b"te"[..], HeaderRole::OtherHopByHop),
            (b"Host", HeaderRole::Host),
            (b"EXPECT", HeaderRole::Expect),
            (b"Upgrade", HeaderRole::Upgrade),
            (b"trailer", HeaderRole::OtherHopByHop),
            (b"HTTP2-Settings", HeaderRole::OtherHopByHop),
            (b"Connection", HeaderRole::Connection),
            (b"Keep-Alive", HeaderRole::OtherHopByHop),
            (b"Content-Length", HeaderRole::ContentLength),
            (b"X-Forwarded-For", HeaderRole::Forwarding),
            (b"Proxy-Connection", HeaderRole::OtherHopByHop),
            (b"Transfer-Encoding", HeaderRole::TransferEncoding),
            (b"x-forwarded-PROTO", HeaderRole::Forwarding),
        ];
        for (name, role) in known {
            assert_eq!(HeaderRole::of(name), role, "{name:?}");
        }
        for name in [
            &b""[..],
            b"tE ",
            b"hosts",
            b"upgrades",
            b"x-connection",
            b"content-type",
            b"x-forwarded-host",
        ] {
            assert_eq!(HeaderRole::of(name), HeaderRole::Other, "{name:?}");
        }
    }
}
