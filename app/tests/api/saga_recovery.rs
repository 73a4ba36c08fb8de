//! Interrupted checkouts recovered: by two instances after a crash, and after a SIGKILL.

use kernel::Role;
use payment_sandbox::cards;
use serde_json::Value;
use uuid::Uuid;

use crate::checkout::shop::{
    customer_token, fill_cart, get_json, settled, stock, stocked_product, timeline, try_place,
};
use crate::helpers::{Shop, mint_token};
use crate::saga_crash::{
    Deployment, assert_one_capture_per_confirmed_order, each_once, refs, sandbox,
};

/// The customer's order (the first listed), once settled, and its id; none
/// if the checkout never got as far as an order. Its timeline holds each
/// event once.
async fn settled_order(
    client: &reqwest::Client,
    base: &str,
    token: &str,
) -> Option<(String, Value)> {
    let orders: Value = get_json(client, format!("{base}/api/v1/orders"), token).await;
    let order = orders["items"].as_array().unwrap().first()?;
    let id = order["id"].as_str().unwrap().to_owned();
    let order = settled(client, base, token, &id).await;
    let kinds = timeline(client, base, token, &id).await;
    assert!(each_once(&kinds), "each event once: {kinds:?}");
    Some((id, order))
}

/// Many checkouts cut short by one crash, then two instances recovering at
/// once: the leases let one driver at a time run each saga, so every order
/// settles once, every event is recorded once, every confirmed order is
/// captured once, and the stock adds up. A client retrying its key after the
/// crash is answered from the order its first request created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_recover_interrupted_checkouts_without_doing_anything_twice() {
    let shop = Deployment::new().await;
    let settings = &shop.settings;
    let admin = mint_token(settings, &[Role::Admin]);
    let (provider_handle, provider) = sandbox();
    let saga = [
        ("APP__PAYMENT__PROVIDER_URL", provider.as_str()),
        // A short lease, and a step's deadline under two thirds of it (the
        // lease is renewed every third on the way forward).
        ("APP__ORDER__LEASE_SECS", "2"),
        ("APP__ORDER__STEP_TIMEOUT_MS", "1300"),
        ("APP__ORDER__RECOVERY_INTERVAL_MS", "100"),
        // Stale soon after the checkout's wait (5 s), never within it.
        ("APP__ORDER__IDEMPOTENCY_STALE_SECS", "6"),
    ];
    let first_env = shop.env(&[&saga[..], &[("APP__ORDER__CRASH_AT", "before_capture")]].concat());
    let mut first = Shop::start(&refs(&first_env));
    first.wait_live().await;
    let client = crate::helpers::http();
    let base = first.url("");
    let product = stocked_product(&client, &base, &admin, "MULTI-1", 500, 8).await;
    let customers: Vec<String> = (0..12)
        .map(|_| customer_token(settings, Uuid::now_v7()))
        .collect();
    for token in &customers {
        fill_cart(&client, &base, token, &product, 1).await;
    }
    // Twelve checkouts at once; the first to reach the capture kills the
    // process, the others are cut short wherever they are.
    let mut placing = tokio::task::JoinSet::new();
    for token in customers.clone() {
        let (client, base) = (client.clone(), base.clone());
        placing.spawn(async move {
            drop(try_place(&client, &base, &token, "multi", cards::SUCCEEDS).await);
        });
    }
    while placing.join_next().await.is_some() {}
    assert!(first.exited().await, "the failpoint fired");
    drop(first);

    let recovering = shop.env(&saga);
    let (a, b) = (
        Shop::start(&refs(&recovering)),
        Shop::start(&refs(&recovering)),
    );
    a.wait_live().await;
    b.wait_live().await;
    let mut confirmed = 0;
    for (i, token) in customers.iter().enumerate() {
        // Ask through either instance.
        let base = if i % 2 == 0 { a.url("") } else { b.url("") };
        let Some((id, order)) = settled_order(&client, &base, token).await else {
            continue; // this checkout never got as far as an order
        };
        match order["status"].as_str() {
            Some("confirmed") => confirmed += 1,
            // Twelve customers, eight units.
            Some("failed") => assert_eq!(order["reason"], "insufficient stock for MULTI-1"),
            _ => panic!("{order}"),
        }
        // The key of the request that died is answered from its order.
        let replay = crate::helpers::eventually("the stale key answers", || async {
            let response = try_place(&client, &base, token, "multi", cards::SUCCEEDS)
                .await
                .ok()?;
            (response.status() != 409).then_some(response)
        })
        .await;
        assert!(
            matches!(replay.status().as_u16(), 201 | 202),
            "{}",
            replay.status()
        );
        let replayed: Value = replay.json().await.unwrap();
        assert_eq!(replayed["id"], id.as_str());
    }
    assert!(
        (1..=8).contains(&confirmed),
        "at least the order that hit the failpoint, at most the stock: {confirmed}"
    );
    assert_eq!(
        stock(&client, &a.url(""), &admin, "MULTI-1").await,
        (8 - confirmed, 0)
    );
    assert_one_capture_per_confirmed_order(&client, &provider, confirmed as usize).await;
    provider_handle.stop(false).await;
}

/// SIGKILL, not a failpoint: the process dies at whatever point twelve
/// checkouts in flight have reached (inside a transaction, between a call
/// and its record...). After a restart every order settles once, the stock
/// adds up and every confirmed order was captured exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_in_flight_survive_a_sigkill() {
    let shop = Deployment::new().await;
    let admin = mint_token(&shop.settings, &[Role::Admin]);
    let (provider_handle, provider) = sandbox();
    let saga = [
        ("APP__PAYMENT__PROVIDER_URL", provider.as_str()),
        ("APP__ORDER__LEASE_SECS", "2"),
        ("APP__ORDER__STEP_TIMEOUT_MS", "1300"),
        ("APP__ORDER__RECOVERY_INTERVAL_MS", "100"),
    ];
    let first = Shop::start(&refs(&shop.env(&saga)));
    first.wait_live().await;
    let client = crate::helpers::http();
    let base = first.url("");
    let product = stocked_product(&client, &base, &admin, "KILL-1", 300, 20).await;
    let customers: Vec<String> = (0..12)
        .map(|_| customer_token(&shop.settings, Uuid::now_v7()))
        .collect();
    for token in &customers {
        fill_cart(&client, &base, token, &product, 1).await;
    }
    let mut placing = tokio::task::JoinSet::new();
    for (i, token) in customers.iter().cloned().enumerate() {
        let (client, base) = (client.clone(), base.clone());
        placing.spawn(async move {
            let card = if i % 3 == 0 {
                cards::DECLINED
            } else {
                cards::SUCCEEDS
            };
            drop(try_place(&client, &base, &token, "kill", card).await);
        });
    }
    // Kill it once some orders exist, with the rest still in flight.
    crate::helpers::eventually("an order is placed", || async {
        let orders: Value = get_json(
            &client,
            format!("{base}/api/v1/orders"),
            &customers[customers.len() - 1],
        )
        .await;
        let mut any = !orders["items"].as_array()?.is_empty();
        for token in &customers[..3] {
            let orders: Value = get_json(&client, format!("{base}/api/v1/orders"), token).await;
            any |= !orders["items"].as_array()?.is_empty();
        }
        any.then_some(())
    })
    .await;
    drop(first); // SIGKILL
    while placing.join_next().await.is_some() {}

    let second = Shop::start(&refs(&shop.env(&saga)));
    second.wait_live().await;
    let base = second.url("");
    let mut confirmed = 0;
    for token in &customers {
        let Some((_, order)) = settled_order(&client, &base, token).await else {
            continue; // killed before its order was recorded: nothing held
        };
        match order["status"].as_str() {
            Some("confirmed") => confirmed += 1,
            Some("failed") => assert!(
                order["reason"].as_str().unwrap().contains("declined"),
                "{order}"
            ),
            _ => panic!("{order}"),
        }
    }
    assert_eq!(
        stock(&client, &base, &admin, "KILL-1").await,
        (20 - confirmed, 0)
    );
    assert_one_capture_per_confirmed_order(&client, &provider, confirmed as usize).await;
    provider_handle.stop(false).await;
}

/// A process stopped (SIGTERM) while a saga it drives waits for the payment
/// provider gives the saga's lease up as it goes, so another instance
/// resumes it at once rather than after the lease's term (ten minutes
/// here, a stock reservation held all that while).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_process_gives_up_the_leases_of_the_sagas_it_drove() {
    use diesel::sql_types::{Bool, Uuid as SqlUuid};
    use diesel_async::{AsyncConnection as _, RunQueryDsl as _};

    #[derive(diesel::QueryableByName)]
    struct Lease {
        #[diesel(sql_type = Bool)]
        held: bool,
    }
    let shop = Deployment::new().await;
    let admin = mint_token(&shop.settings, &[Role::Admin]);
    let (provider_handle, provider) = sandbox();
    let env = [
        ("APP__PAYMENT__PROVIDER_URL", provider.as_str()),
        ("APP__ORDER__LEASE_SECS", "600"),
        ("APP__ORDER__CHECKOUT_WAIT_MS", "100"),
        ("APP__SERVER__SHUTDOWN_TIMEOUT_SECS", "2"),
    ];
    let first = Shop::start(&refs(&shop.env(&env)));
    first.wait_live().await;
    let client = crate::helpers::http();
    let base = first.url("");
    let product = stocked_product(&client, &base, &admin, "STOP-1", 300, 5).await;
    let token = customer_token(&shop.settings, Uuid::now_v7());
    fill_cart(&client, &base, &token, &product, 1).await;
    // The provider holds the authorization for half a minute: the saga
    // waits on it, leased to the placing request's run, after the 202.
    let placed = try_place(&client, &base, &token, "stop", cards::TIMES_OUT)
        .await
        .unwrap();
    assert_eq!(placed.status(), 202);
    let order: Value = placed.json().await.unwrap();
    let id: Uuid = order["id"].as_str().unwrap().parse().unwrap();
    let mut db = diesel_async::AsyncPgConnection::establish(shop.db.url())
        .await
        .unwrap();
    let query = diesel::sql_query(
        "SELECT lease_owner IS NOT NULL AND lease_until > now() AS held \
         FROM orders.sagas WHERE order_id = $1",
    )
    .bind::<SqlUuid, _>(id);
    let held = query
        .clone()
        .get_result::<Lease>(&mut db)
        .await
        .unwrap()
        .held;
    assert!(held, "the run holds the lease");

    let status = first.terminate();
    assert!(status.success(), "{status:?}");
    // Given up with the run (from the main runtime, before the pools
    // closed), not left to expire in ten minutes.
    let held = query.get_result::<Lease>(&mut db).await.unwrap().held;
    assert!(!held, "the lease is still held");
    // A stop is no failed attempt: the step keeps all its attempts.
    #[derive(diesel::QueryableByName)]
    struct Attempts {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        attempts: i32,
    }
    let Attempts { attempts } =
        diesel::sql_query("SELECT attempts FROM orders.sagas WHERE order_id = $1")
            .bind::<SqlUuid, _>(id)
            .get_result(&mut db)
            .await
            .unwrap();
    assert_eq!(attempts, 0);
    provider_handle.stop(false).await;
}

/// A cancel made on another instance while the checkout runs: the driving
/// run reads the saga's direction before the capture, so the hold is voided
/// and nothing is charged (it was captured, then refunded, when the turn
/// was met at the finish only). The commit of the stock is slowed by a
/// trigger, so the cancel lands while the checkout runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_made_on_another_instance_is_met_before_the_capture() {
    use diesel_async::SimpleAsyncConnection as _;
    let shop = Deployment::new().await;
    let settings = &shop.settings;
    let admin = mint_token(settings, &[Role::Admin]);
    let (provider_handle, provider) = sandbox();
    let env = shop.env(&[
        ("APP__PAYMENT__PROVIDER_URL", provider.as_str()),
        ("APP__ORDER__CHECKOUT_WAIT_MS", "100"),
    ]);
    let (a, b) = (Shop::start(&refs(&env)), Shop::start(&refs(&env)));
    a.wait_live().await;
    b.wait_live().await;
    let client = crate::helpers::http();
    let product = stocked_product(&client, &a.url(""), &admin, "ELSEWHERE-1", 500, 5).await;
    let mut db = <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(
        shop.db.url(),
    )
    .await
    .unwrap();
    db.batch_execute(
        "CREATE FUNCTION inventory.slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_sleep(3); RETURN NEW; END $$; \
         CREATE TRIGGER slow_commit BEFORE UPDATE ON inventory.reservations FOR EACH ROW \
         WHEN (NEW.status = 'committed') EXECUTE FUNCTION inventory.slow_commit();",
    )
    .await
    .unwrap();
    let token = customer_token(settings, Uuid::now_v7());
    fill_cart(&client, &a.url(""), &token, &product, 1).await;
    let placed = try_place(&client, &a.url(""), &token, "elsewhere", cards::SUCCEEDS)
        .await
        .unwrap();
    assert_eq!(placed.status(), 202, "the checkout outlasts the wait");
    let placed: Value = placed.json().await.unwrap();
    let id = placed["id"].as_str().unwrap().to_owned();
    crate::helpers::eventually("the stock reserved", || async {
        (stock(&client, &b.url(""), &admin, "ELSEWHERE-1").await == (5, 1)).then_some(())
    })
    .await;
    let cancel =
        crate::checkout::shop::order_action(&client, &b.url(""), &token, &id, "cancel").await;
    assert_eq!(cancel.status(), 200, "{}", cancel.text().await.unwrap());

    let order = settled(&client, &a.url(""), &token, &id).await;
    assert_eq!(order["status"], "cancelled", "{order}");
    assert_eq!(
        crate::saga_crash::captures_per_authorization(&client, &provider).await,
        vec![0],
        "the hold was charged"
    );
    assert_eq!(
        stock(&client, &a.url(""), &admin, "ELSEWHERE-1").await,
        (5, 0)
    );
    provider_handle.stop(false).await;
}
