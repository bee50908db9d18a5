//! Cache coherence between the nodes of a cluster on one Redis (DESIGN.md "scale-out").
//!
//! The messages travel by Redis pub/sub on one connection to Redis for publishing and one
//! for the subscription. On a Redis Cluster, a message published on any node reaches the
//! subscribers of every node (the cluster bus carries it), so a heartgate node talks to
//! one Redis node at a time and moves on to the next configured one when it fails.
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

/// Where the nodes meet: the Redis URLs (secret: they may hold a password; more than one
/// for a cluster's nodes) and the channels.
#[derive(Clone)]
pub struct Link {
    urls: Vec<String>,
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
    /// The link of a deployment on the Redis at `urls` (one server, or nodes of one
    /// cluster) whose keys start with `key_prefix`, sharing its keys through `share`.
    pub fn new(urls: Vec<String>, key_prefix: &str, share: Arc<KeyShare>) -> Link {
        Link {
            urls,
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

/// Tell the nodes of the deployment on `urls` / `key_prefix` that the shared keys changed
/// (after `heartgate keys rotate`). Returns how many nodes were listening (on a cluster:
/// how many on the Redis node that took the message).
pub fn announce_keys(urls: &[String], key_prefix: &str) -> redis::RedisResult<i64> {
    let mut con = Redis::new(urls.to_vec()).connect()?;
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
    let client = Redis::new(link.urls.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = sync_channel(PUBLISH_QUEUE);
    app.cache.set_observer(Arc::new(Publisher { tx }));
    let (c, ch, s) = (client.clone(), link.channel.clone(), stop.clone());
    let spawned = std::thread::Builder::new()
        .name("heartgate-publish".into())
        .spawn(move || publish(c, &ch, &rx, &s));
    let (a, s, l) = (Arc::downgrade(app), stop.clone(), link.clone());
    let subscribed = std::thread::Builder::new()
        .name("heartgate-subscribe".into())
        .spawn(move || subscribe(client, &l, &a, &s));
    let (a, s) = (Arc::downgrade(app), stop.clone());
    let refreshing = std::thread::Builder::new()
        .name("heartgate-keys".into())
        .spawn(move || refresh_periodically(&link.share, &a, &s));
    if spawned.is_err() || subscribed.is_err() || refreshing.is_err() {
        tracing::error!("cluster: threads could not start; caches are not kept coherent");
    }
    Some(Coherence { stop })
}

/// The Redis nodes to talk to, and which one to try first.
#[derive(Clone)]
struct Redis {
    urls: Vec<String>,
    next: usize,
}

impl Redis {
    fn new(urls: Vec<String>) -> Redis {
        Redis { urls, next: 0 }
    }

    /// A connection to the first node that answers, starting with the one after the
    /// last that failed.
    fn connect(&mut self) -> redis::RedisResult<redis::Connection> {
        let mut last = redis::RedisError::from((redis::ErrorKind::Client, "no Redis URL"));
        for _ in 0..self.urls.len() {
            let i = self.next % self.urls.len();
            let tried = redis::Client::open(self.urls[i].as_str()).and_then(|client| {
                let c = client.get_connection_with_timeout(IO_TIMEOUT)?;
                c.set_read_timeout(Some(IO_TIMEOUT))?;
                c.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(c)
            });
            match tried {
                Ok(c) => return Ok(c),
                Err(e) => {
                    self.next = i + 1;
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Start the next connection with another node.
    fn failed(&mut self) {
        self.next += 1;
    }
}

fn publish(mut client: Redis, channel: &str, rx: &Receiver<Vec<u8>>, stop: &AtomicBool) {
    let mut con: Option<redis::Connection> = None;
    while !stop.load(Ordering::Relaxed) {
        let msg = match rx.recv_timeout(RETRY) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if con.is_none() {
            con = client.connect().ok();
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
            if con.take().is_some() {
                client.failed();
            }
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

fn subscribe(mut client: Redis, link: &Link, app: &std::sync::Weak<App>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut con) = client.connect() else {
            std::thread::sleep(RETRY);
            continue;
        };
        let mut ps = con.as_pubsub();
        if ps
            .subscribe(&[link.channel.as_str(), link.keys_channel.as_str()])
            .is_err()
        {
            client.failed();
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
                    client.failed();
                    break;
                }
            }
        }
    }
}
