//! Distributed traces, end to end: real `shop` processes export their spans
//! over OTLP/HTTP to a receiver run by the test, which decodes them with the
//! `opentelemetry-proto` types. A checkout sent with a known `traceparent`
//! must come back as one trace across processes, every parent link
//! resolving; an event handler's span must continue its publisher's trace
//! over RabbitMQ.

use std::sync::{Arc, Mutex};

use actix_web::web::{self, Bytes, Data};
use actix_web::{App, HttpResponse, HttpServer};
use kernel::Role;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::checkout::shop::{fill_cart, settled, stocked_product};
use crate::helpers::{Shop, eventually, free_port, mint_token};
use crate::journey::{live, start, start_split, url};
use crate::saga_crash::Deployment;

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent: String,
    /// The trace ids of its links.
    links: Vec<String>,
}

/// Server (OTLP `SpanKind` 2), client (3), producer (4), consumer (5).
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

/// A running OTLP/HTTP trace receiver.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let store = Data::new(Arc::clone(&spans));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(store.clone())
                .app_data(web::PayloadConfig::new(64 << 20))
                .route("/v1/traces", web::post().to(receive))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Receiver {
            url: format!("http://127.0.0.1:{port}"),
            spans,
        }
    }

    fn trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

async fn receive(body: Bytes, spans: Data<Arc<Mutex<Vec<Received>>>>) -> HttpResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body.as_ref()) else {
        return HttpResponse::BadRequest().finish();
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .and_then(|v| match v {
                AnyValue::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(Received {
                    service: service.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent: hex::encode(&span.parent_span_id),
                    links: span
                        .links
                        .iter()
                        .map(|l| hex::encode(&l.trace_id))
                        .collect(),
                });
            }
        }
    }
    spans.lock().unwrap().extend(received);
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(ExportTraceServiceResponse::default().encode_to_vec())
}

/// The shop in two processes on RabbitMQ, both exporting to `receiver`:
/// `shop-main` serves every module but inventory and payment, which
/// `shop-apart` serves. Returns the deployment, both processes' URLs
/// (main, apart) and the processes.
async fn two_processes(receiver: &Receiver) -> (Deployment, String, String, Vec<Shop>) {
    let deployment = Deployment::new().await;
    let (main, apart) = (free_port(), free_port());
    let (main_url, apart_url) = (url(main), url(apart));
    let endpoint = receiver.url.as_str();
    // Export at once rather than every five seconds.
    let main_extra = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_SERVICE_NAME", "shop-main"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let apart_extra = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_SERVICE_NAME", "shop-apart"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("APP__MODULES__ENABLED", "inventory,payment"),
    ];
    let main_remote = [
        ("inventory", apart_url.as_str()),
        ("payment", apart_url.as_str()),
    ];
    let apart_remote = [("user", main_url.as_str())];
    let processes = start_split(
        &deployment,
        &[
            (main, &main_extra, &main_remote),
            (apart, &apart_extra, &apart_remote),
        ],
    )
    .await;
    (deployment, main_url, apart_url, processes)
}

/// A fresh W3C context: (traceparent, trace id, parent span id).
fn known_context() -> (String, String, String) {
    let trace_id = Uuid::new_v4().simple().to_string();
    let parent = Uuid::new_v4().simple().to_string()[..16].to_owned();
    (format!("00-{trace_id}-{parent}-01"), trace_id, parent)
}

/// Every span of `spans` has as parent either `root_parent` or another
/// span of `spans`: the trace is one tree hanging from the caller's span.
fn dangling(spans: &[Received], root_parent: &str) -> Vec<Received> {
    spans
        .iter()
        .filter(|s| s.parent != root_parent && !spans.iter().any(|p| p.span_id == s.parent))
        .cloned()
        .collect()
}

fn by_id<'a>(spans: &'a [Received], id: &str) -> Option<&'a Received> {
    spans.iter().find(|s| s.span_id == id)
}

#[tokio::test]
async fn a_checkout_across_processes_is_one_trace_continuing_the_callers_context() {
    let receiver = Receiver::start().await;
    let (deployment, main, _apart, processes) = two_processes(&receiver).await;
    let http = crate::helpers::http();
    let admin = mint_token(&deployment.settings, &[Role::Admin]);
    let customer = mint_token(&deployment.settings, &[Role::Customer]);
    let sku = format!("TRACE-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let product = stocked_product(&http, &main, &admin, &sku, 1250, 5).await;
    fill_cart(&http, &main, &customer, &product, 1).await;

    let (traceparent, trace_id, caller) = known_context();
    let placed = http
        .post(format!("{main}/api/v1/orders"))
        .bearer_auth(&customer)
        .header("idempotency-key", Uuid::new_v4().to_string())
        .header("traceparent", &traceparent)
        .json(&json!({"payment_method": {"card_number": payment_sandbox::cards::SUCCEEDS}}))
        .send()
        .await
        .unwrap();
    assert!(placed.status().is_success(), "{}", placed.status());
    let order: Value = placed.json().await.unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    let order = settled(&http, &main, &customer, &id).await;
    assert_eq!(order["status"], "confirmed", "{order}");

    // Spans arrive in batches from both processes: wait for a complete tree
    // that holds the remote reservation, authorization and capture.
    let spans = eventually("the checkout's trace is complete", || async {
        let spans = receiver.trace(&trace_id);
        let apart_servers = spans
            .iter()
            .filter(|s| s.service == "shop-apart" && s.kind == SERVER)
            .count();
        (apart_servers >= 4 && dangling(&spans, &caller).is_empty()).then_some(spans)
    })
    .await;

    // The entry's server span is the child of the caller's span.
    let entry: Vec<&Received> = spans.iter().filter(|s| s.parent == caller).collect();
    assert_eq!(entry.len(), 1, "one span continues the caller's: {entry:?}");
    assert_eq!(entry[0].service, "shop-main");
    assert_eq!(entry[0].kind, SERVER);
    assert_eq!(entry[0].name, "POST /api/v1/orders");

    // Module calls keep one name whichever side serves them, and the other
    // process's server spans hang from this process's client spans.
    for call in [
        "inventory.reserve",
        "payment.authorize",
        "payment.capture",
        "inventory.commit",
    ] {
        assert!(
            spans
                .iter()
                .any(|s| s.service == "shop-main" && s.name == call),
            "no `{call}` span in {spans:#?}"
        );
    }
    // Every server span but the entry's is the child of a client span, and
    // the calls that crossed to the other process came from this one.
    for server in spans
        .iter()
        .filter(|s| s.kind == SERVER && s.parent != caller)
    {
        let parent = by_id(&spans, &server.parent).expect("parent exported");
        assert_eq!(parent.kind, CLIENT, "{server:?} <- {parent:?}");
    }
    let crossed = spans
        .iter()
        .filter(|s| s.service == "shop-apart" && s.kind == SERVER)
        .filter(|s| by_id(&spans, &s.parent).is_some_and(|p| p.service == "shop-main"))
        .count();
    assert!(
        crossed >= 4,
        "reserve, authorize, capture, commit crossed: {crossed}"
    );
    // The saga's steps are in the request's trace.
    assert!(spans.iter().any(|s| s.name == "saga reserve"), "{spans:#?}");

    // Log lines inside the request's spans carry its trace and span ids
    // beside the request id.
    let logs = processes[0].logs();
    let marker = format!("\"trace_id\":\"{trace_id}\"");
    let line = logs
        .lines()
        .find(|l| l.contains(&marker) && l.contains("request finished"))
        .unwrap_or_else(|| panic!("no log line of the trace in:\n{logs}"));
    let line: Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["span_id"], entry[0].span_id.as_str(), "{line}");
    assert!(line["span"]["request_id"].is_string(), "{line}");

    // The remote calls are counted under the names in-process calls use.
    let metrics = http
        .get(format!("{main}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for m in [
        r#"module_calls_total{module="inventory",method="reserve",outcome="ok"} 1"#,
        r#"module_calls_total{module="payment",method="capture",outcome="ok"} 1"#,
    ] {
        assert!(metrics.contains(m), "{m} missing in:\n{metrics}");
    }
}

#[tokio::test]
async fn an_event_handler_continues_the_publishers_trace_over_rabbitmq() {
    let receiver = Receiver::start().await;
    let (deployment, main, apart, _processes) = two_processes(&receiver).await;
    let http = crate::helpers::http();
    let admin = mint_token(&deployment.settings, &[Role::Admin]);
    let sku = format!("TRACE-{}", &Uuid::new_v4().simple().to_string()[..8]);
    stocked_product(&http, &main, &admin, &sku, 990, 1).await;

    // A stock adjustment in the inventory's process publishes
    // inventory.stock_changed.v1; the catalog in the other process handles it.
    let (traceparent, trace_id, caller) = known_context();
    let adjusted = http
        .post(format!("{apart}/api/v1/inventory/{sku}/adjustments"))
        .bearer_auth(&admin)
        .header("traceparent", &traceparent)
        .json(&json!({"quantity": 4, "reason": "receive"}))
        .send()
        .await
        .unwrap();
    assert!(adjusted.status().is_success(), "{}", adjusted.status());

    let spans = eventually("the handler's span arrives", || async {
        let spans = receiver.trace(&trace_id);
        let handled = spans
            .iter()
            .any(|s| s.service == "shop-main" && s.name == "handle inventory.stock_changed.v1");
        (handled && dangling(&spans, &caller).is_empty()).then_some(spans)
    })
    .await;
    let handler = spans
        .iter()
        .find(|s| s.service == "shop-main" && s.name == "handle inventory.stock_changed.v1")
        .unwrap();
    assert_eq!(handler.kind, CONSUMER);
    let publish = by_id(&spans, &handler.parent).expect("the handler's parent was exported");
    assert_eq!(publish.service, "shop-apart", "{publish:?}");
    assert_eq!(publish.kind, PRODUCER, "{publish:?}");
    assert_eq!(publish.name, "publish inventory.stock_changed.v1");
    // ... and the publish continues the request that wrote the event.
    let writer = by_id(&spans, &publish.parent).expect("the publisher's parent was exported");
    assert_eq!(writer.service, "shop-apart");
}

/// In one process, a relay's batch reaches a handler that takes it in one
/// statement (the catalog's availabilities) in one span, linked to the
/// trace of every event in it: a reservation of two SKUs publishes two
/// stock changes, and the batch's span links the request's trace.
#[tokio::test]
async fn a_batch_handled_at_once_links_the_trace_of_its_events() {
    let receiver = Receiver::start().await;
    let deployment = Deployment::new().await;
    let port = free_port();
    let base = url(port);
    let extra = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()),
        ("OTEL_SERVICE_NAME", "shop-one"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let processes = vec![start(&deployment, port, false, &extra, &[])];
    live(&processes).await;
    let http = crate::helpers::http();
    let admin = mint_token(&deployment.settings, &[Role::Admin]);
    let skus: Vec<String> = (0..2)
        .map(|_| format!("LINK-{}", &Uuid::new_v4().simple().to_string()[..8]))
        .collect();
    for sku in &skus {
        stocked_product(&http, &base, &admin, sku, 990, 5).await;
    }

    let (traceparent, trace_id, _caller) = known_context();
    // Reservations are the order module's: made with its service token.
    let service = app::compose::service_tokens(&deployment.settings)
        .unwrap()
        .token()
        .unwrap();
    let reserved = http
        .post(format!("{base}/api/v1/inventory/reservations"))
        .bearer_auth(&service)
        .header("traceparent", &traceparent)
        .json(&json!({
            "order_id": Uuid::now_v7(),
            "lines": [{"sku": skus[0], "quantity": 1}, {"sku": skus[1], "quantity": 1}],
        }))
        .send()
        .await
        .unwrap();
    assert!(reserved.status().is_success(), "{}", reserved.status());

    let batch = eventually("the catalog's batch span arrives", || async {
        receiver
            .spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.name == "handle batch catalog.read_model" && s.links.contains(&trace_id))
            .cloned()
    })
    .await;
    assert_eq!(batch.kind, CONSUMER, "{batch:?}");
    assert_eq!(batch.service, "shop-one");
}
