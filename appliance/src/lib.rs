//! cardwall appliance daemon: links, policy routing and nftables so all traffic goes via the card; status UI; the lab
//!
//! Nothing here yet: the appliance daemon and the lab are issue 4.
