//! The status trigger: one UPDATE that changes many statuses announces
//! every changed order once, in notifications of at most 200 ids, and names
//! no order whose status did not change.

use crate::helpers::spawn_app;
use futures::StreamExt;
use shop_orders::persistence::STATUS_CHANNEL;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, NoTls};

#[tokio::test]
async fn one_update_of_many_statuses_notifies_each_changed_order_once_in_chunks() {
    let app = spawn_app().await;
    let (listening, mut connection) = tokio_postgres::connect(&app.db.config().url, NoTls)
        .await
        .expect("listen connection");
    let (notifications, mut received) = futures::channel::mpsc::unbounded();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ =
                    notifications.unbounded_send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    listening
        .batch_execute(&format!("LISTEN \"{STATUS_CHANNEL}\""))
        .await
        .expect("LISTEN");

    let db = app.pool.get().await.expect("connection");
    db.batch_execute(
        "INSERT INTO orders (id, user_id, amount, description)
         SELECT gen_random_uuid(), gen_random_uuid(), 100, 'status trigger test'
         FROM generate_series(1, 460)",
    )
    .await
    .expect("orders");
    // 450 orders are paid and 10 are touched without a status change, in one
    // statement.
    let changed: BTreeSet<String> = db
        .query(
            "WITH picked AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM orders)
             UPDATE orders o
             SET status = CASE WHEN picked.n <= 450 THEN 'FINISHED' ELSE o.status END,
                 updated_at = clock_timestamp()
             FROM picked WHERE o.id = picked.id
             RETURNING o.id::text, o.status",
            &[],
        )
        .await
        .expect("update")
        .iter()
        .filter(|row| row.get::<_, &str>(1) == "FINISHED")
        .map(|row| row.get(0))
        .collect();
    assert_eq!(changed.len(), 450);

    let mut announced = Vec::new();
    while announced.len() < 450 {
        let (channel, payload) = tokio::time::timeout(Duration::from_secs(10), received.next())
            .await
            .expect("the changed orders are announced within 10 s")
            .expect("listening");
        assert_eq!(channel, STATUS_CHANNEL);
        let ids: Vec<String> = payload.split(',').map(str::to_owned).collect();
        assert!(ids.len() <= 200, "{} ids in one notification", ids.len());
        announced.extend(ids);
    }
    let unique: BTreeSet<String> = announced.iter().cloned().collect();
    assert_eq!(unique.len(), announced.len(), "an order announced twice");
    assert_eq!(unique, changed, "exactly the changed orders are announced");
    // Nothing else follows: the 10 unchanged orders are never named.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), received.next())
            .await
            .is_err(),
        "an unchanged order was announced"
    );
    app.stop().await;
}
