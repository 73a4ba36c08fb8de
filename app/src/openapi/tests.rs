//! The generated spec's links, parameters and common answers hold together.

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
    let expected = super::links::FOLLOWS
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
            for status in ["400", "408", "413", "415", "422"] {
                assert!(responses.contains_key(status), "{at}: {status}");
            }
        }
        if at.starts_with("GET ") {
            assert!(responses.contains_key("304"), "{at}");
        }
    }
}

/// A problem body is documented under the media type it is served with,
/// and nothing else is: handlers declare `body = ProblemBody` and the
/// document states `application/problem+json` for all of them.
#[test]
fn problem_bodies_are_documented_as_problem_json() {
    let doc = doc();
    let problem = "#/components/schemas/ProblemBody";
    let mut problems = 0;
    for (at, operation) in operations(&doc) {
        for (status, response) in operation["responses"].as_object().unwrap() {
            for (media_type, content) in response["content"].as_object().into_iter().flatten() {
                let is_problem = content["schema"]["$ref"] == problem;
                assert_eq!(
                    is_problem,
                    media_type == "application/problem+json",
                    "{at} {status}: {media_type}"
                );
                problems += usize::from(is_problem);
            }
        }
    }
    // The handlers' own problems and the common answers: hundreds.
    assert!(problems > 100, "{problems}");
}

/// The rewrite touches a problem under `application/json` and nothing else.
#[test]
fn only_problem_bodies_change_media_type() {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder};
    use utoipa::openapi::{Content, PathItem, Ref, ResponseBuilder};
    let response = |schema: &str| {
        ResponseBuilder::new()
            .description("d")
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name(schema))),
            )
            .build()
    };
    let operation = OperationBuilder::new()
        .response("200", response("Product"))
        .response("404", response("ProblemBody"))
        .build();
    let mut doc = utoipa::openapi::OpenApi::default();
    doc.paths
        .paths
        .insert("/p".to_owned(), PathItem::new(HttpMethod::Get, operation));
    super::problem_media_type(&mut doc);
    let doc = serde_json::to_value(doc).unwrap();
    let responses = &doc["paths"]["/p"]["get"]["responses"];
    let media_types = |status: &str| -> Vec<String> {
        responses[status]["content"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(media_types("200"), ["application/json"]);
    assert_eq!(media_types("404"), ["application/problem+json"]);
}

/// Every GET's 200 names the validators `web::etag::middleware` gives it.
#[test]
fn every_get_documents_its_validators() {
    let doc = doc();
    let mut gets = 0;
    for (at, operation) in operations(&doc) {
        if !at.starts_with("GET ") {
            continue;
        }
        let Some(ok) = operation["responses"].get("200") else {
            continue;
        };
        for header in ["etag", "cache-control"] {
            assert!(ok["headers"][header].is_object(), "{at}: {header}");
        }
        gets += 1;
    }
    assert!(gets > 15, "{gets}");
}
