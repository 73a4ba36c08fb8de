//! The OpenAPI document: collected from every module's routes, whatever
//! the topology (a gateway forwards what it does not serve itself).

use actix_web::App;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Header, PathItem, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::AppExt as _;

mod links;

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
            let mut routes = web::Routes::Document(cfg);
            // The modules compiled into this binary (all of them by default:
            // the committed spec is the whole shop's).
            for registration in crate::registry::COMPILED {
                (registration.routes)(&mut routes);
            }
            events::http::configure(&mut routes);
        }))
        .split_for_parts();
    let mut doc = BaseDoc::openapi();
    // The modules' tags in registration order, then the process's own.
    let tags = crate::registry::COMPILED
        .iter()
        .flat_map(|registration| registration.tags)
        .chain(&[("events", "Integration events: dead letters")])
        .map(|(name, description)| {
            utoipa::openapi::tag::TagBuilder::new()
                .name(*name)
                .description(Some(*description))
                .build()
        });
    doc.tags = Some(tags.collect());
    doc.merge(collected);
    problem_media_type(&mut doc);
    common_responses(&mut doc);
    links::links(&mut doc);
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

/// Every error is served as `application/problem+json` (`web::problem`
/// sets it), so a response declared with `body = ProblemBody` is documented
/// under that media type here, once, rather than by `content_type = ...` in
/// every handler's annotation (utoipa would say `application/json`).
fn problem_media_type(doc: &mut utoipa::openapi::OpenApi) {
    let problem = Ref::from_schema_name("ProblemBody");
    for item in doc.paths.paths.values_mut() {
        for (_, operation) in operations(item) {
            for response in operation.responses.responses.values_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                let is_problem = matches!(
                    response.content.get("application/json"),
                    Some(RefOr::T(Content { schema: Some(RefOr::Ref(r)), .. })) if *r == problem
                );
                if is_problem
                    && let Some(content) = response.content.shift_remove("application/json")
                {
                    response
                        .content
                        .insert("application/problem+json".to_owned(), content);
                }
            }
        }
    }
}

/// The methods the shop serves, as the document's operations are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// The operations of a path item (the methods the shop serves), each with
/// its method.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (Verb, &mut Operation)> {
    [
        (Verb::Get, &mut item.get),
        (Verb::Post, &mut item.post),
        (Verb::Put, &mut item.put),
        (Verb::Patch, &mut item.patch),
        (Verb::Delete, &mut item.delete),
    ]
    .into_iter()
    .filter_map(|(verb, operation)| operation.as_mut().map(|o| (verb, o)))
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
/// does not already document that status in its own words (a 422 it
/// documents gets what the extractors refuse with a 422 appended: they
/// refuse before any handler runs).
fn common_responses(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let api = path.starts_with("/api/v1/");
        for (verb, operation) in operations(item) {
            let is_get = verb == Verb::Get;
            let answers = common_answers(api, verb, operation);
            let refused_first = api.then(|| extractors_422(verb, operation));
            let responses = &mut operation.responses.responses;
            for (status, response) in answers {
                match responses.get_mut(status) {
                    None => {
                        responses.insert(status.to_owned(), response.into());
                    }
                    // What the extractors refuse with a 422 happens before
                    // the handler, whatever it documents for that status:
                    // said beside its own words.
                    Some(RefOr::T(own)) if status == "422" => {
                        if let Some(first) = &refused_first {
                            own.description = format!(
                                "{}. Also, before the operation runs: {first}",
                                own.description.trim_end_matches('.')
                            );
                        }
                    }
                    Some(_) => {}
                }
            }
            if is_get && let Some(RefOr::T(ok)) = responses.get_mut("200") {
                validators(ok);
            }
        }
    }
}

/// The headers `web::etag::middleware` gives every GET's 200 (a body up
/// to 4 MiB), unless the operation describes them in its own words.
fn validators(ok: &mut Response) {
    let header = |description: &str| {
        let mut header = Header::default();
        header.description = Some(description.to_owned());
        RefOr::T(header)
    };
    ok.headers.entry("etag".to_owned()).or_insert_with(|| {
        header("The representation's tag, for `If-None-Match` (304 when unchanged)")
    });
    ok.headers
        .entry("cache-control".to_owned())
        .or_insert_with(|| {
            header("`no-cache` unless the operation says otherwise: check the tag before reusing")
        });
}

/// What the extractors and `web::text::refuse_nul` refuse with a 422,
/// before the handler runs: a body's wrong types, unknown fields and NUL
/// characters, or a NUL in the query string.
fn extractors_422(verb: Verb, operation: &Operation) -> &'static str {
    let has_body = operation.request_body.is_some();
    let body_anyway = !has_body && matches!(verb, Verb::Post | Verb::Put | Verb::Patch);
    if has_body {
        "a field of the wrong type or an unknown field (`invalid_body`), or text with a NUL \
         character (`validation_failed`)"
    } else if body_anyway {
        "a NUL character in the query string (`validation_failed`), or a JSON body sent \
         anyway (this operation reads none) that is not an object (`invalid_body`) or holds a \
         NUL character"
    } else {
        "a NUL character in the query string (`validation_failed`)"
    }
}

fn common_answers(api: bool, verb: Verb, operation: &Operation) -> Vec<(&'static str, Response)> {
    let is_get = verb == Verb::Get;
    let located = |place: ParameterIn| {
        operation.parameters.iter().flatten().any(|p| match p {
            RefOr::T(p) => p.parameter_in == place,
            RefOr::Ref(_) => false,
        })
    };
    let (in_path, in_query) = (located(ParameterIn::Path), located(ParameterIn::Query));
    let query_named = |name: &str| {
        operation.parameters.iter().flatten().any(|p| match p {
            RefOr::T(p) => p.parameter_in == ParameterIn::Query && p.name == name,
            RefOr::Ref(_) => false,
        })
    };
    // A list's page: a cursor to check, a limit to keep in range.
    let (cursor, limit) = (query_named("cursor"), query_named("limit"));
    let has_body = operation.request_body.is_some();
    // A JSON body sent to an operation that reads none is still looked at
    // (`web::text::refuse_nul`), except on the methods that never carry one.
    let body_anyway = !has_body && matches!(verb, Verb::Post | Verb::Put | Verb::Patch);
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
    if in_query && cursor {
        malformed.push(
            "a query parameter does not parse (`invalid_query_parameter`), or the cursor is \
             not one this list handed out (`invalid_cursor`)",
        );
    } else if in_query {
        malformed.push("a query parameter does not parse (`invalid_query_parameter`)");
    }
    if has_body {
        malformed.push("the body is not JSON (`malformed_body`)");
    }
    if body_anyway {
        malformed.push(
            "a JSON body sent anyway (this operation reads none) could not be read (`malformed_body`)",
        );
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
    if has_body || body_anyway {
        answers.push((
            "408",
            problem(
                "The body did not arrive within `server.body_timeout_ms` of the request's \
                 head (`request_timeout`); the connection is closed",
            ),
        ));
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
    if body_anyway {
        answers.push((
            "413",
            problem(
                "A JSON body sent anyway (this operation reads none) is larger than the \
                 limit (`payload_too_large`)",
            ),
        ));
    }
    if has_body || limit {
        answers.push((
            "422",
            problem(
                "Well-formed but invalid: a field of the wrong type, an unknown field \
                 (`invalid_body`), a broken rule or a limit out of range (`validation_failed`, \
                 every invalid field in `errors`), or text with a NUL character",
            ),
        ));
    } else if body_anyway {
        answers.push((
            "422",
            problem(
                "A NUL character in the query string (`validation_failed`), or a JSON body \
                 sent anyway (this operation reads none) that is not an object \
                 (`invalid_body`) or holds a NUL character",
            ),
        ));
    } else {
        answers.push((
            "422",
            problem("A NUL character in the query string (`validation_failed`)"),
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
        "502",
        problem(
            "A gateway forwarded the request to the process serving the module, and the \
             module's answer broke off midway (`upstream_answer_broken`): a request that \
             changes something may have been applied; read before trying again",
        ),
    ));
    answers.push((
        "503",
        problem_retry_after(
            "A dependency does not answer: the module's database (`<module>_unavailable`), \
             the token keys (`auth_unavailable`), another module (`upstream_unavailable`, \
             `dependency_circuit_open`, `dependency_overloaded`, `deadline_exceeded`), the \
             module is not served here (`module_not_served`), or, where a password is \
             checked, too many checks at once (`password_hashing_busy`)",
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
mod tests;
