//! Supervision: installing, draining and retiring plugin generations,
//! their status, ticks, and what a fault does (restart with backoff,
//! quarantine after repeated faults).

use super::*;

impl Dispatcher {
    /// Installs a plugin. One with the same name becomes the previous
    /// generation: it keeps its open connections until they close or the
    /// drain deadline passes; new connections go to the new one.
    pub fn install(&mut self, plugin: SharedPlugin) -> u64 {
        let replaced = self
            .slots
            .iter()
            .filter(|s| s.plugin.info.name == plugin.info.name && s.state == PluginState::Active)
            .max_by_key(|s| s.generation)
            .filter(|s| s.plugin.hash != plugin.hash)
            .map(|s| (s.plugin.clone(), s.generation));
        self.install_replacing(plugin, replaced)
    }

    /// Installs a plugin that has nothing to roll back to (a deleted push
    /// giving way to the plugin started with: a fault of that one must not
    /// bring the deleted one back).
    pub fn install_fresh(&mut self, plugin: SharedPlugin) -> u64 {
        self.install_replacing(plugin, None)
    }

    fn install_replacing(&mut self, plugin: SharedPlugin, replaced: Option<(SharedPlugin, u64)>) -> u64 {
        self.retire_name(&plugin.info.name);
        let generation = self.next_generation;
        self.next_generation += 1;
        tracing::info!(plugin = %plugin.info.name, version = %plugin.info.version, generation, "plugin installed");
        self.slots.push(Slot {
            name: plugin.info.name.as_str().into(),
            version: plugin.info.version.as_str().into(),
            plugin,
            generation,
            replaced,
            installed_at: Instant::now(),
            instance: None,
            state: PluginState::Active,
            draining_since: None,
            crashes: VecDeque::new(),
            consecutive_faults: 0,
            retry_at: None,
            quarantines: 0,
            probation_until: None,
            live: 0,
            records: 0,
            faults: 0,
            detached: 0,
            calls: 0,
            bytes_in: 0,
            probe_bytes: 0,
            stream_bytes: 0,
            skipped_bytes: 0,
            last_error: None,
        });
        generation
    }

    /// Unloads a plugin by name after its connections drain.
    pub fn remove(&mut self, name: &str) {
        self.retire_name(name);
    }

    pub(super) fn retire_name(&mut self, name: &str) {
        let now = Instant::now();
        for s in &mut self.slots {
            if s.plugin.info.name == name && matches!(s.state, PluginState::Active | PluginState::Quarantined { .. }) {
                s.state = PluginState::Draining;
                s.draining_since = Some(now);
            }
        }
    }

    /// Status of every plugin generation still known.
    pub fn status(&self) -> Vec<PluginStatus> {
        self.slots
            .iter()
            .filter(|s| s.state != PluginState::Retired)
            .map(|s| PluginStatus {
                name: s.plugin.info.name.clone(),
                version: s.plugin.info.version.clone(),
                hash: s.plugin.hash.clone(),
                generation: s.generation,
                source: s.plugin.source.to_string(),
                state: s.state.clone(),
                live_connections: s.live,
                records: s.records,
                faults: s.faults,
                detached_connections: s.detached,
                calls: s.calls,
                bytes_in: s.bytes_in,
                probe_bytes: s.probe_bytes,
                stream_bytes: s.stream_bytes,
                skipped_bytes: s.skipped_bytes,
                last_error: s.last_error.clone(),
                ports: crate::registry::port_list(&s.plugin.info),
                fields: s.plugin.fields.clone(),
            })
            .collect()
    }

    /// Housekeeping: finishes drains that are done or overdue.
    pub fn tick(&mut self, ts: Timestamp) {
        // Plugins with timers (expiring unanswered requests, say) get a turn.
        for slot in 0..self.slots.len() {
            if self.slots[slot].state != PluginState::Active || self.slots[slot].instance.is_none() {
                continue;
            }
            let ticked = match self.slots[slot].instance.as_mut() {
                Some(inst) => inst.tick(ts.as_nanos()),
                None => continue,
            };
            match ticked {
                Ok(r) => {
                    let info = ConnInfo {
                        id: 0,
                        l4: L4Proto::Tcp,
                        client: trawl_core::Endpoint { ip: std::net::Ipv4Addr::UNSPECIFIED.into(), port: 0 },
                        server: trawl_core::Endpoint { ip: std::net::Ipv4Addr::UNSPECIFIED.into(), port: 0 },
                        tls: false,
                    };
                    // Records from a tick belong to no connection we can name;
                    // plugins report connection records from data and close.
                    if !r.events.is_empty() {
                        self.emit(slot, &info, r.events);
                    }
                }
                Err(fault) => self.fault(slot, fault, None),
            }
        }
        let deadline = self.config.drain_deadline;
        let overdue: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.state == PluginState::Draining && s.draining_since.is_some_and(|t| t.elapsed() >= deadline)
            })
            .map(|(i, _)| i)
            .collect();
        for slot in overdue {
            let ids = self.conns_on(slot);
            for id in ids {
                self.close_attached(id, ts.as_nanos());
                if let Some(c) = self.conns.get_mut(&id) {
                    c.state = State::Done;
                }
            }
        }
        for s in &mut self.slots {
            if s.state == PluginState::Draining && s.live == 0 {
                s.state = PluginState::Retired;
                s.instance = None;
                tracing::info!(plugin = %s.plugin.info.name, generation = s.generation, "plugin generation retired");
            }
        }
    }

    /// Connections attached to a plugin slot.
    pub(super) fn conns_on(&self, slot: usize) -> Vec<u64> {
        self.conns
            .iter()
            .filter(|(_, c)| matches!(&c.state, State::Attached(a) if a.slot == slot))
            .map(|(id, _)| *id)
            .collect()
    }

    /// An instance of `slot`, made on demand unless quarantined or backing
    /// off, for one call that copies `bytes` of a stream into it (counted:
    /// calls and bytes copied in are what a connection costs a plugin).
    pub(super) fn instance(&mut self, slot: usize, bytes: usize) -> Option<&mut Box<dyn PluginInstance>> {
        self.slots[slot].bytes_in += bytes as u64;
        self.instance_for(slot)
    }

    /// As [`Dispatcher::instance`], for a probe that copies `bytes`.
    pub(super) fn probe_instance(&mut self, slot: usize, bytes: usize) -> Option<&mut Box<dyn PluginInstance>> {
        self.slots[slot].probe_bytes += bytes as u64;
        self.instance_for(slot)
    }

    /// Quarantined plugins whose wait is over are active again, on
    /// probation for a quarantine window.
    pub(super) fn wake_quarantined(&mut self) {
        let window = self.config.quarantine_window;
        let mut now = None;
        for s in &mut self.slots {
            if !matches!(s.state, PluginState::Quarantined { .. }) {
                continue;
            }
            let now = *now.get_or_insert_with(Instant::now);
            if s.retry_at.is_some_and(|t| now >= t) {
                tracing::info!(plugin = %s.plugin.info.name, generation = s.generation, "plugin out of quarantine, on probation");
                s.state = PluginState::Active;
                s.crashes.clear();
                s.consecutive_faults = 0;
                s.retry_at = None;
                s.probation_until = Some(now + window);
            }
        }
    }

    fn instance_for(&mut self, slot: usize) -> Option<&mut Box<dyn PluginInstance>> {
        let s = &mut self.slots[slot];
        if matches!(s.state, PluginState::Quarantined { .. } | PluginState::Retired) {
            return None;
        }
        s.calls += 1;
        if s.instance.is_none() {
            if s.retry_at.is_some_and(|t| Instant::now() < t) {
                return None;
            }
            let configured = s.plugin.factory.instantiate().and_then(|mut i| {
                let config = trawl_sdk::redact::PluginConfig { redact: self.config.redact.clone() };
                i.configure(&config).map_err(|f| super::super::LoadError::Init(format!("configure: {f}")))?;
                Ok(i)
            });
            match configured {
                Ok(i) => s.instance = Some(i),
                Err(e) => {
                    s.last_error = Some(e.to_string());
                    let wait = quarantine_wait(self.config.quarantine_retry, s.quarantines);
                    s.quarantines += 1;
                    s.retry_at = Some(Instant::now() + wait);
                    s.state = PluginState::Quarantined {
                        reason: format!("cannot instantiate: {e}; trying again in {}s", wait.as_secs()),
                    };
                    return None;
                }
            }
        }
        s.instance.as_mut()
    }

    /// Takes a quarantined plugin back at once (`POST
    /// /api/plugins/NAME/reset`): active, its fault history forgotten.
    /// Returns how many generations were reset.
    pub fn reset(&mut self, name: &str) -> usize {
        let mut n = 0;
        for s in &mut self.slots {
            if s.plugin.info.name == name && matches!(s.state, PluginState::Quarantined { .. }) {
                tracing::info!(plugin = name, generation = s.generation, "plugin reset by an operator");
                s.state = PluginState::Active;
                s.crashes.clear();
                s.consecutive_faults = 0;
                s.quarantines = 0;
                s.retry_at = None;
                s.probation_until = None;
                n += 1;
            }
        }
        n
    }

    /// A plugin faulted, on connection `conn` if a connection call did it.
    pub(super) fn fault(&mut self, slot: usize, fault: PluginFault, conn: Option<u64>) {
        let now = Instant::now();
        let config = self.config.clone();
        let s = &mut self.slots[slot];
        let was_active = s.state == PluginState::Active;
        let mut cause = None;
        tracing::warn!(plugin = %s.plugin.info.name, generation = s.generation, %fault, "plugin fault");
        s.faults += 1;
        s.last_error = Some(fault.to_string());
        s.crashes.push_back(now);
        while s.crashes.front().is_some_and(|t| now.duration_since(*t) > config.quarantine_window) {
            s.crashes.pop_front();
        }
        // Output the host refused leaves the instance as it was: only the
        // connection that produced it goes. A trap or a timeout may have
        // left the instance's memory half-written: it goes, and with it
        // every connection it held.
        let instance_intact = matches!(fault, PluginFault::BadOutput(_) | PluginFault::OutputTooLarge(_));
        let on_probation = s.probation_until.is_some_and(|t| now < t);
        let quarantined = on_probation || s.crashes.len() >= config.quarantine_after;
        if quarantined {
            let wait = quarantine_wait(config.quarantine_retry, s.quarantines);
            s.quarantines += 1;
            s.retry_at = Some(now + wait);
            s.probation_until = None;
            let why = if on_probation {
                "a fault on probation".to_string()
            } else {
                format!("{} faults within {:?}", s.crashes.len(), config.quarantine_window)
            };
            cause = Some(format!("{why}; last: {fault}"));
            // A draining generation stays draining: it must never come
            // back from quarantine next to the one that replaced it.
            if s.state != PluginState::Draining {
                s.state = PluginState::Quarantined {
                    reason: format!("{why}; last: {fault}; trying again in {}s", wait.as_secs()),
                };
            }
            s.instance = None;
        } else if !instance_intact {
            s.instance = None;
            let backoff = config.backoff.saturating_mul(1 << s.consecutive_faults.min(10));
            s.retry_at = Some(now + backoff);
            s.consecutive_faults += 1;
        }
        let ids = if quarantined || !instance_intact {
            self.conns_on(slot)
        } else {
            conn.filter(
                |id| matches!(self.conns.get(id), Some(Conn { state: State::Attached(a), .. }) if a.slot == slot),
            )
            .into_iter()
            .collect()
        };
        for id in ids {
            if let Some(c) = self.conns.get_mut(&id) {
                c.state = State::Done;
            }
            self.slots[slot].live -= 1;
            self.slots[slot].detached += 1;
            self.stats.detached_by_fault += 1;
        }
        // Only the generation taking connections until now (always the
        // newest of its name) rolls back.
        if let Some(cause) = cause.filter(|_| was_active) {
            self.roll_back(slot, &cause);
        }
    }

    /// A quarantined generation that replaced another gives way to it
    /// again: the version before takes new connections, this one none,
    /// for good (an operator pushes a fixed version); only within the
    /// rollback window of its install.
    fn roll_back(&mut self, slot: usize, cause: &str) {
        let s = &mut self.slots[slot];
        let recent = s.installed_at.elapsed() <= self.config.rollback_window;
        let Some((plugin, was)) = s.replaced.clone().filter(|_| recent) else { return };
        let back_to = format!("rolled back to {} {} (generation {was})", plugin.info.name, plugin.info.version);
        tracing::warn!(plugin = %plugin.info.name, generation = s.generation, %back_to, "plugin rolled back");
        s.state = PluginState::RolledBack { reason: format!("{cause}; {back_to}") };
        s.retry_at = None;
        self.install(plugin);
    }
}

/// How long the `n`th quarantine (from 0) lasts: `first`, doubling.
fn quarantine_wait(first: Duration, n: u32) -> Duration {
    first.saturating_mul(1 << n.min(6))
}
