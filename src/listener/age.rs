//! Maximum connection age: a connection older than its (jittered) age is
//! asked to finish gracefully — HTTP/2 GOAWAY, so the client opens a new
//! connection for new calls while the streams already open run to their end;
//! HTTP/1.1 closes after the response in flight. That is what spreads
//! long-lived gRPC connections over replicas behind a per-connection balancer
//! (a Kubernetes ClusterIP Service).
//!
//! Kept apart from the accept loop: the loop decides *whether* a connection
//! has an age; this decides *when* it is told to go and how long it may stay.

use std::{pin::Pin, time::Duration};

use hyper_util::server::graceful::Watcher;
use rand::Rng;
use tokio::sync::watch;

use crate::config::ConnectionAge;

/// Ages are spread by ±10 % so connections opened together (a client pool
/// after a rollout) do not all reconnect at the same instant.
const JITTER: f64 = 0.1;

fn jittered(max: Duration) -> Duration {
    let factor = rand::thread_rng().gen_range((1.0 - JITTER)..=(1.0 + JITTER));
    max.mul_f64(factor)
}

/// Drives `conn` to its end. `finish` asks it to finish gracefully; it is
/// called once, when the connection reaches its age or when the process
/// drains (`stop`), whichever comes first. After the age, in-flight requests
/// get `age.grace` (unbounded when `None`); a process drain is bounded by the
/// shutdown grace period instead. `watcher` is held to the end, so the
/// listener's drain waits for this connection as for any other.
pub(super) async fn serve<C, E>(
    conn: C,
    finish: fn(Pin<&mut C>),
    age: ConnectionAge,
    watcher: Watcher,
    mut stop: watch::Receiver<bool>,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let _counted = watcher;
    let mut conn = std::pin::pin!(conn);
    let aged = tokio::select! {
        done = conn.as_mut() => return done,
        _ = super::stopped(&mut stop) => false,
        _ = tokio::time::sleep(jittered(age.max)) => true,
    };
    finish(conn.as_mut());
    if !aged {
        return conn.await;
    }
    tracing::debug!("connection reached its maximum age: asked to finish (GOAWAY)");
    let Some(grace) = age.grace else {
        return conn.await;
    };
    let in_grace = tokio::time::timeout(grace, conn.as_mut());
    tokio::select! {
        done = in_grace => match done {
            Ok(done) => done,
            Err(_) => {
                tracing::debug!("connection still busy after its maximum age grace: closed");
                Ok(())
            }
        },
        // A drain that starts during the grace keeps its own bound.
        _ = super::stopped(&mut stop) => conn.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let max = Duration::from_secs(100);
        for _ in 0..1000 {
            let d = jittered(max);
            assert!(
                d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
                "{d:?}"
            );
        }
    }
}
