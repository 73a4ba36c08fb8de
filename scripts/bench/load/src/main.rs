//! `checkout-load`: drives checkouts against a shop on loopback, bounded in
//! time and count, and checks that nothing was oversold.
//!
//! ```text
//! checkout-load BASE_URL ADMIN_EMAIL ADMIN_PASSWORD SECONDS CUSTOMERS [hot|mix]
//! ```
//! - `hot`: every customer buys one unit of the same SKU (a flash sale);
//! - `mix`: each checkout buys one to three lines out of 1,000 SKUs.
//!
//! Each customer loops `PUT /cart` + `POST /orders` (a fresh Idempotency-Key,
//! the success card) and, on 202, polls the order until it settles. Every
//! second it prints `N checkouts/s ... p50 X ms, p99 Y ms` for that second,
//! then the totals, the stock check (`no oversell`), a contention phase (200
//! checkouts for 50 units: exactly 50 confirmed) and its own CPU time.
//! Exit 1 on any oversell, leaked reservation or unexpected answer.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use rand::Rng as _;
use serde_json::{Value, json};

mod shop;
mod stats;

use shop::Shop;
use stats::summary;

const CARD: &str = "4242424242424242";
pub(crate) const PASSWORD: &str = "plum kettle orbit 42";

/// A product on sale: its id and SKU.
#[derive(Clone)]
struct Item {
    id: String,
    sku: String,
}

/// One finished checkout.
struct Sample {
    latency_ms: f64,
    confirmed: bool,
    short: bool,
    lines: Vec<(usize, i64)>,
}

/// One checkout: the cart, the order, and its settling.
async fn checkout(
    shop: &Shop,
    token: &str,
    items: &[Item],
    lines: Vec<(usize, i64)>,
) -> anyhow::Result<Sample> {
    let cart: Vec<Value> = lines
        .iter()
        .map(|(i, q)| json!({"product_id": items[*i].id, "quantity": q}))
        .collect();
    let (status, body) = shop
        .call(
            reqwest::Method::PUT,
            "/api/v1/cart",
            Some(token),
            Some(json!({ "items": cart })),
            None,
        )
        .await?;
    ensure!(status == 200, "cart: {status} {body}");
    let key = uuid::Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    let (status, mut order) = shop
        .call(
            reqwest::Method::POST,
            "/api/v1/orders",
            Some(token),
            Some(json!({"payment_method": {"card_number": CARD}})),
            Some(&key),
        )
        .await?;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    ensure!(status == 201 || status == 202, "order: {status} {order}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !matches!(
        order["status"].as_str(),
        Some("confirmed" | "failed" | "cancelled")
    ) {
        ensure!(Instant::now() < deadline, "order never settled: {order}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let id = order["id"].as_str().unwrap_or_default().to_owned();
        order = shop
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/orders/{id}"),
                Some(token),
                None,
                None,
            )
            .await?
            .1;
    }
    let confirmed = order["status"] == "confirmed";
    let short = order["status"] == "failed"
        && order["reason"]
            .as_str()
            .is_some_and(|r| r.contains("insufficient stock"));
    Ok(Sample {
        latency_ms,
        confirmed,
        short,
        lines,
    })
}

/// What to buy next.
#[derive(Clone, Copy)]
enum Shape {
    Hot,
    Mix,
}

impl Shape {
    fn lines(self, products: usize) -> Vec<(usize, i64)> {
        match self {
            Shape::Hot => vec![(0, 1)],
            Shape::Mix => {
                let mut rng = rand::thread_rng();
                let mut lines: Vec<(usize, i64)> = Vec::new();
                for _ in 0..rng.gen_range(1..=3) {
                    let i = rng.gen_range(0..products);
                    if !lines.iter().any(|(j, _)| *j == i) {
                        lines.push((i, rng.gen_range(1..=2)));
                    }
                }
                lines
            }
        }
    }
}

/// Runs `customers` loops until `until` or until `total` checkouts were
/// started; prints a line a second when `report`.
async fn run(
    shop: &Shop,
    tokens: &[String],
    items: &Arc<Vec<Item>>,
    shape: Shape,
    until: Instant,
    total: Option<usize>,
    report: bool,
) -> anyhow::Result<(Vec<Sample>, f64)> {
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let issued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks: tokio::task::JoinSet<anyhow::Result<()>> = tokio::task::JoinSet::new();
    for token in tokens {
        let token = token.clone();
        let (shop, items, samples, issued) = (
            shop.clone(),
            Arc::clone(items),
            Arc::clone(&samples),
            Arc::clone(&issued),
        );
        tasks.spawn(async move {
            loop {
                if Instant::now() >= until {
                    return Ok(());
                }
                let n = issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if total.is_some_and(|t| n >= t) {
                    return Ok(());
                }
                let sample = checkout(&shop, &token, &items, shape.lines(items.len())).await?;
                if let Ok(mut samples) = samples.lock() {
                    samples.push(sample);
                }
            }
        });
    }
    let mut seen = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(result) => result??,
                None => break,
            },
            _ = tick.tick(), if report => {
                let Ok(all) = samples.lock() else { bail!("poisoned") };
                let fresh = &all[seen..];
                let confirmed = fresh.iter().filter(|s| s.confirmed).count();
                let (p50, p99, _) = summary(&fresh.iter().map(|s| s.latency_ms).collect::<Vec<_>>());
                println!("{confirmed} checkouts/s ({} finished), POST /orders p50 {p50:.1} ms, p99 {p99:.1} ms", fresh.len());
                seen = all.len();
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let samples = std::mem::take(&mut *samples.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    Ok((samples, elapsed))
}

/// This process's CPU time so far (user + system, from `/proc/self/stat`,
/// whose clock ticks are USER_HZ = 100 on Linux).
fn own_cpu() -> Duration {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which ends with ')'.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(Duration::from_millis((utime + stime) * 10))
        })
        .unwrap_or_default()
}

/// Runs `$BENCH_HOOK <phase>` (if set) and waits for it: the benchmark
/// script snapshots its counters exactly around the measured phase.
fn hook(phase: &str) -> anyhow::Result<()> {
    if let Ok(command) = std::env::var("BENCH_HOOK") {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{command} {phase}"))
            .status()?;
        ensure!(status.success(), "BENCH_HOOK {phase} failed: {status}");
    }
    Ok(())
}

/// Checks on_hand = initial - sold and nothing reserved, for every item.
async fn check_stock(
    shop: &Shop,
    admin: &str,
    items: &[Item],
    initial: i64,
    sold: &HashMap<usize, i64>,
) -> anyhow::Result<bool> {
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let expected = initial - sold.get(&i).copied().unwrap_or(0);
        let (on_hand, reserved) = shop.stock(admin, &item.sku).await?;
        if on_hand != expected || reserved != 0 || on_hand < 0 {
            println!(
                "  stock {}: on_hand {on_hand} (expected {expected}), reserved {reserved}: OVERSOLD OR LEAKED",
                item.sku
            );
            ok = false;
        }
    }
    Ok(ok)
}

fn sold(samples: &[Sample], into: &mut HashMap<usize, i64>) {
    for sample in samples.iter().filter(|s| s.confirmed) {
        for (i, q) in &sample.lines {
            *into.entry(*i).or_default() += q;
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        bail!(
            "usage: checkout-load BASE_URL ADMIN_EMAIL ADMIN_PASSWORD SECONDS CUSTOMERS [hot|mix]"
        );
    }
    // reqwest's rustls needs a provider before any client (the workspace's choice: ring).
    drop(rustls::crypto::ring::default_provider().install_default());
    let shop = Shop {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build()?,
        base: args[1].trim_end_matches('/').to_owned(),
    };
    let seconds: f64 = args[4].parse().context("SECONDS")?;
    let customers: usize = args[5].parse().context("CUSTOMERS")?;
    ensure!(
        seconds > 0.0 && seconds <= 600.0,
        "SECONDS must be in (0, 600]"
    );
    ensure!((1..=512).contains(&customers), "CUSTOMERS must be 1..=512");
    let shape = match args.get(6).map(String::as_str) {
        None | Some("hot") => Shape::Hot,
        Some("mix") => Shape::Mix,
        Some(other) => bail!("unknown shape {other}: hot or mix"),
    };
    let admin = shop.sign_in(&args[2], &args[3]).await?;
    let mut tokens = Vec::new();
    for _ in 0..customers {
        tokens.push(shop.customer().await?);
    }
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase();
    let (count, initial) = match shape {
        Shape::Hot => (1, 1_000_000),
        Shape::Mix => (1000, 100_000),
    };
    let mut items = Vec::new();
    for i in 0..count {
        let sku = format!("BENCH-{run_id}-{i}");
        let id = shop.product(&admin, &sku, initial).await?;
        items.push(Item { id, sku });
    }
    let items = Arc::new(items);
    let mut sold_units = HashMap::new();

    // Warm-up: every connection and pool opened, caches filled. Bounded
    // phases get ten minutes each from their own start.
    let far = || Instant::now() + Duration::from_secs(600);
    let (warm, _) = run(
        &shop,
        &tokens,
        &items,
        shape,
        far(),
        Some(customers * 2),
        false,
    )
    .await?;
    sold(&warm, &mut sold_units);

    hook("begin")?;
    let cpu_before = own_cpu();
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let (samples, elapsed) = run(&shop, &tokens, &items, shape, until, None, true).await?;
    let cpu = own_cpu().saturating_sub(cpu_before);
    hook("end")?;
    sold(&samples, &mut sold_units);
    let confirmed = samples.iter().filter(|s| s.confirmed).count();
    let (p50, p99, max) = summary(&samples.iter().map(|s| s.latency_ms).collect::<Vec<_>>());
    let shape_name = match shape {
        Shape::Hot => "one hot SKU",
        Shape::Mix => "1-3 lines of 1,000 SKUs",
    };
    println!(
        "sustained, {customers} customers, {shape_name}, {elapsed:.1} s: {:.1} checkouts/s ({confirmed} confirmed of {}); \
         POST /orders p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
        confirmed as f64 / elapsed,
        samples.len()
    );
    println!(
        "load generator CPU: {:.2} s over {elapsed:.1} s ({:.0} % of one core, {:.2} ms per checkout)",
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / elapsed,
        1000.0 * cpu.as_secs_f64() / samples.len().max(1) as f64
    );
    println!("measured checkouts: {}", samples.len());
    let mut ok = confirmed == samples.len() && warm.iter().all(|s| s.confirmed);
    if !ok {
        println!("  some checkouts did not confirm");
    }
    let stock_ok = check_stock(&shop, &admin, &items, initial, &sold_units).await?;
    ok &= stock_ok;

    // Contention: 200 checkouts of one unit for the last 50.
    let last = Arc::new(vec![Item {
        sku: format!("LAST-{run_id}"),
        id: String::new(),
    }]);
    let last = Arc::new(vec![Item {
        id: shop.product(&admin, &last[0].sku, 50).await?,
        sku: last[0].sku.clone(),
    }]);
    let (race, elapsed) = run(&shop, &tokens, &last, Shape::Hot, far(), Some(200), false).await?;
    let won = race.iter().filter(|s| s.confirmed).count();
    let short = race.iter().filter(|s| s.short).count();
    let (p50, p99, _) = summary(&race.iter().map(|s| s.latency_ms).collect::<Vec<_>>());
    println!(
        "contention, 200 checkouts for 50 units: {won} confirmed, {short} failed (insufficient stock), \
         {elapsed:.1} s; POST /orders p50 {p50:.1} ms, p99 {p99:.1} ms"
    );
    let mut race_sold = HashMap::new();
    sold(&race, &mut race_sold);
    let race_ok =
        won == 50 && short == 150 && check_stock(&shop, &admin, &last, 50, &race_sold).await?;
    ok &= race_ok;
    if ok {
        println!("no oversell: stock balanced for every SKU, nothing left reserved");
        Ok(())
    } else {
        println!("FAILED: oversell, leaked reservations or unconfirmed checkouts (see above)");
        std::process::exit(1);
    }
}
