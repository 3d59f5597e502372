//! Stable IDs: service IDs index tables and counters, backend IDs index
//! backend records, and every conntrack entry stores `{backend ID, generation}`.

use std::collections::{BTreeMap, BTreeSet};

/// Hands out the lowest free ID in `first..limit` and remembers, per ID, the
/// last generation it was given with, so a reused ID always comes with a
/// higher generation: a flow tracked under the old owner finds a stale
/// generation and is re-selected (DESIGN.md, "State").
#[derive(Clone, Debug)]
pub struct IdAllocator {
    first: u32,
    limit: u32,
    used: BTreeSet<u32>,
    /// Next never-used ID: IDs below it that are not used are in `freed`.
    next: u32,
    freed: BTreeSet<u32>,
    generations: BTreeMap<u32, u32>,
}

/// No ID left below the map's capacity.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[error("all {capacity} {kind} IDs are in use: raise the map size")]
pub struct Exhausted {
    pub kind: &'static str,
    pub capacity: u32,
}

impl IdAllocator {
    /// IDs `first..limit`.
    pub fn new(first: u32, limit: u32) -> Self {
        Self {
            first,
            limit,
            used: BTreeSet::new(),
            next: first,
            freed: BTreeSet::new(),
            generations: BTreeMap::new(),
        }
    }

    /// Takes a free ID and its new generation.
    pub fn allocate(&mut self, kind: &'static str) -> Result<(u32, u32), Exhausted> {
        let id = match self.freed.pop_first() {
            Some(id) => id,
            None if self.next < self.limit => {
                self.next += 1;
                self.next - 1
            }
            None => {
                return Err(Exhausted {
                    kind,
                    capacity: self.limit - self.first,
                });
            }
        };
        self.used.insert(id);
        Ok((id, self.bump(id)))
    }

    /// A new generation for an ID still in use (a backend coming back from
    /// down: flows it had are not revived).
    pub fn bump(&mut self, id: u32) -> u32 {
        let generation = self.generations.entry(id).or_insert(0);
        *generation = generation.wrapping_add(1).max(1);
        *generation
    }

    /// Marks `id` used with `generation` (from pinned state after a restart).
    pub fn adopt(&mut self, id: u32, generation: u32) {
        if id < self.first || id >= self.limit {
            return;
        }
        self.used.insert(id);
        self.freed.remove(&id);
        while self.next <= id {
            if self.next != id {
                self.freed.insert(self.next);
            }
            self.next += 1;
        }
        let known = self.generations.entry(id).or_insert(0);
        *known = (*known).max(generation);
    }

    /// Returns `id`; its generation is remembered.
    pub fn free(&mut self, id: u32) {
        if self.used.remove(&id) {
            self.freed.insert(id);
        }
    }

    /// IDs in use.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_first_and_reuse_bumps_the_generation() {
        let mut ids = IdAllocator::new(1, 4);
        assert_eq!(ids.allocate("backend"), Ok((1, 1)));
        assert_eq!(ids.allocate("backend"), Ok((2, 1)));
        ids.free(1);
        assert_eq!(ids.allocate("backend"), Ok((1, 2)));
        assert_eq!(ids.allocate("backend"), Ok((3, 1)));
        assert_eq!(
            ids.allocate("backend"),
            Err(Exhausted {
                kind: "backend",
                capacity: 3
            })
        );
        assert_eq!(ids.in_use(), 3);
    }

    #[test]
    fn adopted_ids_keep_their_generation_and_leave_gaps_free() {
        let mut ids = IdAllocator::new(1, 100);
        ids.adopt(5, 7);
        ids.adopt(2, 1);
        // 1, 3 and 4 were skipped by the adopted IDs and are free.
        assert_eq!(ids.allocate("backend"), Ok((1, 1)));
        assert_eq!(ids.allocate("backend"), Ok((3, 1)));
        assert_eq!(ids.allocate("backend"), Ok((4, 1)));
        assert_eq!(ids.allocate("backend"), Ok((6, 1)));
        ids.free(5);
        assert_eq!(ids.allocate("backend"), Ok((5, 8)));
        // Out of range is ignored (a foreign pin dir's ID cannot be allocated).
        ids.adopt(0, 3);
        ids.adopt(100, 3);
        assert_eq!(ids.in_use(), 6);
    }
}
