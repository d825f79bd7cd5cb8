//! cardwall appliance daemon: links, policy routing and nftables so all traffic goes via the card; status UI; the lab
//!
//! The appliance daemon itself is issue 4: nothing of it is here yet.
//!
//! [`topology`] is the network-namespace library that `appliance lab` and every end-to-end
//! test (the `e2e` crate in `tests/`) share: namespaces, veth links, addresses, routes,
//! processes and in-process code run inside a namespace, all removed when the [`topology::Lab`]
//! is dropped. Topology code is written once, there.

pub mod topology;
