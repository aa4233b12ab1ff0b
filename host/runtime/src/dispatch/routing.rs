//! Connection routing: each connection is probed, attached to a plugin and
//! fed its bytes (keeping what the plugin has not consumed), its records
//! collected, and it is detached on a fault, a gap, an overflow or a close.

use super::*;

impl Dispatcher {
    /// A connection's state, made when its first bytes (or gap, or end)
    /// come: a SYN alone costs the dispatcher nothing, so a SYN flood does
    /// not fill it.
    pub(super) fn conn(&mut self, info: &ConnInfo) -> &mut Conn {
        let midstream = &mut self.midstream;
        self.conns.entry(info.id).or_insert_with(|| {
            self.stats.connections += 1;
            Conn {
                info: *info,
                meta: ConnMeta {
                    l4: l4_of(info.l4),
                    client: info.client.ip,
                    client_port: info.client.port,
                    server: info.server.ip,
                    server_port: info.server.port,
                    midstream: midstream.remove(&info.id),
                },
                state: State::Probing(Probing::default()),
                excluded: Vec::new(),
                flipped: false,
                held: 0,
            }
        })
    }

    pub(super) fn emit(&mut self, slot: usize, conn: &ConnInfo, events: Vec<Event>) {
        for e in events {
            match e {
                Event::Record(mut record) => {
                    // The second line: whatever the plugin did, the
                    // operator's redaction holds.
                    self.config.redact.scrub_record(&mut record);
                    let s = &mut self.slots[slot];
                    s.records += 1;
                    self.stats.records += 1;
                    self.records.push(HostRecord {
                        conn: *conn,
                        plugin: Arc::clone(&s.name),
                        plugin_version: Arc::clone(&s.version),
                        generation: s.generation,
                        record,
                        tls_sni: None,
                    });
                }
                Event::Upgrade { protocol } => {
                    tracing::debug!(conn = conn.id, %protocol, "connection upgraded");
                }
            }
        }
    }

    pub(super) fn attach(&mut self, id: u64, slot: usize) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let State::Probing(p) = std::mem::replace(&mut conn.state, State::Done) else {
            return;
        };
        let (info, meta) = (conn.info, conn.meta.clone());
        let opened = match self.instance(slot, 0) {
            Some(inst) => inst.open(id, &meta),
            None => return,
        };
        match opened {
            Ok(r) if r.status == Status::Ok => self.emit(slot, &info, r.events),
            Ok(_) => return,
            Err(fault) => return self.fault(slot, fault, Some(id)),
        }
        self.slots[slot].live += 1;
        self.stats.attached += 1;
        tracing::debug!(conn = id, plugin = %self.slots[slot].plugin.info.name, "connection attached");
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.state = State::Attached(Attached::new(slot));
        }
        for q in p.queue {
            let step = match q {
                Queued::Data { dir, ts, bytes, fin } => self.attached_data(id, dir, ts, &bytes, fin),
                Queued::Datagram { dir, ts, bytes } => self.attached_datagram(id, dir, ts, &bytes),
            };
            if let Step::Stop = step {
                break;
            }
        }
    }

    /// Gives up a connection's plugin and starts probing again, starting
    /// with `rest`. After a violation the plugin is not asked again; after
    /// a handover (a CONNECT tunnel, an upgrade) it may be, since a tunnel
    /// can carry its protocol anew.
    pub(super) fn reprobe(&mut self, id: u64, slot: usize, ts: u64, dir: Dir, rest: Vec<u8>, exclude: bool) {
        let name = self.slots[slot].plugin.info.name.clone();
        self.close_attached(id, ts);
        if let Some(c) = self.conns.get_mut(&id) {
            if exclude {
                c.excluded.push(name);
            }
            c.state = State::Probing(Probing::default());
        }
        if !rest.is_empty() {
            self.data(id, dir, ts, &rest, false);
        }
    }

    /// Closes the plugin side of an attached connection, keeping its records.
    pub(super) fn close_attached(&mut self, id: u64, ts: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let State::Attached(a) = std::mem::replace(&mut conn.state, State::Done) else {
            return;
        };
        let info = conn.info;
        self.slots[a.slot].live -= 1;
        self.slots[a.slot].calls += 1;
        let closed = match self.slots[a.slot].instance.as_mut() {
            Some(inst) => inst.close(id, ts),
            None => return,
        };
        match closed {
            Ok(r) => self.emit(a.slot, &info, r.events),
            Err(fault) => self.fault(a.slot, fault, Some(id)),
        }
    }

    pub(super) fn handle_result(
        &mut self,
        id: u64,
        slot: usize,
        dir: Dir,
        ts: u64,
        result: Result<DataResult, PluginFault>,
        window: &[u8],
    ) -> Step {
        let info = match self.conns.get(&id) {
            Some(c) => c.info,
            None => return Step::Stop,
        };
        let mut r = match result {
            Ok(r) => r,
            Err(fault) => {
                self.fault(slot, fault, Some(id));
                return Step::Stop;
            }
        };
        self.emit(slot, &info, std::mem::take(&mut r.events));
        let rest = &window[(r.consumed as usize).min(window.len())..];
        match r.status {
            Status::Ok => {
                let max_buffer = self.slots[slot].plugin.info.max_buffer as usize;
                if let Some(Conn { state: State::Attached(a), .. }) = self.conns.get_mut(&id) {
                    let feed = &mut a.feeds[dir.code() as usize];
                    // A skip starts right after the consumed bytes; what of
                    // it the window already holds goes by here.
                    self.slots[slot].skipped_bytes += feed.settle(window, &r);
                    if feed.held() > max_buffer {
                        return self.detach_overflow(id, slot, ts);
                    }
                }
                Step::Continue
            }
            Status::Desync => {
                self.stats.desyncs += 1;
                self.slots[slot].detached += 1;
                self.reprobe(id, slot, ts, dir, Vec::new(), true);
                Step::Stop
            }
            Status::Handover => {
                self.stats.handovers += 1;
                let rest = rest.to_vec();
                self.reprobe(id, slot, ts, dir, rest, false);
                Step::Stop
            }
        }
    }

    pub(super) fn attached_data(&mut self, id: u64, dir: Dir, ts: u64, bytes: &[u8], fin: bool) -> Step {
        let Some(Conn { state: State::Attached(a), meta, .. }) = self.conns.get_mut(&id) else {
            return Step::Stop;
        };
        let slot = a.slot;
        let midstream = meta.midstream;
        self.slots[slot].stream_bytes += bytes.len() as u64;
        // Bytes the plugin asked to skip are counted and never copied in;
        // most segments arrive with nothing left over and are handed over
        // as they are.
        let feed = &mut a.feeds[dir.code() as usize];
        let (passed, offer) = feed.offer(bytes, fin);
        self.slots[slot].skipped_bytes += passed;
        let Offer::Call { window, flags } = offer else {
            if feed.held() > self.slots[slot].plugin.info.max_buffer as usize {
                return self.detach_overflow(id, slot, ts);
            }
            return Step::Continue;
        };
        let flags = flags | if midstream { abi::FLAG_MIDSTREAM } else { 0 };
        let result = match self.instance(slot, window.len()) {
            Some(inst) => inst.data(id, dir, flags, ts, &window, 0),
            None => return Step::Stop,
        };
        self.handle_result(id, slot, dir, ts, result, &window)
    }

    /// Keeps the count of bytes all connections hold (probe queues and
    /// unconsumed tails) in step with connection `id`, and lets `id` go
    /// when that count is over the budget: the connection that crossed it,
    /// not one that was there first.
    pub(super) fn account(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let now = c.buffered();
        self.held = (self.held + now).saturating_sub(c.held);
        c.held = now;
        if self.held <= self.config.max_held_bytes {
            return;
        }
        self.held -= now;
        c.held = 0;
        self.stats.detached_by_budget += 1;
        match &c.state {
            State::Attached(a) => {
                let slot = a.slot;
                self.slots[slot].detached += 1;
                self.slots[slot].last_error =
                    Some(format!("connection let go: all connections held over {} bytes", self.config.max_held_bytes));
                self.close_attached(id, self.now);
            }
            State::Probing(_) => c.state = State::Done,
            State::Done => {}
        }
        tracing::debug!(conn = id, held = self.held, "dispatch byte budget: connection let go");
    }

    /// A connection kept more unconsumed bytes than its plugin allows.
    pub(super) fn detach_overflow(&mut self, id: u64, slot: usize, ts: u64) -> Step {
        let max_buffer = self.slots[slot].plugin.info.max_buffer;
        self.stats.detached_by_buffer += 1;
        self.slots[slot].detached += 1;
        self.slots[slot].last_error = Some(format!("connection buffered over {max_buffer} bytes"));
        self.close_attached(id, ts);
        Step::Stop
    }

    pub(super) fn attached_datagram(&mut self, id: u64, dir: Dir, ts: u64, bytes: &[u8]) -> Step {
        let Some(Conn { state: State::Attached(a), .. }) = self.conns.get(&id) else {
            return Step::Stop;
        };
        let slot = a.slot;
        self.slots[slot].stream_bytes += bytes.len() as u64;
        let result = match self.instance(slot, bytes.len()) {
            Some(inst) => inst.datagram(id, dir, ts, bytes),
            None => return Step::Stop,
        };
        self.handle_result(id, slot, dir, ts, result, bytes)
    }

    pub(super) fn data(&mut self, id: u64, dir: Dir, ts: u64, bytes: &[u8], fin: bool) {
        let max = self.config.max_probe_bytes;
        match self.conns.get_mut(&id).map(|c| &mut c.state) {
            Some(State::Attached(_)) => {
                self.attached_data(id, dir, ts, bytes, fin);
            }
            Some(State::Probing(p)) => {
                p.queue.push(Queued::Data { dir, ts, bytes: bytes.to_vec(), fin });
                p.queued_bytes += bytes.len();
                let seen = &mut p.seen[dir.code() as usize];
                let room = max.saturating_sub(seen.len());
                seen.extend_from_slice(&bytes[..bytes.len().min(room)]);
                if p.queued_bytes > max * 4 {
                    // Nobody decided in time; stop holding bytes.
                    self.stats.unknown += 1;
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.state = State::Done;
                    }
                    return;
                }
                if !bytes.is_empty() {
                    self.run_probes(id, dir);
                }
            }
            _ => {}
        }
    }
}

impl StreamSink for Dispatcher {
    fn wants(&mut self, conn: &ConnInfo, ts: Timestamp) -> bool {
        let wanted = self.targeting.as_mut().is_none_or(|t| t(conn, ts));
        self.stats.not_targeted += u64::from(!wanted);
        wanted
    }

    fn on_stream(&mut self, conn: &ConnInfo, dir: Direction, ts: Timestamp, event: StreamEvent<'_>) {
        // Oriented from the connection found below: one lookup per event.
        let raw = dir_of(dir);
        let ts = ts.as_nanos();
        self.now = self.now.max(ts);
        let id = conn.id;
        match event {
            StreamEvent::Start { midstream } => match self.conns.get_mut(&id) {
                Some(c) => c.meta.midstream |= midstream,
                None if midstream => {
                    self.midstream.insert(id);
                }
                None => {}
            },
            StreamEvent::Data { bytes, .. } => {
                let dir = self.conn(conn).orient(raw);
                self.data(id, dir, ts, bytes, false);
                self.account(id);
            }
            StreamEvent::Gap { len, .. } => {
                let c = self.conn(conn);
                let dir = c.orient(raw);
                match &mut c.state {
                    State::Probing(p) => p.seen[dir.code() as usize].clear(),
                    State::Attached(a) => {
                        let slot = a.slot;
                        // Lost bytes the plugin meant to skip anyway lose
                        // it nothing (nor are they stream bytes it was given).
                        let (_, len) = a.feeds[dir.code() as usize].gap(len);
                        if len == 0 {
                            return;
                        }
                        if !self.slots[slot].plugin.info.accepts_gaps {
                            self.stats.detached_by_gap += 1;
                            self.slots[slot].detached += 1;
                            self.close_attached(id, ts);
                            return;
                        }
                        let result = match self.instance(slot, 0) {
                            Some(inst) => inst.data(id, dir, abi::FLAG_GAP, ts, &[], len),
                            None => return,
                        };
                        self.handle_result(id, slot, dir, ts, result, &[]);
                    }
                    State::Done => {}
                }
            }
            StreamEvent::Fin | StreamEvent::Rst => {
                if let Some(dir) = self.conns.get(&id).map(|c| c.orient(raw)) {
                    self.data(id, dir, ts, &[], true);
                }
            }
        }
    }

    fn on_datagram(&mut self, conn: &ConnInfo, dir: Direction, ts: Timestamp, payload: &[u8]) {
        let ts = ts.as_nanos();
        self.now = self.now.max(ts);
        let id = conn.id;
        let max = self.config.max_probe_bytes;
        let c = self.conn(conn);
        let dir = c.orient(dir_of(dir));
        match &mut c.state {
            State::Attached(_) => {
                self.attached_datagram(id, dir, ts, payload);
            }
            State::Probing(p) => {
                if p.queued_bytes > max {
                    return;
                }
                p.queue.push(Queued::Datagram { dir, ts, bytes: payload.to_vec() });
                p.queued_bytes += payload.len();
                // Each datagram is probed on its own.
                p.seen[dir.code() as usize] = payload.to_vec();
                self.run_probes(id, dir);
                self.account(id);
            }
            State::Done => {}
        }
    }

    fn on_close(&mut self, conn: &ConnInfo) {
        tracing::debug!(conn = conn.id, "connection closed");
        // Still undecided at the end: the best weak match is all there is
        // (a lone request whose reply was never captured, say).
        let weak = match self.conns.get(&conn.id).map(|c| &c.state) {
            Some(State::Probing(p)) => p.weak,
            _ => None,
        };
        if let Some(slot) = weak {
            self.attach(conn.id, slot);
        }
        self.close_attached(conn.id, self.now);
        self.midstream.remove(&conn.id);
        if let Some(c) = self.conns.remove(&conn.id) {
            self.held = self.held.saturating_sub(c.held);
        }
    }
}
