//! The slots that change between two tables, so the datapath writes only those.

use crate::{Error, Table};

/// One slot whose backend changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlotChange {
    /// The slot, below the table size.
    pub slot: u32,
    /// The new backend: an index in the new table's [`Table::backends`].
    pub backend: u32,
}

/// The slots whose backend differs between an old and a new table of the same size, in slot
/// order.
///
/// Backends are compared by key, not by index: an index is a position in one table's backend
/// list, and the same backend may have another position in the other table. So a slot is
/// unchanged exactly when it names the backend with the same key in both tables, and applying
/// the diff to a copy of the old table — as the datapath's backend IDs, which follow keys —
/// gives the new one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    changes: Vec<SlotChange>,
}

impl Diff {
    /// The changes from `old` to `new`.
    ///
    /// # Errors
    /// [`Error::SizeMismatch`] when the sizes differ: every slot means something else after a
    /// resize, so the whole new table must be written.
    pub fn between(old: &Table, new: &Table) -> Result<Self, Error> {
        check_sizes(old, new)?;
        let map = index_map(old, new);
        let changes = old
            .slots()
            .iter()
            .zip(new.slots())
            .enumerate()
            .filter(|&(_, (&o, &n))| map[o as usize] != Some(n))
            .map(|(slot, (_, &n))| SlotChange {
                slot: slot as u32,
                backend: n,
            })
            .collect();
        Ok(Self { changes })
    }

    /// The changed slots, in slot order.
    #[must_use]
    pub fn changes(&self) -> &[SlotChange] {
        &self.changes
    }

    /// How many slots change.
    #[must_use]
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether no slot changes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Writes the changes into `slots`, a copy of the old table in the caller's terms (e.g.
    /// backend IDs): slot `c.slot` becomes `value_of(c.backend)`.
    ///
    /// # Panics
    /// If `slots` is shorter than the tables.
    pub fn apply<T>(&self, slots: &mut [T], mut value_of: impl FnMut(u32) -> T) {
        for change in &self.changes {
            slots[change.slot as usize] = value_of(change.backend);
        }
    }
}

pub(crate) fn check_sizes(old: &Table, new: &Table) -> Result<(), Error> {
    if old.size() == new.size() {
        Ok(())
    } else {
        Err(Error::SizeMismatch {
            old: old.size().get(),
            new: new.size().get(),
        })
    }
}

/// For every backend of `old`, its index in `new` (by key), if it is there.
pub(crate) fn index_map(old: &Table, new: &Table) -> Vec<Option<u32>> {
    old.backends()
        .iter()
        .map(|b| new.index_of(&b.key))
        .collect()
}
