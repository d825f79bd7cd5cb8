//! Address and port indexes: map a destination to the rules that name it, with a cost set by
//! how many distinct prefix lengths (at most 33 or 129) or port segments exist, never by how
//! many rules there are.

use std::net::IpAddr;

use hashbrown::HashMap;

use crate::sets::{RuleSets, SetId};
use crate::value::{Cidr, PortRange, mask};

/// Rules by destination block: one hash map per prefix length in use, longest first.
#[derive(Debug, Default)]
pub(crate) struct PrefixIndex {
    by_length: Vec<(u8, HashMap<IpAddr, SetId>)>,
}

impl PrefixIndex {
    pub fn insert(&mut self, sets: &mut RuleSets, cidr: Cidr, rule: u32) {
        let position = match self
            .by_length
            .iter()
            .position(|(len, _)| *len <= cidr.prefix())
        {
            Some(i) if self.by_length[i].0 == cidr.prefix() => i,
            Some(i) => {
                self.by_length.insert(i, (cidr.prefix(), HashMap::new()));
                i
            }
            None => {
                self.by_length.push((cidr.prefix(), HashMap::new()));
                self.by_length.len() - 1
            }
        };
        let slot = self.by_length[position]
            .1
            .entry(cidr.addr())
            .or_insert(SetId::EMPTY);
        *slot = sets.with(*slot, rule);
    }

    /// Calls `visit` for each block in the index that contains `ip`.
    pub fn lookup(&self, ip: IpAddr, mut visit: impl FnMut(SetId, Cidr)) {
        for (len, blocks) in &self.by_length {
            let network = mask(ip, *len);
            if let Some(&set) = blocks.get(&network) {
                visit(
                    set,
                    Cidr::new(network, *len).expect("masked address is a valid block"),
                );
            }
        }
    }
}

/// Rules by destination port: the port space cut into segments at every range boundary, each
/// segment holding the rules whose ranges cover it; a lookup is one binary search.
#[derive(Debug)]
pub(crate) struct PortIndex {
    /// First port of each segment, ascending; segment `i` runs to `starts[i + 1] - 1`.
    starts: Vec<u32>,
    sets: Vec<SetId>,
}

impl PortIndex {
    /// Builds the index from (range, rule) pairs given in ascending rule order.
    pub fn build(sets: &mut RuleSets, ranges: &[(PortRange, u32)]) -> PortIndex {
        let mut starts: Vec<u32> = ranges
            .iter()
            .flat_map(|(r, _)| [u32::from(r.first), u32::from(r.last) + 1])
            .collect();
        starts.push(0);
        starts.sort_unstable();
        starts.dedup();
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); starts.len()];
        for &(range, rule) in ranges {
            let first = starts.partition_point(|&s| s < u32::from(range.first));
            let end = starts.partition_point(|&s| s <= u32::from(range.last));
            for segment in &mut members[first..end] {
                if segment.last() != Some(&rule) {
                    segment.push(rule);
                }
            }
        }
        let sets = members
            .into_iter()
            .map(|rules| {
                rules
                    .into_iter()
                    .fold(SetId::EMPTY, |set, rule| sets.with(set, rule))
            })
            .collect();
        PortIndex { starts, sets }
    }

    pub fn lookup(&self, port: u16) -> SetId {
        let segment = self.starts.partition_point(|&s| s <= u32::from(port)) - 1;
        self.sets[segment]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_and_shorter_prefixes_all_found() {
        let mut sets = RuleSets::new();
        let mut index = PrefixIndex::default();
        index.insert(
            &mut sets,
            Cidr::new("10.0.0.0".parse().unwrap(), 8).unwrap(),
            0,
        );
        index.insert(
            &mut sets,
            Cidr::new("10.1.0.0".parse().unwrap(), 16).unwrap(),
            1,
        );
        index.insert(
            &mut sets,
            Cidr::new("0.0.0.0".parse().unwrap(), 0).unwrap(),
            2,
        );
        index.insert(&mut sets, Cidr::new("::".parse().unwrap(), 0).unwrap(), 3);
        let mut found = Vec::new();
        index.lookup("10.1.2.3".parse().unwrap(), |set, block| {
            found.push((sets.get(set).to_vec(), block.to_string()))
        });
        assert_eq!(
            found,
            vec![
                (vec![1], "10.1.0.0/16".to_string()),
                (vec![0], "10.0.0.0/8".to_string()),
                (vec![2], "0.0.0.0/0".to_string())
            ]
        );
        let mut found = Vec::new();
        index.lookup("2001:db8::1".parse().unwrap(), |set, _| {
            found.extend_from_slice(sets.get(set))
        });
        assert_eq!(found, vec![3]);
    }

    #[test]
    fn port_segments() {
        let mut sets = RuleSets::new();
        let range = |first, last| PortRange { first, last };
        let index = PortIndex::build(
            &mut sets,
            &[
                (range(80, 80), 0),
                (range(1, 1024), 1),
                (range(8000, 8100), 2),
                (range(65535, 65535), 3),
                (range(80, 80), 3),
            ],
        );
        let at = |p| sets.get(index.lookup(p)).to_vec();
        assert_eq!(at(80), vec![0, 1, 3]);
        assert_eq!(at(79), vec![1]);
        assert_eq!(at(1025), Vec::<u32>::new());
        assert_eq!(at(8100), vec![2]);
        assert_eq!(at(8101), Vec::<u32>::new());
        assert_eq!(at(65535), vec![3]);
        assert_eq!(at(0), Vec::<u32>::new());
    }
}
