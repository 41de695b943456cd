//! One partition's worker: batches of what has already arrived, applied in
//! one transaction each (the inbox INSERT sorts new events from
//! duplicates), one message at a time after a failed batch, retried in
//! place on database errors, dead-lettered when invalid.

use super::ownership::WorkerClaim;
use super::{Delivery, HandleError, Handler, Inbound, InboxConsumer, InboxEvent};
use crate::backoff::Backoff;
use crate::outbox;
use crate::{CallClient, dead_letter, headers};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

/// What one transaction did.
struct Applied {
    new: usize,
    duplicates: usize,
}

impl<H: Handler> InboxConsumer<H> {
    /// One partition's worker: batches of what has already arrived, applied
    /// in order; the offset is stored after each batch's commit.
    pub(super) async fn work(
        self: Arc<Self>,
        claim: WorkerClaim,
        mut messages: mpsc::Receiver<OwnedMessage>,
    ) {
        let partition = claim.partition;
        let stop = claim.stop.clone();
        loop {
            let first = tokio::select! {
                biased;
                // What is queued is dropped: the next owner reads it again.
                _ = stop.cancelled() => return,
                m = messages.recv() => match m {
                    Some(m) => m,
                    None => return,
                },
            };
            let mut batch = vec![first];
            while batch.len() < self.config.batch_size {
                match messages.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            // Past the grace after a revoke, the batch is abandoned: its
            // statement is cancelled and its transaction rolled back (see
            // `attempt`), and the next owner applies it. Had its commit
            // already gone out, the next owner's inbox skips the events.
            let grace = self.config.revoke_timeout / 2;
            let abandon = async {
                stop.cancelled().await;
                tokio::time::sleep(grace).await;
            };
            let applied = tokio::select! {
                applied = self.apply(&batch, &stop) => applied,
                _ = abandon => {
                    tracing::warn!(partition, size = batch.len(), "batch abandoned on revoke");
                    false
                }
            };
            if !applied {
                return;
            }
            if let Some(last) = batch.last() {
                let stored = self.ownership.store_if_owned(&claim, || {
                    self.consumer
                        .store_offset(&self.topic, partition, last.offset())
                });
                match stored {
                    Some(Ok(())) => {
                        if let Ok(mut applied) = self.applied.lock() {
                            applied.insert(partition, last.offset());
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, partition, "cannot store offset");
                    }
                    None => {
                        tracing::info!(partition, "partition revoked: offset not stored");
                        return;
                    }
                }
            }
        }
    }

    /// Applies a batch in one transaction, or else one message at a time.
    /// `false` means shutdown interrupted the retries: store no offset.
    async fn apply(&self, batch: &[OwnedMessage], shutdown: &CancellationToken) -> bool {
        if batch.len() > 1 {
            match self.attempt(batch).await {
                Ok(applied) => {
                    self.count(&applied);
                    return true;
                }
                Err(e) => {
                    metrics::counter!("shop_inbox_batch_fallbacks_total", "topic" => self.topic.clone()).increment(1);
                    tracing::warn!(error = %e, size = batch.len(), "batch failed, applying its messages one at a time");
                }
            }
        }
        for message in batch {
            if !self.process(message, shutdown).await {
                return false;
            }
        }
        true
    }

    fn count(&self, applied: &Applied) {
        metrics::counter!("shop_inbox_applied_total", "topic" => self.topic.clone())
            .increment(applied.new as u64);
        if applied.duplicates > 0 {
            metrics::counter!("shop_inbox_duplicates_total", "topic" => self.topic.clone())
                .increment(applied.duplicates as u64);
            tracing::info!(topic = %self.topic, duplicates = applied.duplicates, "duplicate events skipped");
        }
    }

    /// Applies or parks one message, retrying in place.
    async fn process(&self, message: &OwnedMessage, shutdown: &CancellationToken) -> bool {
        let mut backoff = Backoff::new(self.config.retry_min, self.config.retry_max);
        let mut permanent_failures = 0;
        loop {
            match self.attempt(std::slice::from_ref(message)).await {
                Ok(applied) => {
                    self.count(&applied);
                    return true;
                }
                Err(HandleError::Transient(e)) => {
                    metrics::counter!("shop_inbox_retries_total", "kind" => "transient")
                        .increment(1);
                    tracing::warn!(error = %e, offset = message.offset(), "transient failure, retrying in place");
                }
                Err(HandleError::Permanent(e)) => {
                    metrics::counter!("shop_inbox_retries_total", "kind" => "permanent")
                        .increment(1);
                    permanent_failures += 1;
                    tracing::warn!(error = %e, attempt = permanent_failures, offset = message.offset(), "event failed");
                    if permanent_failures >= self.config.max_attempts {
                        match dead_letter::park(&self.pool, message, &e, permanent_failures).await {
                            Ok(()) => return true,
                            Err(db) => {
                                tracing::warn!(error = %db, "cannot park dead letter, retrying")
                            }
                        }
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// One transaction: record the batch's event ids, apply the new events,
    /// enqueue the handler's events, commit; then wake the relay.
    ///
    /// A worker that abandons the batch drops this future: the connection's
    /// [`CallClient`] guard then cancels the statement in flight and discards
    /// the connection, so the transaction ends at once and its inbox rows
    /// no longer hold up the partition's new owner.
    async fn attempt(&self, batch: &[OwnedMessage]) -> Result<Applied, HandleError> {
        let mut client = CallClient::get(&self.pool).await?;
        let applied = self
            .attempt_on(&mut client, batch)
            .instrument(batch_span(batch))
            .await;
        client.release();
        applied
    }

    async fn attempt_on(
        &self,
        client: &mut deadpool_postgres::Client,
        batch: &[OwnedMessage],
    ) -> Result<Applied, HandleError> {
        let mut decoded = Vec::with_capacity(batch.len());
        for message in batch {
            decoded.push(decode::<H>(message)?);
        }
        let ids: Vec<Uuid> = decoded.iter().map(|(id, _)| *id).collect();
        let topics: Vec<&str> = decoded
            .iter()
            .map(|(_, e)| e.delivery.topic.as_str())
            .collect();
        let partitions: Vec<i32> = decoded.iter().map(|(_, e)| e.delivery.partition).collect();
        let offsets: Vec<i64> = decoded.iter().map(|(_, e)| e.delivery.offset).collect();

        let tx = client.transaction().await?;
        let record = tx.prepare_cached(RECORD).await?;
        let fresh: HashSet<Uuid> = tx
            .query(&record, &[&ids, &topics, &partitions, &offsets])
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        let mut first_time = HashSet::new();
        let (new, applying): (Vec<Inbound<H::Event>>, Vec<tracing::Span>) = decoded
            .into_iter()
            .filter(|(id, _)| fresh.contains(id) && first_time.insert(*id))
            .map(|(id, inbound)| traced(id, inbound))
            .unzip();
        let applied = Applied {
            new: new.len(),
            duplicates: batch.len() - new.len(),
        };
        let events = if new.is_empty() {
            Vec::new()
        } else {
            self.handler.handle(&tx, new).await?
        };
        outbox::enqueue_all(&tx, &events).await?;
        tx.commit().await?;
        drop(applying); // each new message's span ends with the commit
        if !events.is_empty() {
            self.relay.wake();
        }
        Ok(applied)
    }
}

/// The CONSUMER span of one batch (`<topic> process`), linked to the context
/// of each message in it: a batch mixes many orders' traces, so it is a
/// root of its own, and each message's `apply` span is linked back to it.
fn batch_span(batch: &[OwnedMessage]) -> tracing::Span {
    let Some(first) = batch.first().filter(|_| shop_runtime::traces::enabled()) else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        "process",
        otel.name = %format_args!("{} process", first.topic()),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = first.topic(),
        messaging.destination.partition.id = first.partition(),
        messaging.batch.message_count = batch.len(),
    );
    for message in batch {
        if let Some(traceparent) = headers::get(message, headers::TRACEPARENT) {
            shop_runtime::traces::add_link(&span, &traceparent);
        }
    }
    span
}

/// A new message's `apply` span: a child of the message's context (so the
/// order's trace goes on through this service), linked to the batch's span
/// (the current one), open until the batch commits. The message's delivery
/// then carries this span's traceparent for the events written in response.
fn traced<E: InboxEvent>(event_id: Uuid, mut inbound: Inbound<E>) -> (Inbound<E>, tracing::Span) {
    let span = shop_runtime::traces::when_on(|| {
        tracing::info_span!(
            "apply",
            otel.name = %format_args!("{} apply", inbound.delivery.topic),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.destination.name = %inbound.delivery.topic,
            messaging.message.id = %event_id,
            event_id = %event_id,
            order_id = inbound.event.order_id(),
        )
    });
    if let Some(batch) = shop_runtime::traces::traceparent_of(&tracing::Span::current()) {
        shop_runtime::traces::add_link(&span, &batch);
    }
    shop_runtime::traces::set_parent(&span, inbound.delivery.traceparent.as_deref());
    inbound.delivery.traceparent = Some(match shop_runtime::traces::traceparent_of(&span) {
        Some(own) => own,
        None => headers::child_of(inbound.delivery.traceparent.as_deref()),
    });
    (inbound, span)
}

/// Records a batch's event ids; returns the ones not seen before.
const RECORD: &str = "INSERT INTO inbox (event_id, topic, partition, \"offset\")
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::bigint[])
     ON CONFLICT (event_id) DO NOTHING
     RETURNING event_id";

/// The message's event and id; anything wrong with it is permanent.
fn decode<H: Handler>(message: &OwnedMessage) -> Result<(Uuid, Inbound<H::Event>), HandleError> {
    let kind = headers::get(message, headers::EVENT_TYPE);
    let event = H::Event::decode(kind.as_deref(), message.payload().unwrap_or_default())
        .map_err(HandleError::Permanent)?;
    let event_id = event
        .event_id()
        .ok_or_else(|| HandleError::Permanent("event has no valid event_id".to_owned()))?;
    let delivery = Delivery {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        traceparent: headers::get(message, headers::TRACEPARENT),
    };
    Ok((event_id, Inbound { event, delivery }))
}
