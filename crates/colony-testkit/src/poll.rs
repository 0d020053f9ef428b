//! Waiting for a condition by polling, never by a fixed sleep.

use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_millis(10);

/// Evaluate `check` until it returns true or `deadline` has passed; returns whether
/// it became true. The deadline bounds a liveness wait, it is not a speed claim.
pub async fn eventually(deadline: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let until = Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
