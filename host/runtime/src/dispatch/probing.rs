//! Probing: which plugin a new connection belongs to, and whether the
//! flow table guessed its client and server the wrong way round.

use super::{Conn, Dispatcher, Queued, State};
use crate::registry::PluginState;
use trawl_sdk::abi::{Dir, L4, Probe};

impl Conn {
    /// A direction as the connection sees it (after any flip).
    pub(super) fn orient(&self, dir: Dir) -> Dir {
        if self.flipped { dir.opposite() } else { dir }
    }
}

impl Dispatcher {
    /// Swaps client and server of a connection that is still being probed.
    pub(super) fn flip(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        tracing::debug!(conn = id, "client and server swapped by probe");
        c.flipped = true;
        std::mem::swap(&mut c.info.client, &mut c.info.server);
        std::mem::swap(&mut c.meta.client, &mut c.meta.server);
        std::mem::swap(&mut c.meta.client_port, &mut c.meta.server_port);
        if let State::Probing(p) = &mut c.state {
            p.seen.swap(0, 1);
            for q in &mut p.queue {
                match q {
                    Queued::Data { dir, .. } | Queued::Datagram { dir, .. } => *dir = dir.opposite(),
                }
            }
        }
    }

    /// Plugins to probe, port-hinted first, then by priority.
    pub(super) fn candidates(&self, conn: &Conn) -> Vec<usize> {
        let port = conn.meta.server_port;
        let alt = conn.meta.client_port;
        let mut c: Vec<(bool, i32, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == PluginState::Active && !conn.excluded.contains(&s.plugin.info.name))
            .map(|(i, s)| {
                let ports = match conn.meta.l4 {
                    L4::Tcp => &s.plugin.info.tcp_ports,
                    L4::Udp => &s.plugin.info.udp_ports,
                };
                let hinted = ports.contains(&port) || ports.contains(&alt);
                (hinted, s.plugin.info.priority, i)
            })
            .collect();
        c.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        c.into_iter().map(|(_, _, i)| i).collect()
    }

    /// Probes with what a connection has shown so far; attaches on a match.
    pub(super) fn run_probes(&mut self, id: u64, dir: Dir) {
        self.wake_quarantined();
        let d = dir.code() as usize;
        // Borrow the probe state out of the connection for the loop (the
        // loop needs `self` for instances), and put it back after.
        let Some(Conn { state: State::Probing(p), .. }) = self.conns.get_mut(&id) else {
            return;
        };
        let (known, seen, total_seen) =
            (p.candidates.take(), std::mem::take(&mut p.seen[d]), p.seen[0].len() + p.seen[1].len());
        let total_seen = total_seen + seen.len();
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let mut candidates = known.unwrap_or_else(|| self.candidates(conn).into_iter().map(|c| (c, 0)).collect());
        let State::Probing(p) = &conn.state else {
            return;
        };
        let mut weak = p.weak;
        let l4 = conn.meta.l4;
        let midstream = conn.meta.midstream && !conn.flipped;
        let mut flip = false;
        let bit = 1u8 << dir.code();
        let mut matched = None;
        let mut i = 0;
        while i < candidates.len() {
            let (slot, rejected) = candidates[i];
            let depth = (self.slots[slot].plugin.info.probe_depth as usize).min(self.config.max_probe_bytes);
            if rejected & bit != 0 {
                // Already said no to this direction; wait for the other one.
                if total_seen >= depth {
                    candidates.remove(i);
                } else {
                    i += 1;
                }
                continue;
            }
            // A probe sees at most its declared depth.
            let window = &seen[..seen.len().min(depth.max(1))];
            let answer = match self.probe_instance(slot, window.len()) {
                Some(inst) => inst.probe(l4, dir, window),
                None => Ok(Probe::NoMatch),
            };
            // Joined mid-connection, the client was guessed from ports. If
            // these bytes are a request only when read the other way, the
            // guess was wrong: turn the connection round.
            if midstream
                && matches!(answer, Ok(Probe::NoMatch | Probe::MatchWeak))
                && let Some(inst) = self.probe_instance(slot, window.len())
                && let Ok(Probe::Match) = inst.probe(l4, dir.opposite(), window)
            {
                flip = true;
                matched = Some(slot);
                break;
            }
            match answer {
                Ok(Probe::Match) => {
                    matched = Some(slot);
                    break;
                }
                Ok(Probe::MatchWeak) => {
                    weak.get_or_insert(slot);
                    candidates.remove(i);
                }
                Ok(Probe::NeedMore) if total_seen < depth => i += 1,
                Ok(_) => {
                    // A plugin may not recognise one side (a malformed
                    // request) yet know the other (its response).
                    let rejected = rejected | bit;
                    if rejected == 0b11 || total_seen >= depth {
                        candidates.remove(i);
                    } else {
                        candidates[i].1 = rejected;
                        i += 1;
                    }
                }
                Err(fault) => {
                    self.fault(slot, fault, Some(id));
                    candidates.remove(i);
                }
            }
        }
        if let Some(Conn { state: State::Probing(p), .. }) = self.conns.get_mut(&id) {
            p.seen[d] = seen;
        }
        if flip {
            self.flip(id);
        }
        let decided = matched.or(if candidates.is_empty() { weak } else { None });
        match decided {
            Some(slot) => self.attach(id, slot),
            None if candidates.is_empty() => {
                tracing::debug!(conn = id, seen = total_seen, "no plugin recognises the connection");
                self.stats.unknown += 1;
                if let Some(c) = self.conns.get_mut(&id) {
                    c.state = State::Done;
                }
            }
            None => {
                if let Some(Conn { state: State::Probing(p), .. }) = self.conns.get_mut(&id) {
                    p.candidates = Some(candidates);
                    p.weak = weak;
                }
            }
        }
    }
}
