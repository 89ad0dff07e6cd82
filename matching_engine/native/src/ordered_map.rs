//! A hash map that keeps the order its keys were first inserted in, as a Python dict does:
//! the snapshot lists balances and supply in that order, as the Python core does.

use std::hash::Hash;

use rustc_hash::FxHashMap;

pub struct OrderedMap<K, V> {
    values: FxHashMap<K, V>,
    /// Every key, in the order it was first inserted (keys are never removed).
    order: Vec<K>,
}

impl<K, V> Default for OrderedMap<K, V> {
    fn default() -> Self {
        OrderedMap { values: FxHashMap::default(), order: Vec::new() }
    }
}

impl<K: Copy + Eq + Hash, V: Default> OrderedMap<K, V> {
    #[inline]
    pub fn get(&self, key: K) -> Option<&V> {
        self.values.get(&key)
    }

    /// The value at `key`; a missing key is inserted, last, with the default value.
    #[inline]
    pub fn entry(&mut self, key: K) -> &mut V {
        let order = &mut self.order;
        self.values.entry(key).or_insert_with(|| {
            order.push(key);
            V::default()
        })
    }

    /// The entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (K, &V)> + '_ {
        self.order.iter().map(|key| (*key, &self.values[key]))
    }
}
