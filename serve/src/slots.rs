//! Connection slots: a count of connections for all clients together and for each client
//! address, both capped. A slot is held for as long as its connection lives and given back when
//! dropped. The client table has a fixed capacity ([`MAX_CLIENTS`]): a flood of source addresses
//! is refused, never grown into.

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use heapless::index_map::FnvIndexMap;

/// Client addresses holding connections at once, per [`Slots`].
pub const MAX_CLIENTS: usize = 256;

/// Why a connection was not given a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// All `max_connections` slots are taken.
    Full,
    /// This client holds `max_per_client` already.
    ClientFull,
    /// [`MAX_CLIENTS`] other clients hold connections.
    TooManyClients,
}

/// Connection slots: a global count and a per-client count, both capped.
#[derive(Debug)]
pub struct Slots {
    max_total: usize,
    max_per_client: usize,
    total: AtomicUsize,
    per_client: Mutex<FnvIndexMap<IpAddr, usize, MAX_CLIENTS>>,
}

/// Holds a slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot<'a> {
    slots: &'a Slots,
    client: IpAddr,
}

impl Slots {
    pub fn new(max_total: usize, max_per_client: usize) -> Slots {
        Slots {
            max_total,
            max_per_client,
            total: AtomicUsize::new(0),
            per_client: Mutex::new(FnvIndexMap::new()),
        }
    }

    pub fn acquire(&self, client: IpAddr) -> Result<Slot<'_>, Refused> {
        let mut per_client = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(Refused::Full);
        }
        match per_client.get_mut(&client) {
            Some(n) if *n >= self.max_per_client => return Err(Refused::ClientFull),
            Some(n) => *n += 1,
            None => {
                per_client
                    .insert(client, 1)
                    .map_err(|_| Refused::TooManyClients)?;
            }
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            slots: self,
            client,
        })
    }

    pub fn in_use(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut per_client = self
            .slots
            .per_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                per_client.swap_remove(&self.client);
            }
        }
        self.slots.total.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_total_and_per_client_and_come_back() {
        let slots = Slots::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = slots.acquire(a).unwrap();
        let a2 = slots.acquire(a).unwrap();
        assert_eq!(slots.acquire(a).unwrap_err(), Refused::ClientFull);
        let b1 = slots.acquire(b).unwrap();
        assert_eq!(slots.acquire(b).unwrap_err(), Refused::Full);
        drop(a1);
        assert_eq!(slots.in_use(), 2);
        let b2 = slots.acquire(b).unwrap();
        drop((a2, b1, b2));
        assert_eq!(slots.in_use(), 0);
        assert!(slots.per_client.lock().unwrap().is_empty());
    }

    #[test]
    fn client_table_is_bounded() {
        let slots = Slots::new(10_000, 1);
        let held: Vec<_> = (0..MAX_CLIENTS)
            .map(|i| {
                slots
                    .acquire(IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            slots.acquire("10.9.9.9".parse().unwrap()).unwrap_err(),
            Refused::TooManyClients
        );
        drop(held);
        assert!(slots.acquire("10.9.9.9".parse().unwrap()).is_ok());
    }
}
