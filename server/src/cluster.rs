//! Cache coherence between the nodes of a cluster on one Redis (DESIGN.md "scale-out").
//!
//! Every invalidation of a node's introspection cache (a revocation, a refresh family
//! revoked on reuse...) is published on the channel `{key_prefix}:invalidate`; every
//! node applies what it receives. Pub/sub delivers at most once, so a node clears its
//! whole cache each time it (re)subscribes, and cached entries live at most the cache's
//! positive TTL (30 s by default): after a revocation on one node, another node may
//! answer `active: true` for at most that long if a message is lost without its
//! subscription failing, and normally for no longer than the message takes to arrive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use heartgate_core::introspect::{Invalidation, InvalidationSink};

use crate::app::App;

/// Messages waiting to be published before new ones are dropped (and counted).
const PUBLISH_QUEUE: usize = 4096;
/// Bound on connecting and on each command.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// Wait between reconnection attempts.
const RETRY: Duration = Duration::from_secs(1);

/// Where the nodes meet: the Redis URL (secret: it may hold a password) and the channel.
#[derive(Clone)]
pub struct Link {
    url: String,
    channel: String,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// The link of a deployment on `url` whose keys start with `key_prefix`.
    pub fn new(url: &str, key_prefix: &str) -> Link {
        Link {
            url: url.to_owned(),
            channel: format!("{key_prefix}:invalidate"),
        }
    }
}

/// The running publisher and subscriber; they stop when this is dropped.
pub struct Coherence {
    stop: Arc<AtomicBool>,
}

impl Drop for Coherence {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Publisher {
    tx: SyncSender<Vec<u8>>,
}

impl InvalidationSink for Publisher {
    fn invalidated(&self, i: &Invalidation) {
        match self.tx.try_send(i.to_bytes()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!(
                    "cluster: invalidation queue full; other nodes rely on the cache TTL"
                );
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Start publishing this node's invalidations and applying the others', if the app
/// runs on Redis. `None` otherwise.
pub fn start(app: &Arc<App>) -> Option<Coherence> {
    let link = app.settings.cluster.clone()?;
    let client = match redis::Client::open(link.url.as_str()) {
        Ok(c) => c,
        Err(_) => {
            tracing::error!("cluster: the Redis URL is invalid; caches are not kept coherent");
            return None;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = sync_channel(PUBLISH_QUEUE);
    app.cache.set_observer(Arc::new(Publisher { tx }));
    let (c, ch, s) = (client.clone(), link.channel.clone(), stop.clone());
    let spawned = std::thread::Builder::new()
        .name("heartgate-publish".into())
        .spawn(move || publish(&c, &ch, &rx, &s));
    let (a, s) = (Arc::downgrade(app), stop.clone());
    let subscribed = std::thread::Builder::new()
        .name("heartgate-subscribe".into())
        .spawn(move || subscribe(&client, &link.channel, &a, &s));
    if spawned.is_err() || subscribed.is_err() {
        tracing::error!("cluster: threads could not start; caches are not kept coherent");
    }
    Some(Coherence { stop })
}

fn connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let c = client.get_connection_with_timeout(IO_TIMEOUT)?;
    c.set_read_timeout(Some(IO_TIMEOUT))?;
    c.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(c)
}

fn publish(client: &redis::Client, channel: &str, rx: &Receiver<Vec<u8>>, stop: &AtomicBool) {
    let mut con: Option<redis::Connection> = None;
    while !stop.load(Ordering::Relaxed) {
        let msg = match rx.recv_timeout(RETRY) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if con.is_none() {
            con = connect(client).ok();
        }
        let sent = con.as_mut().is_some_and(|c| {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(&msg)
                .query::<i64>(c)
                .is_ok()
        });
        if !sent {
            // Lost: the other nodes' entries end with their TTL (module documentation).
            con = None;
            tracing::warn!("cluster: an invalidation could not be published");
        }
    }
}

fn subscribe(client: &redis::Client, channel: &str, app: &std::sync::Weak<App>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut con) = connect(client) else {
            std::thread::sleep(RETRY);
            continue;
        };
        let mut ps = con.as_pubsub();
        if ps.subscribe(channel).is_err() {
            std::thread::sleep(RETRY);
            continue;
        }
        // Messages sent while this node was not listening are lost: start afresh.
        match app.upgrade() {
            Some(a) => a.cache.clear(),
            None => return,
        }
        tracing::info!("cluster: subscribed to cache invalidations");
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match ps.get_message() {
                Ok(m) => {
                    let Some(i) = Invalidation::from_bytes(m.get_payload_bytes()) else {
                        continue;
                    };
                    match app.upgrade() {
                        Some(a) => {
                            a.cache.apply(&i);
                        }
                        None => return,
                    }
                }
                Err(e) if e.is_timeout() => {}
                Err(_) => {
                    tracing::warn!("cluster: subscription lost; reconnecting");
                    break;
                }
            }
        }
    }
}
