//! Which known key an unknown one was probably meant to be: `prot` for
//! `port`, `interv` for `interval`.

/// The most edits (a character added, removed, changed, or two swapped)
/// between a key and the known one it is taken for.
const MAX_EDITS: usize = 2;

/// The shortest key taken for the start of a known one (`proto` for
/// `protocol`), or a known one for its start (`address_v6` for `address`):
/// shorter, it starts too many.
const MIN_PREFIX: usize = 3;

/// The known key that `key` is closest to, if one is close enough: at most
/// [`MAX_EDITS`] edits from it, fewer than `key` has characters (`id` is
/// not taken for `kind`), letter case aside; or else the one it starts, or
/// that starts it. Ties go to the first in `known`.
pub(super) fn closest<'k>(key: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    let key = key.to_lowercase();
    let length = key.chars().count();
    known
        .into_iter()
        .filter_map(|name| {
            let lower = name.to_lowercase();
            let edits = edit_distance(&key, &lower);
            let prefix = length.min(lower.chars().count()) >= MIN_PREFIX
                && (lower.starts_with(&key) || key.starts_with(&lower));
            // Edits first, then a prefix, which says less.
            let rank = if edits <= MAX_EDITS && edits < length {
                edits
            } else if prefix {
                MAX_EDITS + 1
            } else {
                return None;
            };
            Some((rank, name))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, name)| name)
}

/// The edits from `a` to `b`: characters added, removed or changed, and two
/// side by side swapped, each counted once (the optimal string alignment
/// distance), as a misspelling most often swaps two (`prot`, `port`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Rows of the table of distances between the prefixes of `a` and `b`:
    // the one before the previous, the previous and the current.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut current = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let change = usize::from(a[i - 1] != b[j - 1]);
            current[j] = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + change);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                current[j] = current[j].min(before[j - 2] + 1);
            }
        }
        before = std::mem::replace(&mut previous, current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_are_counted_once_each_a_swap_too() {
        for (a, b, edits) in [
            ("port", "port", 0),
            ("prot", "port", 1),
            ("por", "port", 1),
            ("ports", "port", 1),
            ("pxrt", "port", 1),
            ("weigth", "weight", 1),
            ("adress", "address", 1),
            ("", "port", 4),
            ("kind", "", 4),
            ("id", "kind", 2),
            ("zone", "node", 2),
            ("héalth", "health", 1),
        ] {
            assert_eq!(edit_distance(a, b), edits, "{a} {b}");
            assert_eq!(edit_distance(b, a), edits, "{b} {a}");
        }
    }

    #[test]
    fn the_closest_known_key_is_suggested_when_close_enough() {
        let frontend = ["address", "port", "kind"];
        assert_eq!(closest("prot", frontend), Some("port"));
        assert_eq!(closest("Port", frontend), Some("port"));
        assert_eq!(closest("adres", frontend), Some("address"));
        assert_eq!(closest("address_v6", frontend), Some("address"));
        assert_eq!(closest("kinds", frontend), Some("kind"));
        // Too far, or too short to tell.
        assert_eq!(closest("weigth", frontend), None);
        assert_eq!(closest("id", frontend), None);
        assert_eq!(closest("x", frontend), None);
        assert_eq!(closest("ad", frontend), None);
        let check = [
            "type", "path", "port", "interval", "timeout", "rise", "fall",
        ];
        assert_eq!(closest("interv", check), Some("interval"));
        assert_eq!(closest("timout", check), Some("timeout"));
        // Edits before a prefix; ties to the first.
        assert_eq!(closest("pat", check), Some("path"));
        assert_eq!(
            closest("sessionAffinity", ["session_affinity"]),
            Some("session_affinity")
        );
        assert_eq!(closest("servics", ["node", "services"]), Some("services"));
        assert_eq!(closest("anything", []), None);
    }
}
