//! TLS on every outgoing call, end to end: the split topology with each
//! remote endpoint behind a TLS proxy whose certificate a CA made by the
//! test signed, trusted through `remote.extra_root_certificates` only.
//! Module calls, the gateway's forwards, the user module's keys (JWKS), the
//! payment provider and a webhook all go over `https`.

use std::net::SocketAddr;

use kernel::Role;
use payment_sandbox::cards;
use serde_json::{Value, json};
use testkit::tls::TestCa;
use uuid::Uuid;

use crate::checkout::shop::{fill_cart, place, settled, stocked_product};
use crate::helpers::{Shop, eventually, free_port, http, mint_token, test_settings};
use crate::journey::{start_split, url};
use crate::saga_crash::Deployment;
use crate::webhooks::receiver;

/// The port of a receiver's `http://127.0.0.1:<port>/hook` URL.
fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|rest| rest.trim_end_matches("/hook").parse().ok())
        .unwrap()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn every_outgoing_call_speaks_tls_to_servers_of_a_ca_the_settings_add() {
    let ca = TestCa::new();
    let roots = ca.file.to_string_lossy().into_owned();
    let deployment = Deployment::new().await;

    // The sandbox card provider, behind TLS.
    let provider_port = free_port();
    let provider = Shop::run(
        provider_port,
        &["sandbox-provider", "--port", &provider_port.to_string()],
        &[],
    );
    let provider_tls = ca.proxy_to(local(provider_port)).await;
    let provider_url = format!("https://localhost:{provider_tls}/");

    // user, inventory and payment in a process of their own, behind TLS;
    // the rest of the shop reaches them at https URLs only.
    let (main, apart) = (free_port(), free_port());
    let apart_tls = ca.proxy_to(local(apart)).await;
    let apart_url = format!("https://localhost:{apart_tls}");
    let main_url = url(main);
    let main_extra = [
        ("APP__REMOTE__EXTRA_ROOT_CERTIFICATES", roots.as_str()),
        ("APP__NOTIFICATION__WEBHOOK_ALLOW", "127.0.0.0/8,::1/128"),
    ];
    let main_remote = [
        ("user", apart_url.as_str()),
        ("inventory", apart_url.as_str()),
        ("payment", apart_url.as_str()),
    ];
    let apart_extra = [
        ("APP__MODULES__ENABLED", "user,inventory,payment"),
        ("APP__REMOTE__EXTRA_ROOT_CERTIFICATES", roots.as_str()),
        ("APP__PAYMENT__PROVIDER_URL", provider_url.as_str()),
    ];
    let _processes = start_split(
        &deployment,
        &[
            (main, &main_extra, &main_remote),
            (apart, &apart_extra, &[]),
        ],
    )
    .await;

    // A webhook receiver behind TLS.
    let hook = receiver(0).await;
    let hook_port: u16 = port_of(&hook.url);
    let hook_tls = ca.proxy_to(local(hook_port)).await;

    let http = http();
    let admin = mint_token(&deployment.settings, &[Role::Admin]);
    let customer = mint_token(&deployment.settings, &[Role::Customer]);
    // Tokens are verified with keys fetched over https from the user module.
    let subscribed = http
        .post(format!("{main_url}/api/v1/admin/webhooks"))
        .bearer_auth(&admin)
        .json(&json!({"url": format!("https://localhost:{hook_tls}/hook"),
                      "event_types": ["order.confirmed.v1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        subscribed.status(),
        201,
        "{}",
        subscribed.text().await.unwrap()
    );

    // Stock goes through the gateway's forward; the checkout's reservation,
    // authorization and capture are module calls; the payment module calls
    // the provider: all over https.
    let sku = format!("TLS-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let product = stocked_product(&http, &main_url, &admin, &sku, 1500, 2).await;
    fill_cart(&http, &main_url, &customer, &product, 1).await;
    let placed: Value = place(&http, &main_url, &customer, "tls-1", cards::SUCCEEDS)
        .await
        .json()
        .await
        .unwrap();
    let order = settled(&http, &main_url, &customer, placed["id"].as_str().unwrap()).await;
    assert_eq!(order["status"], "confirmed", "{order}");

    let delivered = eventually("the webhook arrives over https", || async {
        let calls = hook.calls.lock().unwrap();
        calls
            .iter()
            .find(|(headers, _)| {
                headers.get("x-shop-event").and_then(|v| v.to_str().ok())
                    == Some("order.confirmed.v1")
            })
            .cloned()
    })
    .await;
    assert!(
        delivered.1.contains(placed["id"].as_str().unwrap()),
        "{}",
        delivered.1
    );
    drop(provider);
}

#[tokio::test]
async fn a_server_is_trusted_only_when_its_ca_is_a_platform_root_or_configured() {
    let ca = TestCa::new();
    let hook = receiver(0).await;
    let port: u16 = port_of(&hook.url);
    let tls = ca.proxy_to(local(port)).await;
    let target = format!("https://localhost:{tls}/hook");

    let plain = app::startup::http_client(&test_settings(None, &[])).unwrap();
    let refused = plain.get(&target).send().await.unwrap_err();
    let chain = format!("{:?}", anyhow::Error::from(refused));
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");

    let roots = ca.file.to_string_lossy().into_owned();
    let trusting = app::startup::http_client(&test_settings(
        None,
        &[("APP__REMOTE__EXTRA_ROOT_CERTIFICATES", roots.as_str())],
    ))
    .unwrap();
    assert_eq!(trusting.get(&target).send().await.unwrap().status(), 200);

    // A file that is not a certificate is named at start.
    let error = app::startup::http_client(&test_settings(
        None,
        &[(
            "APP__REMOTE__EXTRA_ROOT_CERTIFICATES",
            "/nonexistent/ca.pem",
        )],
    ))
    .unwrap_err();
    assert!(
        error.to_string().contains("remote.extra_root_certificates"),
        "{error}"
    );
}
