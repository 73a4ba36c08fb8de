//! What the compatibility check calls breaking, and what it lets through.

use super::*;

fn spec() -> Value {
    serde_json::from_str(include_str!("../../../openapi/openapi.json")).unwrap()
}

fn breaks(change: impl FnOnce(&mut Value)) -> Vec<String> {
    let released = spec();
    let mut current = released.clone();
    change(&mut current);
    breaking_changes(&released, &current)
}

#[test]
fn the_same_document_breaks_nothing_and_additions_pass() {
    assert_eq!(breaks(|_| {}), Vec::<String>::new());
    let added = breaks(|doc| {
        doc["paths"]["/api/v1/new-things"] =
            serde_json::json!({"get": {"responses": {"200": {"description": "ok"}}}});
        doc["paths"]["/api/v1/products"]["get"]["responses"]["418"] =
            serde_json::json!({"description": "teapot"});
        doc["components"]["schemas"]["Product"]["properties"]["colour"] =
            serde_json::json!({"type": "string"});
        let params = doc["paths"]["/api/v1/products"]["get"]["parameters"]
            .as_array_mut()
            .unwrap();
        params.push(serde_json::json!({"name": "colour", "in": "query", "required": false, "schema": {"type": "string"}}));
    });
    assert_eq!(added, Vec::<String>::new());
}

#[test]
fn deliberate_breaks_are_each_caught() {
    type Change = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "path removed",
            Box::new(|doc| {
                doc["paths"].as_object_mut().unwrap().remove("/api/v1/cart");
            }),
        ),
        (
            "operation removed",
            Box::new(|doc| {
                doc["paths"]["/api/v1/products"]
                    .as_object_mut()
                    .unwrap()
                    .remove("post");
            }),
        ),
        (
            "response 404 removed",
            Box::new(|doc| {
                doc["paths"]["/api/v1/products/{id}"]["get"]["responses"]
                    .as_object_mut()
                    .unwrap()
                    .remove("404");
            }),
        ),
        (
            "property `sku` removed",
            Box::new(|doc| {
                let props = doc["components"]["schemas"]["Product"]["properties"]
                    .as_object_mut()
                    .unwrap();
                let sku = props.remove("sku").unwrap();
                props.insert("stock_keeping_unit".into(), sku); // a rename
            }),
        ),
        (
            "became required",
            Box::new(|doc| {
                let params = doc["paths"]["/api/v1/products"]["get"]["parameters"]
                    .as_array_mut()
                    .unwrap();
                params[0]["required"] = Value::Bool(true);
            }),
        ),
        (
            "maximum lowered",
            Box::new(|doc| {
                let params = doc["paths"]["/api/v1/products"]["get"]["parameters"]
                    .as_array_mut()
                    .unwrap();
                params[0]["schema"]["maximum"] = serde_json::json!(50);
            }),
        ),
        (
            "enum value",
            Box::new(|doc| {
                let values = doc["components"]["schemas"]["OrderStatus"]["enum"]
                    .as_array_mut()
                    .unwrap();
                values.pop();
            }),
        ),
        (
            "property `description` became required",
            Box::new(|doc| {
                doc["components"]["schemas"]["NewProduct"]["required"]
                    .as_array_mut()
                    .unwrap()
                    .push("description".into());
            }),
        ),
    ];
    for (expected, change) in cases {
        let found = breaks(change);
        assert!(
            found.iter().any(|line| line.contains(expected)),
            "{expected}: {found:?}"
        );
    }
}

/// The gate itself: the committed spec keeps every promise of each
/// released baseline (`openapi/baseline/vN.json`) whose version it
/// still serves. Regenerate a baseline only when releasing.
#[test]
fn the_committed_spec_breaks_no_released_baseline() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/baseline");
    let current = spec();
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let released: Value = serde_json::from_str(&text).unwrap();
        if !serves_version_of(&released, &current) {
            continue;
        }
        checked += 1;
        let found = breaking_changes(&released, &current);
        assert!(
            found.is_empty(),
            "{} is broken (bump the API version to break it):\n{}",
            entry.path().display(),
            found.join("\n")
        );
    }
    assert!(checked > 0, "no baseline checked");
}

#[test]
fn retiring_an_api_version_is_a_version_change() {
    let released = spec();
    let mut current = released.clone();
    let paths = current["paths"].as_object_mut().unwrap();
    let moved: Map<String, Value> = paths
        .iter()
        .map(|(path, item)| (path.replace("/api/v1/", "/api/v2/"), item.clone()))
        .collect();
    *paths = moved;
    assert!(!serves_version_of(&released, &current));
    assert!(serves_version_of(&released, &released));
}
