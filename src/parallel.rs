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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_order_of_the_inputs() {
        assert_eq!(map(vec![3, 1, 2], |x| x * 10), vec![30, 10, 20]);
        assert!(map(Vec::<u8>::new(), |x| x).is_empty());
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
