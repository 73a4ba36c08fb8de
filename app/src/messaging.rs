//! Wiring integration events: the broker connection with every subscriber's
//! queue and this process's consumers, and one outbox relay per local
//! module.

use std::sync::Arc;

use events::rabbitmq::RabbitMq;
use events::{Dispatcher, Relay, TransportKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Settings;
use crate::database;
use crate::modules::ModuleName;

/// With the RabbitMQ transport: the broker, connected, with every
/// subscriber's queue declared and a consumer per module of this process
/// that handles events (their tasks returned). `None` in process, and in a
/// process that serves no module.
///
/// # Errors
/// The service key cannot seal events, or the broker cannot be reached.
pub(crate) async fn connect_broker(
    settings: &Settings,
    services: &auth::ServiceTokens,
    dispatcher: &Arc<Dispatcher>,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<Option<(Arc<RabbitMq>, Vec<JoinHandle<()>>)>> {
    // A process that serves no module (a gateway) publishes and consumes
    // nothing: it needs no broker, and must not wait for one to start (a
    // broker outage would stall the rollout of the API's entry point).
    if settings.events.transport == TransportKind::InProcess
        || settings.modules.local().next().is_none()
    {
        return Ok(None);
    }
    let seal = auth::EventSeal::new(services.key())
        .map_err(|e| anyhow::anyhow!("auth.service_key_file: {e}"))?
        .accepting(services.accepted());
    let rabbit = RabbitMq::connect(settings.events.rabbitmq.clone(), seal)
        .await
        .map_err(|e| anyhow::anyhow!("events.rabbitmq: {e}"))?;
    // Every subscriber's queue, not only this process's: an event
    // published before its subscriber's process first starts
    // waits in the queue instead of being dropped unrouted.
    for module in ModuleName::ALL {
        let types = module.subscribes();
        if types.is_empty() {
            continue;
        }
        rabbit
            .declare_queue(module.as_str(), types)
            .await
            .map_err(|e| anyhow::anyhow!("events.rabbitmq: {e}"))?;
    }
    let mut modules: Vec<&'static str> = dispatcher
        .subscriptions()
        .iter()
        .map(|s| s.module)
        .collect();
    modules.dedup();
    let mut consumers = Vec::new();
    for module in modules {
        let types: Vec<&'static str> = dispatcher
            .subscriptions()
            .iter()
            .filter(|s| s.module == module)
            .flat_map(|s| s.event_types.iter().copied())
            .collect();
        consumers.push(tokio::spawn(Arc::clone(&rabbit).consume(
            module,
            types,
            Arc::clone(dispatcher),
            stopped.clone(),
        )));
    }
    Ok(Some((rabbit, consumers)))
}

/// Starts the outbox relay of every local module, publishing through
/// `transport`; returns their tasks. With the in-process transport
/// (`in_process`: the dispatcher it hands events to), each relay keeps
/// this instance's heartbeat and stands down while another live instance
/// hands its events to more handlers (`Relay::beside_other_instances`: a
/// rolling upgrade that adds a handler loses no event for it).
///
/// # Errors
/// A local module without a pool or registration (a bug).
pub(crate) fn start_relays(
    settings: &Settings,
    shared_url: &str,
    pools: &[(&'static str, db::Pool)],
    transport: &Arc<dyn events::Transport>,
    in_process: Option<&Dispatcher>,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut relays = Vec::new();
    let instance = uuid::Uuid::now_v7();
    // One LISTEN connection per database, for every relay whose outbox is there.
    let mut listeners: Vec<(String, Vec<(&'static str, &'static str)>)> = Vec::new();
    for module in settings.modules.local() {
        let pool = pools
            .iter()
            .find(|(name, _)| *name == module.as_str())
            .map(|(_, pool)| pool.clone())
            .ok_or_else(|| anyhow::anyhow!("no pool for {}", module.as_str()))?;
        let schema = database::migrations(module)
            .ok_or_else(|| anyhow::anyhow!("no {} module here", module.as_str()))?
            .schema;
        let url = settings.module_database_url(module, shared_url);
        match listeners.iter_mut().find(|(u, _)| u == url) {
            Some((_, modules)) => modules.push((module.as_str(), schema)),
            None => listeners.push((url.to_owned(), vec![(module.as_str(), schema)])),
        }
        let mut relay = Relay::new(
            module.as_str(),
            pool,
            Arc::clone(transport),
            &settings.events,
        );
        if let Some(dispatcher) = in_process {
            relay = relay.beside_other_instances(instance, dispatcher);
        }
        relays.push(tokio::spawn(relay.run(stopped.clone())));
    }
    for (url, modules) in listeners {
        relays.push(tokio::spawn(events::listen(url, modules, stopped.clone())));
    }
    Ok(relays)
}
