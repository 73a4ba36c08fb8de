//! The OpenAPI document: collected from every module's routes, whatever
//! the topology (a gateway forwards what it does not serve itself).

use actix_web::App;
use utoipa::openapi::link::Link;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Header, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::AppExt as _;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "The shop",
        description = "E-commerce API of a modular monolith. Errors are RFC 9457 \
            `application/problem+json` with a stable `code`; lists are keyset-paginated \
            (`limit`, opaque `cursor`, `next_cursor`). Every response carries `x-request-id`. \
            A request body is a JSON object; no text (string, key or query parameter) may \
            hold the NUL character U+0000, which is refused with 422 naming the field.",
        license(name = "MIT OR Apache-2.0"),
    ),
    tags(
        (name = "auth", description = "Sign-in, token refresh and sign-out; the public keys of access tokens"),
        (name = "users", description = "Accounts, profiles and roles"),
        (name = "catalog", description = "Products"),
        (name = "inventory", description = "Stock per SKU, its history, reservations"),
        (name = "orders", description = "Cart, checkout (with Idempotency-Key), orders and their timeline"),
        (name = "payments", description = "Card payments and their ledger (through the SANDBOX provider: test cards only)"),
        (name = "notifications", description = "Messages sent on events: email and signed webhooks"),
        (name = "events", description = "Integration events: dead letters"),
    ),
    // Referenced by a query parameter (`sort`), which does not register it.
    components(schemas(catalog_api::ProductSort)),
    modifiers(&SecurityAddon),
)]
struct BaseDoc;

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.bearer_format = Some("JWT".to_owned());
        bearer.description = Some(
            "Access token from `POST /api/v1/auth/token`. The scopes listed on an operation are \
             the roles allowed to call it; an empty list means any signed-in user."
                .to_owned(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
    }
}

/// The full document, as served at `/api-docs/openapi.json`.
pub fn api_doc() -> utoipa::openapi::OpenApi {
    let (_, collected) = App::new()
        .into_utoipa_app()
        .service(auth::jwks)
        .service(utoipa_actix_web::scope("/api/v1").configure(|cfg| {
            // The modules compiled into this binary (all of them by default:
            // the committed spec is the whole shop's).
            for registration in crate::registry::COMPILED {
                (registration.routes)(cfg);
            }
            events::http::configure(cfg);
        }))
        .split_for_parts();
    let mut doc = BaseDoc::openapi();
    doc.merge(collected);
    common_responses(&mut doc);
    links(&mut doc);
    set_needs(&mut doc);
    doc
}

/// Rules between the fields of one body that utoipa has no attribute
/// for: when the first field is set (not null), the second must be too.
/// Stated as JSON Schema's `dependentSchemas` (`dependentRequired` would
/// also bind a field sent as `null`, which the server takes as absent).
const SET_NEEDS: &[(&str, &str, &str)] = &[
    // `PATCH /users/me`: an email change is confirmed with the password.
    ("MePatch", "email", "current_password"),
];

fn set_needs(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::Schema;
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for (schema, field, needs) in SET_NEEDS {
        let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(*schema) else {
            continue;
        };
        // When `field` is present: it is null, or `needs` is there too.
        let rule = serde_json::json!({
            "anyOf": [
                {"properties": {*field: {"type": "null"}}},
                {"required": [needs], "properties": {*needs: {"not": {"type": "null"}}}},
            ],
        });
        // Serialised flat beside the schema's own keywords (one key: the
        // extensions are a hash map, whose order would vary).
        let keywords = object.extensions.get_or_insert_with(Default::default);
        let rules = keywords
            .entry("dependentSchemas".to_owned())
            .or_insert_with(|| serde_json::json!({}));
        rules[*field] = rule;
    }
}

/// What a link passes on: `(parameter, runtime expression)`s and, for a
/// body, a JSON value whose strings may be expressions.
struct Follow {
    from: &'static str,
    statuses: &'static [&'static str],
    name: &'static str,
    to: &'static str,
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
const FOLLOWS: &[Follow] = &[
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

fn links(doc: &mut utoipa::openapi::OpenApi) {
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

/// A problem response (`application/problem+json`, [`kernel::ProblemBody`]).
fn problem(description: &str) -> Response {
    Response::builder()
        .description(description)
        .content(
            "application/problem+json",
            Content::new(Some(Ref::from_schema_name("ProblemBody"))),
        )
        .build()
}

/// The same, telling when to try again.
fn problem_retry_after(description: &str) -> Response {
    let mut response = problem(description);
    let mut retry_after = Header::default();
    retry_after.description = Some("Seconds to wait before trying again".to_owned());
    response
        .headers
        .insert("retry-after".to_owned(), retry_after.into());
    response
}

/// The answers no handler writes itself: they come from the machinery every
/// operation goes through (the token check, the path, query and body
/// extractors, `web::text::refuse_nul`, the rate limit, the ETag
/// middleware, a gateway forwarding to another process, a dependency
/// that does not answer). Added to every operation that can give them and
/// does not already document that status in its own words.
fn common_responses(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let api = path.starts_with("/api/v1/");
        for (is_get, operation) in [
            (true, &mut item.get),
            (false, &mut item.post),
            (false, &mut item.put),
            (false, &mut item.patch),
            (false, &mut item.delete),
        ] {
            let Some(operation) = operation else { continue };
            let answers = common_answers(api, is_get, operation);
            let responses = &mut operation.responses.responses;
            for (status, response) in answers {
                responses
                    .entry(status.to_owned())
                    .or_insert_with(|| response.into());
            }
        }
    }
}

fn common_answers(api: bool, is_get: bool, operation: &Operation) -> Vec<(&'static str, Response)> {
    let located = |place: ParameterIn| {
        operation.parameters.iter().flatten().any(|p| match p {
            RefOr::T(p) => p.parameter_in == place,
            RefOr::Ref(_) => false,
        })
    };
    let (in_path, in_query) = (located(ParameterIn::Path), located(ParameterIn::Query));
    let has_body = operation.request_body.is_some();
    // `bearer: [roles]`; an empty list is any signed-in user.
    let scopes: Option<Vec<String>> = operation.security.as_ref().map(|requirements| {
        requirements
            .iter()
            .filter_map(|r| serde_json::to_value(r).ok())
            .filter_map(|r| r.get("bearer").cloned())
            .filter_map(|s| serde_json::from_value::<Vec<String>>(s).ok())
            .flatten()
            .collect()
    });
    let mut answers = Vec::new();
    if is_get {
        answers.push((
            "304",
            Response::new("Not modified since the `ETag` sent in `If-None-Match`"),
        ));
    }
    if !api {
        return answers;
    }
    let mut malformed = Vec::new();
    if in_path {
        malformed.push("a path parameter does not parse (`invalid_path_parameter`)");
    }
    if in_query {
        malformed.push(
            "a query parameter does not parse (`invalid_query_parameter`), or the cursor is \
             not one this list handed out (`invalid_cursor`)",
        );
    }
    if has_body {
        malformed.push("the body is not JSON (`malformed_body`)");
    }
    if !malformed.is_empty() {
        let text = format!("Malformed request: {}", malformed.join("; "));
        answers.push(("400", problem(&text)));
    }
    if let Some(scopes) = &scopes {
        let mut unauthenticated = problem(
            "No bearer token (`unauthenticated`), or one that is expired, forged or signed by \
             an unknown key (`invalid_token`)",
        );
        let mut challenge = Header::default();
        challenge.description = Some(
            "`Bearer realm=\"shop\"`, with `error=\"invalid_token\"` for a bad token".to_owned(),
        );
        unauthenticated
            .headers
            .insert("www-authenticate".to_owned(), challenge.into());
        answers.push(("401", unauthenticated));
        if !scopes.is_empty() && !scopes.iter().any(|s| s == "customer") {
            answers.push((
                "403",
                problem("Signed in without a role this operation needs (`forbidden`)"),
            ));
        }
    }
    if has_body {
        answers.push((
            "413",
            problem("The body is larger than the limit (`payload_too_large`)"),
        ));
        answers.push((
            "415",
            problem(
                "The body is not declared as JSON (`unsupported_media_type`): send \
                 `Content-Type: application/json`",
            ),
        ));
    }
    if has_body || in_query {
        answers.push((
            "422",
            problem(
                "Well-formed but invalid: a field of the wrong type, an unknown field \
                 (`invalid_body`), a broken rule or a limit out of range (`validation_failed`, \
                 every invalid field in `errors`), or text with a NUL character",
            ),
        ));
    }
    answers.push((
        "429",
        problem_retry_after("Over a rate limit (`rate_limited`)"),
    ));
    answers.push((
        "500",
        problem("An unexpected error (`internal_error`); the details are logged, not shown"),
    ));
    answers.push((
        "503",
        problem_retry_after(
            "A dependency does not answer: the module's database (`<module>_unavailable`), \
             the token keys (`auth_unavailable`), another module (`upstream_unavailable`, \
             `dependency_circuit_open`, `dependency_overloaded`, `deadline_exceeded`), or the \
             module is not served here (`module_not_served`)",
        ),
    ));
    answers.push((
        "504",
        problem(
            "A gateway forwarded the request to the process serving the module and got no \
             answer in time (`upstream_timeout`)",
        ),
    ));
    answers
}

/// The document as pretty JSON with a trailing newline (what `shop openapi`
/// prints and `openapi/openapi.json` holds).
///
/// # Errors
/// Serialisation failure (not expected).
pub fn api_doc_json() -> serde_json::Result<String> {
    let mut text = serde_json::to_string_pretty(&api_doc())?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::to_value(super::api_doc()).unwrap()
    }

    fn operations(doc: &Value) -> Vec<(String, &Value)> {
        let mut all = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                all.push((format!("{} {path}", method.to_uppercase()), operation));
            }
        }
        all
    }

    /// A link names an operation of the document and parameters that
    /// operation has: a renamed handler or parameter cannot leave a link
    /// pointing nowhere.
    #[test]
    fn links_lead_to_real_operations_and_parameters() {
        let doc = doc();
        let all = operations(&doc);
        let by_id = |id: &str| {
            all.iter()
                .find(|(_, op)| op["operationId"] == id)
                .map(|(_, op)| *op)
        };
        let mut links = 0;
        for (at, operation) in &all {
            for (status, response) in operation["responses"].as_object().unwrap() {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    links += 1;
                    let target = link["operationId"].as_str().unwrap();
                    let target = by_id(target)
                        .unwrap_or_else(|| panic!("{at} {status} {name}: no operation {target}"));
                    let given: Vec<&String> = link["parameters"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|p| p.0)
                        .collect();
                    for path_parameter in target["parameters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|p| p["in"] == "path")
                    {
                        let wanted = path_parameter["name"].as_str().unwrap_or("");
                        assert!(
                            given.iter().any(|g| g.as_str() == wanted),
                            "{at} {status} {name}: the link does not give path parameter {wanted}"
                        );
                    }
                    for parameter in given {
                        let known = target["parameters"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|p| p["name"] == parameter.as_str());
                        assert!(known, "{at} {status} {name}: no parameter {parameter}");
                    }
                }
            }
        }
        // Every walk of the table whose ends are compiled in is there.
        let expected = super::FOLLOWS
            .iter()
            .filter(|f| by_id(f.from).is_some() && by_id(f.to).is_some())
            .map(|f| f.statuses.len())
            .sum::<usize>();
        assert_eq!(links, expected);
    }

    /// Every operation under `/api/v1` documents the answers of the shared
    /// machinery, as problems.
    #[test]
    fn common_answers_are_documented_as_problems() {
        let doc = doc();
        for (at, operation) in operations(&doc) {
            if !at.contains(" /api/v1/") {
                continue;
            }
            let responses = operation["responses"].as_object().unwrap();
            for status in ["429", "500", "503", "504"] {
                let problem = &responses[status]["content"]["application/problem+json"];
                assert!(problem.is_object(), "{at}: {status}");
            }
            if operation["security"].is_array() {
                assert!(responses.contains_key("401"), "{at}");
            }
            if operation["requestBody"].is_object() {
                for status in ["400", "413", "415", "422"] {
                    assert!(responses.contains_key(status), "{at}: {status}");
                }
            }
            if at.starts_with("GET ") {
                assert!(responses.contains_key("304"), "{at}");
            }
        }
    }
}
