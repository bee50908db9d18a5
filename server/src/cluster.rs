//! Cache coherence between the nodes of a cluster on one Redis (DESIGN.md "scale-out").
//!
//! Every invalidation of a node's introspection cache (a revocation, a refresh family
//! revoked on reuse...) is published on the channel `{key_prefix}:invalidate`; every
//! node applies what it receives. Pub/sub delivers at most once, so a node clears its
//! whole cache each time it (re)subscribes, and cached entries live at most the cache's
//! positive TTL (30 s by default): after a revocation on one node, another node may
//! answer `active: true` for at most that long if a message is lost without its
//! subscription failing, and normally for no longer than the message takes to arrive.
//!
//! Key rotations (`keyshare`) are announced on `{key_prefix}:keys`; a node re-reads the
//! shared keys when an announcement arrives, when it (re)subscribes, and every
//! `key_refresh_secs` in any case.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use heartgate_core::introspect::{Invalidation, InvalidationSink};

use crate::app::App;
use crate::keyshare::KeyShare;

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
    keys_channel: String,
    share: Arc<KeyShare>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// The link of a deployment on `url` whose keys start with `key_prefix`, sharing
    /// its keys through `share`.
    pub fn new(url: &str, key_prefix: &str, share: Arc<KeyShare>) -> Link {
        Link {
            url: url.to_owned(),
            channel: format!("{key_prefix}:invalidate"),
            keys_channel: keys_channel(key_prefix),
            share,
        }
    }

    /// The shared keys' handle.
    pub fn share(&self) -> &Arc<KeyShare> {
        &self.share
    }
}

fn keys_channel(key_prefix: &str) -> String {
    format!("{key_prefix}:keys")
}

/// Tell the nodes of the deployment on `url` / `key_prefix` that the shared keys changed
/// (after `heartgate keys rotate`). Returns how many nodes were listening.
pub fn announce_keys(url: &str, key_prefix: &str) -> redis::RedisResult<i64> {
    let client = redis::Client::open(url)?;
    let mut con = connect(&client)?;
    redis::cmd("PUBLISH")
        .arg(keys_channel(key_prefix))
        .arg("rotated")
        .query(&mut con)
}

/// Re-read the shared keys into the app's ring (logged, never fatal: until the store
/// answers, the node keeps signing with the keys it has, which stay published).
fn refresh_keys(app: &App, share: &KeyShare) {
    match share.refresh(&*app.store, app.tokens.keys(), crate::app::now()) {
        Ok(true) => tracing::info!(
            generation = share.generation(),
            "cluster: took the rotated shared keys"
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "cluster: shared keys not refreshed"),
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
    let (a, s, l) = (Arc::downgrade(app), stop.clone(), link.clone());
    let subscribed = std::thread::Builder::new()
        .name("heartgate-subscribe".into())
        .spawn(move || subscribe(&client, &l, &a, &s));
    let (a, s) = (Arc::downgrade(app), stop.clone());
    let refreshing = std::thread::Builder::new()
        .name("heartgate-keys".into())
        .spawn(move || refresh_periodically(&link.share, &a, &s));
    if spawned.is_err() || subscribed.is_err() || refreshing.is_err() {
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

fn refresh_periodically(share: &KeyShare, app: &std::sync::Weak<App>, stop: &AtomicBool) {
    let mut waited = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(RETRY);
        waited += RETRY;
        if waited < share.refresh {
            continue;
        }
        waited = Duration::ZERO;
        match app.upgrade() {
            Some(a) => refresh_keys(&a, share),
            None => return,
        }
    }
}

fn subscribe(client: &redis::Client, link: &Link, app: &std::sync::Weak<App>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut con) = connect(client) else {
            std::thread::sleep(RETRY);
            continue;
        };
        let mut ps = con.as_pubsub();
        if ps
            .subscribe(&[link.channel.as_str(), link.keys_channel.as_str()])
            .is_err()
        {
            std::thread::sleep(RETRY);
            continue;
        }
        // Messages sent while this node was not listening are lost: start afresh.
        match app.upgrade() {
            Some(a) => {
                a.cache.clear();
                refresh_keys(&a, &link.share);
            }
            None => return,
        }
        tracing::info!("cluster: subscribed to cache invalidations");
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match ps.get_message() {
                Ok(m) if m.get_channel_name() == link.keys_channel => match app.upgrade() {
                    Some(a) => refresh_keys(&a, &link.share),
                    None => return,
                },
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
