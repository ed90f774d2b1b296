//! The watch hub: blocked readers register interest in a key, a prefix, the sessions, the ACL
//! tables or a part of the catalog, and the store wakes the readers whose scope a committed command
//! touched.
//!
//! An idle waiter is one entry in a map and one parked task: nothing polls. Waking costs, per touched
//! key, one lookup for the exact key plus one per distinct registered prefix length — independent of how
//! many readers wait.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::apply::Touched;

/// What a blocked reader waits on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WatchScope {
    /// One KV key.
    Key(String),
    /// Every KV key under a prefix (`""` is the whole keyspace).
    Prefix(String),
    /// The sessions table.
    Sessions,
    /// The ACL tables (tokens, policies, roles, auth methods, binding rules, bootstrap).
    Acl,
    /// The catalog's nodes table (`/v1/catalog/nodes`): [`crate::Store::nodes`]'s index.
    Nodes,
    /// The catalog's services table (`/v1/catalog/services`): [`crate::Store::services`]'s index.
    Services,
    /// One service name (`/v1/catalog/service/:name`, `/v1/health/service/:name`):
    /// [`crate::Store::service_nodes`]'s and [`crate::Store::service_health`]'s index. Case does not
    /// matter. A waiter on a service with no instance is also woken by catalog writes that may move
    /// the index such reads report, and then looks again.
    Service(String),
    /// One node, by name or ID (`/v1/catalog/node/:node`, `/v1/catalog/node-services/:node`):
    /// [`crate::Store::node`]'s index. Case does not matter.
    Node(String),
    /// The checks table (`/v1/health/node/:node`, `/v1/health/checks/:service`,
    /// `/v1/health/state/:state`): the index of [`crate::Store::node_checks`],
    /// [`crate::Store::service_checks`] and [`crate::Store::checks_in_state`].
    Checks,
}

/// Why a subscription fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A command at this index touched the scope.
    Changed {
        /// The command's index.
        index: u64,
    },
    /// The whole state was replaced (restore): indexes may have gone backwards, readers must re-read
    /// from scratch (a blocking client resets its index).
    Reset,
}

/// The result of [`crate::Store::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The scope's index is now above the one waited on.
    Changed {
        /// The scope's current index.
        index: u64,
    },
    /// The deadline passed first; `index` is the scope's current index (Consul returns it as is).
    TimedOut {
        /// The scope's current index.
        index: u64,
    },
    /// The state was restored meanwhile; `index` is the scope's new index, possibly lower.
    Reset {
        /// The scope's current index.
        index: u64,
    },
}

type Waiters = HashMap<u64, oneshot::Sender<Wake>>;

#[derive(Default)]
struct HubState {
    next_id: u64,
    keys: HashMap<String, Waiters>,
    prefixes: HashMap<String, Waiters>,
    /// Registered prefix lengths and how many prefixes have each: the only lengths worth looking up.
    prefix_lengths: BTreeMap<usize, usize>,
    sessions: Waiters,
    acl: Waiters,
    nodes: Waiters,
    services: Waiters,
    checks: Waiters,
    /// By ASCII-lowercased service name.
    service: HashMap<String, Waiters>,
    /// By ASCII-lowercased node name or ID.
    node: HashMap<String, Waiters>,
}

/// Removes one waiter from a map of waiters by name, dropping the name when it has no waiter left.
fn remove_named(map: &mut HashMap<String, Waiters>, name: &str, id: u64) {
    if let Some(waiters) = map.get_mut(name) {
        waiters.remove(&id);
        if waiters.is_empty() {
            map.remove(name);
        }
    }
}

impl HubState {
    fn remove(&mut self, scope: &WatchScope, id: u64) {
        match scope {
            WatchScope::Key(key) => {
                if let Some(waiters) = self.keys.get_mut(key) {
                    waiters.remove(&id);
                    if waiters.is_empty() {
                        self.keys.remove(key);
                    }
                }
            }
            WatchScope::Prefix(prefix) => {
                if let Some(waiters) = self.prefixes.get_mut(prefix) {
                    waiters.remove(&id);
                    if waiters.is_empty() {
                        self.prefixes.remove(prefix);
                        self.forget_prefix_length(prefix.len());
                    }
                }
            }
            WatchScope::Sessions => {
                self.sessions.remove(&id);
            }
            WatchScope::Acl => {
                self.acl.remove(&id);
            }
            WatchScope::Nodes => {
                self.nodes.remove(&id);
            }
            WatchScope::Services => {
                self.services.remove(&id);
            }
            WatchScope::Checks => {
                self.checks.remove(&id);
            }
            WatchScope::Service(name) => remove_named(&mut self.service, &name.to_ascii_lowercase(), id),
            WatchScope::Node(name) => remove_named(&mut self.node, &name.to_ascii_lowercase(), id),
        }
    }

    fn forget_prefix_length(&mut self, len: usize) {
        if let Some(count) = self.prefix_lengths.get_mut(&len) {
            *count -= 1;
            if *count == 0 {
                self.prefix_lengths.remove(&len);
            }
        }
    }

    fn wake_prefix(&mut self, prefix: &str, wake: Wake) {
        if let Some(waiters) = self.prefixes.remove(prefix) {
            self.forget_prefix_length(prefix.len());
            send_all(waiters, wake);
        }
    }
}

fn send_all(waiters: Waiters, wake: Wake) {
    for (_, sender) in waiters {
        // A receiver that is gone has stopped waiting; nothing to do.
        let _ = sender.send(wake);
    }
}

/// Registry of blocked readers. Cloning gives another handle to the same hub.
#[derive(Clone, Default)]
pub struct WatchHub {
    state: Arc<Mutex<HubState>>,
}

impl std::fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHub")
            .field("waiters", &self.waiter_count())
            .finish()
    }
}

impl WatchHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers interest in a scope, from now on. Subscribe BEFORE reading the state, then wait only
    /// if the read showed nothing new: a change committed between the read and the wait still fires.
    pub fn subscribe(&self, scope: WatchScope) -> Subscription {
        let (sender, receiver) = oneshot::channel();
        let mut state = self.state.lock();
        let id = state.next_id;
        state.next_id = state.next_id.wrapping_add(1);
        match &scope {
            WatchScope::Key(key) => {
                state.keys.entry(key.clone()).or_default().insert(id, sender);
            }
            WatchScope::Prefix(prefix) => {
                let waiters = state.prefixes.entry(prefix.clone()).or_default();
                let new_prefix = waiters.is_empty();
                waiters.insert(id, sender);
                if new_prefix {
                    *state.prefix_lengths.entry(prefix.len()).or_default() += 1;
                }
            }
            WatchScope::Sessions => {
                state.sessions.insert(id, sender);
            }
            WatchScope::Acl => {
                state.acl.insert(id, sender);
            }
            WatchScope::Nodes => {
                state.nodes.insert(id, sender);
            }
            WatchScope::Services => {
                state.services.insert(id, sender);
            }
            WatchScope::Checks => {
                state.checks.insert(id, sender);
            }
            WatchScope::Service(name) => {
                state
                    .service
                    .entry(name.to_ascii_lowercase())
                    .or_default()
                    .insert(id, sender);
            }
            WatchScope::Node(name) => {
                state
                    .node
                    .entry(name.to_ascii_lowercase())
                    .or_default()
                    .insert(id, sender);
            }
        }
        drop(state);
        Subscription {
            hub: self.clone(),
            scope,
            id,
            receiver,
        }
    }

    /// How many subscriptions are registered (for tests and metrics).
    pub fn waiter_count(&self) -> usize {
        let state = self.state.lock();
        state.keys.values().map(HashMap::len).sum::<usize>()
            + state.prefixes.values().map(HashMap::len).sum::<usize>()
            + state.sessions.len()
            + state.acl.len()
            + state.nodes.len()
            + state.services.len()
            + state.checks.len()
            + state.service.values().map(HashMap::len).sum::<usize>()
            + state.node.values().map(HashMap::len).sum::<usize>()
    }

    /// Wakes every subscriber (used after a restore).
    pub fn wake_all(&self) {
        let mut state = self.state.lock();
        let state = &mut *state;
        for (_, waiters) in state
            .keys
            .drain()
            .chain(state.prefixes.drain())
            .chain(state.service.drain())
            .chain(state.node.drain())
        {
            send_all(waiters, Wake::Reset);
        }
        state.prefix_lengths.clear();
        for waiters in [
            &mut state.sessions,
            &mut state.acl,
            &mut state.nodes,
            &mut state.services,
            &mut state.checks,
        ] {
            send_all(std::mem::take(waiters), Wake::Reset);
        }
    }

    pub(crate) fn notify(&self, index: u64, touched: &Touched) {
        if touched.reset {
            self.wake_all();
            return;
        }
        let wake = Wake::Changed { index };
        let mut state = self.state.lock();
        for key in &touched.kv_keys {
            if let Some(waiters) = state.keys.remove(key.as_str()) {
                send_all(waiters, wake);
            }
            let lengths: Vec<usize> = state
                .prefix_lengths
                .range(..=key.len())
                .map(|(len, _)| *len)
                .collect();
            for len in lengths {
                if let Some(prefix) = key.get(..len) {
                    state.wake_prefix(prefix, wake);
                }
            }
        }
        if touched.sessions {
            send_all(std::mem::take(&mut state.sessions), wake);
        }
        if touched.acl {
            send_all(std::mem::take(&mut state.acl), wake);
        }
        let catalog = &touched.catalog;
        if catalog.any() {
            let state = &mut *state;
            for (flag, waiters) in [
                (catalog.nodes, &mut state.nodes),
                (catalog.services, &mut state.services),
                (catalog.checks, &mut state.checks),
            ] {
                if flag {
                    send_all(std::mem::take(waiters), wake);
                }
            }
            // Absent names cannot be told from present ones here: wake them all, and the readers of
            // names whose index did not move wait again (see `Store::wait`).
            if catalog.absent_services {
                for (_, waiters) in state.service.drain() {
                    send_all(waiters, wake);
                }
            }
            if catalog.absent_nodes {
                for (_, waiters) in state.node.drain() {
                    send_all(waiters, wake);
                }
            }
            for name in &catalog.service_names {
                if let Some(waiters) = state.service.remove(name) {
                    send_all(waiters, wake);
                }
            }
            for name in &catalog.node_names {
                if let Some(waiters) = state.node.remove(name) {
                    send_all(waiters, wake);
                }
            }
        }
    }
}

/// One registered interest. Dropping it unregisters it.
pub struct Subscription {
    hub: WatchHub,
    scope: WatchScope,
    id: u64,
    receiver: oneshot::Receiver<Wake>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("scope", &self.scope)
            .field("id", &self.id)
            .finish()
    }
}

impl Subscription {
    /// The scope watched.
    pub fn scope(&self) -> &WatchScope {
        &self.scope
    }

    /// Waits for the wake-up, or returns `None` once `deadline` passes. Needs a tokio runtime with time.
    pub async fn wait_until(mut self, deadline: Instant) -> Option<Wake> {
        match tokio::time::timeout_at(deadline, &mut self.receiver).await {
            Ok(Ok(wake)) => Some(wake),
            // The hub cannot drop a sender without sending, except when it is itself dropped: treat as
            // a reset so the reader re-reads.
            Ok(Err(_)) => Some(Wake::Reset),
            Err(_) => None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.state.lock().remove(&self.scope, self.id);
    }
}
