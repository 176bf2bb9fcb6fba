//! A Bloom filter over the ids of the dedup index, consulted before its B-tree.
//!
//! Nearly every lookup is for an id never written (redeliveries are the exception), and in a
//! profile of a million-event replay those B-tree reads were 6% of the CPU. The filter answers
//! them from memory: "absent" is certain, "maybe" goes on to the B-tree (about 1% of absent ids
//! at full capacity). It costs 10 bits per id it has room for, and its room is one to two
//! times the ids it was built for (a power of two of blocks): 1.25-2.5 bytes per id.
//!
//! Blocked layout: an id sets [`PROBES`] bits in one 64-byte block, so a lookup reads one cache
//! line. Event ids are hashes already; they are mixed once more all the same, so that ids of
//! another shape could not crowd a few blocks.
//! Invariant: no false negatives: an id inserted answers `may_contain` true for as long as the
//! filter lives. Ids cannot be removed; a purge builds a new filter from the ids it keeps.

/// Bits of filter per id at full capacity: about 1% false positives in this layout.
const BITS_PER_ID: usize = 10;
/// Bits set per id, each picked by 9 bits of the second hash.
const PROBES: u32 = 7;
/// The smallest filter: 1 024 blocks, 64 KiB, room for 52 428 ids.
const MIN_BLOCKS: usize = 1 << 10;

/// One cache line of bits.
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct Block([u64; 8]);

pub struct IdFilter {
    blocks: Vec<Block>,
    /// Ids inserted (an id inserted twice counts twice).
    count: usize,
}

impl IdFilter {
    /// An empty filter with room for `ids` ids at least.
    pub fn with_capacity(ids: usize) -> IdFilter {
        let blocks = (ids.saturating_mul(BITS_PER_ID).div_ceil(512))
            .next_power_of_two()
            .max(MIN_BLOCKS);
        IdFilter {
            blocks: vec![Block::default(); blocks],
            count: 0,
        }
    }

    /// Ids the filter holds before its false positives pass about 1%.
    pub fn capacity(&self) -> usize {
        self.blocks.len() * 512 / BITS_PER_ID
    }

    /// Whether more ids went in than [`IdFilter::capacity`]: time for a larger filter.
    pub fn is_full(&self) -> bool {
        self.count > self.capacity()
    }

    /// Bytes of memory the bits take.
    pub fn bytes(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<Block>()
    }

    pub fn insert(&mut self, id: &[u8; 16]) {
        let (block, bits) = self.place(id);
        let block = &mut self.blocks[block].0;
        for bit in bits {
            block[bit >> 6] |= 1 << (bit & 63);
        }
        self.count += 1;
    }

    /// `false`: `id` was never inserted. `true`: it may have been.
    pub fn may_contain(&self, id: &[u8; 16]) -> bool {
        let (block, mut bits) = self.place(id);
        let block = &self.blocks[block].0;
        bits.all(|bit| block[bit >> 6] & (1 << (bit & 63)) != 0)
    }

    /// The block of `id`, and the bit positions in it.
    fn place(&self, id: &[u8; 16]) -> (usize, impl Iterator<Item = usize> + use<>) {
        let (low, high) = id.split_at(8);
        let first = mix(u64::from_le_bytes(low.try_into().expect("8 bytes")));
        let second = mix(u64::from_le_bytes(high.try_into().expect("8 bytes")) ^ first);
        // The number of blocks is a power of two: the high bits of the first hash pick one.
        let block = (first >> 32) as usize & (self.blocks.len() - 1);
        (
            block,
            (0..PROBES).map(move |i| ((second >> (9 * i)) & 511) as usize),
        )
    }
}

/// A bijective scramble of 64 bits (the finaliser of SplitMix64).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct ids, made by scrambling a counter.
    fn ids(from: u64, n: u64) -> Vec<[u8; 16]> {
        (from..from + n)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&mix(i).to_le_bytes());
                id[8..].copy_from_slice(&mix(i ^ 0x5555).to_le_bytes());
                id
            })
            .collect()
    }

    fn false_positives(filter: &IdFilter, absent: &[[u8; 16]]) -> f64 {
        absent.iter().filter(|id| filter.may_contain(id)).count() as f64 / absent.len() as f64
    }

    #[test]
    fn every_id_inserted_is_found_and_few_others_are() {
        let mut filter = IdFilter::with_capacity(100_000);
        let capacity = filter.capacity();
        assert!(capacity >= 100_000, "{capacity}");
        let inserted = ids(0, capacity as u64);
        for id in &inserted {
            filter.insert(id);
        }
        assert!(!filter.is_full());
        assert!(inserted.iter().all(|id| filter.may_contain(id)));
        let rate = false_positives(&filter, &ids(1 << 40, 200_000));
        assert!(rate < 0.02, "false positives at capacity: {rate}");
        filter.insert(&ids(1 << 50, 1)[0]);
        assert!(filter.is_full());
    }

    #[test]
    fn ids_of_another_shape_spread_over_the_blocks() {
        let mut filter = IdFilter::with_capacity(50_000);
        // Counters in the last bytes, the rest zero: no randomness of their own.
        let counted: Vec<[u8; 16]> = (0..50_000u64)
            .map(|i| {
                let mut id = [0u8; 16];
                id[8..].copy_from_slice(&i.to_be_bytes());
                id
            })
            .collect();
        for id in &counted {
            filter.insert(id);
        }
        assert!(counted.iter().all(|id| filter.may_contain(id)));
        let rate = false_positives(&filter, &ids(1 << 40, 100_000));
        assert!(rate < 0.02, "false positives: {rate}");
    }

    #[test]
    fn an_empty_filter_has_the_smallest_size_and_contains_nothing() {
        let filter = IdFilter::with_capacity(0);
        assert_eq!(filter.bytes(), MIN_BLOCKS * 64);
        assert!(ids(0, 1000).iter().all(|id| !filter.may_contain(id)));
    }
}
