//! What the cell-array sketches share ([`HyperLogLog`](crate::HyperLogLog)
//! registers, [`CountMinSketch`](crate::CountMinSketch) counters,
//! [`Bloom`](crate::Bloom) words): lazily allocated cells, where `None`
//! stands for all zeros, the identity, and allocates nothing; their
//! cell-wise combine; and, with feature `laws`, their `Arbitrary` data and
//! shrinking. (Their persisted form is in `sketch_codec`.) Both sides of a
//! combine have the same number of cells: the type's parameters fix it.

/// A sketch's cells: `None` for all zeros.
pub(crate) type Cells<C> = Option<Box<[C]>>;

/// `ours ⊕= theirs` cell by cell, `merge` being the cell-wise `⊕`; the
/// identity takes a copy of the other side.
#[inline]
pub(crate) fn combine<C: Copy>(
    ours: &mut Cells<C>,
    theirs: Option<&[C]>,
    merge: impl Fn(&mut C, C),
) {
    let Some(theirs) = theirs else {
        return;
    };
    match ours {
        Some(ours) => merge_into(ours, theirs, merge),
        None => *ours = Some(theirs.into()),
    }
}

/// [`combine`], reusing `theirs`' allocation when `ours` is the identity.
#[inline]
pub(crate) fn combine_owned<C: Copy>(
    ours: &mut Cells<C>,
    theirs: Cells<C>,
    merge: impl Fn(&mut C, C),
) {
    let Some(theirs) = theirs else {
        return;
    };
    match ours {
        Some(ours) => merge_into(ours, &theirs, merge),
        None => *ours = Some(theirs),
    }
}

/// `Arbitrary` items for the sketches: up to `g.size()` hashes, each of an
/// item from a small domain (so that arbitrary sketches overlap) or a raw,
/// possibly edge-case, hash.
#[cfg(feature = "laws")]
pub(crate) fn arbitrary_hashes(g: &mut quickcheck::Gen) -> Vec<u64> {
    use quickcheck::Arbitrary;

    let n = usize::arbitrary(g) % (g.size() + 1);
    (0..n)
        .map(|_| {
            if bool::arbitrary(g) {
                crate::hash::stable_hash(&(u16::arbitrary(g) % 512))
            } else {
                u64::arbitrary(g)
            }
        })
        .collect()
}

/// `Arbitrary` shrinking: the identity, then each half of the nonzero cells
/// (the others zeroed). Nothing for the identity.
#[cfg(feature = "laws")]
pub(crate) fn shrink<C: Copy + Default + PartialEq>(cells: &Cells<C>) -> Vec<Cells<C>> {
    let Some(cells) = cells else {
        return Vec::new();
    };
    let zero = C::default();
    let nonzero: Vec<usize> = (0..cells.len()).filter(|&i| cells[i] != zero).collect();
    let half = nonzero.len() / 2;
    let keep = |keep: &[usize]| {
        let mut kept = vec![zero; cells.len()].into_boxed_slice();
        for &i in keep {
            kept[i] = cells[i];
        }
        Some(kept)
    };
    let mut candidates = vec![None];
    if half > 0 {
        candidates.push(keep(&nonzero[..half]));
        candidates.push(keep(&nonzero[half..]));
    }
    candidates
}

/// A plain loop over equal-length slices, which auto-vectorizes.
#[inline]
fn merge_into<C: Copy>(ours: &mut [C], theirs: &[C], merge: impl Fn(&mut C, C)) {
    for (a, &b) in ours.iter_mut().zip(theirs) {
        merge(a, b);
    }
}
