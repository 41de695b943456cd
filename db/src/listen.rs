//! Postgres `LISTEN` on a dedicated connection, fanned out to any number of
//! subscribers. Reconnects with backoff; after every (re)connect it sends a
//! `Notification::Resync` so subscribers re-check what they may have missed.

use crate::backoff::Backoff;
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// A `NOTIFY channel, payload` from the database.
    Notify { channel: String, payload: String },
    /// Listening (re)started: notifications may have been missed.
    Resync,
}

/// A handle to the background listener.
#[derive(Debug, Clone)]
pub struct Listener {
    sender: broadcast::Sender<Notification>,
}

impl Listener {
    /// Starts listening on `channels` until `shutdown` is cancelled.
    pub fn spawn(url: &str, channels: &[&str], shutdown: CancellationToken) -> Self {
        let (sender, _) = broadcast::channel(1024);
        let listen_sql: String = channels
            .iter()
            .map(|c| format!("LISTEN \"{c}\";"))
            .collect();
        let task_sender = sender.clone();
        let url = url.to_owned();
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            while !shutdown.is_cancelled() {
                match listen_once(&url, &listen_sql, &task_sender, &shutdown, &mut backoff).await {
                    Ok(()) if shutdown.is_cancelled() => break,
                    Ok(()) => tracing::warn!("LISTEN connection closed, reconnecting"),
                    Err(e) => tracing::warn!(error = %e, "LISTEN connection lost, reconnecting"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        });
        Self { sender }
    }

    /// A new subscription; it sees notifications from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.sender.subscribe()
    }
}

/// One connection's life: `Ok` on shutdown or close, `Err` when it fails.
async fn listen_once(
    url: &str,
    listen_sql: &str,
    sender: &broadcast::Sender<Notification>,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listen = client.batch_execute(listen_sql);
    tokio::pin!(listen);
    // Drive the connection while LISTEN runs.
    loop {
        tokio::select! {
            r = &mut listen => { r?; break; }
            m = messages.next() => match m {
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
                Some(Ok(_)) => {}
            }
        }
    }
    backoff.reset();
    let _ = sender.send(Notification::Resync);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = messages.next() => match m {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let _ = sender.send(Notification::Notify {
                        channel: n.channel().to_owned(),
                        payload: n.payload().to_owned(),
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    }
}
