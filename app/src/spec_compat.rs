//! The breaking-change gate: what a new OpenAPI document breaks for the
//! clients of a released one.
//!
//! Breaking: a path, operation or documented response removed; a parameter
//! removed, or one that was optional (or new) made required; a request body
//! made required; a property removed (renamed is removed plus added); an
//! output property no longer required; a new required input property; an
//! enum value removed; a type changed; a constraint narrowed (`maxLength`,
//! `maximum`, `maxItems` lowered or added; `minLength`, `minimum`,
//! `minItems` raised or added; a `pattern` added or changed). Additions
//! pass. A released version whose paths (`/api/vN/`) the new document no
//! longer has at all is retired: that is an API version change.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// Every breaking change from `released` to `current`, one line each.
pub fn breaking_changes(released: &Value, current: &Value) -> Vec<String> {
    let mut gate = Gate {
        released,
        current,
        found: Vec::new(),
        seen: BTreeSet::new(),
    };
    gate.paths();
    gate.found
}

/// Whether `current` still serves the API version of `released` (its
/// `/api/vN/` prefix).
pub fn serves_version_of(released: &Value, current: &Value) -> bool {
    let versions = |doc: &Value| -> BTreeSet<String> {
        doc["paths"]
            .as_object()
            .into_iter()
            .flat_map(|paths| paths.keys())
            .filter_map(|path| path.strip_prefix("/api/"))
            .filter_map(|rest| rest.split('/').next())
            .map(str::to_owned)
            .collect()
    };
    let released = versions(released);
    released.is_empty() || !released.is_disjoint(&versions(current))
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

struct Gate<'a> {
    released: &'a Value,
    current: &'a Value,
    found: Vec<String>,
    /// (released schema, current schema, input?) pairs already compared.
    seen: BTreeSet<(String, String, bool)>,
}

impl Gate<'_> {
    fn paths(&mut self) {
        let empty = Map::new();
        let released = self.released["paths"].as_object().unwrap_or(&empty);
        let current = self.current["paths"].as_object().unwrap_or(&empty);
        for (path, before) in released {
            let Some(after) = current.get(path) else {
                self.found.push(format!("{path}: path removed"));
                continue;
            };
            for method in METHODS {
                let Some(old) = before.get(method) else {
                    continue;
                };
                let at = format!("{} {path}", method.to_uppercase());
                match after.get(method) {
                    Some(new) => self.operation(&at, old, new, before, after),
                    None => self.found.push(format!("{at}: operation removed")),
                }
            }
        }
    }

    fn operation(
        &mut self,
        at: &str,
        old: &Value,
        new: &Value,
        old_item: &Value,
        new_item: &Value,
    ) {
        // Parameters of the path item apply to every operation under it.
        let params = |item: &Value, op: &Value| -> Vec<Value> {
            let mut all: Vec<Value> = item["parameters"].as_array().cloned().unwrap_or_default();
            all.extend(op["parameters"].as_array().cloned().unwrap_or_default());
            all
        };
        let (old_params, new_params) = (params(old_item, old), params(new_item, new));
        let key = |p: &Value| {
            (
                p["name"].as_str().unwrap_or("").to_owned(),
                p["in"].as_str().unwrap_or("").to_owned(),
            )
        };
        for p in &old_params {
            let (name, location) = key(p);
            match new_params
                .iter()
                .find(|q| key(q) == (name.clone(), location.clone()))
            {
                None => self
                    .found
                    .push(format!("{at}: {location} parameter `{name}` removed")),
                Some(q) => {
                    if !is_true(&p["required"]) && is_true(&q["required"]) {
                        self.found.push(format!(
                            "{at}: {location} parameter `{name}` became required"
                        ));
                    }
                    self.schema(
                        &format!("{at} {location} `{name}`"),
                        &p["schema"],
                        &q["schema"],
                        true,
                    );
                }
            }
        }
        for q in &new_params {
            if is_true(&q["required"]) && !old_params.iter().any(|p| key(p) == key(q)) {
                let (name, location) = key(q);
                self.found
                    .push(format!("{at}: new required {location} parameter `{name}`"));
            }
        }
        let (old_body, new_body) = (&old["requestBody"], &new["requestBody"]);
        if !old_body.is_null() {
            if !is_true(&old_body["required"]) && is_true(&new_body["required"]) {
                self.found
                    .push(format!("{at}: request body became required"));
            }
            self.contents(
                &format!("{at} request"),
                &old_body["content"],
                &new_body["content"],
                true,
            );
        } else if is_true(&new_body["required"]) {
            self.found
                .push(format!("{at}: a required request body was added"));
        }
        let empty = Map::new();
        let old_responses = old["responses"].as_object().unwrap_or(&empty);
        for (status, old_response) in old_responses {
            match new["responses"].get(status) {
                None => self.found.push(format!("{at}: response {status} removed")),
                Some(new_response) => self.contents(
                    &format!("{at} {status}"),
                    &old_response["content"],
                    &new_response["content"],
                    false,
                ),
            }
        }
    }

    fn contents(&mut self, at: &str, old: &Value, new: &Value, input: bool) {
        let Some(old) = old.as_object() else { return };
        for (media, old_media) in old {
            match new.get(media) {
                None => self.found.push(format!("{at}: media type {media} removed")),
                Some(new_media) => {
                    self.schema(at, &old_media["schema"], &new_media["schema"], input)
                }
            }
        }
    }

    fn resolve<'v>(doc: &'v Value, schema: &'v Value) -> (&'v Value, String) {
        match schema["$ref"].as_str() {
            Some(reference) => {
                let name = reference.rsplit('/').next().unwrap_or(reference);
                (&doc["components"]["schemas"][name], reference.to_owned())
            }
            None => (schema, String::new()),
        }
    }

    fn schema(&mut self, at: &str, old: &Value, new: &Value, input: bool) {
        if old.is_null() {
            return;
        }
        let (old, old_ref) = Self::resolve(self.released, old);
        let (new, new_ref) = Self::resolve(self.current, new);
        if !old_ref.is_empty() && !self.seen.insert((old_ref.clone(), new_ref.clone(), input)) {
            return;
        }
        if new.is_null() {
            self.found.push(format!("{at}: schema {old_ref} removed"));
            return;
        }
        let at = if old_ref.is_empty() {
            at.to_owned()
        } else {
            format!("{at} ({})", old_ref.rsplit('/').next().unwrap_or(""))
        };
        // Nullable fields are spelled `oneOf: [X, null]` or `type: [t, "null"]`.
        if let (Some(old_one), Some(new_one)) = (old["oneOf"].as_array(), new["oneOf"].as_array()) {
            for (i, old_branch) in old_one.iter().enumerate() {
                if let Some(new_branch) = new_one.get(i) {
                    self.schema(&at, old_branch, new_branch, input);
                } else {
                    self.found.push(format!("{at}: oneOf branch {i} removed"));
                }
            }
            return;
        }
        let types = |s: &Value| -> BTreeSet<String> {
            match &s["type"] {
                Value::String(t) => [t.clone()].into(),
                Value::Array(ts) => ts
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect(),
                _ => BTreeSet::new(),
            }
        };
        let (old_types, new_types) = (types(old), types(new));
        if !old_types.is_empty() && !new_types.is_empty() && !old_types.is_subset(&new_types) {
            self.found
                .push(format!("{at}: type {old_types:?} became {new_types:?}"));
        }
        if let Some(old_enum) = old["enum"].as_array() {
            let new_enum = new["enum"].as_array().cloned().unwrap_or_default();
            for value in old_enum {
                if !new_enum.is_empty() && !new_enum.contains(value) {
                    self.found.push(format!("{at}: enum value {value} removed"));
                }
            }
        }
        if input {
            self.constraints(&at, old, new);
        }
        let empty = Map::new();
        let old_props = old["properties"].as_object().unwrap_or(&empty);
        let new_props = new["properties"].as_object().unwrap_or(&empty);
        let required = |s: &Value| -> BTreeSet<String> {
            s["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        };
        let (old_required, new_required) = (required(old), required(new));
        for (name, old_prop) in old_props {
            match new_props.get(name) {
                None => self.found.push(format!("{at}: property `{name}` removed")),
                Some(new_prop) => self.schema(&format!("{at}.{name}"), old_prop, new_prop, input),
            }
        }
        for name in new_required.difference(&old_required) {
            if input {
                self.found
                    .push(format!("{at}: property `{name}` became required"));
            }
        }
        for name in old_required.difference(&new_required) {
            if !input {
                self.found.push(format!(
                    "{at}: property `{name}` is no longer always present"
                ));
            }
        }
        if !old["items"].is_null() {
            self.schema(&format!("{at}[]"), &old["items"], &new["items"], input);
        }
    }

    fn constraints(&mut self, at: &str, old: &Value, new: &Value) {
        for upper in ["maxLength", "maximum", "maxItems"] {
            match (old[upper].as_f64(), new[upper].as_f64()) {
                (None, Some(n)) => self.found.push(format!("{at}: {upper} {n} added")),
                (Some(o), Some(n)) if n < o => self
                    .found
                    .push(format!("{at}: {upper} lowered from {o} to {n}")),
                _ => {}
            }
        }
        for lower in ["minLength", "minimum", "minItems"] {
            match (old[lower].as_f64(), new[lower].as_f64()) {
                (None, Some(n)) if n > 0.0 => self.found.push(format!("{at}: {lower} {n} added")),
                (Some(o), Some(n)) if n > o => self
                    .found
                    .push(format!("{at}: {lower} raised from {o} to {n}")),
                _ => {}
            }
        }
        if !new["pattern"].is_null() && new["pattern"] != old["pattern"] {
            self.found
                .push(format!("{at}: pattern {} set", new["pattern"]));
        }
    }
}

fn is_true(value: &Value) -> bool {
    value.as_bool() == Some(true)
}

#[cfg(test)]
mod tests;
