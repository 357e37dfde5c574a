//! The memory that image decoders in this process hold at once.
//!
//! Each decode works out from the file's header what its buffers will take (for a JPEG,
//! libjpeg's coefficient buffers as well as the pixels) and reserves that much here before
//! allocating it: more than the limit alone is refused, and a decode that would push the
//! total over the limit waits until others finish. So N workers decoding N large files at
//! once stay within one limit instead of N. A holder never waits for anything while it
//! holds a reservation, so waiting cannot deadlock.

use std::sync::{Condvar, Mutex, PoisonError};

/// Bytes reserved by decodes in progress.
static HELD: Mutex<u64> = Mutex::new(0);
/// Signalled whenever a reservation shrinks or ends.
static RELEASED: Condvar = Condvar::new();

/// Bytes reserved for one decode, given back when dropped.
#[derive(Debug)]
pub(super) struct Grant(u64);

/// Reserves `need` bytes of a process-wide total of `limit`, waiting while other decodes
/// hold too much of it; `None` when `need` alone is over `limit`.
pub(super) fn reserve(need: u64, limit: u64) -> Option<Grant> {
    if need > limit {
        return None;
    }
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    // With nothing held, anything up to the limit goes, so a waiter always gets its turn.
    while *held > 0 && held.saturating_add(need) > limit {
        held = RELEASED.wait(held).unwrap_or_else(PoisonError::into_inner);
    }
    *held += need;
    Some(Grant(need))
}

impl Grant {
    /// Keeps only `bytes` of the reservation (what is still allocated once the decoder's
    /// own buffers are freed).
    pub(super) fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.0 {
            give_back(self.0 - bytes);
            self.0 = bytes;
        }
    }

    /// The bytes reserved.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> u64 {
        self.0
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        give_back(self.0);
    }
}

fn give_back(bytes: u64) {
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    *held = held.saturating_sub(bytes);
    RELEASED.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn reservations_share_one_limit_and_wait_their_turn() {
        // Other tests decode in this process too, so this test uses a limit far above
        // anything they reserve and checks its own peak.
        const LIMIT: u64 = 1 << 50;
        const EACH: u64 = LIMIT / 3;
        assert!(
            reserve(LIMIT + 1, LIMIT).is_none(),
            "more than the limit alone"
        );
        let inside = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (inside, peak) = (inside.clone(), peak.clone());
                std::thread::spawn(move || {
                    let grant = reserve(EACH, LIMIT).unwrap();
                    let now = inside.fetch_add(grant.bytes(), Ordering::SeqCst) + grant.bytes();
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    inside.fetch_sub(grant.bytes(), Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= LIMIT, "{peak} over {LIMIT}");
        assert!(peak >= 2 * EACH, "two fit at once: {peak}");
    }

    #[test]
    fn shrinking_gives_back_the_difference() {
        const LIMIT: u64 = 1 << 52;
        let mut a = reserve(LIMIT, LIMIT).unwrap();
        a.shrink_to(LIMIT / 2);
        assert_eq!(a.bytes(), LIMIT / 2);
        let b = std::thread::spawn(|| reserve(LIMIT / 2, LIMIT).map(|g| g.bytes()));
        assert_eq!(b.join().unwrap(), Some(LIMIT / 2));
    }
}
