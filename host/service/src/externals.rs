//! A bound on how many outside addresses the maps name one by one. A pod
//! that faces the internet (or a SYN flood from random sources) meets
//! millions of addresses; each would be a node of every map, for ever.
//! Beyond the bound, new outside addresses are drawn as one node per
//! pseudo-namespace ("public" or "internal") named `other addresses`:
//! their traffic still counts, only their names are folded, and how many
//! times that happened is counted.

use std::borrow::Cow;
use std::collections::HashSet;
use trawl_core::identity::{Workload, WorkloadKind};

/// Outside addresses named one by one in the maps.
pub const MAX_EXTERNAL_ADDRESSES: usize = 4096;
/// The name of the node that stands for the rest.
pub const OTHER_ADDRESSES: &str = "other addresses";

#[derive(Debug, Default)]
pub(crate) struct Externals {
    named: HashSet<String>,
}

impl Externals {
    /// `w` as the maps draw it; `folded` counts the times it was drawn on
    /// the `other addresses` node.
    pub(crate) fn fold<'a>(&mut self, w: &'a Workload, folded: &mut u64) -> Cow<'a, Workload> {
        if w.kind != WorkloadKind::External || self.named.contains(&w.name) {
            return Cow::Borrowed(w);
        }
        if self.named.len() < MAX_EXTERNAL_ADDRESSES {
            self.named.insert(w.name.clone());
            return Cow::Borrowed(w);
        }
        *folded += 1;
        Cow::Owned(Workload { name: OTHER_ADDRESSES.to_string(), ..w.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_addresses_beyond_the_bound_share_one_node() {
        let (mut e, mut folded) = (Externals::default(), 0);
        let ip = |i: u32| Workload::external(std::net::Ipv4Addr::from(0x0100_0000 + i).into());
        for i in 0..MAX_EXTERNAL_ADDRESSES as u32 {
            assert_eq!(e.fold(&ip(i), &mut folded).name, ip(i).name);
        }
        let stranger = ip(1 << 20);
        let late = e.fold(&stranger, &mut folded);
        assert_eq!((late.name.as_str(), late.namespace.as_str()), (OTHER_ADDRESSES, "public"));
        assert_eq!(e.fold(&ip(7), &mut folded).name, ip(7).name, "addresses named before stay named");
        assert_eq!(folded, 1);
    }
}
