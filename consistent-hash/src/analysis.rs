//! How well a table balances, and how much a change moves.

use crate::diff::{check_sizes, index_map};
use crate::{Error, Table};

/// How the slots of one table are shared among its backends.
#[derive(Clone, Debug, PartialEq)]
pub struct Balance {
    /// Slots of every backend, in table order (as [`Table::backends`]).
    pub slots: Vec<u32>,
    /// The fewest slots of a backend with a positive weight.
    pub min: u32,
    /// The most slots of a backend with a positive weight.
    pub max: u32,
    /// The largest `|cᵢ − M·wᵢ/W|` in slots over backends with a positive weight: how far a
    /// count is from its ideal (always below 1 for tables built by this crate).
    pub max_slot_error: f64,
    /// The largest `|cᵢ / (M·wᵢ/W) − 1|` over backends with a positive weight: how far a
    /// backend's share of the traffic is from its ideal share, relatively (0.01 = 1%).
    pub max_deviation: f64,
}

impl Balance {
    /// The balance of `table`.
    #[must_use]
    pub fn of(table: &Table) -> Self {
        let slots = table.slot_counts();
        let m = f64::from(table.size().get());
        let total: u64 = table.backends().iter().map(|b| u64::from(b.weight)).sum();
        let mut balance = Self {
            slots,
            min: u32::MAX,
            max: 0,
            max_slot_error: 0.0,
            max_deviation: 0.0,
        };
        for (backend, &count) in table.backends().iter().zip(&balance.slots) {
            if backend.weight == 0 {
                continue;
            }
            let ideal = m * f64::from(backend.weight) / total as f64;
            let error = (f64::from(count) - ideal).abs();
            balance.min = balance.min.min(count);
            balance.max = balance.max.max(count);
            balance.max_slot_error = balance.max_slot_error.max(error);
            balance.max_deviation = balance.max_deviation.max(error / ideal);
        }
        balance
    }
}

/// How many slots change backend between an old and a new table of the same size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disruption {
    /// Slots in the table.
    pub size: u32,
    /// Slots whose backend (by key) changed.
    pub moved: u32,
    /// Slots that, in the old table, belonged to a *kept* backend: one present in both tables
    /// with a positive weight in both.
    pub kept: u32,
    /// Slots that moved from one kept backend to another: flows that lose their backend for no
    /// reason of their own. A removed (or drained) backend's slots must move and a new backend
    /// must get slots; these are the collateral moves on top (Maglev is not minimally
    /// disruptive; conntrack in front of it keeps established connections on their backend).
    pub kept_moved: u32,
}

/// For every backend of `new`, whether it is kept, from `map` (old index to new index) and
/// `kept_backend` (by old index).
fn kept_in_new(new: &Table, map: &[Option<u32>], kept_backend: &[bool]) -> Vec<bool> {
    let mut kept = vec![false; new.backends().len()];
    for (&index, _) in map.iter().zip(kept_backend).filter(|&(_, &k)| k) {
        if let Some(i) = index {
            kept[i as usize] = true;
        }
    }
    kept
}

impl Disruption {
    /// The disruption from `old` to `new`.
    ///
    /// # Errors
    /// [`Error::SizeMismatch`] when the sizes differ.
    pub fn between(old: &Table, new: &Table) -> Result<Self, Error> {
        check_sizes(old, new)?;
        let map = index_map(old, new);
        let kept_backend: Vec<bool> = old
            .backends()
            .iter()
            .zip(&map)
            .map(|(b, m)| b.weight > 0 && m.is_some_and(|i| new.backends()[i as usize].weight > 0))
            .collect();
        let kept_in_new = kept_in_new(new, &map, &kept_backend);
        let mut d = Self {
            size: old.size().get(),
            moved: 0,
            kept: 0,
            kept_moved: 0,
        };
        for (&o, &n) in old.slots().iter().zip(new.slots()) {
            let moved = map[o as usize] != Some(n);
            let kept = kept_backend[o as usize];
            d.moved += u32::from(moved);
            d.kept += u32::from(kept);
            d.kept_moved += u32::from(kept && moved && kept_in_new[n as usize]);
        }
        Ok(d)
    }

    /// The share of all slots that moved, `moved / size`.
    #[must_use]
    pub fn moved_share(&self) -> f64 {
        f64::from(self.moved) / f64::from(self.size)
    }

    /// The share of the kept backends' slots that moved to another kept backend,
    /// `kept_moved / kept` (0 when there are no kept backends).
    #[must_use]
    pub fn kept_moved_share(&self) -> f64 {
        if self.kept == 0 {
            0.0
        } else {
            f64::from(self.kept_moved) / f64::from(self.kept)
        }
    }
}
