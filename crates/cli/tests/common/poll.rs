//! Waiting for a state through the API, with a deadline instead of a sleep standing in for
//! readiness (included with `#[path]` by the tests that poll).

use std::time::Duration;

use anyhow::{Result, bail};

/// Polls `check` every 100 ms until it yields a value, or fails after `timeout` naming `what`.
pub async fn poll<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
