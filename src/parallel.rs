//! Running a few pieces of CPU work side by side on scoped threads.
//!
//! Invariant: results come back in the order of their inputs, the first piece runs on the
//! calling thread, and a panic in any piece is resumed on the caller.

/// Applies `f` to every item, each but the first on a thread of its own.
pub fn map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let mut items = items.into_iter();
    let Some(first) = items.next() else {
        return Vec::new();
    };
    let f = &f;
    std::thread::scope(|scope| {
        let others: Vec<_> = items.map(|item| scope.spawn(move || f(item))).collect();
        let mut results = vec![f(first)];
        for handle in others {
            results.push(
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        results
    })
}

/// Applies `f` to every item of `items`, split in up to `parts` runs of neighbours side by
/// side; the results keep the order of the items.
pub fn map_slice<T: Sync, R: Send>(
    items: &[T],
    parts: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if parts <= 1 || items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    let runs: Vec<&[T]> = items.chunks(items.len().div_ceil(parts)).collect();
    let f = &f;
    map(runs, |run| run.iter().map(f).collect::<Vec<R>>())
        .into_iter()
        .flatten()
        .collect()
}

/// Applies `f` to every item of `items`, taken by value, split in up to `parts` runs of
/// neighbours side by side; the results keep the order of the items.
pub fn map_owned<T: Send, R: Send>(
    items: Vec<T>,
    parts: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    if parts <= 1 || items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    let size = items.len().div_ceil(parts);
    let mut items = items.into_iter();
    let runs: Vec<Vec<T>> = std::iter::from_fn(|| {
        let run: Vec<T> = items.by_ref().take(size).collect();
        (!run.is_empty()).then_some(run)
    })
    .collect();
    let f = &f;
    map(runs, |run| run.into_iter().map(f).collect::<Vec<R>>())
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_order_of_the_inputs() {
        assert_eq!(map(vec![3, 1, 2], |x| x * 10), vec![30, 10, 20]);
        assert!(map(Vec::<u8>::new(), |x| x).is_empty());
    }

    #[test]
    fn slices_are_mapped_in_order_in_any_number_of_parts() {
        let items: Vec<u32> = (0..101).collect();
        let expected: Vec<u32> = items.iter().map(|x| x * 3).collect();
        for parts in [0, 1, 2, 3, 7, 101, 500] {
            assert_eq!(
                map_slice(&items, parts, |x| x * 3),
                expected,
                "{parts} parts"
            );
        }
        assert!(map_slice(&[] as &[u32], 2, |x| *x).is_empty());
        for parts in [0, 1, 2, 3, 7, 101, 500] {
            assert_eq!(
                map_owned(items.clone(), parts, |x| x * 3),
                expected,
                "{parts} parts, owned"
            );
        }
        assert!(map_owned(Vec::<u32>::new(), 2, |x| x).is_empty());
    }

    #[test]
    #[should_panic(expected = "piece 2")]
    fn a_panic_in_a_piece_reaches_the_caller() {
        map(vec![1, 2], |x| {
            if x == 2 {
                panic!("piece {x}");
            }
            x
        });
    }
}
