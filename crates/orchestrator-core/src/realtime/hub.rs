//! One feed per app with streams on this node.
//!
//! What must stay true:
//! - one task follows the bus; it alone reads events into feeds, so a feed's events go
//!   out in id order, each read from the table once per node and encoded once;
//! - a feed starts at the app's last committed id and is then pushed to catch up (a
//!   notice heard before the feed existed is not lost); `Missed` makes every feed catch up;
//! - a feed goes when its last stream does; a feed made again under the same app is a new
//!   generation, and nothing read for the old one reaches it;
//! - the connection counts are taken before a stream starts and given back when it ends,
//!   so the limits hold per app and per node.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use shared::bus::{Channel, Heard};
use shared::realtime::Subscribers;
use shared::store::RealtimeEvent;
use shared::{AppName, ChannelName, Store};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::{RealtimeConfig, RealtimeError};

/// One event as every stream sends it.
pub(crate) struct Frame {
    pub(crate) id: u64,
    pub(crate) topic: ChannelName,
    /// `id: ..\nevent: ..\ndata: ..\n\n`
    pub(crate) bytes: Bytes,
}

impl Frame {
    pub(crate) fn of(event: &RealtimeEvent) -> Frame {
        Frame {
            id: event.id,
            topic: event.topic.clone(),
            bytes: Bytes::from(encode(event)),
        }
    }
}

/// An event in the wire format. The payload is JSON text, which has no raw newline.
pub(crate) fn encode(event: &RealtimeEvent) -> String {
    let mut out = String::with_capacity(event.payload.len() + event.topic.as_str().len() + 40);
    let _ = write!(
        out,
        "id: {}\nevent: {}\ndata: {}\n\n",
        event.id, event.topic, event.payload
    );
    out
}

/// Open streams per topic of an app, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicCount {
    pub topic: ChannelName,
    pub subscribers: usize,
}

struct Feed {
    tx: broadcast::Sender<Arc<Frame>>,
    /// The newest id sent into the feed.
    cursor: u64,
    generation: u64,
    connections: usize,
    topics: HashMap<ChannelName, usize>,
}

#[derive(Default)]
struct State {
    feeds: HashMap<AppName, Feed>,
    connections: usize,
    generations: u64,
}

pub struct Hub {
    store: Store,
    pub(crate) config: RealtimeConfig,
    state: Mutex<State>,
    /// Apps whose feed was just made: the follower catches them up.
    pokes: mpsc::UnboundedSender<AppName>,
    /// Cancelled when the server shuts down: every stream ends.
    pub(crate) closed: CancellationToken,
}

/// A joined stream: its receiver of the app's feed and its place in the counts.
pub(crate) type Joined = (broadcast::Receiver<Arc<Frame>>, Admission);

/// A stream's place in the counts, given back on drop.
pub(crate) struct Admission {
    hub: Arc<Hub>,
    app: AppName,
    topics: Vec<ChannelName>,
    generation: u64,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        state.connections = state.connections.saturating_sub(1);
        let Some(feed) = state.feeds.get_mut(&self.app) else {
            return;
        };
        if feed.generation != self.generation {
            return;
        }
        feed.connections = feed.connections.saturating_sub(1);
        for topic in &self.topics {
            if let Some(n) = feed.topics.get_mut(topic) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    feed.topics.remove(topic);
                }
            }
        }
        if feed.connections == 0 {
            state.feeds.remove(&self.app);
        }
    }
}

impl Hub {
    /// The hub of this node; its follower task runs until `closed` is cancelled.
    pub fn start(store: Store, config: RealtimeConfig) -> Arc<Hub> {
        let (pokes, poked) = mpsc::unbounded_channel();
        let hub = Arc::new(Hub {
            store,
            config,
            state: Mutex::new(State::default()),
            pokes,
            closed: CancellationToken::new(),
        });
        tokio::spawn(follow(Arc::clone(&hub), poked));
        hub
    }

    /// End every stream and stop following the bus.
    pub fn close(&self) {
        self.closed.cancel();
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Take a place for a stream of `app` on `topics` and a receiver of its feed.
    ///
    /// # Errors
    /// `ServerFull` or `AppFull` past the limits; `Internal` when the app's last id
    /// cannot be read.
    pub(crate) async fn join(
        self: &Arc<Self>,
        app: &AppName,
        topics: &[ChannelName],
    ) -> Result<Joined, RealtimeError> {
        if let Some(joined) = self.join_existing(app, topics)? {
            return Ok(joined);
        }
        let last = self.store.realtime.bounds(app).await?.last;
        let joined = {
            let mut state = self.lock();
            self.check_limits(&state, app)?;
            if !state.feeds.contains_key(app) {
                state.generations += 1;
                let feed = Feed {
                    tx: broadcast::channel(self.config.buffer.max(1)).0,
                    cursor: last,
                    generation: state.generations,
                    connections: 0,
                    topics: HashMap::new(),
                };
                state.feeds.insert(app.clone(), feed);
            }
            self.admit(&mut state, app, topics)
        };
        // Anything committed after `last` whose notice came before the feed existed.
        let _ = self.pokes.send(app.clone());
        Ok(joined)
    }

    fn join_existing(
        self: &Arc<Self>,
        app: &AppName,
        topics: &[ChannelName],
    ) -> Result<Option<Joined>, RealtimeError> {
        let mut state = self.lock();
        self.check_limits(&state, app)?;
        if !state.feeds.contains_key(app) {
            return Ok(None);
        }
        Ok(Some(self.admit(&mut state, app, topics)))
    }

    fn check_limits(&self, state: &State, app: &AppName) -> Result<(), RealtimeError> {
        if state.connections >= self.config.max_connections {
            return Err(RealtimeError::ServerFull);
        }
        let in_app = state.feeds.get(app).map_or(0, |f| f.connections);
        if in_app >= self.config.max_connections_per_app {
            return Err(RealtimeError::AppFull);
        }
        Ok(())
    }

    /// Count a stream in; the app's feed exists.
    fn admit(self: &Arc<Self>, state: &mut State, app: &AppName, topics: &[ChannelName]) -> Joined {
        state.connections += 1;
        let feed = state.feeds.get_mut(app).expect("the feed was just checked");
        feed.connections += 1;
        for topic in topics {
            *feed.topics.entry(topic.clone()).or_default() += 1;
        }
        let admission = Admission {
            hub: Arc::clone(self),
            app: app.clone(),
            topics: topics.to_vec(),
            generation: feed.generation,
        };
        (feed.tx.subscribe(), admission)
    }

    /// Open streams per topic of `app` on this node.
    pub fn topic_counts(&self, app: &AppName) -> Vec<TopicCount> {
        let state = self.lock();
        let mut counts: Vec<TopicCount> = state
            .feeds
            .get(app)
            .map(|feed| {
                feed.topics
                    .iter()
                    .map(|(topic, n)| TopicCount {
                        topic: topic.clone(),
                        subscribers: *n,
                    })
                    .collect()
            })
            .unwrap_or_default();
        counts.sort_by(|a, b| a.topic.as_str().cmp(b.topic.as_str()));
        counts
    }

    /// Streams open on this node, all apps.
    pub fn connections(&self) -> usize {
        self.lock().connections
    }

    /// Read what `app`'s feed has not had yet and send it, page by page.
    async fn catch_up(&self, app: &AppName) {
        loop {
            let Some((generation, cursor)) =
                self.lock().feeds.get(app).map(|f| (f.generation, f.cursor))
            else {
                return;
            };
            let page = self.config.page.max(1);
            let events = match self.store.realtime.events_after(app, cursor, page).await {
                Ok(events) => events,
                Err(error) => {
                    // The next notice (or `Missed`) tries again from the same cursor.
                    tracing::warn!(error = ?error, app = %app, "realtime events could not be read");
                    return;
                }
            };
            let full = events.len() == page as usize;
            let frames: Vec<Arc<Frame>> = events.iter().map(|e| Arc::new(Frame::of(e))).collect();
            {
                let mut state = self.lock();
                let Some(feed) = state.feeds.get_mut(app) else {
                    return;
                };
                if feed.generation != generation {
                    continue;
                }
                for frame in frames {
                    if frame.id > feed.cursor {
                        feed.cursor = frame.id;
                        // No receiver left is not an error: the feed goes with its last.
                        let _ = feed.tx.send(frame);
                    }
                }
            }
            if !full {
                return;
            }
        }
    }

    fn feed_apps(&self) -> Vec<AppName> {
        self.lock().feeds.keys().cloned().collect()
    }
}

impl Subscribers for Hub {
    fn counts(&self, app: &AppName) -> Vec<(ChannelName, usize)> {
        self.topic_counts(app)
            .into_iter()
            .map(|c| (c.topic, c.subscribers))
            .collect()
    }
}

/// `<app> <newest id>`
fn parse_notice(payload: &str) -> Option<(AppName, u64)> {
    let (app, last) = payload.split_once(' ')?;
    Some((AppName::parse(app).ok()?, last.parse().ok()?))
}

/// The follower: the bus's realtime notices and the pokes of new feeds, until closed.
async fn follow(hub: Arc<Hub>, mut poked: mpsc::UnboundedReceiver<AppName>) {
    let mut heard = hub.store.bus.subscribe();
    loop {
        tokio::select! {
            () = hub.closed.cancelled() => return,
            app = poked.recv() => match app {
                Some(app) => hub.catch_up(&app).await,
                None => return,
            },
            notice = heard.recv() => match notice {
                Some(Heard::Notice { channel: Channel::Realtime, payload, .. }) => {
                    let Some((app, last)) = parse_notice(&payload) else {
                        continue;
                    };
                    let behind = hub.lock().feeds.get(&app).is_some_and(|f| f.cursor < last);
                    if behind {
                        hub.catch_up(&app).await;
                    }
                }
                Some(Heard::Missed) => {
                    for app in hub.feed_apps() {
                        hub.catch_up(&app).await;
                    }
                }
                Some(Heard::Notice { .. }) => {}
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_name_an_app_and_an_id() {
        let (app, last) = parse_notice("shop 42").unwrap();
        assert_eq!((app.as_str(), last), ("shop", 42));
        for bad in ["", "shop", "shop x", "Not An App 1", "shop -1"] {
            assert!(parse_notice(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn an_event_is_encoded_as_one_sse_message() {
        let event = RealtimeEvent {
            id: 7,
            topic: ChannelName::parse("orders").unwrap(),
            payload: r#"{"n":1}"#.into(),
            created_at: chrono::Utc::now(),
        };
        assert_eq!(encode(&event), "id: 7\nevent: orders\ndata: {\"n\":1}\n\n");
    }
}
