//! The user contract suite, run against both implementations of `UserApi`.

use std::sync::Arc;

use kernel::CallContext;
use user_api::contract::{Harness, SignIn};

use crate::helpers::{TestApp, spawn_app, test_database, test_settings};

/// In process: signing in is `UserModule::login`, and the token's caller
/// (as the verifier sees it) goes into the context.
struct InProcess {
    users: user::UserModule,
    verifier: auth::Verifier,
}

#[async_trait::async_trait]
impl SignIn for InProcess {
    async fn context_for(&self, email: &str, password: &str) -> CallContext {
        let pair = self.users.login(email, password.to_owned()).await.unwrap();
        let caller = self.verifier.verify(&pair.access_token).await.unwrap();
        CallContext::background().with_caller(caller)
    }

    async fn admin(&self) -> CallContext {
        let email = format!("admin-{}@example.com", uuid::Uuid::new_v4().simple());
        self.users
            .create_admin(user_api::contract::new_user(&email))
            .await
            .unwrap();
        self.context_for(&email, "a long and unusual passphrase")
            .await
    }
}

async fn in_process() -> (Harness, testkit::TestDatabase) {
    let db = test_database().await;
    let settings = test_settings(Some(db.url()), &[]);
    let pool =
        app::database::module_pool(&settings, app::modules::ModuleName::User, db.url()).unwrap();
    let key = app::compose::signing_key(&settings).unwrap();
    let keys = app::compose::key_set(&settings, &key).unwrap();
    let users = user::module(&settings, pool, key).unwrap();
    let verifier = auth::Verifier::local(keys, &settings.auth.policy());
    let sign_in = InProcess {
        users: users.clone(),
        verifier,
    };
    let harness = Harness {
        api: Arc::new(users),
        sign_in: Arc::new(sign_in),
    };
    (harness, db)
}

/// Over HTTP: signing in is `POST /api/v1/auth/token`; the token travels.
struct OverHttp {
    app: Arc<TestApp>,
}

#[async_trait::async_trait]
impl SignIn for OverHttp {
    async fn context_for(&self, email: &str, password: &str) -> CallContext {
        let response = self.app.login(email, password).await;
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        CallContext::background().with_bearer_token(body["access_token"].as_str().unwrap())
    }

    async fn admin(&self) -> CallContext {
        let email = format!("admin-{}@example.com", uuid::Uuid::new_v4().simple());
        let tokens = self.app.admin(&email).await;
        CallContext::background().with_bearer_token(tokens["access_token"].as_str().unwrap())
    }
}

async fn over_http() -> (Harness, Arc<TestApp>) {
    let app = Arc::new(spawn_app().await);
    let client = user_api::client::UserClient::new(
        crate::helpers::http(),
        url::Url::parse(&app.address).unwrap(),
        crate::helpers::policy("user"),
    );
    let harness = Harness {
        api: Arc::new(client),
        sign_in: Arc::new(OverHttp {
            app: Arc::clone(&app),
        }),
    };
    (harness, app)
}

mod local {
    user_api::user_contract_suite!(super::in_process);
}

mod http {
    user_api::user_contract_suite!(super::over_http);
}
