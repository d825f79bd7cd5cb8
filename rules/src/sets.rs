//! Interned sets of rule numbers: the values every index maps to.
//!
//! A million-name blocklist used by one rule gives a million index entries that all point at
//! the same one-element set. Interning stores that set once and gives each entry a 4-byte id.

use hashbrown::HashMap;

/// Id of an interned, sorted set of rule numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SetId(u32);

impl SetId {
    pub const EMPTY: SetId = SetId(0);
}

#[derive(Debug)]
pub(crate) struct RuleSets {
    sets: Vec<Box<[u32]>>,
    ids: HashMap<Box<[u32]>, SetId>,
}

impl RuleSets {
    pub fn new() -> Self {
        let empty: Box<[u32]> = Box::new([]);
        RuleSets {
            sets: vec![empty.clone()],
            ids: HashMap::from([(empty, SetId::EMPTY)]),
        }
    }

    pub fn get(&self, id: SetId) -> &[u32] {
        &self.sets[id.0 as usize]
    }

    /// The set `id` plus `rule`. Rules are added in ascending order, so appending keeps every
    /// set sorted, and adding the rule a set already ends with changes nothing.
    pub fn with(&mut self, id: SetId, rule: u32) -> SetId {
        let current = self.get(id);
        if let Some(&last) = current.last() {
            debug_assert!(last <= rule, "rules must be added in ascending order");
            if last == rule {
                return id;
            }
        }
        let mut grown = Vec::with_capacity(current.len() + 1);
        grown.extend_from_slice(current);
        grown.push(rule);
        self.intern(grown.into_boxed_slice())
    }

    fn intern(&mut self, set: Box<[u32]>) -> SetId {
        if let Some(&id) = self.ids.get(&set) {
            return id;
        }
        let id = SetId(u32::try_from(self.sets.len()).expect("fewer than 2^32 distinct rule sets"));
        self.sets.push(set.clone());
        self.ids.insert(set, id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_sets_share_one_id() {
        let mut sets = RuleSets::new();
        let a = sets.with(SetId::EMPTY, 4);
        let b = sets.with(SetId::EMPTY, 4);
        assert_eq!(a, b);
        let ab = sets.with(a, 9);
        assert_eq!(sets.get(ab), &[4, 9]);
        assert_eq!(sets.with(ab, 9), ab);
        assert_eq!(sets.get(SetId::EMPTY), &[] as &[u32]);
    }
}
