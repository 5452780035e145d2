//! Why a message was refused, and the HTTP status that says so.

/// A request (or response) the engine refuses to pass on. Each names one rule. (A refused
/// response becomes a 502 whatever its rule.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reject {
    BadRequestLine,
    /// A request line without an HTTP version (an HTTP/0.9 request).
    NoHttpVersion,
    /// A method longer than any registered one.
    MethodTooLong,
    NotOriginForm,
    /// A byte RFC 3986 does not allow in a request-target (space, `"`, `{`, ≥ 0x80…).
    BadTargetCharacter,
    /// A `%` not followed by two hex digits.
    BadPercentEncoding,
    /// A `Host` (or absolute-form authority) that is not `uri-host [":" port]`.
    BadHost,
    FragmentInTarget,
    BadVersion,
    RequestLineTooLong,
    HeadTooLarge,
    TooManyHeaders,
    BadHeaderName,
    BadHeaderValue,
    BareLineFeed,
    ObsoleteLineFolding,
    MissingHost,
    DuplicateHost,
    BadContentLength,
    ConflictingContentLength,
    ContentLengthWithTransferEncoding,
    TransferEncodingInHttp10,
    BadTransferEncoding,
    ChunkedNotFinal,
    UnknownTransferCoding,
    UnsupportedTransferCoding,
    UnsupportedExpectation,
    BadChunk,
    /// An upstream status line httparse refuses (or a head that ends before it is whole).
    BadStatusLine,
    /// An upstream status outside 100–999.
    BadStatus,
    /// The target's decoded or dot-resolved form routes elsewhere than its raw form.
    AmbiguousTarget,
}

impl Reject {
    /// httparse's refusal of a head: the rule for a bad header line, else `first_line` (the
    /// request line's or the status line's rule).
    pub(crate) fn from_httparse(err: httparse::Error, first_line: Reject) -> Reject {
        match err {
            httparse::Error::TooManyHeaders => Reject::TooManyHeaders,
            httparse::Error::HeaderName => Reject::BadHeaderName,
            httparse::Error::HeaderValue => Reject::BadHeaderValue,
            _ => first_line,
        }
    }

    /// The status a client gets for this.
    pub fn status(self) -> u16 {
        match self {
            Reject::RequestLineTooLong => 414,
            Reject::HeadTooLarge | Reject::TooManyHeaders => 431,
            Reject::UnknownTransferCoding
            | Reject::UnsupportedTransferCoding
            | Reject::MethodTooLong => 501,
            Reject::BadVersion => 505,
            Reject::UnsupportedExpectation => 417,
            _ => 400,
        }
    }

    /// A short, stable reason for the error body and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Reject::BadRequestLine => "malformed request line",
            Reject::NoHttpVersion => "request line has no HTTP version (HTTP/0.9 is not supported)",
            Reject::MethodTooLong => "method not implemented",
            Reject::NotOriginForm => "request-target must be an absolute path or URL",
            Reject::BadTargetCharacter => {
                "request-target has a character that must be percent-encoded"
            }
            Reject::BadPercentEncoding => "request-target has a malformed percent-encoding",
            Reject::BadHost => "malformed Host header or authority",
            Reject::FragmentInTarget => "request-target must not contain a fragment",
            Reject::BadVersion => "only HTTP/1.0 and HTTP/1.1 are supported",
            Reject::RequestLineTooLong => "request line too long",
            Reject::HeadTooLarge => "request headers too large",
            Reject::TooManyHeaders => "too many request headers",
            Reject::BadHeaderName => "malformed header name",
            Reject::BadHeaderValue => "malformed header value",
            Reject::BareLineFeed => "line ending without carriage return",
            Reject::ObsoleteLineFolding => "folded header line",
            Reject::MissingHost => "missing Host header",
            Reject::DuplicateHost => "more than one Host header",
            Reject::BadContentLength => "malformed Content-Length",
            Reject::ConflictingContentLength => "conflicting Content-Length headers",
            Reject::ContentLengthWithTransferEncoding => {
                "both Content-Length and Transfer-Encoding"
            }
            Reject::TransferEncodingInHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
            Reject::BadTransferEncoding => "malformed Transfer-Encoding",
            Reject::ChunkedNotFinal => "chunked must be the final transfer coding",
            Reject::UnknownTransferCoding => "unknown transfer coding",
            Reject::UnsupportedTransferCoding => "unsupported transfer coding",
            Reject::UnsupportedExpectation => "unsupported expectation",
            Reject::BadChunk => "malformed chunked body",
            Reject::BadStatusLine => "malformed status line",
            Reject::BadStatus => "invalid status code",
            Reject::AmbiguousTarget => "request path is ambiguous once decoded",
        }
    }
}
