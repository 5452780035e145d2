//! The upstream's response on its way back to the client: its head, its body, interim answers and upgrades.

use super::*;

/// Where the response stands.
pub(super) enum ResponseState {
    /// No head yet; `scanned` is the scanner's resume point in `urx`.
    AwaitingHead {
        scanned: ScanState,
    },
    Body(ResponseBodyState),
    Done,
}

pub(super) enum ResponseBodyState {
    Length {
        remaining: u64,
    },
    Chunked {
        decoder: ChunkedDecoder,
        reframe: bool,
    },
    UntilClose,
}

impl Connection {
    /// Reads the response from `urx` as far as it goes.
    pub(super) fn progress_response(&mut self, now: Instant) {
        loop {
            let State::Exchange(ex) = &mut self.state else {
                return;
            };
            match &mut ex.response {
                ResponseState::Done => {
                    if !ex.urx.is_empty() {
                        // Bytes after a complete response: this upstream is not to be reused.
                        ex.upstream_spoiled = true;
                        ex.urx.clear();
                    }
                    self.try_finish(now);
                    return;
                }
                ResponseState::AwaitingHead { scanned } => {
                    let limit = self.config.limits.max_response_head_bytes;
                    let limits = ScanLimits {
                        max_first_line: limit,
                        max_head: limit,
                        max_lines: MAX_RESPONSE_HEADERS,
                    };
                    let head_request = ex.head.is_head_method();
                    if *scanned == ScanState::default() {
                        // The common case in one parse, as for requests (`parse_whole_head`).
                        let headers = &mut scratch(&mut self.scratch).response_headers;
                        if let Some(mut resp) =
                            parse_whole_response(&mut ex.urx, head_request, limits, headers)
                        {
                            let go_on = self.start_response(&resp, now);
                            scratch(&mut self.scratch).response_headers =
                                resp.take_header_storage();
                            if !go_on {
                                return;
                            }
                            continue;
                        }
                    }
                    let scan = scan_head(&ex.urx, scanned, limits);
                    let (start, end) = match scan {
                        Ok(HeadScan::Partial) => return,
                        Ok(HeadScan::Complete { start, end }) => (start, end),
                        Err(rule) => {
                            ex.upstream_spoiled = true;
                            self.fail(now, Failure::UpstreamBroken(UpstreamFault::Refused(rule)));
                            return;
                        }
                    };
                    let raw = ex.urx.split_to(end).freeze().slice(start..);
                    let headers = std::mem::take(&mut scratch(&mut self.scratch).response_headers);
                    match response::parse_head_into(raw, head_request, headers) {
                        Ok(mut resp) => {
                            let go_on = self.start_response(&resp, now);
                            scratch(&mut self.scratch).response_headers =
                                resp.take_header_storage();
                            if !go_on {
                                return;
                            }
                        }
                        Err(rule) => {
                            let State::Exchange(ex) = &mut self.state else {
                                return;
                            };
                            ex.upstream_spoiled = true;
                            self.fail(now, Failure::UpstreamBroken(UpstreamFault::Refused(rule)));
                            return;
                        }
                    }
                }
                ResponseState::Body(body) => {
                    if ex.urx.is_empty() {
                        return;
                    }
                    let mut broken = false;
                    match body {
                        ResponseBodyState::Length { remaining } => {
                            let take = (*remaining).min(ex.urx.len() as u64) as usize;
                            let bytes = ex.urx.split_to(take).freeze();
                            *remaining -= take as u64;
                            ex.bytes_out += take as u64;
                            self.outputs.push_back(Output::ToClient(bytes));
                            if *remaining == 0 {
                                ex.response = ResponseState::Done;
                            }
                        }
                        ResponseBodyState::UntilClose => {
                            let bytes = ex.urx.split().freeze();
                            ex.bytes_out += bytes.len() as u64;
                            self.outputs.push_back(Output::ToClient(bytes));
                        }
                        ResponseBodyState::Chunked { decoder, reframe } => {
                            while !ex.urx.is_empty() && !decoder.is_done() {
                                let Ok(step) = decoder.step(&ex.urx) else {
                                    broken = true;
                                    break;
                                };
                                let used = ex.urx.split_to(step.consumed).freeze();
                                if let Some((a, b)) = step.data {
                                    if *reframe {
                                        self.outputs
                                            .push_back(Output::ToClient(chunk_header(b - a)));
                                    }
                                    self.outputs.push_back(Output::ToClient(used.slice(a..b)));
                                    if *reframe {
                                        self.outputs.push_back(Output::ToClient(
                                            Bytes::from_static(CHUNK_END),
                                        ));
                                    }
                                    ex.bytes_out += (b - a) as u64;
                                }
                            }
                            if !broken && decoder.is_done() {
                                if *reframe {
                                    self.outputs.push_back(Output::ToClient(Bytes::from_static(
                                        LAST_CHUNK,
                                    )));
                                    ex.bytes_out += LAST_CHUNK.len() as u64;
                                }
                                ex.response = ResponseState::Done;
                            }
                        }
                    }
                    if broken {
                        ex.upstream_spoiled = true;
                        let fault = UpstreamFault::Refused(Reject::BadChunk);
                        self.fail(now, Failure::UpstreamBroken(fault));
                        return;
                    }
                    if !matches!(ex.response, ResponseState::Done) {
                        return;
                    }
                }
            }
        }
    }

    /// Handles a parsed response head. `false` when processing should stop.
    pub(super) fn start_response(&mut self, resp: &ResponseHead, now: Instant) -> bool {
        let id_header = self.config.forwarding.request_id_header.as_str();
        let shutting_down = self.shutting_down;
        let State::Exchange(ex) = &mut self.state else {
            return false;
        };
        if ex.upstream_duration.is_none() {
            ex.upstream_duration = ex
                .sent_upstream_at
                .map(|t| now.saturating_duration_since(t));
        }
        let client_version = ex.head.version;
        if resp.status == 101 {
            if !ex.head.upgrade {
                ex.upstream_spoiled = true;
                self.fail(now, Failure::UpstreamBroken(UpstreamFault::UnaskedUpgrade));
                return false;
            }
            let head = rewrite::client_response(
                &mut scratch(&mut self.scratch).out,
                resp,
                ClientFraming::AsIs,
                client_version,
                false,
                Some((id_header, &ex.identity.request_id)),
                true,
            );
            ex.status = 101;
            ex.bytes_out += head.len() as u64;
            self.outputs.push_back(Output::ToClient(head));
            let rest = ex.urx.split().freeze();
            if !rest.is_empty() {
                self.outputs.push_back(Output::ToClient(rest));
            }
            let stats = ExchangeStats::new(
                self.listener as ListenerId,
                Some(ex.pool),
                101,
                ex.upstream_duration,
            );
            self.push_log(stats, |c| c.exchange_record(now));
            // The exchange's timers end with it; a tunnel has none.
            self.client_timer.clear();
            self.state = State::Tunnel;
            self.progress(now);
            return false;
        }
        if (100..200).contains(&resp.status) {
            // Interim responses: our own 100 Continue already went out; others (103)
            // are passed on to HTTP/1.1 clients.
            if resp.status != 100 && client_version == Version::Http11 {
                let head = rewrite::client_response(
                    &mut scratch(&mut self.scratch).out,
                    resp,
                    ClientFraming::AsIs,
                    client_version,
                    false,
                    None,
                    false,
                );
                self.outputs.push_back(Output::ToClient(head));
            }
            ex.response = ResponseState::AwaitingHead {
                scanned: ScanState::default(),
            };
            return true;
        }
        let h2 = self.h2_stream;
        let (framing, body) = match resp.body {
            ResponseBody::None => (ClientFraming::AsIs, None),
            ResponseBody::Length(n) => (
                ClientFraming::AsIs,
                Some(ResponseBodyState::Length { remaining: n }),
            ),
            ResponseBody::Chunked if client_version == Version::Http11 && !h2 => (
                ClientFraming::Chunked,
                Some(ResponseBodyState::Chunked {
                    decoder: ChunkedDecoder::new(),
                    reframe: true,
                }),
            ),
            ResponseBody::Chunked => (
                ClientFraming::Close,
                Some(ResponseBodyState::Chunked {
                    decoder: ChunkedDecoder::new(),
                    reframe: false,
                }),
            ),
            ResponseBody::UntilClose => (ClientFraming::Close, Some(ResponseBodyState::UntilClose)),
        };
        if resp.close {
            ex.upstream_spoiled = true;
        }
        // Over HTTP/2 a length-less body ends with the stream, not the connection.
        if (framing == ClientFraming::Close && !h2) || !ex.request_done() || shutting_down {
            // A response before the whole request body: the rest of the body would have
            // to be read and thrown away to find the next request; closing is simpler.
            ex.close_after = true;
        }
        let head = rewrite::client_response(
            &mut scratch(&mut self.scratch).out,
            resp,
            framing,
            client_version,
            ex.close_after,
            Some((id_header, &ex.identity.request_id)),
            false,
        );
        ex.status = resp.status;
        ex.bytes_out += head.len() as u64;
        self.outputs.push_back(Output::ToClient(head));
        ex.response = match body {
            None | Some(ResponseBodyState::Length { remaining: 0 }) => ResponseState::Done,
            Some(b) => ResponseState::Body(b),
        };
        true
    }
}

/// A whole response head at the start of `urx` that httparse accepts and whose lines
/// `scan_head` would accept as they are, split off `urx`. `None`: leave it to `scan_head`
/// and `parse_head` (incomplete or refused), as if not tried.
fn parse_whole_response(
    urx: &mut BytesMut,
    head_request: bool,
    limits: ScanLimits,
    headers: &mut Vec<RawHeader>,
) -> Option<ResponseHead> {
    let start = head_start(urx)?;
    let buf = &urx[start..];
    let (mut head, len) = response::parse_prefix(buf, head_request, headers)
        .ok()
        .flatten()?;
    if !strict_lines(buf, len, head.raw_headers(), limits) {
        *headers = head.take_header_storage();
        return None;
    }
    let raw = urx.split_to(start + len).freeze();
    head.raw = if start == 0 { raw } else { raw.slice(start..) };
    Some(head)
}
