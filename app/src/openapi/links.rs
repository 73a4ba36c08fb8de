//! OpenAPI links: which response leads to which operation, and what it
//! passes on (`FOLLOWS`), added to the generated document.

use utoipa::openapi::RefOr;
use utoipa::openapi::link::Link;
use utoipa::openapi::path::Operation;

/// What a link passes on: `(parameter, runtime expression)`s and, for a
/// body, a JSON value whose strings may be expressions.
pub(super) struct Follow {
    pub(super) from: &'static str,
    pub(super) statuses: &'static [&'static str],
    /// The link's name when it is not the target's operation id in
    /// PascalCase.
    name: Option<&'static str>,
    pub(super) to: &'static str,
    parameters: &'static [(&'static str, &'static str)],
    body: Option<fn() -> serde_json::Value>,
    /// The body is the whole request, not fields to set in one.
    whole_body: bool,
}

const fn follow(
    from: &'static str,
    statuses: &'static [&'static str],
    to: &'static str,
    parameters: &'static [(&'static str, &'static str)],
) -> Follow {
    Follow {
        from,
        statuses,
        name: None,
        to,
        parameters,
        body: None,
        whole_body: false,
    }
}

impl Follow {
    /// The same link, with fields of the target's body to fill in.
    const fn filling(self, body: fn() -> serde_json::Value) -> Follow {
        Follow {
            body: Some(body),
            ..self
        }
    }

    /// The same link, with the whole request body to send.
    const fn sending(self, body: fn() -> serde_json::Value) -> Follow {
        Follow {
            body: Some(body),
            whole_body: true,
            ..self
        }
    }

    /// The same link under another name.
    const fn named(self, name: &'static str) -> Follow {
        Follow {
            name: Some(name),
            ..self
        }
    }

    /// The link's name: given, or the target's operation id in PascalCase
    /// (`get_stock` → `GetStock`).
    fn name(&self) -> String {
        match self.name {
            Some(name) => name.to_owned(),
            None => self
                .to
                .split('_')
                .map(|word| {
                    let mut chars = word.chars();
                    chars
                        .next()
                        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                        .unwrap_or_default()
                })
                .collect(),
        }
    }
}

const ID: &[(&str, &str)] = &[("id", "$response.body#/id")];
const ORDER_OF_ORDER: &[(&str, &str)] = &[("order_id", "$response.body#/id")];
const ORDER_ID: &[(&str, &str)] = &[("order_id", "$response.body#/order_id")];
const FIRST_ID: &[(&str, &str)] = &[("id", "$response.body#/items/0/id")];
const SKU: &[(&str, &str)] = &[("sku", "$response.body#/sku")];
const SAME_SKU: &[(&str, &str)] = &[("sku", "$request.path.sku")];
const SAME_ORDER: &[(&str, &str)] = &[("order_id", "$request.path.order_id")];
const SAME_ID: &[(&str, &str)] = &[("id", "$request.path.id")];
const CREATED: &[&str] = &["201"];
const OK: &[&str] = &["200"];
const PLACED: &[&str] = &["201", "202"];

/// The walks a client takes through the API, as OpenAPI links: what an
/// answer gives the next call (a product's id and SKU to its stock and to
/// a cart, the cart to a checkout, the order to its payment and
/// reservation ...). Clients and tools (the stateful phase of
/// `scripts/fuzz-api`) follow them. Here rather than on the handlers
/// because most cross modules; a link whose end is not compiled in is
/// left out.
pub(super) const FOLLOWS: &[Follow] = &[
    // Catalog → inventory → cart → checkout.
    follow("create_product", CREATED, "get_product", ID),
    follow("create_product", CREATED, "update_product", ID),
    follow("create_product", CREATED, "get_stock", SKU),
    follow("create_product", CREATED, "adjust_stock", SKU)
        .sending(stock_it)
        .named("StockIt"),
    follow("create_product", CREATED, "put_cart", &[])
        .sending(cart_of_created)
        .named("PutInCart"),
    follow("adjust_stock", OK, "get_stock", SAME_SKU),
    follow("adjust_stock", OK, "list_movements", SAME_SKU),
    follow("get_stock", OK, "list_movements", SKU),
    follow("list_products", OK, "get_product", FIRST_ID),
    follow("list_products", OK, "put_cart", &[])
        .sending(cart_of_first)
        .named("PutInCart"),
    follow(
        "create_category",
        CREATED,
        "list_products",
        &[("category_id", "$response.body#/id")],
    ),
    follow("create_category", CREATED, "create_product", &[]).filling(in_category),
    follow("put_cart", OK, "place_order", &[])
        .sending(checkout_body)
        .named("Checkout"),
    // An order → its events, payment and reservation.
    follow("place_order", PLACED, "get_order", ID),
    follow("place_order", PLACED, "order_timeline", ID),
    follow("place_order", PLACED, "cancel_order", ID),
    follow("place_order", PLACED, "ship_order", ID),
    follow("place_order", PLACED, "payment_for_order", ORDER_OF_ORDER),
    follow("place_order", PLACED, "get_reservation", ORDER_OF_ORDER),
    follow("list_orders", OK, "get_order", FIRST_ID),
    follow("get_order", OK, "order_timeline", SAME_ID),
    follow("get_order", OK, "cancel_order", SAME_ID),
    follow("get_order", OK, "ship_order", SAME_ID),
    follow("ship_order", OK, "cancel_order", SAME_ID),
    follow("cancel_order", OK, "get_order", SAME_ID),
    // Inventory reservations.
    follow("reserve_stock", CREATED, "get_reservation", ORDER_ID),
    follow("reserve_stock", CREATED, "commit_reservation", ORDER_ID),
    follow("reserve_stock", CREATED, "release_reservation", ORDER_ID),
    follow("commit_reservation", OK, "restock_reservation", SAME_ORDER),
    follow("commit_reservation", OK, "release_reservation", SAME_ORDER),
    // Payments.
    follow("tokenize", CREATED, "authorize", &[]).filling(with_card_token),
    follow("authorize", CREATED, "get_payment", ID),
    follow("authorize", CREATED, "payment_for_order", ORDER_ID),
    follow("authorize", CREATED, "capture", ORDER_ID),
    follow("authorize", CREATED, "void", ORDER_ID),
    follow("capture", OK, "refund", SAME_ORDER),
    follow("capture", OK, "get_payment", ID),
    follow("payment_for_order", OK, "get_payment", ID),
    follow("payment_for_order", OK, "refund", ORDER_ID),
    // Accounts and sign-in.
    follow("register", CREATED, "get_user", ID),
    follow("register", CREATED, "update_user", ID),
    follow("register", CREATED, "create_token", &[])
        .sending(sign_in_body)
        .named("SignIn"),
    follow("create_token", OK, "refresh_token", &[])
        .sending(refresh_body)
        .named("Refresh"),
    follow("create_token", OK, "logout", &[])
        .sending(refresh_body)
        .named("SignOut"),
    follow("refresh_token", OK, "refresh_token", &[])
        .sending(refresh_body)
        .named("Refresh"),
    follow("refresh_token", OK, "logout", &[])
        .sending(refresh_body)
        .named("SignOut"),
    follow("list_users", OK, "get_user", FIRST_ID),
    // Webhooks and dead letters.
    follow("create_webhook", CREATED, "get_webhook", ID),
    follow("create_webhook", CREATED, "delete_webhook", ID),
    follow(
        "list_webhooks",
        OK,
        "delete_webhook",
        &[("id", "$response.body#/0/id")],
    ),
    follow("list_dead_letters", OK, "redrive_dead_letter", FIRST_ID).named("Redrive"),
];

fn cart_of_created() -> serde_json::Value {
    serde_json::json!({"items": [{"product_id": "$response.body#/id", "quantity": 1}]})
}

fn cart_of_first() -> serde_json::Value {
    serde_json::json!({"items": [{"product_id": "$response.body#/items/0/id", "quantity": 1}]})
}

fn checkout_body() -> serde_json::Value {
    serde_json::json!({"payment_method": {"card_number": "4242424242424242"}})
}

fn in_category() -> serde_json::Value {
    serde_json::json!({"category_id": "$response.body#/id"})
}

fn sign_in_body() -> serde_json::Value {
    serde_json::json!({"email": "$request.body#/email", "password": "$request.body#/password"})
}

fn stock_it() -> serde_json::Value {
    serde_json::json!({"quantity": 100, "reason": "receive"})
}

fn with_card_token() -> serde_json::Value {
    serde_json::json!({"payment_method": {
        "token": "$response.body#/token",
        "card_last4": "$response.body#/card_last4",
    }})
}

fn refresh_body() -> serde_json::Value {
    serde_json::json!({"refresh_token": "$response.body#/refresh_token"})
}

pub(super) fn links(doc: &mut utoipa::openapi::OpenApi) {
    let operations: Vec<&mut Operation> = doc
        .paths
        .paths
        .values_mut()
        .flat_map(|item| super::operations(item).map(|(_, operation)| operation))
        .collect();
    let known: std::collections::BTreeSet<String> = operations
        .iter()
        .filter_map(|o| o.operation_id.clone())
        .collect();
    for operation in operations {
        let Some(id) = operation.operation_id.clone() else {
            continue;
        };
        for follow in FOLLOWS
            .iter()
            .filter(|f| f.from == id && known.contains(f.to))
        {
            for status in follow.statuses {
                let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status)
                else {
                    continue;
                };
                let mut link = Link::builder().operation_id(follow.to);
                for (name, expression) in follow.parameters {
                    link = link.parameter(*name, *expression);
                }
                if let Some(body) = follow.body {
                    link = link.request_body(Some(body()));
                }
                if follow.whole_body {
                    // Tools that fill in the rest of a linked body
                    // (schemathesis) are told to send it as it is.
                    link = link.extensions(Some(
                        [("x-schemathesis", serde_json::json!({"merge_body": false}))]
                            .into_iter()
                            .collect(),
                    ));
                }
                response.links.insert(follow.name(), link.build().into());
            }
        }
    }
}
