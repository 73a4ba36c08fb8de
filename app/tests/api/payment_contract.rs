//! The payment contract suite on both implementations: the module in
//! process and its HTTP client against a running shop, both in front of a
//! sandbox provider on a real socket.

use std::sync::Arc;

use kernel::{Caller, Role};
use payment_api::contract::Harness;
use uuid::Uuid;

use crate::checkout::shop::customer_token;
use crate::helpers::{caller, spawn_app, test_database, test_settings};

struct Guard {
    _db: testkit::TestDatabase,
    provider: actix_web::dev::ServerHandle,
}

impl Drop for Guard {
    fn drop(&mut self) {
        drop(self.provider.stop(false));
    }
}

async fn in_process() -> (Harness, Guard) {
    let db = test_database().await;
    let settings = test_settings(Some(db.url()), &[]);
    let pool =
        app::database::module_pool(&settings, app::modules::ModuleName::Payment, db.url()).unwrap();
    let (server, port) = payment_sandbox::server("127.0.0.1", 0, 1).unwrap();
    let provider = server.handle();
    tokio::spawn(server);
    let adapter = payment::provider::HttpProvider::new(
        crate::helpers::http(),
        url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap(),
        crate::helpers::policy("payment_provider"),
    );
    let customer_id = Uuid::now_v7();
    let harness = Harness {
        api: Arc::new(payment::PaymentModule::new(pool, Arc::new(adapter))),
        service: kernel::CallContext::background().with_caller(Caller::service()),
        customer: kernel::CallContext::background().with_caller(Caller {
            user_id: customer_id,
            roles: vec![Role::Customer],
        }),
        customer_id,
        stranger: caller(Role::Customer),
    };
    (harness, Guard { _db: db, provider })
}

async fn over_http() -> (Harness, crate::helpers::TestApp) {
    let app = spawn_app().await;
    let client = payment_api::client::PaymentClient::new(
        crate::helpers::http(),
        url::Url::parse(&app.address).unwrap(),
        crate::helpers::policy("payment"),
    );
    let service = app::compose::service_tokens(&app.settings)
        .unwrap()
        .token()
        .unwrap();
    let customer_id = Uuid::now_v7();
    let bearer = |token: String| kernel::CallContext::background().with_bearer_token(token);
    let harness = Harness {
        api: Arc::new(client),
        service: bearer(service),
        customer: bearer(customer_token(&app.settings, customer_id)),
        customer_id,
        stranger: bearer(app.token(&[Role::Customer])),
    };
    (harness, app)
}

mod local {
    payment_api::payment_contract_suite!(super::in_process);
}

mod http {
    payment_api::payment_contract_suite!(super::over_http);
}
