//! Notifications: email over SMTP, price drops for those who opted in, who sees which.

use kernel::Role;
use serde_json::{Value, json};

use crate::helpers::{
    Note, assert_problem, count, create, eventually, get_json, notifications, product_json,
    spawn_app_running, spawn_app_with,
};

/// A send cut by its policy's timeout while the server still owed its
/// reply: that connection is never used again (its next reply would have
/// been taken for another command's, or the next commands for the
/// message's text), and every message arrives whole, the cut one again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cut_by_its_timeout_leaves_no_connection_behind_to_reuse() {
    // The first message's reply comes 1.5 s late; its send is cut at 0.5 s
    // and tried again 2 s later, once the late reply waits on the
    // connection the cut send used.
    let sink = testkit::smtp::SmtpSink::stalling(1, std::time::Duration::from_millis(1500)).await;
    let port = sink.port().to_string();
    let app = spawn_app_with(&[
        ("APP__NOTIFICATION__EMAIL__TRANSPORT", "smtp"),
        ("APP__NOTIFICATION__EMAIL__SMTP_HOST", "127.0.0.1"),
        ("APP__NOTIFICATION__EMAIL__SMTP_PORT", port.as_str()),
        ("APP__NOTIFICATION__RETRY_BASE_MS", "2000"),
        ("APP__NOTIFICATION__RETRY_MAX_MS", "2000"),
        ("APP__RESILIENCE__SMTP__ATTEMPT_TIMEOUT_MS", "500"),
        ("APP__RESILIENCE__SMTP__DEADLINE_MS", "1000"),
    ])
    .await;
    app.register("first@example.com", crate::helpers::PASSWORD)
        .await;
    eventually("the first welcome sent", || async {
        let sent = notifications(&app)
            .await
            .into_iter()
            .filter(|n| n.channel == "email" && n.status == "sent")
            .count();
        (sent == 1).then_some(())
    })
    .await;
    app.register("second@example.com", crate::helpers::PASSWORD)
        .await;
    eventually("both welcomes sent", || async {
        let sent = notifications(&app)
            .await
            .into_iter()
            .filter(|n| n.channel == "email" && n.status == "sent")
            .count();
        (sent == 2).then_some(())
    })
    .await;
    assert_eq!(
        sink.after_stall(),
        Vec::<String>::new(),
        "a connection was used after a send on it was cut"
    );
    assert!(sink.connections() >= 2, "{}", sink.connections());
    let mails = sink.mails();
    for to in ["first@example.com", "second@example.com"] {
        assert!(mails.iter().any(|m| m.to == [to]), "{to}: {mails:?}");
    }
    for mail in &mails {
        assert!(mail.data.contains("Subject: Welcome"), "{}", mail.data);
        assert!(
            !mail.data.contains("MAIL FROM") && !mail.data.contains("NOOP"),
            "{}",
            mail.data
        );
    }
}

/// While the relay's breaker turns every send away, the sender leaves the
/// due emails where they are: it claimed them only to defer each (two
/// writes a message, the whole backlog again every wait, the relay's real
/// error overwritten by "breaker open"). Here the relay's port is closed:
/// two failures open the breaker for a minute; the round under way when
/// it opened is deferred, and no other email is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_relay_breaker_leaves_the_email_backlog_alone() {
    let port = crate::helpers::free_port().to_string();
    let app = spawn_app_with(&[
        ("APP__NOTIFICATION__EMAIL__TRANSPORT", "smtp"),
        ("APP__NOTIFICATION__EMAIL__SMTP_HOST", "127.0.0.1"),
        ("APP__NOTIFICATION__EMAIL__SMTP_PORT", port.as_str()),
        ("APP__RESILIENCE__SMTP__BREAKER__WINDOW_SIZE", "2"),
        ("APP__RESILIENCE__SMTP__BREAKER__MINIMUM_CALLS", "2"),
        ("APP__RESILIENCE__SMTP__BREAKER__WAIT_OPEN_MS", "60000"),
    ])
    .await;
    {
        use diesel_async::RunQueryDsl as _;
        diesel::sql_query(
            "INSERT INTO notification.notifications \
             (id, event_id, event_type, channel, destination, subject, body) \
             SELECT gen_random_uuid(), gen_random_uuid(), 'test.backlog.v1', 'email', \
                    'reader' || i || '@example.com', 'Backlog', 'b' \
             FROM generate_series(1, 100) AS i",
        )
        .execute(&mut app.db().await)
        .await
        .unwrap();
    }
    let touched = "SELECT count(*) AS n FROM notification.notifications \
                   WHERE event_type = 'test.backlog.v1' AND last_error IS NOT NULL";
    eventually("the relay's breaker open", || async {
        (count(&app, touched).await >= 3).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let touched = count(&app, touched).await;
    assert!(
        touched <= 20,
        "{touched} emails claimed and deferred while the breaker was open (one round is 20)"
    );
}

/// An email under way when the shop is told to stop is finished and
/// recorded before the shop lets go of its database: the background tasks
/// get as long as the longest call may take (here the SMTP server answers
/// after 12 s, inside the 14 s the policy gives an attempt), so the message
/// is `sent`, not left claimed to go out a second time after its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_under_way_at_stop_is_finished_and_recorded_before_the_shop_stops() {
    let stall = std::time::Duration::from_secs(12);
    let sink = testkit::smtp::SmtpSink::stalling(1, stall).await;
    let port = sink.port().to_string();
    let (app, running) = spawn_app_running(&[
        ("APP__NOTIFICATION__EMAIL__TRANSPORT", "smtp"),
        ("APP__NOTIFICATION__EMAIL__SMTP_HOST", "127.0.0.1"),
        ("APP__NOTIFICATION__EMAIL__SMTP_PORT", port.as_str()),
        ("APP__RESILIENCE__SMTP__ATTEMPT_TIMEOUT_MS", "14000"),
        ("APP__RESILIENCE__SMTP__DEADLINE_MS", "15000"),
    ])
    .await;
    app.register("leaving@example.com", crate::helpers::PASSWORD)
        .await;
    // The message's text is in (the sink keeps it as it arrives); its
    // reply is held back.
    eventually("the welcome under way", || async {
        (sink.mails().len() == 1).then_some(())
    })
    .await;
    let stopping = std::time::Instant::now();
    app.handle.stop();
    tokio::time::timeout(std::time::Duration::from_secs(40), running)
        .await
        .expect("the shop stops")
        .expect("the shop's task")
        .expect("the shop stops cleanly");
    assert!(
        stopping.elapsed() >= stall / 2,
        "stopped in {:?}, before the send could end",
        stopping.elapsed()
    );
    let welcome: Vec<Note> = notifications(&app)
        .await
        .into_iter()
        .filter(|n| n.destination == "leaving@example.com")
        .collect();
    assert_eq!(welcome.len(), 1, "{welcome:?}");
    assert_eq!(
        (welcome[0].status.as_str(), welcome[0].attempts),
        ("sent", 1),
        "{welcome:?}"
    );
    assert_eq!(sink.mails().len(), 1);
}

/// A mailbox the server refuses for good (a permanent reply) is not tried
/// again: one attempt, failed, with the server's answer; others still go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_refused_for_good_is_not_tried_again() {
    let sink = testkit::smtp::SmtpSink::refusing(&["gone@example.com"]).await;
    let port = sink.port().to_string();
    let app = spawn_app_with(&[
        ("APP__NOTIFICATION__EMAIL__TRANSPORT", "smtp"),
        ("APP__NOTIFICATION__EMAIL__SMTP_HOST", "127.0.0.1"),
        ("APP__NOTIFICATION__EMAIL__SMTP_PORT", port.as_str()),
        ("APP__NOTIFICATION__RETRY_BASE_MS", "50"),
        ("APP__NOTIFICATION__RETRY_MAX_MS", "100"),
    ])
    .await;
    app.register("gone@example.com", crate::helpers::PASSWORD)
        .await;
    app.register("here@example.com", crate::helpers::PASSWORD)
        .await;
    let settled = eventually("both welcomes settled", || async {
        let all = notifications(&app).await;
        let both = ["gone@example.com", "here@example.com"]
            .iter()
            .all(|to| all.iter().any(|n| n.destination == *to));
        (both && all.iter().all(|n| n.status != "pending")).then_some(all)
    })
    .await;
    let gone = settled
        .iter()
        .find(|n| n.destination == "gone@example.com")
        .unwrap();
    assert_eq!(
        (gone.status.as_str(), gone.attempts),
        ("failed", 1),
        "{gone:?}"
    );
    let here = settled
        .iter()
        .find(|n| n.destination == "here@example.com")
        .unwrap();
    assert_eq!(here.status, "sent");
    assert_eq!(sink.mails().len(), 1);
}

/// The sender's claim (`repo::claim_due`: the oldest due messages of each
/// kind) reads the pending messages by age from an index and stops at its
/// limit. By the index on `next_attempt_at` alone it read and sorted every
/// due row: 365 ms a claim with a million pending (a price drop to a large
/// audience), past the statement timeout with ten million, and then no
/// message of any kind went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_reads_the_oldest_pending_messages_by_index() {
    use diesel::sql_types::Text;
    use diesel_async::{AsyncConnection as _, RunQueryDsl as _};
    #[derive(diesel::QueryableByName)]
    struct Plan {
        #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
        line: String,
    }
    // A migrated database with no shop running on it: nothing sends these.
    let db = crate::helpers::test_database().await;
    let mut conn = diesel_async::AsyncPgConnection::establish(db.url())
        .await
        .unwrap();
    diesel::sql_query(
        "INSERT INTO notification.notifications \
         (id, event_id, event_type, channel, destination, subject, body, next_attempt_at, created_at, \
          bulk) \
         SELECT gen_random_uuid(), gen_random_uuid(), 'catalog.product_price_changed.v1', \
                CASE WHEN i % 3 = 0 THEN 'webhook' ELSE 'email' END, 'c' || i || '@example.com', \
                'Price drop', 'body', now() - interval '1 hour' + i * interval '1 ms', \
                now() - interval '2 hours' + i * interval '1 ms', i % 3 <> 0 AND i % 7 <> 0 \
         FROM generate_series(1, 50000) AS i",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    diesel::sql_query("ANALYZE notification.notifications")
        .execute(&mut conn)
        .await
        .unwrap();
    // As `repo::claim_due` claims each kind: emails bulk last, by their
    // own index; webhook calls by age.
    for (claim, index) in [
        (
            "channel = 'email' ORDER BY bulk, created_at",
            "notifications_pending_email_idx",
        ),
        (
            "channel <> 'email' ORDER BY created_at",
            "notifications_pending_age_idx",
        ),
    ] {
        let plan: Vec<Plan> = diesel::sql_query(format!(
            "EXPLAIN SELECT id FROM notification.notifications \
             WHERE status = 'pending' AND next_attempt_at <= now() AND {claim} \
             LIMIT 20 FOR UPDATE SKIP LOCKED"
        ))
        .load(&mut conn)
        .await
        .unwrap();
        let plan: Vec<String> = plan.into_iter().map(|p| p.line).collect();
        assert!(
            plan.iter().any(|l| l.contains(index)) && !plan.iter().any(|l| l.contains("Sort")),
            "the claim sorts the due rows:\n{}",
            plan.join("\n")
        );
    }
    // Most pending ones waiting for a retry (a receiver refusing its calls
    // for hours): the claim reads the few due ones by the other index,
    // rather than walk past every waiting one in age order.
    diesel::sql_query(
        "UPDATE notification.notifications SET next_attempt_at = now() + interval '5 minutes' \
         WHERE created_at > (SELECT min(created_at) FROM notification.notifications) \
                            + interval '100 ms'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    diesel::sql_query("ANALYZE notification.notifications")
        .execute(&mut conn)
        .await
        .unwrap();
    let plan: Vec<Plan> = diesel::sql_query(
        "EXPLAIN SELECT id FROM notification.notifications \
         WHERE status = 'pending' AND next_attempt_at <= now() AND channel = 'email' \
         ORDER BY bulk, created_at LIMIT 20 FOR UPDATE SKIP LOCKED",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let plan: Vec<String> = plan.into_iter().map(|p| p.line).collect();
    assert!(
        plan.iter().any(|l| l.contains("notifications_due_idx")),
        "the claim walks past the waiting messages:\n{}",
        plan.join("\n")
    );
}

/// A lone carriage return in text from input (a product's name) reaches
/// the relay as a line break, dot-stuffed as lettre stuffs any line: never
/// as a bare CR, which some relays take for a line end, so that `\r.\r\n`
/// would end the message there and smuggle what follows in as commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carriage_return_in_a_name_reaches_the_relay_as_a_line_break() {
    let sink = testkit::smtp::SmtpSink::start().await;
    let port = sink.port().to_string();
    let app = spawn_app_with(&[
        ("APP__NOTIFICATION__EMAIL__TRANSPORT", "smtp"),
        ("APP__NOTIFICATION__EMAIL__SMTP_HOST", "127.0.0.1"),
        ("APP__NOTIFICATION__EMAIL__SMTP_PORT", port.as_str()),
        ("APP__NOTIFICATION__ADMIN_EMAIL", "ops@example.com"),
    ])
    .await;
    let mut product = product_json("SMUGGLE-1");
    product["name"] = serde_json::json!("Mug\r.\r\nRSET");
    assert_eq!(app.post_product(&product).await.status(), 201);
    let mail = eventually("the admin email at the SMTP server", || async {
        sink.mails()
            .into_iter()
            .find(|m| m.data.contains("SKU: SMUGGLE-1"))
    })
    .await;
    assert!(!mail.data.contains('\r'), "{:?}", mail.data);
    assert!(
        mail.data.contains("Name: Mug\n.\nRSET\n"),
        "{:?}",
        mail.data
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_out_over_smtp() {
    let sink = testkit::smtp::SmtpSink::start().await;
    let port = sink.port().to_string();
    let app = spawn_app_with(&[
        ("APP__NOTIFICATION__EMAIL__TRANSPORT", "smtp"),
        ("APP__NOTIFICATION__EMAIL__SMTP_HOST", "127.0.0.1"),
        ("APP__NOTIFICATION__EMAIL__SMTP_PORT", port.as_str()),
        ("APP__NOTIFICATION__ADMIN_EMAIL", "ops@example.com"),
    ])
    .await;
    app.register("smtp-user@example.com", crate::helpers::PASSWORD)
        .await;
    app.post_product(&product_json("SMTP-1")).await;

    let mails = eventually("two mails at the SMTP server", || async {
        let mails = sink.mails();
        (mails.len() >= 2).then_some(mails)
    })
    .await;
    let welcome = mails
        .iter()
        .find(|m| m.to == ["smtp-user@example.com"])
        .expect("welcome mail");
    assert!(
        welcome.data.contains("Subject: Welcome to the shop"),
        "{}",
        welcome.data
    );
    let admin = mails
        .iter()
        .find(|m| m.to == ["ops@example.com"])
        .expect("admin mail");
    assert!(
        admin
            .data
            .contains("Subject: New product: Product SMTP-1 (SMTP-1)"),
        "{}",
        admin.data
    );
    assert_eq!(admin.from, "shop@shop.localhost");
    // Each message names its notification, the same on a resend.
    let ids: Vec<&str> = mails
        .iter()
        .filter_map(|m| m.data.lines().find_map(|l| l.strip_prefix("Message-ID: ")))
        .collect();
    assert_eq!(ids.len(), mails.len(), "{mails:?}");
    for id in &ids {
        assert!(id.ends_with("@notifications.shop>"), "{id}");
        let notification = id
            .trim_start_matches('<')
            .trim_end_matches("@notifications.shop>");
        assert!(uuid::Uuid::parse_str(notification).is_ok(), "{id}");
    }
}

/// Creates a product `sku` and lowers its price, as an admin: a price drop.
async fn drop_price(app: &crate::helpers::TestApp, sku: &str) {
    let (url, _) = create(app, sku).await;
    let dropped = app
        .client
        .patch(&url)
        .bearer_auth(app.token(&[Role::Admin]))
        .json(&json!({"price": {"amount_minor": 999, "currency": "EUR"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(dropped.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn price_drops_reach_only_users_who_opted_in() {
    let app = spawn_app_with(&[]).await;
    let keen = app.customer("keen@example.com").await;
    app.customer("quiet@example.com").await;
    let prefs = json!({"notification_preferences": {"order_updates": true, "product_news": true, "marketing": false}});
    let opted = app
        .client
        .patch(app.url("/api/v1/users/me"))
        .bearer_auth(keen["access_token"].as_str().unwrap())
        .json(&prefs)
        .send()
        .await
        .unwrap();
    assert_eq!(opted.status(), 200);
    eventually("the opt-in to reach the notification module", || async {
        (count(
            &app,
            "SELECT count(*) AS n FROM notification.recipients WHERE product_news",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;

    // A product taken off sale and repriced lower in one change: news to
    // nobody. Handled before the drop below (one outbox, in order; its
    // inbox row waited for all the same).
    let (draft, _) = crate::helpers::create(&app, "DRAFT-1").await;
    let off_sale = app
        .client
        .patch(&draft)
        .bearer_auth(app.token(&[Role::Admin]))
        .json(&json!({"price": {"amount_minor": 999, "currency": "EUR"}, "active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(off_sale.status(), 200);
    eventually("the off-sale change handled", || async {
        (count(
            &app,
            "SELECT count(*) AS n FROM notification.inbox i JOIN catalog.outbox o \
             ON o.id = i.event_id WHERE o.event_type = 'catalog.product_price_changed.v1'",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;

    drop_price(&app, "DROP-1").await;
    let drops = eventually("the price-drop email", || async {
        let drops: Vec<Note> = notifications(&app)
            .await
            .into_iter()
            .filter(|n| n.subject.starts_with("Price drop"))
            .collect();
        (!drops.is_empty()).then_some(drops)
    })
    .await;
    assert_eq!(drops.len(), 1, "{drops:?}");
    assert_eq!(drops[0].destination, "keen@example.com");
    assert!(!drops[0].subject.contains("DRAFT"), "{}", drops[0].subject);
}

/// A price drop reaches every one of an audience larger than the page the
/// handler reads at a time (1,000), exactly once, and nobody else: here
/// two full pages, so the last read finds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_drop_reaches_an_audience_of_several_pages_once_each() {
    use diesel_async::RunQueryDsl as _;
    let app = spawn_app_with(&[]).await;
    diesel::sql_query(
        "INSERT INTO notification.recipients (user_id, email, display_name, order_updates, \
         product_news, marketing, registered, active) \
         SELECT gen_random_uuid(), 'reader' || i || '@example.com', 'Reader ' || i, true, \
                i <= 2000, false, true, i <= 2000 OR i > 2050 \
         FROM generate_series(1, 2100) AS i",
    )
    .execute(&mut app.db().await)
    .await
    .unwrap();

    drop_price(&app, "DROP-MANY").await;
    let queued =
        "SELECT count(*) AS n FROM notification.notifications WHERE subject LIKE 'Price drop%'";
    eventually("the price drop queued", || async {
        (count(&app, queued).await > 0).then_some(())
    })
    .await;
    // Queued in the handler's one transaction: all of them at once.
    assert_eq!(count(&app, queued).await, 2000);
    let readers = count(
        &app,
        "SELECT count(DISTINCT recipient_user_id) AS n FROM notification.notifications \
         WHERE subject LIKE 'Price drop%' AND destination LIKE 'reader%' \
         AND substring(destination FROM 'reader([0-9]+)@')::int <= 2000",
    )
    .await;
    assert_eq!(readers, 2000, "each opted-in reader once");
}

/// The recipients follow the accounts: a name changed is the name the
/// next email greets, and an account an admin disabled hears no product
/// news (it opted in before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn news_greets_the_current_name_and_skips_disabled_accounts() {
    let app = spawn_app_with(&[]).await;
    let keen = app.customer("keen@example.com").await;
    let gone = app.customer("gone@example.com").await;
    let patch_me = |token: &Value, body: Value| {
        let request = app
            .client
            .patch(app.url("/api/v1/users/me"))
            .bearer_auth(token["access_token"].as_str().unwrap())
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let news = json!({"notification_preferences": {"order_updates": true, "product_news": true, "marketing": false}});
    patch_me(&keen, news.clone()).await;
    let gone_id = patch_me(&gone, news).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    patch_me(&keen, json!({"display_name": "Keen Renamed"})).await;
    let disabled = app
        .client
        .patch(app.url(&format!("/api/v1/users/{gone_id}")))
        .bearer_auth(
            app.admin("notifications-admin@example.com").await["access_token"]
                .as_str()
                .unwrap(),
        )
        .json(&json!({"status": "disabled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 200);
    eventually("the changes to reach the notification module", || async {
        let settled = count(
            &app,
            "SELECT count(*) AS n FROM notification.recipients WHERE product_news \
             AND ((display_name = 'Keen Renamed' AND active) OR (email = 'gone@example.com' AND NOT active))",
        )
        .await;
        (settled == 2).then_some(())
    })
    .await;

    drop_price(&app, "DROP-2").await;
    let drops = eventually("the price-drop email", || async {
        let drops: Vec<Note> = notifications(&app)
            .await
            .into_iter()
            .filter(|n| n.subject.starts_with("Price drop"))
            .collect();
        (!drops.is_empty()).then_some(drops)
    })
    .await;
    assert_eq!(drops.len(), 1, "none to the disabled account");
    assert_eq!(drops[0].destination, "keen@example.com");
    let greeted = count(
        &app,
        "SELECT count(*) AS n FROM notification.notifications \
         WHERE subject LIKE 'Price drop%' AND body LIKE 'Hello Keen Renamed,%'",
    )
    .await;
    assert_eq!(greeted, 1, "the current name");
}

/// An account renamed and disabled by a release from before those changes
/// had events is announced once by the user module's migration
/// (`2026-12-06-000003_announce_names_and_status`, run here by hand on the
/// state such a release left), and the recipients follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_changed_before_their_events_existed_are_announced_once() {
    use diesel_async::SimpleAsyncConnection as _;

    let app = spawn_app_with(&[]).await;
    app.customer("old-timer@example.com").await;
    let recipient = "SELECT count(*) AS n FROM notification.recipients \
                     WHERE email = 'old-timer@example.com' AND registered AND active";
    eventually(
        "the registration to reach the notification module",
        || async { (count(&app, recipient).await == 1).then_some(()) },
    )
    .await;
    // What the release before left: the recipient from before versions
    // (the notification migration marks its parts 0), the account renamed
    // and disabled with no event, at version 1 (the column's default).
    app.db()
        .await
        .batch_execute(
            "UPDATE notification.recipients SET email_version = 0, name_version = 0, \
             preferences_version = 0, status_version = 0; \
             UPDATE users.users SET display_name = 'Renamed Long Ago', status = 'disabled', \
             updated_at = now() + interval '1 second', version = 1",
        )
        .await
        .unwrap();
    let migration =
        include_str!("../../../migrations/user/2026-12-06-000003_announce_names_and_status/up.sql");
    app.db()
        .await
        .batch_execute(&format!("SET search_path = users; {migration}"))
        .await
        .unwrap();
    eventually("the announcements to reach the recipients", || async {
        let followed = count(
            &app,
            "SELECT count(*) AS n FROM notification.recipients \
             WHERE display_name = 'Renamed Long Ago' AND NOT active",
        )
        .await;
        (followed == 1).then_some(())
    })
    .await;
    let announced = count(
        &app,
        "SELECT count(*) AS n FROM users.outbox WHERE event_type IN \
         ('user.display_name_changed.v1', 'user.status_changed.v1')",
    )
    .await;
    assert_eq!(announced, 2, "one of each, for the one changed account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_their_own_notifications_and_admins_all() {
    let app = spawn_app_with(&[]).await;
    let ada = app.customer("ada@example.com").await;
    app.customer("bob@example.com").await;
    app.post_product(&product_json("MINE-1")).await;
    eventually("three notifications", || async {
        (notifications(&app).await.len() >= 3).then_some(())
    })
    .await;

    let own: Value = get_json(
        &app.client,
        app.url("/api/v1/notifications"),
        ada["access_token"].as_str().unwrap(),
    )
    .await;
    let items = own["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{own}");
    assert_eq!(items[0]["destination"], "ada@example.com");

    let all: Value = get_json(
        &app.client,
        app.url("/api/v1/notifications?limit=2"),
        app.token(&[Role::Admin]),
    )
    .await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    assert!(all["next_cursor"].is_string());
    assert_problem(
        app.get("/api/v1/notifications").await,
        401,
        "unauthenticated",
    )
    .await;
}

/// An order update that reaches the notification module before its
/// customer's registration (the user module's events lagging behind the
/// order module's, as when they run apart) is held, not dropped: written
/// out once the registration arrives, or dropped if the customer turned
/// order updates off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_update_that_overtakes_the_registration_is_held_for_it() {
    use diesel_async::RunQueryDsl as _;
    let app = spawn_app_with(&[]).await;
    let (keen, quiet) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let publish =
        |schema: &'static str, event_type: &'static str, aggregate: String, payload: Value| {
            let app = &app;
            async move {
                let id = uuid::Uuid::now_v7();
                let envelope = json!({
                    "id": id, "type": event_type, "source": schema, "aggregate_id": aggregate,
                    "occurred_at": chrono::Utc::now(), "request_id": "overtaken",
                    "causation_id": null, "payload": payload
                });
                diesel::sql_query(format!(
                    "INSERT INTO {schema}.outbox (id, event_type, aggregate_id, envelope) \
                 VALUES ($1, $2, $3, $4)"
                ))
                .bind::<diesel::sql_types::Uuid, _>(id)
                .bind::<diesel::sql_types::Text, _>(event_type)
                .bind::<diesel::sql_types::Text, _>(aggregate)
                .bind::<diesel::sql_types::Jsonb, _>(&envelope)
                .execute(&mut app.db().await)
                .await
                .unwrap();
            }
        };
    for customer in [keen, quiet] {
        let order = uuid::Uuid::now_v7();
        publish(
            "orders",
            "order.confirmed.v1",
            order.to_string(),
            json!({"order_id": order, "customer_id": customer,
                   "total": {"amount_minor": 1299, "currency": "EUR"}, "items": 1}),
        )
        .await;
    }
    let held = "SELECT count(*) AS n FROM notification.notifications WHERE status = 'held'";
    eventually("both order updates held", || async {
        (count(&app, held).await == 2).then_some(())
    })
    .await;

    for (customer, email, order_updates) in [
        (keen, "keen@example.com", true),
        (quiet, "quiet@example.com", false),
    ] {
        publish(
            "users",
            "user.registered.v1",
            customer.to_string(),
            json!({"user_id": customer, "email": email, "display_name": "Late",
                   "notification_preferences": {"order_updates": order_updates,
                       "product_news": false, "marketing": false},
                   "version": 1}),
        )
        .await;
    }
    let mail = eventually("the held update sent to the keen customer", || async {
        notifications(&app)
            .await
            .into_iter()
            .find(|n| n.destination == "keen@example.com" && n.status == "sent")
    })
    .await;
    assert!(
        mail.subject.starts_with("Order confirmed"),
        "{}",
        mail.subject
    );
    eventually("the quiet customer's update dropped", || async {
        (count(&app, held).await == 0).then_some(())
    })
    .await;
    assert!(
        !notifications(&app)
            .await
            .iter()
            .any(|n| n.destination == "quiet@example.com" && n.subject.starts_with("Order")),
        "order updates off: no order update for the quiet customer (a welcome only)"
    );
}

/// An order update still held for a customer already registered (an
/// instance from before held messages handled the registration, during a
/// rolling upgrade) is written out by the sender's upkeep, even when it is
/// older than the retention (the prune runs first and keeps it); one that
/// cannot be read fails alone. One held as long for a customer who never
/// registered is pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_left_held_for_a_registered_customer_is_written_out_by_the_upkeep() {
    use diesel_async::RunQueryDsl as _;
    let app = spawn_app_with(&[("APP__NOTIFICATION__PRUNE_INTERVAL_SECS", "1")]).await;
    let (customer, order, event) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    let envelope = json!({
        "id": event, "type": "order.confirmed.v1", "source": "orders",
        "aggregate_id": order.to_string(), "occurred_at": chrono::Utc::now(),
        "request_id": null, "causation_id": null,
        "payload": {"order_id": order, "customer_id": customer,
                    "total": {"amount_minor": 500, "currency": "EUR"}, "items": 2}
    });
    let mut conn = app.db().await;
    diesel::sql_query(
        "INSERT INTO notification.recipients (user_id, email, display_name, order_updates, \
         product_news, marketing, registered) VALUES ($1, 'late@example.com', 'Late', true, false, false, true)",
    )
    .bind::<diesel::sql_types::Uuid, _>(customer)
    .execute(&mut conn)
    .await
    .unwrap();
    // Past the 90 days' retention, but its customer registered.
    let (unregistered, stale) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    // (The unreadable one is new: once failed, an old one is pruned.)
    for (id, recipient, body, age_days) in [
        (event, customer, envelope.to_string(), 100),
        (
            uuid::Uuid::now_v7(),
            customer,
            "not an envelope".to_owned(),
            0,
        ),
        (stale, unregistered, envelope.to_string(), 100),
    ] {
        diesel::sql_query(
            "INSERT INTO notification.notifications (id, event_id, event_type, recipient_user_id, \
             channel, destination, subject, body, status, created_at) \
             VALUES ($1, $1, 'order.confirmed.v1', $2, 'email', '', 'order.confirmed.v1', $3, 'held', \
                     now() - make_interval(days => $4))",
        )
        .bind::<diesel::sql_types::Uuid, _>(id)
        .bind::<diesel::sql_types::Uuid, _>(recipient)
        .bind::<diesel::sql_types::Text, _>(body)
        .bind::<diesel::sql_types::Integer, _>(age_days)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let sent = eventually("the held update written out and sent", || async {
        notifications(&app)
            .await
            .into_iter()
            .find(|n| n.destination == "late@example.com" && n.status == "sent")
    })
    .await;
    assert!(
        sent.subject.starts_with("Order confirmed"),
        "{}",
        sent.subject
    );
    eventually("the unreadable one failed alone", || async {
        (count(
            &app,
            "SELECT count(*) AS n FROM notification.notifications \
             WHERE status = 'failed' AND last_error LIKE 'cannot be written out%'",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
    let left = format!("SELECT count(*) AS n FROM notification.notifications WHERE id = '{stale}'");
    eventually("the update held for no account pruned", || async {
        (count(&app, &left).await == 0).then_some(())
    })
    .await;
}
