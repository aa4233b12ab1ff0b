//! Which side of a flow is the server, when the handshake was not seen.

/// Ports that are known to be served, used to orient flows whose SYN was not
/// captured (UDP, or TCP joined mid-connection). Dissector plugins add their
/// default ports to this set at load time.
#[derive(Clone)]
pub struct ServicePorts {
    known: Box<[u64; 1024]>,
}

impl std::fmt::Debug for ServicePorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count: u32 = self.known.iter().map(|w| w.count_ones()).sum();
        f.debug_struct("ServicePorts").field("known", &count).finish()
    }
}

/// Ports that Kubernetes workloads commonly serve on.
const DEFAULT_SERVICE_PORTS: &[u16] = &[
    53, 80, 88, 443, 853, 1883, 2181, 2379, 2380, 3000, 3306, 4222, 5000, 5432, 5672, 6379, 6443, 7000, 7001, 8000,
    8008, 8080, 8081, 8082, 8083, 8088, 8443, 8500, 8888, 9000, 9042, 9090, 9092, 9093, 9200, 9300, 9411, 9443, 10250,
    11211, 15672, 26379, 27017, 50051, 50052,
];

/// First port of the Linux default ephemeral range.
const EPHEMERAL_START: u16 = 32768;

impl Default for ServicePorts {
    fn default() -> Self {
        let mut ports = ServicePorts::empty();
        for &p in DEFAULT_SERVICE_PORTS {
            ports.insert(p);
        }
        ports
    }
}

impl ServicePorts {
    pub fn empty() -> Self {
        ServicePorts { known: Box::new([0; 1024]) }
    }

    pub fn insert(&mut self, port: u16) {
        self.known[usize::from(port / 64)] |= 1 << (port % 64);
    }

    pub fn contains(&self, port: u16) -> bool {
        self.known[usize::from(port / 64)] & (1 << (port % 64)) != 0
    }

    /// How strongly a port looks like a server port: known service, then
    /// privileged, then registered, then ephemeral.
    pub fn server_score(&self, port: u16) -> u8 {
        if self.contains(port) {
            3
        } else if port != 0 && port < 1024 {
            2
        } else if port < EPHEMERAL_START && port != 0 {
            1
        } else {
            0
        }
    }

    /// Decides whether the sender of a flow's first packet is the client,
    /// from its ports alone. A tie keeps the sender as the client: whoever
    /// speaks first on UDP is usually asking.
    pub fn sender_is_client(&self, src_port: u16, dst_port: u16) -> bool {
        let (src, dst) = (self.server_score(src_port), self.server_score(dst_port));
        src <= dst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orients_by_port_class() {
        let ports = ServicePorts::default();
        assert!(ports.sender_is_client(51000, 53));
        assert!(!ports.sender_is_client(53, 51000));
        assert!(!ports.sender_is_client(9092, 46136));
        assert!(ports.sender_is_client(40000, 22));
        assert!(ports.sender_is_client(50000, 50001));
        assert!(!ports.sender_is_client(1234, 45000));
    }
}
