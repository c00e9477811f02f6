//! Version 7 UUIDs as `uuid::Uuid::now_v7` (uuid 1.29) makes them, for a fraction of its cost.
//!
//! The same guarantees and the same layout as `now_v7` with its process-wide `ContextV7`:
//! - 48 bits of Unix milliseconds from the system clock, then version 7, then a 42-bit
//!   counter (its top 12 bits in `rand_a`, the other 30 after the variant bits), then 32
//!   random bits.
//! - Every id made in the process sorts above every id made before it, on any thread: one
//!   lock keeps the last millisecond and counter. A new millisecond starts the counter at a
//!   random 41-bit value (the first id of a millisecond has 73 random bits, so ids of two
//!   nodes do not collide); within a millisecond it counts up by one. Should it pass 42
//!   bits, or the clock step back, the last millisecond goes on (one past it on an
//!   overflow) until the clock catches up.
//!
//! What is cheaper: no `u128` divisions, the clock read without `Duration` arithmetic, and
//! the random bits from a per-thread generator (wyrand, seeded from the OS) instead of
//! `rand`'s `ThreadRng` (ChaCha). Nothing reads these ids as secrets (a v7 id shows when it
//! was made anyway).
use std::cell::Cell;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

/// The counter's width, as `ContextV7`'s.
const COUNTER_BITS: u32 = 42;
const MAX_COUNTER: u64 = (1 << COUNTER_BITS) - 1;
/// A new millisecond's counter: 41 random bits, the top bit left clear so that at least
/// 2^41 ids fit in a millisecond before the counter overflows.
const RESEED_MASK: u64 = MAX_COUNTER >> 1;
/// The millisecond field's width.
const MILLIS_MASK: u64 = (1 << 48) - 1;

/// The millisecond and counter of the last id made in the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Last {
    millis: u64,
    counter: u64,
}

static LAST: Mutex<Last> = Mutex::new(Last {
    millis: 0,
    counter: 0,
});

/// A new id: see the module's text.
pub(super) fn now() -> Uuid {
    let millis = unix_millis();
    let tail = random();
    let (millis, counter) = {
        let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
        *last = advance(*last, millis, random);
        (last.millis, last.counter)
    };
    encode(millis, counter, tail as u32)
}

/// The system clock's Unix milliseconds (0 before 1970), as `SystemTime::now` reads them
/// but without its `Duration` arithmetic (a third of this function's cost).
fn unix_millis() -> u64 {
    #[cfg(unix)]
    {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a live `timespec` for the call to write to.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &raw mut now) } == 0 {
            let (Ok(secs), Ok(nanos)) = (u64::try_from(now.tv_sec), u64::try_from(now.tv_nsec))
            else {
                return 0;
            };
            return secs * 1000 + nanos / 1_000_000;
        }
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() * 1000 + u64::from(d.subsec_millis()))
}

/// The millisecond and counter that follow `last` when the clock reads `millis`: always
/// above `last`. `seed` is called for a new millisecond's counter.
fn advance(last: Last, millis: u64, seed: impl FnOnce() -> u64) -> Last {
    if millis > last.millis {
        return Last {
            millis,
            counter: seed() & RESEED_MASK,
        };
    }
    if last.counter < MAX_COUNTER {
        return Last {
            millis: last.millis,
            counter: last.counter + 1,
        };
    }
    Last {
        millis: last.millis + 1,
        counter: seed() & RESEED_MASK,
    }
}

/// The id of `millis` and `counter` with `tail` as its last 32 bits, laid out as uuid's
/// `new_v7` lays out a 42-bit counter.
fn encode(millis: u64, counter: u64, tail: u32) -> Uuid {
    let high = ((millis & MILLIS_MASK) << 16) | (0x7 << 12) | (counter >> 30);
    let low = (0b10 << 62) | ((counter & ((1 << 30) - 1)) << 32) | u64::from(tail);
    Uuid::from_u64_pair(high, low)
}

std::thread_local! {
    /// This thread's wyrand state; 0 until seeded.
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// 64 random bits from this thread's generator (wyrand, as `fastrand`'s), seeded from the
/// OS on first use.
fn random() -> u64 {
    RNG.with(|state| {
        let mut s = state.get();
        if s == 0 {
            s = os_seed();
        }
        s = s.wrapping_add(0x2d35_8dcc_aa6c_78a5);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0x8bb8_4b93_962e_acc9);
        (t as u64) ^ ((t >> 64) as u64)
    })
}

#[cold]
fn os_seed() -> u64 {
    // As uuid's own generator, no id without randomness from the OS.
    getrandom::u64().unwrap_or_else(|error| panic!("no random bytes from the OS for ids: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_version_7_the_rfc_variant_and_uuids_layout() {
        let id = now();
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        // The same bits as uuid's `new_v7` for the same millisecond and 42-bit counter
        // (all but the 32 random bits at the end).
        for (millis, counter) in [
            (1_645_557_742_000u64, 0u64),
            (1_645_557_742_001, MAX_COUNTER),
            (1_765_000_000_123, 0x2AA_AAAA_AAAA),
            (1, 0x155_5555_5555),
        ] {
            let ts = uuid::Timestamp::from_unix_time(
                millis / 1000,
                u32::try_from(millis % 1000).unwrap() * 1_000_000,
                u128::from(counter),
                42,
            );
            let theirs = Uuid::new_v7(ts).as_u128() >> 32;
            let ours = encode(millis, counter, 0xFFFF_FFFF);
            assert_eq!(ours.as_u128() >> 32, theirs, "{millis} {counter:x}");
            assert_eq!(ours.as_u128() as u32, 0xFFFF_FFFF);
            assert_eq!(ours.get_version_num(), 7);
            assert_eq!(ours.get_variant(), uuid::Variant::RFC4122);
            let (secs, nanos) = ours.get_timestamp().unwrap().to_unix();
            assert_eq!(secs * 1000 + u64::from(nanos / 1_000_000), millis);
        }
    }

    #[test]
    fn the_counter_reseeds_each_millisecond_counts_up_within_one_and_never_goes_back() {
        let last = Last {
            millis: 100,
            counter: 7,
        };
        let seed = || u64::MAX;
        // A new millisecond: a fresh 41-bit counter.
        assert_eq!(
            advance(last, 101, seed),
            Last {
                millis: 101,
                counter: RESEED_MASK
            }
        );
        // The same millisecond, or the clock stepped back: one up, in the last millisecond.
        for millis in [100, 99, 0] {
            assert_eq!(
                advance(last, millis, || panic!("no reseed")),
                Last {
                    millis: 100,
                    counter: 8
                }
            );
        }
        // A full counter: the next millisecond, reseeded.
        let full = Last {
            millis: 100,
            counter: MAX_COUNTER,
        };
        assert_eq!(
            advance(full, 100, || 5),
            Last {
                millis: 101,
                counter: 5
            }
        );
        assert!(encode(101, 5, 0) > encode(100, MAX_COUNTER, u32::MAX));
    }

    #[test]
    fn ids_made_fast_on_several_threads_strictly_increase() {
        use std::sync::Arc;
        // Taken under one lock, the ids of all threads form one sequence: it must rise.
        let order = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let order = Arc::clone(&order);
                std::thread::spawn(move || {
                    let mut own = Vec::with_capacity(20_000);
                    for i in 0..20_000 {
                        if i % 4 == 0 {
                            let mut order = order.lock().unwrap();
                            order.push(now());
                        } else {
                            own.push(now());
                        }
                    }
                    own
                })
            })
            .collect();
        let mut all = std::collections::HashSet::new();
        for thread in threads {
            let own = thread.join().unwrap();
            assert!(own.windows(2).all(|w| w[0] < w[1]), "one thread's ids rise");
            all.extend(own);
        }
        let order = order.lock().unwrap();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "ids across threads rise"
        );
        all.extend(order.iter().copied());
        assert_eq!(all.len(), 80_000, "no id twice");
    }

    #[test]
    fn an_id_carries_the_millisecond_it_was_made_in() {
        let ms = || {
            u64::try_from(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_millis(),
            )
            .unwrap()
        };
        for _ in 0..100 {
            let before = ms();
            let id = now();
            let after = ms();
            let made = u64::try_from(
                super::super::InvocationId(id)
                    .made_at()
                    .unwrap()
                    .timestamp_millis(),
            )
            .unwrap();
            assert!(before <= made && made <= after, "{before} {made} {after}");
        }
    }

    #[test]
    fn threads_draw_different_random_bits() {
        let here = (random(), random());
        let there = std::thread::spawn(|| (random(), random())).join().unwrap();
        assert_ne!(here, there);
        assert_ne!(here.0, here.1);
    }
}
