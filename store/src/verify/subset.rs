//! Which packs `verify --read-data-subset` reads.

use std::str::FromStr;

use crate::error::Error;
use crate::id::PackId;

/// A deterministic choice of packs to read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DataSubset {
    /// Every pack.
    All,
    /// Slice `n` of `m` (1-based): slices 1..=m together are every pack,
    /// each exactly once.
    Slice {
        /// Which slice.
        n: u32,
        /// Of how many.
        m: u32,
    },
    /// About this percentage of the packs (0 < p ≤ 100), always the same ones.
    Percent(f64),
    /// Packs in id order up to about this many bytes.
    Bytes(u64),
}

/// A pack's position in the id space as a number in 0..2^32.
fn hash_point(id: &PackId) -> u32 {
    u32::from_be_bytes(id.0.as_bytes()[..4].try_into().expect("4 bytes"))
}

impl DataSubset {
    /// The chosen packs out of `packs` (id and size, sorted by id).
    pub fn select(&self, packs: &[(PackId, u64)]) -> Vec<(PackId, u64)> {
        match *self {
            DataSubset::All => packs.to_vec(),
            DataSubset::Slice { n, m } => packs
                .iter()
                .filter(|(id, _)| hash_point(id) % m == n - 1)
                .copied()
                .collect(),
            DataSubset::Percent(p) => packs
                .iter()
                .filter(|(id, _)| f64::from(hash_point(id)) < p / 100.0 * 4_294_967_296.0)
                .copied()
                .collect(),
            DataSubset::Bytes(limit) => {
                let mut total = 0u64;
                packs
                    .iter()
                    .take_while(|(_, size)| {
                        let take = total < limit;
                        total += size;
                        take
                    })
                    .copied()
                    .collect()
            }
        }
    }
}

impl FromStr for DataSubset {
    type Err = Error;

    /// `N/M`, `P%`, or a size such as `500M` or `2GiB`.
    fn from_str(text: &str) -> Result<Self, Error> {
        let bad = || {
            Error::InvalidInput(format!(
                "{text:?} is not a subset: use N/M (1 <= N <= M), P% (0 < P <= 100) or a size such as 500M"
            ))
        };
        let text = text.trim();
        if let Some((n, m)) = text.split_once('/') {
            let n: u32 = n.trim().parse().map_err(|_| bad())?;
            let m: u32 = m.trim().parse().map_err(|_| bad())?;
            if n == 0 || m == 0 || n > m {
                return Err(bad());
            }
            return Ok(DataSubset::Slice { n, m });
        }
        if let Some(p) = text.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(DataSubset::Percent(p));
        }
        crate::size::parse_size(text)
            .filter(|&n| n > 0)
            .map(DataSubset::Bytes)
            .ok_or_else(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    #[test]
    fn slices_cover_every_pack_once() {
        let packs: Vec<(PackId, u64)> = (0..1000).map(|_| (PackId(Id::random()), 10)).collect();
        let mut seen = Vec::new();
        for n in 1..=7 {
            let subset: DataSubset = format!("{n}/7").parse().unwrap();
            seen.extend(subset.select(&packs));
        }
        seen.sort_unstable();
        let mut all = packs.clone();
        all.sort_unstable();
        assert_eq!(seen, all);
        let tenth = DataSubset::Percent(10.0).select(&packs).len();
        assert!((50..150).contains(&tenth), "{tenth}");
        assert_eq!(DataSubset::Bytes(25).select(&packs).len(), 3);
        assert!("0/3".parse::<DataSubset>().is_err());
        assert!("4/3".parse::<DataSubset>().is_err());
        assert!("0%".parse::<DataSubset>().is_err());
        assert_eq!(
            "2G".parse::<DataSubset>().unwrap(),
            DataSubset::Bytes(2 << 30)
        );
    }
}
