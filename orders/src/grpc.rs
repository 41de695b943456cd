//! The `shop.orders.v1.Orders` gRPC service, the edge of the orders service:
//! converts requests into checked values, calls the use cases in
//! [`crate::orders`] and [`crate::watch`], converts orders back to proto and
//! maps use-case errors to statuses, once.

use crate::domain::{CancelReason, NewOrder, Order, Status as OrderStatus};
use crate::orders::{self, OrderError};
use crate::watch::{self, Watchers};
use shop_db::gate::KeyGate;
use shop_db::outbox::RelayWake;
use shop_db::{CallClient, Pool};
use shop_proto::error_code::{ErrorCode, invalid_argument};
use shop_proto::orders as pb;
use shop_proto::time::to_timestamp;
use shop_proto::values::{Amount, Description, IdempotencyKey, OrderId, PageSize, UserId};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};

pub use pb::orders_server::OrdersServer;

/// The gRPC front of the order use cases.
#[derive(Debug, Clone)]
pub struct OrdersGrpc {
    /// The API's own pool ([`shop_db::pool::connect_for_api`]).
    api: Pool,
    /// Calls in flight per user.
    users: KeyGate<UserId>,
    relay: RelayWake,
    watchers: Watchers,
    requests_topic: String,
    /// How long after its creation an order's payment may be debited
    /// (`ORDERS_PAYMENT_TIMEOUT_MS` less the clock margin).
    payment_timeout: std::time::Duration,
    shutdown: CancellationToken,
}

impl OrdersGrpc {
    /// A service over the orders database's API pool, admitting
    /// `calls_per_user` writes at once per user; `relay` is woken after each
    /// new order commits, watchers end on `shutdown`.
    pub fn new(
        api: Pool,
        calls_per_user: usize,
        relay: RelayWake,
        watchers: Watchers,
        requests_topic: &str,
        payment_timeout: std::time::Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            api,
            users: KeyGate::new(calls_per_user),
            relay,
            watchers,
            requests_topic: requests_topic.to_owned(),
            payment_timeout,
            shutdown,
        }
    }
}

impl OrdersGrpc {
    /// A connection for one call (see [`CallClient`]).
    async fn client(&self) -> Result<CallClient, Status> {
        CallClient::get(&self.api)
            .await
            .map_err(|e| shop_db::DbError::from(e).to_status())
    }
}

type WatchStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::WatchOrderResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl pb::orders_server::Orders for OrdersGrpc {
    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        let new = new_order(request.into_inner())?;
        let _permit = self.users.enter(&new.user_id).await.ok_or_else(|| {
            ErrorCode::Unavailable.status(
                Code::Unavailable,
                format!(
                    "too many calls of user {} waiting, retry later",
                    new.user_id
                ),
            )
        })?;
        let client = self.client().await?;
        let created = orders::create(
            &*client,
            &self.relay,
            &self.requests_topic,
            self.payment_timeout,
            new,
        )
        .await;
        client.release();
        let order = created.map_err(status)?;
        Ok(Response::new(pb::CreateOrderResponse {
            order: Some(to_proto(order)),
        }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let id = OrderId::parse(&request.get_ref().order_id).map_err(|e| invalid_argument(&e))?;
        let client = self.client().await?;
        let found = orders::get(&*client, id).await;
        client.release();
        let order = found.map_err(status)?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(to_proto(order)),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let req = request.into_inner();
        let user = UserId::parse(&req.user_id).map_err(|e| invalid_argument(&e))?;
        let limit = PageSize::from_proto(req.limit).map_err(|e| invalid_argument(&e))?;
        let client = self.client().await?;
        let listed = orders::list(&*client, user, limit, &req.cursor).await;
        client.release();
        let (page, next) = listed.map_err(status)?;
        Ok(Response::new(pb::ListOrdersResponse {
            orders: page.into_iter().map(to_proto).collect(),
            next_cursor: next.unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let req = request.into_inner();
        let (id, user) = order_and_user(&req.order_id, &req.user_id)?;
        let taken = self.take_back(id, user, TakeBack::Cancel).await?;
        Ok(Response::new(pb::CancelOrderResponse {
            order: Some(to_proto(taken.order)),
            accepted: taken.accepted,
        }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn refund_order(
        &self,
        request: Request<pb::RefundOrderRequest>,
    ) -> Result<Response<pb::RefundOrderResponse>, Status> {
        let req = request.into_inner();
        let (id, user) = order_and_user(&req.order_id, &req.user_id)?;
        let taken = self.take_back(id, user, TakeBack::Refund).await?;
        Ok(Response::new(pb::RefundOrderResponse {
            order: Some(to_proto(taken.order)),
            accepted: taken.accepted,
        }))
    }

    type WatchOrderStream = WatchStream;

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn watch_order(
        &self,
        request: Request<pb::WatchOrderRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let id = OrderId::parse(&request.get_ref().order_id).map_err(|e| invalid_argument(&e))?;
        let changes = watch::watch(self.api.clone(), &self.watchers, id, self.shutdown.clone())
            .await
            .map_err(status)?;
        let stream = ReceiverStream::new(changes).map(|change| {
            change
                .map(|order| pb::WatchOrderResponse {
                    order: Some(to_proto(order)),
                })
                .map_err(status)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Which way an order is taken back.
#[derive(Debug, Clone, Copy)]
enum TakeBack {
    Cancel,
    Refund,
}

impl OrdersGrpc {
    /// Runs a cancel or refund in one transaction on an API connection,
    /// under the user's place in the gate; wakes the relay once it commits.
    async fn take_back(
        &self,
        id: OrderId,
        user: UserId,
        how: TakeBack,
    ) -> Result<orders::Taken, Status> {
        let _permit = self.users.enter(&user).await.ok_or_else(|| {
            ErrorCode::Unavailable.status(
                Code::Unavailable,
                format!("too many calls of user {user} waiting, retry later"),
            )
        })?;
        let mut client = self.client().await?;
        let taken = async {
            let tx = client.transaction().await?;
            let taken = match how {
                TakeBack::Cancel => orders::cancel(&tx, &self.requests_topic, id, user).await?,
                TakeBack::Refund => orders::refund(&tx, &self.requests_topic, id, user).await?,
            };
            tx.commit().await?;
            Ok::<_, OrderError>(taken)
        }
        .await;
        // A refusal (404, 409) or a rolled-back transaction leaves the
        // connection fit for the next call.
        client.release();
        let taken = taken.map_err(status)?;
        if taken.accepted {
            self.relay.wake();
        }
        let (kind, outcome) = match (how, taken.accepted) {
            (TakeBack::Cancel, true) => ("cancel", "accepted"),
            (TakeBack::Cancel, false) => ("cancel", "unchanged"),
            (TakeBack::Refund, true) => ("refund", "accepted"),
            (TakeBack::Refund, false) => ("refund", "unchanged"),
        };
        metrics::counter!("shop_order_take_back_requests_total", "kind" => kind, "outcome" => outcome)
            .increment(1);
        Ok(taken)
    }
}

fn order_and_user(order_id: &str, user_id: &str) -> Result<(OrderId, UserId), Status> {
    Ok((
        OrderId::parse(order_id).map_err(|e| invalid_argument(&e))?,
        UserId::parse(user_id).map_err(|e| invalid_argument(&e))?,
    ))
}

fn new_order(req: pb::CreateOrderRequest) -> Result<NewOrder, Status> {
    let invalid = |e| invalid_argument(&e);
    Ok(NewOrder {
        user_id: UserId::parse(&req.user_id).map_err(invalid)?,
        amount: Amount::try_from(req.amount).map_err(invalid)?,
        description: Description::parse(&req.description).map_err(invalid)?,
        idempotency_key: IdempotencyKey::parse_optional(&req.idempotency_key).map_err(invalid)?,
    })
}

/// The proto form of an order.
pub fn to_proto(order: Order) -> pb::Order {
    let reason_of = |reason| match reason {
        CancelReason::InsufficientFunds => pb::CancelReason::InsufficientFunds,
        CancelReason::AccountNotFound => pb::CancelReason::AccountNotFound,
        CancelReason::CancelledByUser => pb::CancelReason::CancelledByUser,
        CancelReason::Expired => pb::CancelReason::Expired,
    };
    let (status, reason) = match order.status {
        OrderStatus::New => (pb::OrderStatus::New, pb::CancelReason::Unspecified),
        OrderStatus::Finished => (pb::OrderStatus::Finished, pb::CancelReason::Unspecified),
        OrderStatus::Cancelled(r) => (pb::OrderStatus::Cancelled, reason_of(r)),
        OrderStatus::Cancelling(r) => (pb::OrderStatus::Cancelling, reason_of(r)),
        OrderStatus::Refunding => (pb::OrderStatus::Refunding, pb::CancelReason::Unspecified),
        OrderStatus::Refunded => (pb::OrderStatus::Refunded, pb::CancelReason::Unspecified),
    };
    pb::Order {
        order_id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        amount: order.amount,
        description: order.description,
        status: status.into(),
        cancel_reason: reason.into(),
        created_at: Some(to_timestamp(order.created_at)),
        updated_at: Some(to_timestamp(order.updated_at)),
    }
}

/// The one mapping from use-case errors to gRPC statuses.
pub fn status(e: OrderError) -> Status {
    match &e {
        OrderError::NotFound(_) => ErrorCode::OrderNotFound.status(Code::NotFound, e.to_string()),
        OrderError::IdempotencyKeyReused => {
            ErrorCode::IdempotencyKeyReused.status(Code::FailedPrecondition, e.to_string())
        }
        OrderError::NotCancellable(..) => {
            ErrorCode::OrderNotCancellable.status(Code::FailedPrecondition, e.to_string())
        }
        OrderError::NotRefundable(..) => {
            ErrorCode::OrderNotRefundable.status(Code::FailedPrecondition, e.to_string())
        }
        OrderError::BadCursor => {
            ErrorCode::ValidationFailed.status(Code::InvalidArgument, e.to_string())
        }
        OrderError::Db(db) => db.to_status(),
        OrderError::Corrupt(c) => {
            tracing::error!(error = %c, "corrupt order row");
            ErrorCode::Internal.status(Code::Internal, "internal error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_codes() {
        let id = OrderId::new();
        let cases = [
            (
                OrderError::NotFound(id),
                Code::NotFound,
                ErrorCode::OrderNotFound,
            ),
            (
                OrderError::IdempotencyKeyReused,
                Code::FailedPrecondition,
                ErrorCode::IdempotencyKeyReused,
            ),
            (
                OrderError::BadCursor,
                Code::InvalidArgument,
                ErrorCode::ValidationFailed,
            ),
            (
                OrderError::NotCancellable(id, "FINISHED"),
                Code::FailedPrecondition,
                ErrorCode::OrderNotCancellable,
            ),
            (
                OrderError::NotRefundable(id, "NEW"),
                Code::FailedPrecondition,
                ErrorCode::OrderNotRefundable,
            ),
        ];
        for (err, code, error_code) in cases {
            let s = status(err);
            assert_eq!(s.code(), code);
            assert_eq!(ErrorCode::of(&s), Some(error_code));
        }
    }

    #[test]
    fn corrupt_rows_do_not_leak() {
        let s = status(OrderError::Corrupt(
            crate::persistence::RowError::BadStatus("X".into()),
        ));
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(s.message(), "internal error");
    }
}
