//! CIDR set normalisation: one family's prefixes of one CIDR list become
//! sorted, merged, disjoint intervals, given as their *boundaries* (the
//! first address of each interval and the first address after it), plus a
//! [`Provenance`] index that answers "which listed CIDR contains this
//! address" for logs.

use crate::key::Key;

/// Sorts `prefixes` (`(network, len)`, host bits already cleared) and
/// returns the boundaries of their union: `b[0]` starts an interval, `b[1]`
/// ends it (first address after it), and so on. The last interval may run
/// to the top of the space, then it has no end boundary.
pub(crate) fn merge<K: Key>(prefixes: &mut [(K, u8)]) -> Vec<K> {
    prefixes.sort_unstable();
    let mut out = Vec::with_capacity(prefixes.len() * 2);
    let mut iter = prefixes.iter();
    let Some(&(first, len)) = iter.next() else {
        return out;
    };
    let (mut start, mut end) = (first, first.last_of(len));
    for &(s, len) in iter {
        match end.inc() {
            // `end` is the top of the space: everything after is covered.
            None => break,
            Some(next) if s <= next => {
                let e = s.last_of(len);
                if e > end {
                    end = e;
                }
            }
            Some(_) => {
                out.push(start);
                out.push(end.inc().expect("checked above"));
                start = s;
                end = s.last_of(len);
            }
        }
    }
    out.push(start);
    if let Some(after) = end.inc() {
        out.push(after);
    }
    out
}

/// "Which listed CIDR contains this address": for each prefix length in
/// use (longest first), the sorted, deduplicated networks of that length.
/// Costs one binary search per length in use; only logs call it.
#[derive(Debug, Default)]
pub(crate) struct Provenance<K> {
    by_len: Vec<(u8, Box<[K]>)>,
}

impl<K: Key> Provenance<K> {
    /// Builds the index from prefixes sorted by [`merge`].
    pub(crate) fn new(sorted: &[(K, u8)]) -> Self {
        let mut counts = [0usize; 129];
        for &(_, len) in sorted {
            counts[usize::from(len)] += 1;
        }
        let mut lists: Vec<Vec<K>> = counts.iter().map(|&c| Vec::with_capacity(c)).collect();
        for &(net, len) in sorted {
            let list = &mut lists[usize::from(len)];
            if list.last() != Some(&net) {
                list.push(net);
            }
        }
        let by_len = lists
            .into_iter()
            .enumerate()
            .rev()
            .filter(|(_, l)| !l.is_empty())
            .map(|(len, l)| (len as u8, l.into_boxed_slice()))
            .collect();
        Provenance { by_len }
    }

    /// The most specific listed prefix containing `addr`.
    pub(crate) fn most_specific(&self, addr: K) -> Option<(K, u8)> {
        self.by_len.iter().find_map(|(len, nets)| {
            let net = addr.trunc(*len);
            nets.binary_search(&net).ok().map(|_| (net, *len))
        })
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.by_len
            .iter()
            .map(|(_, l)| std::mem::size_of_val(&**l))
            .sum::<usize>()
            + self.by_len.capacity() * std::mem::size_of::<(u8, Box<[K]>)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_overlaps_and_adjacent() {
        let mut p = vec![
            (0x0a00_0000u32, 8),
            (0x0a01_0000, 16),
            (0x0b00_0000, 8),
            (0x0d00_0000, 8),
        ];
        assert_eq!(
            merge(&mut p),
            vec![0x0a00_0000, 0x0c00_0000, 0x0d00_0000, 0x0e00_0000]
        );
        let mut all = vec![(0u32, 0), (5, 32)];
        assert_eq!(merge(&mut all), vec![0]);
        let mut top = vec![(u32::MAX, 32)];
        assert_eq!(merge(&mut top), vec![u32::MAX]);
        let mut none: Vec<(u128, u8)> = vec![];
        assert!(merge(&mut none).is_empty());
    }

    #[test]
    fn provenance_finds_most_specific() {
        let mut p = vec![(0x0a00_0000u32, 8), (0x0a01_0000, 16)];
        merge(&mut p);
        let prov = Provenance::new(&p);
        assert_eq!(prov.most_specific(0x0a01_0203), Some((0x0a01_0000, 16)));
        assert_eq!(prov.most_specific(0x0a02_0203), Some((0x0a00_0000, 8)));
        assert_eq!(prov.most_specific(0x0b00_0000), None);
    }
}
