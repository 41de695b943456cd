//! `/api/v1/orders`: create, list, read, watch, cancel and refund orders
//! (orders service).

use super::AppState;
use crate::auth::{AuthError, STREAM_TTL};
use crate::dto::{
    CreateOrder, EventsQuery, ListOrders, Order, OrderEvent, OrderPage, OrderStatus, StreamToken,
};
use crate::extract::{
    ApiJson, ApiQuery, Caller, IdempotencyKeyHeader, bearer, invalid_body, invalid_param,
};
use crate::openapi::responses;
use crate::problem::{ApiError, Problem};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use futures::StreamExt;
use shop_proto::error_code::ErrorCode;
use shop_proto::orders as pb;
use shop_proto::values::{Amount, Description, OrderId, PageSize, UserId};
use std::convert::Infallible;

fn order(o: Option<pb::Order>) -> Result<Order, ApiError> {
    o.map(Order::from)
        .ok_or_else(|| ApiError::from_grpc(&tonic::Status::internal("response without order")))
}

/// Create an order; its payment runs asynchronously.
#[utoipa::path(
    post, path = "/api/v1/orders", tag = "orders",
    security(("bearer" = [])),
    request_body = CreateOrder,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[ -~]+$", description = "Scoped per user: the same key with the same body returns the same order; with another body it is 422 `IDEMPOTENCY_KEY_REUSED`")),
    responses(
        (status = 202, description = "Order accepted in status NEW; watch it at `/api/v1/orders/{order_id}/events`", body = Order,
            headers(("Location" = String, description = "URL of the order")),
            links(
                ("GetOrder" = (operation_id = "get_order", parameters(("order_id" = "$response.body#/order_id")))),
                ("OrderEvents" = (operation_id = "order_events", parameters(("order_id" = "$response.body#/order_id")))),
                ("ListOrders" = (operation_id = "list_orders", parameters(("user_id" = "$response.body#/user_id")))),
            )),
        (status = 400, description = "Malformed JSON or Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`INVALID_AMOUNT`, `IDEMPOTENCY_KEY_REUSED` or another invalid field", body = Problem, content_type = "application/problem+json"),
        responses::Unauthenticated, responses::Forbidden, responses::RateLimited, responses::OrdersUpstream, responses::Timeout,
    )
)]
pub async fn create_order(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKeyHeader,
    ApiJson(body): ApiJson<CreateOrder>,
) -> Result<(StatusCode, [(header::HeaderName, String); 1], Json<Order>), ApiError> {
    let user = caller.or_named(body.user_id.as_deref(), invalid_body)?;
    let amount = Amount::try_from(body.amount).map_err(invalid_body)?;
    let description = Description::parse(&body.description).map_err(invalid_body)?;
    let response = state
        .upstreams
        .orders
        .clone()
        .create_order(state.upstreams.request(pb::CreateOrderRequest {
            user_id: user.to_string(),
            amount: amount.get(),
            description: description.as_str().to_owned(),
            idempotency_key: key.as_field(),
        }))
        .await
        .map_err(ApiError::from_write)?;
    let order = order(response.into_inner().order)?;
    let location = format!("/api/v1/orders/{}", order.order_id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(order),
    ))
}

/// The user's orders, newest first, one page at a time.
#[utoipa::path(
    get, path = "/api/v1/orders", tag = "orders",
    security(("bearer" = [])),
    params(ListOrders),
    responses(
        (status = 200, description = "One page", body = OrderPage),
        (status = 400, description = "Bad `user_id`, `limit` or `cursor`, or an unknown parameter", body = Problem, content_type = "application/problem+json"),
        responses::Unauthenticated, responses::Forbidden, responses::OrdersUpstream, responses::Timeout,
    )
)]
pub async fn list_orders(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListOrders>,
) -> Result<Json<OrderPage>, ApiError> {
    let user = caller.or_named(query.user_id.as_deref(), invalid_param)?;
    // A cursor is an order id; an empty one is not "no cursor".
    if let Some(cursor) = &query.cursor {
        OrderId::parse(cursor).map_err(invalid_param)?;
    }
    let limit = PageSize::parse(query.limit).map_err(invalid_param)?;
    let response = state
        .upstreams
        .orders
        .clone()
        .list_orders(state.upstreams.request(pb::ListOrdersRequest {
            user_id: user.to_string(),
            limit: limit.get(),
            cursor: query.cursor.unwrap_or_default(),
        }))
        .await?
        .into_inner();
    Ok(Json(OrderPage {
        items: response.orders.into_iter().map(Order::from).collect(),
        next_cursor: Some(response.next_cursor).filter(|c| !c.is_empty()),
    }))
}

/// One order with its status.
#[utoipa::path(
    get, path = "/api/v1/orders/{order_id}", tag = "orders",
    security(("bearer" = [])),
    params(("order_id" = String, Path, format = Uuid, description = "The order's id")),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 400, description = "`order_id` is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order (`ORDER_NOT_FOUND`)", body = Problem, content_type = "application/problem+json"),
        responses::Unauthenticated, responses::OrdersUpstream, responses::Timeout,
    )
)]
pub async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    Path(order_id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    let id = OrderId::parse(&order_id).map_err(invalid_param)?;
    Ok(Json(owned_order(&state, caller.0, id).await?))
}

/// The order, if `user` placed it; someone else's order is "not found",
/// so its existence is not revealed.
async fn owned_order(state: &AppState, user: UserId, id: OrderId) -> Result<Order, ApiError> {
    let response = state
        .upstreams
        .orders
        .clone()
        .get_order(state.upstreams.request(pb::GetOrderRequest {
            order_id: id.to_string(),
        }))
        .await?;
    let found = order(response.into_inner().order)?;
    if found.user_id == user.to_string() {
        Ok(found)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::OrderNotFound,
            format!("order {id} not found"),
        ))
    }
}

/// Cancel an order that is not final. An accepted cancel always wins: the
/// order ends `CANCELLED` with `cancel_reason` `CANCELLED_BY_USER` and the
/// customer pays nothing (a payment already taken is refunded).
#[utoipa::path(
    post, path = "/api/v1/orders/{order_id}/cancel", tag = "orders",
    security(("bearer" = [])),
    params(
        ("order_id" = String, Path, format = Uuid, description = "The order's id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[ -~]+$", description = "Accepted for uniform retries; a cancel is idempotent by itself: repeating it changes nothing"),
    ),
    responses(
        (status = 202, description = "Accepted: the order is `CANCELLING` (now or already) and will end `CANCELLED`; watch it at `/api/v1/orders/{order_id}/events`", body = Order,
            links(("OrderEvents" = (operation_id = "order_events", parameters(("order_id" = "$response.body#/order_id")))))),
        (status = 200, description = "The order was already `CANCELLED`: nothing changed", body = Order),
        (status = 400, description = "`order_id` is not a UUID, or a malformed Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order of yours (`ORDER_NOT_FOUND`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is `FINISHED`, `REFUNDING` or `REFUNDED` (`ORDER_NOT_CANCELLABLE`): ask for a refund instead", body = Problem, content_type = "application/problem+json"),
        responses::Unauthenticated, responses::RateLimited, responses::OrdersUpstream, responses::Timeout,
    )
)]
pub async fn cancel_order(
    State(state): State<AppState>,
    caller: Caller,
    _key: IdempotencyKeyHeader,
    Path(order_id): Path<String>,
) -> Result<(StatusCode, Json<Order>), ApiError> {
    let (order, _) = take_back(&state, caller, &order_id, TakeBack::Cancel).await?;
    // Accepted while the order is not final; a CANCELLED one is as it was.
    let status = if order.status == OrderStatus::Cancelled {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(order)))
}

/// Refund a `FINISHED` order: the amount is credited back exactly once and
/// the order ends `REFUNDED`.
#[utoipa::path(
    post, path = "/api/v1/orders/{order_id}/refund", tag = "orders",
    security(("bearer" = [])),
    params(
        ("order_id" = String, Path, format = Uuid, description = "The order's id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[ -~]+$", description = "Accepted for uniform retries; a refund is idempotent by itself: repeating it credits nothing more"),
    ),
    responses(
        (status = 202, description = "Accepted: the order is `REFUNDING` and will end `REFUNDED`; watch it at `/api/v1/orders/{order_id}/events`", body = Order,
            links(("OrderEvents" = (operation_id = "order_events", parameters(("order_id" = "$response.body#/order_id")))))),
        (status = 200, description = "The order was already `REFUNDING` or `REFUNDED`: nothing changed, nothing more is credited", body = Order),
        (status = 400, description = "`order_id` is not a UUID, or a malformed Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order of yours (`ORDER_NOT_FOUND`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is not `FINISHED` (`ORDER_NOT_REFUNDABLE`)", body = Problem, content_type = "application/problem+json"),
        responses::Unauthenticated, responses::RateLimited, responses::OrdersUpstream, responses::Timeout,
    )
)]
pub async fn refund_order(
    State(state): State<AppState>,
    caller: Caller,
    _key: IdempotencyKeyHeader,
    Path(order_id): Path<String>,
) -> Result<(StatusCode, Json<Order>), ApiError> {
    let (order, accepted) = take_back(&state, caller, &order_id, TakeBack::Refund).await?;
    let status = if accepted {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(order)))
}

/// Which way an order is taken back.
#[derive(Debug, Clone, Copy)]
enum TakeBack {
    Cancel,
    Refund,
}

/// Calls `CancelOrder` or `RefundOrder` as the caller; the order after the
/// call, and whether this call changed it.
async fn take_back(
    state: &AppState,
    caller: Caller,
    order_id: &str,
    how: TakeBack,
) -> Result<(Order, bool), ApiError> {
    let id = OrderId::parse(order_id).map_err(invalid_param)?;
    let (order_id, user_id) = (id.to_string(), caller.0.to_string());
    let mut orders = state.upstreams.orders.clone();
    let (found, accepted) = match how {
        TakeBack::Cancel => {
            let request = pb::CancelOrderRequest { order_id, user_id };
            let r = orders
                .cancel_order(state.upstreams.request(request))
                .await
                .map_err(ApiError::from_write)?
                .into_inner();
            (r.order, r.accepted)
        }
        TakeBack::Refund => {
            let request = pb::RefundOrderRequest { order_id, user_id };
            let r = orders
                .refund_order(state.upstreams.request(request))
                .await
                .map_err(ApiError::from_write)?
                .into_inner();
            (r.order, r.accepted)
        }
    };
    Ok((order(found)?, accepted))
}

/// A token that opens this order's live status for five minutes, for
/// clients that cannot send headers (a browser's EventSource): pass it as
/// `?access_token=` to `GET /api/v1/orders/{order_id}/events`.
#[utoipa::path(
    post, path = "/api/v1/orders/{order_id}/events-token", tag = "orders",
    security(("bearer" = [])),
    params(("order_id" = String, Path, format = Uuid, description = "The order's id")),
    responses(
        (status = 200, description = "The token and its lifetime in seconds", body = StreamToken),
        (status = 400, description = "`order_id` is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order of yours (`ORDER_NOT_FOUND`)", body = Problem, content_type = "application/problem+json"),
        responses::Unauthenticated, responses::RateLimited, responses::OrdersUpstream, responses::Timeout,
    )
)]
pub async fn events_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(order_id): Path<String>,
) -> Result<Json<StreamToken>, ApiError> {
    let id = OrderId::parse(&order_id).map_err(invalid_param)?;
    owned_order(&state, caller.0, id).await?;
    // HMAC signing with the gateway's own key cannot fail: a failure is a bug.
    let token = state.auth.issue_stream(caller.0, id).ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error",
        )
    })?;
    Ok(Json(StreamToken {
        token,
        expires_in: STREAM_TTL.as_secs(),
    }))
}

/// Live status as Server-Sent Events: an `order` event with the current state,
/// then one per change; the stream ends after a final status. Reconnecting
/// starts again with the current state.
#[utoipa::path(
    get, path = "/api/v1/orders/{order_id}/events", tag = "orders",
    security(("bearer" = [])),
    params(
        ("order_id" = String, Path, format = Uuid, description = "The order's id"),
        ("access_token" = Option<String>, Query, description = "For clients that cannot send an Authorization header (EventSource): a token from `POST /api/v1/orders/{order_id}/events-token`"),
    ),
    responses(
        (status = 200, description = "`text/event-stream` of `event: order` messages whose data is an Order (JSON), or a final `event: error` whose data is a Problem; keep-alive comments in between", content_type = "text/event-stream", body = OrderEvent,
            example = "event: order\ndata: {\"order_id\":\"01a20313-52c7-766a-a3c1-a455e1fec196\",\"status\":\"NEW\",...}\n\nevent: order\ndata: {\"order_id\":\"01a20313-52c7-766a-a3c1-a455e1fec196\",\"status\":\"FINISHED\",...}\n\n"),
        (status = 400, description = "`order_id` is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order (`ORDER_NOT_FOUND`)", body = Problem, content_type = "application/problem+json"),
        responses::Unauthenticated, responses::OrdersUpstream, responses::Timeout,
    )
)]
pub async fn order_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path(order_id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Who is asking comes first: without a valid token nothing else is said.
    let id = OrderId::parse(&order_id);
    let query = axum::extract::Query::<EventsQuery>::try_from_uri(&uri);
    let stream_token = query.as_ref().ok().and_then(|q| q.access_token.as_deref());
    let user = match (bearer(&headers), stream_token, &id) {
        (Some(token), _, _) => state.auth.user(token),
        (None, Some(token), Ok(id)) => state.auth.stream_user(token, *id),
        (None, Some(_), Err(_)) => Err(AuthError::Invalid),
        (None, None, _) => Err(AuthError::Missing),
    }
    .map_err(|e| ApiError::unauthenticated(e.to_string()))?;
    let id = id.map_err(invalid_param)?;
    // Unknown query parameters are refused, as everywhere.
    query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    owned_order(&state, user, id).await?;
    let changes = state
        .upstreams
        .orders_stream_client()
        .watch_order(pb::WatchOrderRequest {
            order_id: id.to_string(),
        })
        .await?
        .into_inner();
    let events = changes
        .map(|change| {
            let event = match change {
                Ok(msg) => order(msg.order).map(|o| Event::default().event("order").json_data(o)),
                Err(status) => Err(ApiError::from_grpc(&status)),
            };
            Ok(match event {
                Ok(Ok(event)) => event,
                Ok(Err(_)) => Event::default().event("error").data("cannot encode order"),
                Err(e) => Event::default()
                    .event("error")
                    .json_data(e.problem())
                    .unwrap_or_else(|_| Event::default().event("error")),
            })
        })
        .take_until(state.shutdown.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(state.sse_keepalive)))
}
