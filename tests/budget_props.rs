//! Properties of the budget ledger, refereed by the simulator's own quota: whatever the
//! arrival pattern and wherever the store's minute boundaries fall, a send the ledger admits
//! is never refused by the store, and no window ever holds more than `limit` sends.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bcproxy::budget::ledger::Ledger;
use bcproxy::sim::quota::Quota;
use proptest::prelude::*;
use tokio::time::Instant;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Legacy: rolling hour in one-minute steps the proxy cannot see.
    #[test]
    fn admitted_sends_never_exceed_the_rolling_window(
        limit in 1u64..40,
        window_ms in 600u64..120_000,
        phase_ms in 0u64..120_000,
        gaps in prop::collection::vec(0u64..5_000, 1..400),
        delay_permille in 0u64..1000,
    ) {
        let window = Duration::from_millis(window_ms);
        let step = window / 60;
        // The store sees a send a little later than the proxy makes it (less than a step).
        let delay = step.mul_f64(delay_permille as f64 / 1000.0);
        let start = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(phase_ms);
        let mut ledger = Ledger::rolling(limit, window);
        let mut referee = Quota::new(limit, window);
        let mut admitted: Vec<Duration> = Vec::new();
        let mut offset = Duration::ZERO;
        for gap in gaps {
            offset += Duration::from_millis(gap);
            let now = start + offset;
            if ledger.left(now) > 0 {
                ledger.record(now);
                admitted.push(offset);
                let seen: SystemTime = wall + offset + delay;
                prop_assert!(referee.take(seen, 1).is_some(), "the store refused a send the ledger admitted at {offset:?}");
            }
        }
        for (i, &t) in admitted.iter().enumerate() {
            let in_window = admitted[i..].iter().take_while(|&&u| u < t + window).count() as u64;
            prop_assert!(in_window <= limit);
        }
    }

    /// OAuth: the store's fixed window, as its headers state it.
    #[test]
    fn admitted_sends_never_exceed_the_fixed_window(
        limit in 1u64..40,
        window_ms in 100u64..30_000,
        phase_ms in 0u64..30_000,
        gaps in prop::collection::vec(0u64..2_000, 1..400),
    ) {
        let window = Duration::from_millis(window_ms);
        let start = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(phase_ms);
        let mut referee = Quota::fixed(limit, window);
        // The first answer tells the proxy when the store's window resets.
        let reset = referee.until_step_end(wall);
        let mut ledger = Ledger::fixed(limit, window, start);
        ledger.sync_fixed(limit, window, start + reset);
        let mut offset = Duration::ZERO;
        for gap in gaps {
            offset += Duration::from_millis(gap);
            let now = start + offset;
            if ledger.left(now) > 0 {
                ledger.record(now);
                prop_assert!(referee.take(wall + offset, 1).is_some(), "refused at {offset:?}");
            }
        }
    }
}
