//! One exchange with an upstream: choosing the backend, the request going up, and how the exchange ends.

use super::*;

/// Where the request body stands.
pub(super) enum RequestBodyState {
    Length { remaining: u64 },
    Chunked { decoder: ChunkedDecoder, total: u64 },
    Done,
}

/// Where the upstream connection stands.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Upstream {
    Connecting { fresh: bool },
    Connected { reused: bool },
    Released,
}

pub(super) struct Exchange {
    pub(super) started: Instant,
    pub(super) head: RequestHead,
    pub(super) identity: ClientIdentity,
    pub(super) pool: PoolId,
    /// The backend of `pool` chosen for this exchange (counted in its in-flight counter).
    pub(super) backend: usize,
    /// The head to send upstream, until it is sent.
    pub(super) upstream_head: Bytes,
    pub(super) body: RequestBodyState,
    pub(super) body_bytes_in: u64,
    pub(super) sent_continue: bool,
    pub(super) retryable: bool,
    pub(super) retried: bool,
    pub(super) upstream: Upstream,
    pub(super) urx: BytesMut,
    pub(super) response: ResponseState,
    pub(super) status: u16,
    /// Bytes sent to the client for this exchange (0: nothing yet, an error can still be sent).
    pub(super) bytes_out: u64,
    pub(super) sent_upstream_at: Option<Instant>,
    pub(super) upstream_duration: Option<Duration>,
    /// The client connection closes after this exchange.
    pub(super) close_after: bool,
    /// The upstream connection cannot be reused.
    pub(super) upstream_spoiled: bool,
    pub(super) timers: ExchangeTimers,
}

impl Exchange {
    pub(super) fn request_done(&self) -> bool {
        matches!(self.body, RequestBodyState::Done)
    }
    pub(super) fn response_started(&self) -> bool {
        self.bytes_out > 0
    }
}

/// Why an exchange ends badly; each becomes a status (or a cut connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    UpstreamUnreachable,
    UpstreamBroken(UpstreamFault),
    UpstreamTimeout,
    ClientBodyTimeout,
    BodyTooLarge,
    BadRequestBody,
}

impl Failure {
    pub(super) fn status(self) -> u16 {
        match self {
            Failure::UpstreamUnreachable | Failure::UpstreamBroken(_) => 502,
            Failure::UpstreamTimeout => 504,
            Failure::ClientBodyTimeout => 408,
            Failure::BodyTooLarge => 413,
            Failure::BadRequestBody => 400,
        }
    }
    pub(super) fn message(self) -> &'static str {
        match self {
            Failure::UpstreamUnreachable => "The homeserver could not be reached",
            Failure::UpstreamBroken(_) => "The homeserver sent an invalid or incomplete response",
            Failure::UpstreamTimeout => "The homeserver did not answer in time",
            Failure::ClientBodyTimeout => "The request body stalled",
            Failure::BodyTooLarge => "Request body too large",
            Failure::BadRequestBody => "Malformed chunked request body",
        }
    }
}

impl Connection {
    /// The upstream connection asked for by [`Output::ConnectUpstream`] is ready;
    /// `reused` when it came from the idle pool.
    pub fn handle_upstream_connected(&mut self, reused: bool, now: Instant) {
        let State::Exchange(ex) = &mut self.state else {
            return;
        };
        if !matches!(ex.upstream, Upstream::Connecting { .. }) {
            return;
        }
        ex.upstream = Upstream::Connected { reused };
        ex.sent_upstream_at = Some(now);
        let timeout = response_timeout(&self.config, ex.pool);
        ex.timers.upstream.stop(TimerKind::UpstreamConnect);
        ex.timers
            .upstream
            .set(TimerKind::UpstreamResponse, now + timeout);
        self.outputs
            .push_back(Output::ToUpstream(std::mem::take(&mut ex.upstream_head)));
        if !ex.request_done() {
            if ex.head.expect_continue && !ex.sent_continue && ex.head.version == Version::Http11 {
                ex.sent_continue = true;
                self.outputs
                    .push_back(Output::ToClient(Bytes::from_static(answer::CONTINUE)));
            }
            ex.timers.body.set(
                TimerKind::ClientBody,
                now + self.config.timeouts.client_body,
            );
        }
        self.progress(now);
    }

    /// Connecting to the upstream failed (refused, unreachable, name not resolved).
    pub fn handle_upstream_failed(&mut self, now: Instant) {
        let State::Exchange(ex) = &mut self.state else {
            return;
        };
        if !matches!(ex.upstream, Upstream::Connecting { .. }) {
            return;
        }
        ex.upstream = Upstream::Released;
        ex.timers.upstream.stop(TimerKind::UpstreamConnect);
        self.fail(now, Failure::UpstreamUnreachable);
    }

    /// Bytes read from the upstream.
    pub fn handle_upstream_data(&mut self, data: &[u8], now: Instant) {
        match &mut self.state {
            State::Tunnel => self
                .outputs
                .push_back(Output::ToClient(Bytes::copy_from_slice(data))),
            State::Exchange(ex) if matches!(ex.upstream, Upstream::Connected { .. }) => {
                ex.urx.extend_from_slice(data);
                let timeout = response_timeout(&self.config, ex.pool);
                ex.timers
                    .upstream
                    .set(TimerKind::UpstreamResponse, now + timeout);
                self.progress_response(now);
            }
            _ => {}
        }
    }

    /// The upstream closed (or a read or write on it failed).
    pub fn handle_upstream_eof(&mut self, now: Instant) {
        let State::Exchange(ex) = &mut self.state else {
            if matches!(self.state, State::Tunnel) {
                self.outputs
                    .push_back(Output::ReleaseUpstream { reusable: false });
                self.close();
            }
            return;
        };
        if !matches!(ex.upstream, Upstream::Connected { .. }) {
            return;
        }
        ex.upstream_spoiled = true;
        let exchange = self.exchanges;
        // Whatever arrived before the close still counts.
        self.progress_response(now);
        let State::Exchange(ex) = &mut self.state else {
            return;
        };
        if self.exchanges != exchange {
            return;
        }
        match &ex.response {
            ResponseState::Body(ResponseBodyState::UntilClose) => {
                ex.response = ResponseState::Done;
                self.try_finish(now);
            }
            ResponseState::AwaitingHead { .. }
                if ex.retryable
                    && !ex.retried
                    && ex.urx.is_empty()
                    && ex.upstream == (Upstream::Connected { reused: true }) =>
            {
                // A pooled connection the upstream had already closed: the request never
                // got there. Safe to send once more on a fresh connection (idempotent, no body).
                ex.retried = true;
                // The head went out with the first attempt: written again, the same.
                ex.upstream_head = rewrite::upstream_request(
                    &mut scratch(&mut self.scratch).out,
                    &ex.head,
                    &ex.identity,
                    forwarded::IpText::new(self.peer).as_bytes(),
                    self.config.forwarding.request_id_header.as_str(),
                    &self.config.server_name,
                );
                ex.upstream = Upstream::Connecting { fresh: true };
                ex.upstream_spoiled = false;
                ex.sent_upstream_at = None;
                let (pool, backend) = (ex.pool, ex.backend);
                ex.timers.upstream.stop(TimerKind::UpstreamResponse);
                ex.timers.upstream.set(
                    TimerKind::UpstreamConnect,
                    now + self.config.timeouts.upstream_connect,
                );
                self.outputs
                    .push_back(Output::ReleaseUpstream { reusable: false });
                self.outputs.push_back(Output::ConnectUpstream {
                    pool,
                    backend,
                    fresh: true,
                });
            }
            ResponseState::Done => {}
            _ => self.fail(now, Failure::UpstreamBroken(UpstreamFault::ClosedEarly)),
        }
    }

    pub(super) fn forward(
        &mut self,
        head: RequestHead,
        identity: ClientIdentity,
        pool: PoolId,
        started: Instant,
        now: Instant,
    ) {
        let body = match head.body {
            RequestBody::None | RequestBody::Length(0) => RequestBodyState::Done,
            RequestBody::Length(n) => {
                if n > self.config.limits.max_body_bytes {
                    let config = Arc::clone(&self.config);
                    // Refused before a byte goes upstream; the body is never read, so the
                    // connection cannot carry another request.
                    let ctx = AnswerCtx {
                        close: true,
                        head_only: head.is_head_method(),
                        request_id: Some((
                            config.forwarding.request_id_header.as_str(),
                            &identity.request_id[..],
                        )),
                    };
                    let bytes = answer::matrix_error(
                        413,
                        "M_TOO_LARGE",
                        Failure::BodyTooLarge.message(),
                        ctx,
                    );
                    let out = bytes.len() as u64;
                    self.outputs.push_back(Output::ToClient(bytes));
                    let stats = ExchangeStats::new(self.listener(), Some(pool), 413, None);
                    self.push_log(stats, |c| {
                        c.record(
                            &head,
                            &identity,
                            Some(pool),
                            413,
                            0,
                            out,
                            started,
                            now,
                            None,
                        )
                    });
                    // The client may be sending the body all the same.
                    self.close_after_answer(now);
                    return;
                }
                RequestBodyState::Length { remaining: n }
            }
            RequestBody::Chunked => RequestBodyState::Chunked {
                decoder: ChunkedDecoder::new(),
                total: 0,
            },
        };
        let upstream_head = rewrite::upstream_request(
            &mut scratch(&mut self.scratch).out,
            &head,
            &identity,
            forwarded::IpText::new(self.peer).as_bytes(),
            self.config.forwarding.request_id_header.as_str(),
            &self.config.server_name,
        );
        let retryable = head.is_idempotent() && matches!(body, RequestBodyState::Done);
        let close_after = head.close || self.shutting_down || self.client_eof;
        let (pool, backend) = self.choose_backend(&head, identity.client, pool);
        self.config.pools[pool].balancer.exchange_started(backend);
        self.exchanges = self.exchanges.wrapping_add(1);
        let mut timers = ExchangeTimers::default();
        timers.upstream.set(
            TimerKind::UpstreamConnect,
            now + self.config.timeouts.upstream_connect,
        );
        // Built where it lives (the last exchange's box, when kept), not on the stack and
        // then copied: the exchange is a few hundred bytes.
        let exchange = |urx| Exchange {
            started,
            head,
            identity,
            pool,
            backend,
            upstream_head,
            body,
            body_bytes_in: 0,
            sent_continue: false,
            retryable,
            retried: false,
            upstream: Upstream::Connecting { fresh: false },
            urx,
            response: ResponseState::AwaitingHead {
                scanned: ScanState::default(),
            },
            status: 0,
            bytes_out: 0,
            sent_upstream_at: None,
            upstream_duration: None,
            close_after,
            upstream_spoiled: false,
            timers,
        };
        let exchange = match scratch(&mut self.scratch).exchange.take() {
            Some(mut reused) => {
                let urx = std::mem::take(&mut reused.urx);
                *reused = exchange(urx);
                reused
            }
            None => Box::new(exchange(BytesMut::new())),
        };
        self.state = State::Exchange(exchange);
        self.outputs.push_back(Output::ConnectUpstream {
            pool,
            backend,
            fresh: false,
        });
    }

    /// The pool and backend for a request routed to `pool`: with Synapse workers
    /// configured, requests for the main process go to the worker pool that claims them;
    /// the pool's policy picks the backend; a pool with no healthy backend falls back to
    /// the main process.
    pub(super) fn choose_backend(
        &self,
        head: &RequestHead,
        client: IpAddr,
        pool: PoolId,
    ) -> (PoolId, usize) {
        let config = &self.config;
        // The `Authorization` lookup is only for hashing policies and worker routing.
        let parts = if config.workers.is_some()
            || config.pools[pool].balancer.policy().key_kind().is_some()
        {
            RequestParts::from_head(head, client)
        } else {
            RequestParts {
                method: head.method(),
                target: head.target(),
                authorization: None,
                client,
            }
        };
        let mut chosen = pool;
        let mut sticky = None;
        if let Some(workers) = config.workers.as_ref().filter(|w| w.main == pool) {
            let matched = workers.router.route(head.method(), head.target());
            if let Some(p) = config.pool_for_role(matched.role) {
                chosen = p;
                sticky = matched.sticky;
            }
        }
        if let Some(backend) = config.pools[chosen].balancer.pick(sticky, &parts) {
            return (chosen, backend);
        }
        let fallback = config.workers.as_ref().map_or(chosen, |w| w.main);
        let balancer = &config.pools[fallback].balancer;
        // Nothing healthy anywhere: still try; a 502 says more than a refusal.
        (fallback, balancer.pick(None, &parts).unwrap_or(0))
    }

    /// Passes buffered request-body bytes upstream, re-framing chunked bodies.
    pub(super) fn pump_request_body(&mut self, now: Instant) {
        let max_body = self.config.limits.max_body_bytes;
        let State::Exchange(ex) = &mut self.state else {
            return;
        };
        if !matches!(ex.upstream, Upstream::Connected { .. }) || self.rx.is_empty() {
            return;
        }
        let before = ex.body_bytes_in;
        let mut failure = None;
        match &mut ex.body {
            RequestBodyState::Done => return,
            RequestBodyState::Length { remaining } => {
                let take = (*remaining).min(self.rx.len() as u64) as usize;
                let bytes = self.rx.split_to(take).freeze();
                *remaining -= take as u64;
                ex.body_bytes_in += take as u64;
                self.outputs.push_back(Output::ToUpstream(bytes));
                if *remaining == 0 {
                    ex.body = RequestBodyState::Done;
                }
            }
            RequestBodyState::Chunked { decoder, total } => {
                while !self.rx.is_empty() && !decoder.is_done() {
                    let step = match decoder.step(&self.rx) {
                        Ok(s) => s,
                        Err(_) => {
                            failure = Some(Failure::BadRequestBody);
                            break;
                        }
                    };
                    let data_len = step.data.map_or(0, |(a, b)| (b - a) as u64);
                    // The whole chunk counts as soon as its size is read: one that alone
                    // would pass the limit is refused before any of it goes upstream.
                    if *total + data_len + decoder.announced_unread() > max_body {
                        failure = Some(Failure::BodyTooLarge);
                        break;
                    }
                    let used = self.rx.split_to(step.consumed).freeze();
                    if let Some((a, b)) = step.data {
                        *total += (b - a) as u64;
                        ex.body_bytes_in += (b - a) as u64;
                        self.outputs
                            .push_back(Output::ToUpstream(chunk_header(b - a)));
                        self.outputs.push_back(Output::ToUpstream(used.slice(a..b)));
                        self.outputs
                            .push_back(Output::ToUpstream(Bytes::from_static(CHUNK_END)));
                    }
                }
                if failure.is_none() && decoder.is_done() {
                    self.outputs
                        .push_back(Output::ToUpstream(Bytes::from_static(LAST_CHUNK)));
                    ex.body = RequestBodyState::Done;
                }
            }
        }
        if let Some(f) = failure {
            ex.upstream_spoiled = true;
            ex.close_after = true;
            self.fail(now, f);
            return;
        }
        if ex.request_done() {
            ex.timers.body.stop(TimerKind::ClientBody);
            self.try_finish(now);
        } else if ex.body_bytes_in > before {
            ex.timers.body.set(
                TimerKind::ClientBody,
                now + self.config.timeouts.client_body,
            );
        }
    }

    /// Ends the exchange when both the request and the response are complete.
    pub(super) fn try_finish(&mut self, now: Instant) {
        let State::Exchange(ex) = &mut self.state else {
            return;
        };
        if !matches!(ex.response, ResponseState::Done) {
            return;
        }
        if !ex.request_done() {
            // The upstream answered without reading the whole body: it cannot be reused,
            // and neither can the client connection.
            ex.upstream_spoiled = true;
            ex.close_after = true;
        }
        let status = ex.status;
        self.end_exchange(now, status);
    }

    /// Ends the exchange in flight with what has been sent, releasing the upstream.
    pub(super) fn end_exchange(&mut self, now: Instant, status: u16) {
        let State::Exchange(ex) = &mut self.state else {
            return;
        };
        ex.status = status;
        if matches!(
            ex.upstream,
            Upstream::Connecting { .. } | Upstream::Connected { .. }
        ) {
            let reusable = matches!(ex.upstream, Upstream::Connected { .. })
                && !ex.upstream_spoiled
                && ex.request_done()
                && matches!(ex.response, ResponseState::Done)
                && ex.urx.is_empty();
            ex.upstream = Upstream::Released;
            self.outputs.push_back(Output::ReleaseUpstream { reusable });
        }
        self.config.pools[ex.pool]
            .balancer
            .exchange_finished(ex.backend);
        let close = ex.close_after;
        // Request bytes may still be on their way: the body was not read to its end.
        let unread = !ex.request_done();
        let stats = ExchangeStats::new(
            self.listener as ListenerId,
            Some(ex.pool),
            ex.status,
            ex.upstream_duration,
        );
        self.push_log(stats, |c| c.exchange_record(now));
        // The exchange's timers end with it (the state changes below).
        if close && (unread || !self.rx.is_empty()) {
            self.close_after_answer(now);
        } else if close {
            self.close();
        } else {
            self.next_request(now);
        }
    }

    /// Sends an error for the exchange in flight if nothing was sent yet, else cuts the
    /// client connection (a truncated response must never look complete).
    pub(super) fn fail(&mut self, now: Instant, failure: Failure) {
        let id_header = self.config.forwarding.request_id_header.as_str();
        let State::Exchange(ex) = &mut self.state else {
            return;
        };
        ex.upstream_spoiled = true;
        if let Failure::UpstreamBroken(fault) = failure {
            self.outputs.push_back(Output::UpstreamFault {
                pool: ex.pool,
                backend: ex.backend,
                fault,
            });
        }
        if ex.response_started() {
            ex.close_after = true;
            self.cut = true;
            let status = ex.status;
            self.end_exchange(now, status);
            return;
        }
        if !ex.request_done() {
            ex.close_after = true;
        }
        let status = failure.status();
        let ctx = AnswerCtx {
            close: ex.close_after,
            head_only: ex.head.is_head_method(),
            request_id: Some((id_header, &ex.identity.request_id)),
        };
        let bytes = answer::error_for_path(
            ex.head.path(),
            status,
            answer::errcode_for(status),
            failure.message(),
            ctx,
        );
        ex.bytes_out += bytes.len() as u64;
        ex.response = ResponseState::Done;
        self.outputs.push_back(Output::ToClient(bytes));
        self.end_exchange(now, status);
    }

    pub(super) fn exchange_record(&self, now: Instant) -> AccessRecord {
        let State::Exchange(ex) = &self.state else {
            unreachable!("exchange_record outside an exchange");
        };
        self.record(
            &ex.head,
            &ex.identity,
            Some(ex.pool),
            ex.status,
            ex.body_bytes_in,
            ex.bytes_out,
            ex.started,
            now,
            ex.upstream_duration,
        )
    }
}

/// How long `pool`'s upstream may take to answer (its own setting, else the default).
fn response_timeout(config: &Config, pool: PoolId) -> Duration {
    config.pools[pool]
        .response_timeout
        .unwrap_or(config.timeouts.upstream_response)
}
