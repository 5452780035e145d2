//! Reading request heads off the client connection, and the answers mxgate gives itself.

use super::*;

impl Connection {
    /// Moves the connection forward as far as the buffered client bytes allow.
    pub(super) fn progress(&mut self, now: Instant) {
        loop {
            match &mut self.state {
                State::Closed | State::Lingering { .. } => return,
                State::Tunnel => {
                    if !self.rx.is_empty() {
                        let bytes = self.rx.split().freeze();
                        self.outputs.push_back(Output::ToUpstream(bytes));
                    }
                    return;
                }
                State::Head { .. } => {
                    if self.rx.is_empty() {
                        if self.client_eof || self.shutting_down {
                            self.close();
                        }
                        return;
                    }
                    if !self.read_head(now) {
                        return;
                    }
                }
                State::Exchange(_) => {
                    self.pump_request_body(now);
                    return;
                }
                State::Discarding { remaining } => {
                    if self.rx.is_empty() {
                        if self.client_eof || self.shutting_down {
                            self.close();
                        }
                        return;
                    }
                    let take = (*remaining).min(self.rx.len() as u64);
                    *remaining -= take;
                    let _ = self.rx.split_to(take as usize);
                    if *remaining > 0 {
                        self.client_timer.set(
                            TimerKind::ClientBody,
                            now + self.config.timeouts.client_body,
                        );
                        return;
                    }
                    self.next_request(now);
                    return;
                }
            }
        }
    }

    /// Tries to read a request head; `true` if the state changed.
    pub(super) fn read_head(&mut self, now: Instant) -> bool {
        let State::Head {
            since,
            scanned,
            receiving,
        } = &mut self.state
        else {
            return false;
        };
        if !*receiving {
            // The first byte of a new request: the header timeout starts now.
            *receiving = true;
            *since = now;
        }
        let started = *since;
        let first_look = *scanned == ScanState::default();
        let limits = &self.config.limits;
        let scan_limits = ScanLimits {
            max_first_line: limits.max_request_line_bytes,
            max_head: limits.max_head_bytes,
            max_lines: limits.max_headers + 1,
        };
        let max_headers = limits.max_headers;
        if first_look {
            if let Some(head) = self.parse_whole_head(scan_limits, max_headers) {
                self.start_exchange(head, started, now);
                return true;
            }
        }
        let State::Head { scanned, .. } = &mut self.state else {
            return false;
        };
        let had_first_line = scanned.first_line_done();
        let scan = scan_head(&self.rx, scanned, scan_limits);
        match scan {
            Ok(HeadScan::Partial)
                if !had_first_line
                    && scanned.first_line_done()
                    && request_line_lacks_version(&self.rx) =>
            {
                // Refused now rather than after the header timeout.
                self.reject(Reject::NoHttpVersion, None, started, now);
                true
            }
            Ok(HeadScan::Partial) => {
                self.arm_head_timer();
                false
            }
            Ok(HeadScan::Complete { start, end }) => {
                let head = self.rx.split_to(end).freeze().slice(start..);
                let scratch = scratch(&mut self.scratch);
                let headers = std::mem::take(&mut scratch.request_headers);
                match request::parse_head_into(head.clone(), max_headers, headers) {
                    Ok(parsed) => self.start_exchange(parsed, started, now),
                    Err(reject) => self.reject(reject, Some(&head), started, now),
                }
                true
            }
            Err(reject) => {
                self.reject(reject, None, started, now);
                true
            }
        }
    }

    /// The common case, in one parse: a whole head at the start of `rx` that httparse
    /// accepts and whose lines `scan_head` would accept as they are. `None`: leave it to
    /// `scan_head` and `parse_head` (an incomplete or refused head), as if not tried.
    pub(super) fn parse_whole_head(
        &mut self,
        limits: ScanLimits,
        max_headers: usize,
    ) -> Option<RequestHead> {
        let start = head_start(&self.rx)?;
        let buf = &self.rx[start..];
        let scratch = scratch(&mut self.scratch);
        let (mut head, len) = request::parse_prefix(buf, max_headers, &mut scratch.request_headers)
            .ok()
            .flatten()?;
        if !strict_lines(buf, len, head.raw_headers(), limits) {
            scratch.request_headers = head.take_header_storage();
            return None;
        }
        let raw = self.rx.split_to(start + len).freeze();
        head.raw = if start == 0 { raw } else { raw.slice(start..) };
        Some(head)
    }

    /// Answers a request that cannot be passed on, and closes: after a framing error
    /// nothing that follows on this connection can be trusted.
    pub(super) fn reject(
        &mut self,
        reject: Reject,
        head: Option<&Bytes>,
        started: Instant,
        now: Instant,
    ) {
        let (method, target) = head
            .and_then(|h| {
                let mut parts = h.splitn(3, |&b| b == b' ');
                Some((h.slice_ref(parts.next()?), h.slice_ref(parts.next()?)))
            })
            .unwrap_or_default();
        let path_end = target
            .iter()
            .position(|&b| b == b'?')
            .unwrap_or(target.len());
        let status = reject.status();
        let bytes = answer::error_for_path(
            &target[..path_end],
            status,
            answer::errcode_for(status),
            reject.reason(),
            AnswerCtx {
                close: true,
                // The method may be all that is readable of a refused head (a 414, say): a
                // HEAD still gets no body.
                head_only: &method[..] == b"HEAD"
                    || (head.is_none() && first_token(&self.rx) == b"HEAD"),
                request_id: None,
            },
        );
        let bytes_out = bytes.len() as u64;
        self.outputs.push_back(Output::ToClient(bytes));
        let stats = ExchangeStats::new(self.listener(), None, status, None);
        self.push_log(stats, |c| AccessRecord {
            listener: c.listener(),
            client: c.peer,
            method,
            target,
            version: "HTTP/1.1",
            status,
            body_bytes_in: 0,
            bytes_out,
            duration: now.saturating_duration_since(started),
            upstream_duration: None,
            pool: None,
            request_id: Bytes::new(),
            user_agent: Bytes::new(),
            referer: Bytes::new(),
            started,
        });
        // The rest of the request (or the head itself) may still be arriving.
        self.close_after_answer(now);
    }

    pub(super) fn start_exchange(&mut self, head: RequestHead, started: Instant, now: Instant) {
        self.client_timer.clear();
        // Borrowed, not cloned, on the forwarding path: an `Arc` clone is two atomic
        // operations per request.
        let config = &*self.config;
        let listener = &config.listeners[self.listener()];
        let identity = identify(config, listener.scheme, self.peer, &head, &mut self.ids);
        let paths = &mut scratch(&mut self.scratch).paths;
        let decision = route::decide_reusing(config, listener, head.path(), identity.client, paths)
            .map(|d| self.apply_virtual_hosts(d, &head));
        let decision = match decision {
            Ok(Decision::Forward(pool)) => {
                self.forward(head, identity, pool, started, now);
                return;
            }
            Ok(d) => d,
            Err(reject) => {
                let raw = head_bytes_for_log(&head);
                self.reject(reject, Some(&raw), started, now);
                return;
            }
        };
        let config = Arc::clone(&self.config);
        let has_body = !matches!(head.body, RequestBody::None | RequestBody::Length(0));
        let closing = head.close || self.shutting_down || self.client_eof;
        // A small body of known length is read and thrown away after the answer, keeping the
        // connection; a large or chunked one (or one the client may not send at all, after
        // `Expect: 100-continue` got a final answer) closes it, lingering.
        let discard = match head.body {
            RequestBody::Length(n) if n > 0 && !closing && !head.expect_continue => {
                (n <= self.config.limits.max_pipelined_bytes as u64).then_some(n)
            }
            _ => None,
        };
        let close = closing || (has_body && discard.is_none());
        let id_header = config.forwarding.request_id_header.as_str();
        let ctx = AnswerCtx {
            close,
            head_only: head.is_head_method(),
            request_id: Some((id_header, &identity.request_id[..])),
        };
        let method = head.method();
        let (bytes, log) = match decision {
            // Handled above.
            Decision::Forward(_) => return,
            Decision::Health => (answer::health(ctx), false),
            Decision::WellKnown(doc) => {
                let bytes = if method == b"OPTIONS" {
                    answer::preflight(ctx)
                } else if method != b"GET" && method != b"HEAD" {
                    answer::matrix_error(405, "M_UNRECOGNIZED", "Method not allowed", ctx)
                } else {
                    let wk = &config.well_known;
                    answer::well_known(
                        match doc {
                            WellKnownDoc::Server => wk.server.as_ref(),
                            WellKnownDoc::Client => wk.client.as_ref(),
                            WellKnownDoc::Support => wk.support.as_ref(),
                            WellKnownDoc::Unknown => None,
                        },
                        ctx,
                    )
                };
                (bytes, true)
            }
            Decision::AdminRefused | Decision::NotFound => {
                let bytes = answer::error_for_path(
                    head.path(),
                    404,
                    "M_UNRECOGNIZED",
                    "Unrecognized request",
                    ctx,
                );
                (bytes, true)
            }
            Decision::Misdirected => {
                let bytes = answer::error_for_path(
                    head.path(),
                    421,
                    "M_UNRECOGNIZED",
                    "This server does not serve that host",
                    ctx,
                );
                (bytes, true)
            }
            Decision::AcmeChallenge => {
                let token = head
                    .path()
                    .get(route::ACME_CHALLENGE_PREFIX.len() + 1..)
                    .and_then(|t| std::str::from_utf8(t).ok())
                    .unwrap_or("");
                let answer = config
                    .acme
                    .as_ref()
                    .filter(|_| !token.is_empty())
                    .and_then(|acme| acme.http01.key_authorization(token));
                let bytes = match answer {
                    Some(key_authorization) => answer::render(
                        200,
                        Some("application/octet-stream"),
                        false,
                        key_authorization.as_bytes(),
                        ctx,
                    ),
                    None => answer::text_error(404, "No such ACME challenge", ctx),
                };
                (bytes, true)
            }
            Decision::RedirectHttps => (https_redirect(&config, &head, ctx), true),
        };
        let status = status_of(&bytes);
        let bytes_out = bytes.len() as u64;
        self.outputs.push_back(Output::ToClient(bytes));
        if log {
            let stats = ExchangeStats::new(self.listener(), None, status, None);
            self.push_log(stats, |c| {
                c.record(
                    &head, &identity, None, status, 0, bytes_out, started, now, None,
                )
            });
        }
        let mut head = head;
        scratch(&mut self.scratch).request_headers = head.take_header_storage();
        if let Some(remaining) = discard {
            self.discard_body(remaining, now);
        } else if has_body || (close && !self.rx.is_empty()) {
            // The body was never read (nor is it forwarded): it may still be arriving.
            self.close_after_answer(now);
        } else if close {
            self.close();
        } else {
            self.next_request(now);
        }
    }

    /// Reads and drops the `remaining` body bytes of a request mxgate answered itself, then
    /// goes on with the next request on the same connection.
    pub(super) fn discard_body(&mut self, remaining: u64, now: Instant) {
        self.client_timer.clear();
        self.client_timer.set(
            TimerKind::ClientBody,
            now + self.config.timeouts.client_body,
        );
        self.state = State::Discarding { remaining };
        self.progress(now);
    }

    /// With virtual hosts configured, a forwarded request for another host goes to the
    /// fallback pool, or is misdirected.
    pub(super) fn apply_virtual_hosts(&self, decision: Decision, head: &RequestHead) -> Decision {
        let vhosts = &self.config.virtual_hosts;
        if vhosts.names.is_empty() || !matches!(decision, Decision::Forward(_)) {
            return decision;
        }
        let host = head.host().map(host_without_port).unwrap_or(b"");
        if vhosts
            .names
            .iter()
            .any(|n| crate::http1::tokens::eq_ignore_case(host, n.as_bytes()))
        {
            return decision;
        }
        match vhosts.fallback {
            Some(pool) => Decision::Forward(pool),
            None => Decision::Misdirected,
        }
    }

    /// Back to reading heads, starting with any pipelined bytes.
    pub(super) fn next_request(&mut self, now: Instant) {
        let previous = std::mem::replace(
            &mut self.state,
            State::Head {
                since: now,
                scanned: ScanState::default(),
                receiving: false,
            },
        );
        if let State::Exchange(ex) = previous {
            self.recycle(ex);
        }
        // Buffers stay for a next request soon; the idle timer releases them otherwise.
        self.arm_head_timer();
        self.progress(now);
    }
}

/// The first space-delimited token after any leading empty lines (a method, if readable).
fn first_token(buf: &[u8]) -> &[u8] {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let rest = &buf[start..];
    let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    &rest[..end]
}

/// The status code of a response mxgate rendered itself.
fn status_of(rendered: &[u8]) -> u16 {
    rendered
        .get(9..12)
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// 308 to the same target on HTTPS: the request's host (or the first certified name when
/// it has none, or an unusable one), and the TLS listener's port unless it is 443.
fn https_redirect(config: &Config, head: &RequestHead, ctx: answer::AnswerCtx<'_>) -> Bytes {
    let usable = |h: &&[u8]| {
        !h.is_empty()
            && h.iter().all(|&b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
            })
    };
    let acme = config.acme.as_ref();
    let host = head
        .host()
        .map(host_without_port)
        .filter(usable)
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .or_else(|| acme.and_then(|a| a.names.first().cloned()))
        .unwrap_or_else(|| config.server_name.clone());
    let port = acme.map_or(443, |a| a.https_port);
    let target = head.target();
    let target = if target.starts_with(b"/") {
        target
    } else {
        head.path()
    };
    let mut location = format!("https://{host}");
    if port != 443 {
        location.push_str(&format!(":{port}"));
    }
    location.push_str(&String::from_utf8_lossy(target));
    answer::redirect(308, &location, ctx)
}

fn host_without_port(host: &[u8]) -> &[u8] {
    if host.starts_with(b"[") {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

/// The request line again, for logging a request refused after parsing.
fn head_bytes_for_log(head: &RequestHead) -> Bytes {
    let mut v = Vec::with_capacity(head.method().len() + head.target().len() + 2);
    v.extend_from_slice(head.method());
    v.push(b' ');
    v.extend_from_slice(head.target());
    v.push(b' ');
    Bytes::from(v)
}
