//! The contract suite: what every [`UserApi`] implementation must do.
//!
//! Each case gets a [`Harness`]: the implementation under test and a way to
//! make call contexts for an admin, for a customer, and for nobody. Run per
//! implementation by [`user_contract_suite!`](crate::user_contract_suite).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use kernel::{CallContext, Cursor, Failure, PageLimit, Role};

use crate::{ListUsers, NewUser, UserApi, UserError, UserId, UserStatus};

/// Signs a user in, giving the context a call on their behalf carries.
#[async_trait::async_trait]
pub trait SignIn: Send + Sync {
    /// A context for `email`/`password` (a token over HTTP, a caller in process).
    async fn context_for(&self, email: &str, password: &str) -> CallContext;
    /// A context for a fresh admin account.
    async fn admin(&self) -> CallContext;
}

/// What a contract case runs against.
pub struct Harness {
    /// The implementation under test.
    pub api: Arc<dyn UserApi>,
    /// How to get contexts for users.
    pub sign_in: Arc<dyn SignIn>,
}

/// A valid registration for `email`.
pub fn new_user(email: &str) -> NewUser {
    NewUser {
        email: email.to_owned(),
        password: "a long and unusual passphrase".to_owned(),
        display_name: "Ada".to_owned(),
    }
}

fn anonymous() -> CallContext {
    CallContext::background()
}

/// Registration normalises the email and makes an active customer.
pub async fn register_creates_an_active_customer(h: &Harness) {
    let user = h
        .api
        .register(&anonymous(), new_user("Ada@Example.COM"))
        .await
        .unwrap();
    assert_eq!(user.email, "ada@example.com");
    assert_eq!(user.roles, vec![Role::Customer]);
    assert_eq!(user.status, UserStatus::Active);
    assert_eq!(user.display_name, "Ada");
}

/// The same email, in any case, cannot register twice.
pub async fn duplicate_email_is_taken(h: &Harness) {
    h.api
        .register(&anonymous(), new_user("dup@example.com"))
        .await
        .unwrap();
    let err = h
        .api
        .register(&anonymous(), new_user("DUP@example.com"))
        .await
        .unwrap_err();
    assert_eq!(err, UserError::EmailTaken);
}

/// Weak passwords and bad emails are listed field by field.
pub async fn registration_rules_are_enforced(h: &Harness) {
    let cases = [
        ("not-an-email", "a long and unusual passphrase", "email"),
        (" ok@example.com", "a long and unusual passphrase", "email"),
        ("ök@example.com", "a long and unusual passphrase", "email"),
        ("ok@example.com", "short", "password"),
        ("ok@example.com", "password1234", "password"),
    ];
    for (email, password, field) in cases {
        let new = NewUser {
            email: email.to_owned(),
            password: password.to_owned(),
            display_name: "Ada".to_owned(),
        };
        let err = h.api.register(&anonymous(), new).await.unwrap_err();
        let UserError::Common(Failure::Validation(errors)) = &err else {
            panic!("expected Validation for {email}/{password}, got {err:?}");
        };
        assert_eq!(errors[0].field, field, "{errors:?}");
    }
}

/// A user reads themselves; another customer's account does not exist for them.
pub async fn users_see_only_themselves(h: &Harness) {
    let a = h
        .api
        .register(&anonymous(), new_user("a@example.com"))
        .await
        .unwrap();
    let b = h
        .api
        .register(&anonymous(), new_user("b@example.com"))
        .await
        .unwrap();
    let as_a = h
        .sign_in
        .context_for("a@example.com", "a long and unusual passphrase")
        .await;
    assert_eq!(h.api.get_user(&as_a, a.id).await.unwrap(), a);
    assert_eq!(
        h.api.get_user(&as_a, b.id).await.unwrap_err(),
        UserError::NotFound(b.id)
    );
    assert_eq!(
        h.api.get_user(&anonymous(), a.id).await.unwrap_err(),
        UserError::Common(Failure::Unauthenticated)
    );
}

/// Admins read anyone; a missing id is `NotFound` with that id.
pub async fn admins_see_everyone(h: &Harness) {
    let a = h
        .api
        .register(&anonymous(), new_user("c@example.com"))
        .await
        .unwrap();
    let admin = h.sign_in.admin().await;
    assert_eq!(h.api.get_user(&admin, a.id).await.unwrap(), a);
    let missing = UserId::generate();
    assert_eq!(
        h.api.get_user(&admin, missing).await.unwrap_err(),
        UserError::NotFound(missing)
    );
}

/// Listing is for admins, paginated oldest first.
pub async fn listing_is_paginated_and_admin_only(h: &Harness) {
    for i in 0..3 {
        h.api
            .register(&anonymous(), new_user(&format!("list{i}@example.com")))
            .await
            .unwrap();
    }
    let customer = h
        .sign_in
        .context_for("list0@example.com", "a long and unusual passphrase")
        .await;
    assert_eq!(
        h.api
            .list_users(&customer, ListUsers::default())
            .await
            .unwrap_err(),
        UserError::Common(Failure::Forbidden)
    );
    let admin = h.sign_in.admin().await;
    let limit = PageLimit::new(2).unwrap();
    let first = h
        .api
        .list_users(
            &admin,
            ListUsers {
                limit,
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.items[0].email, "list0@example.com");
    let cursor = first.next_cursor.clone();
    assert!(cursor.is_some());
    let second = h
        .api
        .list_users(&admin, ListUsers { limit, cursor })
        .await
        .unwrap();
    // Three customers and the admin: four accounts, two pages.
    assert_eq!(second.items.len(), 2);
    assert_eq!(second.next_cursor, None);
    let bad = ListUsers {
        limit,
        cursor: Some(Cursor::from_raw("nope")),
    };
    assert_eq!(
        h.api.list_users(&admin, bad).await.unwrap_err(),
        UserError::Common(Failure::InvalidCursor)
    );
}

/// Generates one `#[tokio::test]` per contract case for a setup function
/// returning `(Harness, guard)`.
#[macro_export]
macro_rules! user_contract_suite {
    ($setup:path) => {
        $crate::user_contract_suite!(@cases $setup,
            register_creates_an_active_customer,
            duplicate_email_is_taken,
            registration_rules_are_enforced,
            users_see_only_themselves,
            admins_see_everyone,
            listing_is_paginated_and_admin_only,
        );
    };
    (@cases $setup:path, $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (harness, _guard) = $setup().await;
                $crate::contract::$case(&harness).await;
            }
        )*
    };
}
