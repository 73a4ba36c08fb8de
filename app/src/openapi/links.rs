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
    name: &'static str,
    pub(super) to: &'static str,
    parameters: &'static [(&'static str, &'static str)],
    body: Option<fn() -> serde_json::Value>,
    /// The body is the whole request, not fields to set in one.
    whole_body: bool,
}

const fn follow(
    from: &'static str,
    statuses: &'static [&'static str],
    name: &'static str,
    to: &'static str,
    parameters: &'static [(&'static str, &'static str)],
) -> Follow {
    Follow {
        from,
        statuses,
        name,
        to,
        parameters,
        body: None,
        whole_body: false,
    }
}

const fn follow_with_body(
    from: &'static str,
    statuses: &'static [&'static str],
    name: &'static str,
    to: &'static str,
    body: fn() -> serde_json::Value,
) -> Follow {
    Follow {
        from,
        statuses,
        name,
        to,
        parameters: &[],
        body: Some(body),
        whole_body: false,
    }
}

/// A link whose body is the whole request to send.
const fn follow_with_request(
    from: &'static str,
    statuses: &'static [&'static str],
    name: &'static str,
    to: &'static str,
    parameters: &'static [(&'static str, &'static str)],
    body: fn() -> serde_json::Value,
) -> Follow {
    Follow {
        from,
        statuses,
        name,
        to,
        parameters,
        body: Some(body),
        whole_body: true,
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
    follow("create_product", CREATED, "GetProduct", "get_product", ID),
    follow(
        "create_product",
        CREATED,
        "UpdateProduct",
        "update_product",
        ID,
    ),
    follow("create_product", CREATED, "GetStock", "get_stock", SKU),
    follow_with_request(
        "create_product",
        CREATED,
        "StockIt",
        "adjust_stock",
        SKU,
        stock_it,
    ),
    follow_with_request(
        "create_product",
        CREATED,
        "PutInCart",
        "put_cart",
        &[],
        || serde_json::json!({"items": [{"product_id": "$response.body#/id", "quantity": 1}]}),
    ),
    follow("adjust_stock", OK, "GetStock", "get_stock", SAME_SKU),
    follow(
        "adjust_stock",
        OK,
        "ListMovements",
        "list_movements",
        SAME_SKU,
    ),
    follow("get_stock", OK, "ListMovements", "list_movements", SKU),
    follow("list_products", OK, "GetProduct", "get_product", FIRST_ID),
    follow_with_request(
        "list_products",
        OK,
        "PutInCart",
        "put_cart",
        &[],
        || serde_json::json!({"items": [{"product_id": "$response.body#/items/0/id", "quantity": 1}]}),
    ),
    follow(
        "create_category",
        CREATED,
        "ListProducts",
        "list_products",
        &[("category_id", "$response.body#/id")],
    ),
    follow_with_body(
        "create_category",
        CREATED,
        "CreateProduct",
        "create_product",
        || serde_json::json!({"category_id": "$response.body#/id"}),
    ),
    follow_with_request(
        "put_cart",
        OK,
        "Checkout",
        "place_order",
        &[],
        || serde_json::json!({"payment_method": {"card_number": "4242424242424242"}}),
    ),
    // An order → its events, payment and reservation.
    follow("place_order", PLACED, "GetOrder", "get_order", ID),
    follow("place_order", PLACED, "OrderTimeline", "order_timeline", ID),
    follow("place_order", PLACED, "CancelOrder", "cancel_order", ID),
    follow("place_order", PLACED, "ShipOrder", "ship_order", ID),
    follow(
        "place_order",
        PLACED,
        "PaymentForOrder",
        "payment_for_order",
        ORDER_OF_ORDER,
    ),
    follow(
        "place_order",
        PLACED,
        "GetReservation",
        "get_reservation",
        ORDER_OF_ORDER,
    ),
    follow("list_orders", OK, "GetOrder", "get_order", FIRST_ID),
    follow("get_order", OK, "OrderTimeline", "order_timeline", SAME_ID),
    follow("get_order", OK, "CancelOrder", "cancel_order", SAME_ID),
    follow("get_order", OK, "ShipOrder", "ship_order", SAME_ID),
    follow("ship_order", OK, "CancelOrder", "cancel_order", SAME_ID),
    follow("cancel_order", OK, "GetOrder", "get_order", SAME_ID),
    // Inventory reservations.
    follow(
        "reserve_stock",
        CREATED,
        "GetReservation",
        "get_reservation",
        ORDER_ID,
    ),
    follow(
        "reserve_stock",
        CREATED,
        "CommitReservation",
        "commit_reservation",
        ORDER_ID,
    ),
    follow(
        "reserve_stock",
        CREATED,
        "ReleaseReservation",
        "release_reservation",
        ORDER_ID,
    ),
    follow(
        "commit_reservation",
        OK,
        "RestockReservation",
        "restock_reservation",
        SAME_ORDER,
    ),
    follow(
        "commit_reservation",
        OK,
        "ReleaseReservation",
        "release_reservation",
        SAME_ORDER,
    ),
    // Payments.
    follow_with_body("tokenize", CREATED, "Authorize", "authorize", || {
        serde_json::json!({"payment_method": {
            "token": "$response.body#/token",
            "card_last4": "$response.body#/card_last4",
        }})
    }),
    follow("authorize", CREATED, "GetPayment", "get_payment", ID),
    follow(
        "authorize",
        CREATED,
        "PaymentForOrder",
        "payment_for_order",
        ORDER_ID,
    ),
    follow("authorize", CREATED, "Capture", "capture", ORDER_ID),
    follow("authorize", CREATED, "Void", "void", ORDER_ID),
    follow("capture", OK, "Refund", "refund", SAME_ORDER),
    follow("capture", OK, "GetPayment", "get_payment", ID),
    follow("payment_for_order", OK, "GetPayment", "get_payment", ID),
    follow("payment_for_order", OK, "Refund", "refund", ORDER_ID),
    // Accounts and sign-in.
    follow("register", CREATED, "GetUser", "get_user", ID),
    follow("register", CREATED, "UpdateUser", "update_user", ID),
    follow_with_request(
        "register",
        CREATED,
        "SignIn",
        "create_token",
        &[],
        || serde_json::json!({"email": "$request.body#/email", "password": "$request.body#/password"}),
    ),
    follow_with_request(
        "create_token",
        OK,
        "Refresh",
        "refresh_token",
        &[],
        refresh_body,
    ),
    follow_with_request("create_token", OK, "SignOut", "logout", &[], refresh_body),
    follow_with_request(
        "refresh_token",
        OK,
        "Refresh",
        "refresh_token",
        &[],
        refresh_body,
    ),
    follow_with_request("refresh_token", OK, "SignOut", "logout", &[], refresh_body),
    follow("list_users", OK, "GetUser", "get_user", FIRST_ID),
    // Webhooks and dead letters.
    follow(
        "create_webhook",
        CREATED,
        "DeleteWebhook",
        "delete_webhook",
        ID,
    ),
    follow(
        "list_webhooks",
        OK,
        "DeleteWebhook",
        "delete_webhook",
        &[("id", "$response.body#/0/id")],
    ),
    follow(
        "list_dead_letters",
        OK,
        "Redrive",
        "redrive_dead_letter",
        FIRST_ID,
    ),
];

fn stock_it() -> serde_json::Value {
    serde_json::json!({"quantity": 100, "reason": "receive"})
}

fn refresh_body() -> serde_json::Value {
    serde_json::json!({"refresh_token": "$response.body#/refresh_token"})
}

pub(super) fn links(doc: &mut utoipa::openapi::OpenApi) {
    let mut operations: Vec<&mut Operation> = Vec::new();
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            operations.push(operation);
        }
    }
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
                response
                    .links
                    .insert(follow.name.to_owned(), link.build().into());
            }
        }
    }
}
