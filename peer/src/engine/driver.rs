//! The one loop that acts. It owns every handle on the outside world (the
//! endpoint, the coordinator connection, the links, the store executor, the
//! front end's channels) and the four parts that decide (`login`,
//! `signaling`, `links`, `outbox`). Each turn it takes one input, hands it
//! to the part it concerns, and carries out the actions that come back,
//! routing those meant for another part. It never awaits the network or the
//! disk: writes go to writer tasks, store work to the executor, and results
//! come back as inputs.
//!
//! Flow control: commands are taken only while the outbox has room; frames
//! from links only while received messages are being stored fast enough
//! and the front end keeps up with events. A stop request is always taken.

use super::action::{Action, Arrangement, LinkId, StoreJob};
use super::admission::{self, ExpectedSources};
use super::api::{
    Command, CommandKind, Config, Event, Fatal, LinkFault, LinkStatus, Refusal, Status,
};
use super::connect::{self, ConnectError, Connected, Trust};
use super::coord_io::CoordIo;
use super::direct;
use super::link_io::{self, LinkHandle, LinkInput, Out};
use super::links::{self, Admission, Links};
use super::login::{Login, Stage};
use super::outbox::{self, Outbox};
use super::relay_path::{self, RelayPaths};
use super::signaling::{self, Signaling};
use super::store_io::{self, StoreDone};
use crate::candidates::local_candidates;
use crate::store::Store;
use common::close::{self, CloseCode};
use common::ids::MessageId;
use common::protocol::{RequestKind, SessionResponse, SignalEvent, SignalRequest};
use common::tls::{Identity, Vouched};
use common::wire::WireError;
use common::Fingerprint;
use futures_util::stream::{FuturesOrdered, StreamExt};
use quinn::{RecvStream, SendStream};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Capacity of the input channels.
pub(crate) const CHANNEL: usize = 1024;
/// Most commands taken in one turn (their sends are stored together).
const COMMAND_BATCH: usize = 512;
/// How long the endpoint may linger after closing, at sign-out.
const CLOSE_LINGER: Duration = Duration::from_millis(300);

/// Events waiting for the front end past which commands wait; received
/// messages waiting for it past which link frames wait.
const EVENT_BACKLOG: usize = 4096;

/// What the tasks report to the loop.
pub(crate) enum Input {
    /// A coordinator connection attempt starts.
    Attempting(u64),
    /// Connected to the coordinator.
    CoordConnected(u64, Connected),
    /// The attempt failed.
    CoordFailed(u64, ConnectError),
    /// A frame (or the end) of the session stream.
    Session(u64, Result<Option<SessionResponse>, WireError>),
    /// A frame (or the end) of the signaling stream.
    Signal(u64, Result<Option<SignalEvent>, WireError>),
    /// The coordinator connection closed.
    CoordClosed(u64, quinn::ConnectionError),
    /// The store and the signaling stream are open (or not).
    SessionOpened(u64, Result<(Store, SendStream, RecvStream), Fatal>),
    /// A vouched peer completed the TLS handshake with us.
    Accepted(quinn::Connection),
    /// A direct connection passed its hello.
    LinkUp(Box<LinkUp>),
    /// A direct connection could not be made.
    LinkFailed {
        /// The dialer's arrangement (acceptors' failures are only logged).
        arrangement: Option<Arrangement>,
        /// Why.
        error: direct::DialError,
    },
    /// A link's connection ended.
    LinkEnded(LinkId, Option<quinn::ConnectionError>),
}

/// A direct connection ready to carry messages.
pub(crate) struct LinkUp {
    peer: String,
    kind: RequestKind,
    conn: quinn::Connection,
    send: SendStream,
    recv: RecvStream,
    accepted_fingerprint: Option<Fingerprint>,
}

/// The I/O side of the engine and its parts.
pub(crate) struct Driver {
    pub(crate) config: Config,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) identity: Arc<Identity>,
    pub(crate) trust: Trust,
    pub(crate) vouched: Vouched,
    /// The addresses connections are accepted from.
    expected: ExpectedSources,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) stop: CancellationToken,
    login: Login,
    signaling: Signaling,
    links: Links,
    outbox: Outbox,
    inputs: mpsc::Sender<Input>,
    link_frames: mpsc::Sender<(LinkId, LinkInput)>,
    tasks: JoinSet<()>,
    coord: Option<CoordIo>,
    store: Option<Store>,
    /// Store work in flight, polled by the loop; results come out in the
    /// order the jobs were given.
    store_jobs: FuturesOrdered<StoreFuture>,
    handles: HashMap<LinkId, LinkHandle>,
    /// Events not yet taken by the front end; true: a message to mark
    /// shown once it has it.
    pending: VecDeque<(Event, bool)>,
    /// How many of `pending` are received messages.
    pending_messages: usize,
    /// Received messages handed to the front end, to mark shown.
    shown: Vec<(String, MessageId)>,
    /// A send that did not fit in the window, taken first when it does.
    waiting: Option<Command>,
    /// The relay path through the coordinator (stand-in addresses).
    relay: RelayPaths,
    /// The key each contact had when last vouched for (loaded at login).
    contact_keys: HashMap<String, Fingerprint>,
    behind_nat: bool,
    stopping: bool,
}

type StoreFuture = std::pin::Pin<Box<dyn std::future::Future<Output = StoreDone> + Send>>;

/// What the front end's side of the engine looks like to the loop.
pub(crate) struct Channels {
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) shown: mpsc::UnboundedReceiver<(String, MessageId)>,
    pub(crate) inputs: mpsc::Receiver<Input>,
    pub(crate) link_frames: mpsc::Receiver<(LinkId, LinkInput)>,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: Config,
        endpoint: quinn::Endpoint,
        identity: Arc<Identity>,
        trust: Trust,
        vouched: Vouched,
        events: mpsc::Sender<Event>,
        stop: CancellationToken,
        commands: mpsc::Receiver<Command>,
        shown: mpsc::UnboundedReceiver<(String, MessageId)>,
        relay: RelayPaths,
    ) -> (Driver, Channels) {
        let (inputs, inputs_rx) = mpsc::channel(CHANNEL);
        let (link_frames, link_rx) = mpsc::channel(CHANNEL);
        let t = &config.timings;
        let driver = Driver {
            login: Login::new(config.coordinator.clone(), t),
            signaling: Signaling::default(),
            links: Links::new(t.expectation_ttl),
            outbox: Outbox::new(
                t.window,
                t.redelivery_pause,
                u32::try_from(t.delivery_idle.as_millis() / t.tick.as_millis().max(1))
                    .unwrap_or(u32::MAX),
            ),
            config,
            endpoint,
            identity,
            trust,
            vouched,
            expected: ExpectedSources::default(),
            relay,
            events,
            stop,
            inputs,
            link_frames,
            tasks: JoinSet::new(),
            coord: None,
            store: None,
            store_jobs: FuturesOrdered::new(),
            handles: HashMap::new(),
            pending: VecDeque::new(),
            pending_messages: 0,
            shown: Vec::new(),
            waiting: None,
            contact_keys: HashMap::new(),
            behind_nat: false,
            stopping: false,
        };
        (
            driver,
            Channels {
                commands,
                shown,
                inputs: inputs_rx,
                link_frames: link_rx,
            },
        )
    }

    /// Runs until a stop is asked for or a fatal error, then signs out.
    pub(crate) async fn run(mut self, mut ch: Channels) {
        self.tasks.spawn(admission::accept_loop(
            self.endpoint.clone(),
            self.expected.clone(),
            self.inputs.clone(),
        ));
        let start = self.login.start();
        self.act(start);
        let mut tick = tokio::time::interval(self.config.timings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = self.stop.clone();
        let events = self.events.clone();
        while !self.stopping {
            let take_commands = self.waiting.is_none() && self.pending.len() < EVENT_BACKLOG;
            // Only received messages hold up link frames: a sender whose
            // front end is slow to read its own notices still takes acks.
            let take_frames = self.outbox.can_receive() && self.pending_messages < EVENT_BACKLOG;
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                permit = events.reserve(), if !self.pending.is_empty() => {
                    match permit {
                        Ok(permit) => self.hand_over(permit),
                        // Nobody listens: stop.
                        Err(_) => break,
                    }
                }
                Some(input) = ch.inputs.recv() => self.on_input(input),
                Some(item) = ch.shown.recv() => {
                    self.shown.push(item);
                    while let Ok(item) = ch.shown.try_recv() {
                        self.shown.push(item);
                    }
                }
                Some(done) = self.store_jobs.next(), if !self.store_jobs.is_empty() => self.on_stored(done),
                Some((link, input)) = ch.link_frames.recv(), if take_frames => self.on_link_input(link, input),
                cmd = ch.commands.recv(), if take_commands => match cmd {
                    None | Some(Command::Shutdown) => break,
                    Some(cmd) => self.on_commands(cmd, &mut ch.commands),
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    let a = self.links.tick(now);
                    self.act(a);
                    let a = self.outbox.tick(now);
                    self.act(a);
                    // Forget finished tasks (their results were reported).
                    while self.tasks.try_join_next().is_some() {}
                }
            }
            self.retry_waiting();
            let a = self.outbox.flush();
            self.act(a);
            self.flush_shown();
        }
        self.sign_out().await;
    }

    /// Hands one event to the front end (a permit is held, so this does not
    /// wait), and as many more as fit.
    fn hand_over(&mut self, permit: mpsc::Permit<'_, Event>) {
        if let Some((ev, mark)) = self.pending.pop_front() {
            self.note_shown(&ev, mark);
            permit.send(ev);
        }
        let events = self.events.clone();
        while let Some((ev, mark)) = self.pending.pop_front() {
            match events.try_reserve() {
                Ok(p) => {
                    self.note_shown(&ev, mark);
                    p.send(ev);
                }
                Err(_) => {
                    self.pending.push_front((ev, mark));
                    break;
                }
            }
        }
    }

    /// Queues an event for the front end; `mark`: a received message to
    /// mark shown once the front end has it.
    fn emit(&mut self, ev: Event, mark: bool) {
        if matches!(ev, Event::Message { .. }) {
            self.pending_messages += 1;
        }
        self.pending.push_back((ev, mark));
    }

    /// An event was handed to the front end.
    fn note_shown(&mut self, ev: &Event, mark: bool) {
        if let Event::Message { from, id, .. } = ev {
            self.pending_messages = self.pending_messages.saturating_sub(1);
            // With confirmations, the front end says when it has shown it.
            if mark && !self.config.confirm_shown {
                self.shown.push((from.clone(), *id));
            }
        }
    }

    /// The coordinator vouched for `key` as `peer`'s: remembered the first
    /// time, and a change is told before the connection is made.
    fn check_key(&mut self, peer: &str, key: Fingerprint) {
        let before = self.contact_keys.insert(peer.to_string(), key);
        if before == Some(key) {
            return;
        }
        if let Some(old) = before {
            self.emit(
                Event::ContactKeyChanged {
                    name: peer.to_string(),
                    old,
                    new: key,
                },
                false,
            );
        }
        self.act(vec![Action::Store(StoreJob::RememberKey {
            name: peer.to_string(),
            key,
        })]);
    }

    fn flush_shown(&mut self) {
        if !self.shown.is_empty() && self.store.is_some() {
            let items = std::mem::take(&mut self.shown);
            self.act(vec![Action::Store(StoreJob::MarkShown(items))]);
        }
    }

    async fn sign_out(&mut self) {
        for h in self.handles.values_mut() {
            h.close(CloseCode::SIGNED_OUT);
        }
        // Relayed links' closes go through the coordinator: let them out
        // before its connection goes.
        if self.links.open().iter().any(|(_, l)| l.relayed) {
            self.relay.drain(Duration::from_secs(1)).await;
        }
        if let Some(c) = &self.coord {
            c.close(CloseCode::SIGNED_OUT);
        }
        // Events already decided still reach the front end, if it reads
        // them within a moment.
        let deliver = async {
            while let Some((ev, mark)) = self.pending.pop_front() {
                if self.events.send(ev.clone()).await.is_err() {
                    break;
                }
                self.note_shown(&ev, mark);
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), deliver).await;
        // Store work already given (what was shown, what was acknowledged)
        // is finished before the store closes.
        self.flush_shown();
        let finish = async { while self.store_jobs.next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(2), finish).await;
        // The close frames leave at once; a moment more lets a lost one be
        // sent again. Not the full draining period: a handshake with a
        // coordinator that never answers would hold `exit` for seconds.
        self.endpoint
            .close(CloseCode::SIGNED_OUT.varint(), b"signed out");
        let _ = tokio::time::timeout(CLOSE_LINGER, self.endpoint.wait_idle()).await;
        self.tasks.abort_all();
        let _ = self.events.send(Event::Stopped).await;
    }

    // ----- carrying out actions -----

    fn act(&mut self, actions: Vec<Action>) {
        for a in actions {
            self.act_one(a);
        }
    }

    fn act_one(&mut self, action: Action) {
        match action {
            Action::Emit(ev) => self.emit(ev, false),
            Action::EmitUnshown(ev) => self.emit(ev, true),
            Action::Stop => self.stopping = true,
            Action::Connect { gen, after, avoid } => self.connect(gen, after, avoid),
            Action::DropCoordinator(code) => {
                if let Some(c) = self.coord.take() {
                    c.close(code);
                }
            }
            Action::Session(req) => {
                let sent = self.coord.as_ref().is_some_and(|c| c.session(req));
                if !sent {
                    self.coordinator_stuck();
                }
            }
            Action::Signal(req) => self.signal(req),
            Action::OpenSession { name } => self.open_session(name),
            Action::WantDelivery(peer) => {
                if self.login.is_ready()
                    && self.login.is_online(&peer)
                    && !self.links.busy_with(&peer)
                {
                    let cx = context(&self.login, self.coord.is_some(), &self.links);
                    let a = self.signaling.deliver(peer, cx);
                    self.act(a);
                }
            }
            Action::Arrange(a) => {
                self.check_key(&a.peer, a.fingerprint);
                let (dialer, fingerprint) = (a.dialer, a.fingerprint);
                let stand_in = self.relay.addr_for(&a.peer);
                if self.behind_nat {
                    // Our NAT's mapping towards them first, before any packet
                    // of theirs or ours reaches their NAT.
                    self.relay.open_mappings(&a.addrs);
                }
                let actions = self.links.arrange(a, Instant::now(), self.behind_nat);
                self.act(actions);
                // The dialer may come through the relay, from its stand-in.
                if !dialer {
                    self.expected.also(fingerprint, stand_in);
                }
            }
            Action::PeerRestarted(peer) => {
                let a = self.links.peer_restarted(&peer);
                self.act(a);
            }
            Action::Vouch { fingerprint, addrs } => {
                self.expected.allow(fingerprint, &addrs);
                self.vouched.allow(fingerprint);
            }
            Action::Revoke(fp) => {
                self.expected.revoke(fp);
                self.vouched.revoke(fp);
            }
            Action::Dial(a) => self.dial(a),
            Action::Punch { fingerprint, addrs } => {
                let punch = direct::punch(
                    self.endpoint.clone(),
                    self.identity.clone(),
                    fingerprint,
                    addrs,
                );
                self.tasks.spawn(punch);
            }
            Action::LinkSend(link, frames) => {
                let full = self
                    .handles
                    .get(&link)
                    .is_some_and(|h| !h.send(Out::Frames(frames)));
                if full {
                    self.fail_link(link, CloseCode::TOO_SLOW, LinkFault::NotReading);
                }
            }
            Action::LinkFinish(link) => {
                if let Some(h) = self.handles.get(&link) {
                    h.send(Out::Finish);
                }
            }
            Action::LinkClose(link, code) => {
                if let Some(h) = self.handles.get_mut(&link) {
                    h.close(code);
                }
            }
            Action::LinkFail(link, code, fault) => self.fail_link(link, code, fault),
            // Store work is only decided after a login (commands that need
            // the store are refused before it), so there is always a store.
            Action::Store(job) => match &self.store {
                Some(store) => self
                    .store_jobs
                    .push_back(Box::pin(store_io::run(store.clone(), job))),
                None => tracing::error!(?job, "store work before the store was opened"),
            },
        }
    }

    fn fail_link(&mut self, link: LinkId, code: CloseCode, fault: LinkFault) {
        if let Some(h) = self.handles.get_mut(&link) {
            tracing::warn!(link, ?fault, "closing a direct connection");
            h.fail(code, fault);
        }
    }

    fn signal(&mut self, req: SignalRequest) {
        let sent = self.coord.as_ref().is_some_and(|c| c.signal(req));
        if !sent {
            self.coordinator_stuck();
        }
    }

    /// A write to the coordinator could not be queued: drop the connection
    /// (its close comes back as an input and the login part reconnects).
    fn coordinator_stuck(&mut self) {
        if let Some(c) = &self.coord {
            tracing::warn!("the coordinator is not keeping up; dropping the connection");
            c.close(CloseCode::TOO_SLOW);
        }
    }

    /// One round of connecting: after `after`, the coordinator's names are
    /// resolved again and its addresses tried (`avoid` last).
    fn connect(&mut self, gen: u64, after: Duration, avoid: Option<SocketAddr>) {
        let (endpoint, identity, trust) = (
            self.endpoint.clone(),
            self.identity.clone(),
            self.trust.clone(),
        );
        let coordinator = self.config.coordinator.clone();
        let tx = self.inputs.clone();
        self.tasks.spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(Input::Attempting(gen)).await;
            let ev = match connect::connect(&endpoint, &identity, &trust, &coordinator, avoid).await
            {
                Ok(c) => Input::CoordConnected(gen, c),
                Err(e) => Input::CoordFailed(gen, e),
            };
            let _ = tx.send(ev).await;
        });
    }

    fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Opens the account's store (off the executor: it runs migrations) and
    /// the signaling stream, then reports back.
    fn open_session(&mut self, name: String) {
        let gen = self.login.gen();
        let Some(conn) = self.coord.as_ref().map(|c| c.conn().clone()) else {
            return;
        };
        let reuse = self.store.clone();
        let dir = self.config.data_dir.clone();
        let tx = self.inputs.clone();
        self.tasks.spawn(async move {
            let store = match reuse {
                Some(s) => Ok(s),
                None => tokio::task::spawn_blocking(move || Store::open(&dir, &name))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string())),
            };
            let result = match store {
                Err(e) => Err(Fatal::Store(e)),
                Ok(store) => match conn.open_bi().await {
                    Ok((send, recv)) => Ok((store, send, recv)),
                    // The connection's close is reported by its watcher.
                    Err(_) => return,
                },
            };
            let _ = tx.send(Input::SessionOpened(gen, result)).await;
        });
    }

    fn dial(&mut self, a: Arrangement) {
        let dialer = direct::Dialer {
            endpoint: self.endpoint.clone(),
            identity: self.identity.clone(),
            me: self.login.me().unwrap_or_default().to_string(),
            expected: a.fingerprint,
            kind: a.kind,
        };
        let tx = self.inputs.clone();
        let relay = self.relay.is_ready().then(|| self.relay.addr_for(&a.peer));
        let relay_after = self.config.timings.relay_after;
        self.tasks.spawn(async move {
            let (result, relayed) = dialer.direct_or_relayed(&a.addrs, relay, relay_after).await;
            let link_up = |peer: String, (conn, send, recv): direct::Link| {
                Input::LinkUp(Box::new(LinkUp {
                    peer,
                    kind: dialer.kind,
                    conn,
                    send,
                    recv,
                    accepted_fingerprint: None,
                }))
            };
            // A relayed chat keeps looking for a direct path; the first
            // that works replaces the relayed link (the acceptor admits it
            // for UPGRADE_WINDOW).
            let relayed_conn = match &result {
                Ok((conn, _, _)) if relayed && a.kind == RequestKind::Chat => Some(conn.clone()),
                _ => None,
            };
            let (peer, addrs) = (a.peer.clone(), a.addrs.clone());
            let ev = match result {
                Ok(link) => link_up(peer.clone(), link),
                Err(error) => Input::LinkFailed {
                    arrangement: Some(a),
                    error,
                },
            };
            let _ = tx.send(ev).await;
            if let Some(relayed_conn) = relayed_conn.filter(|_| !addrs.is_empty()) {
                let upgraded = dialer
                    .upgrade(&addrs, &relayed_conn, links::UPGRADE_WINDOW)
                    .await;
                if let Some(link) = upgraded {
                    let _ = tx.send(link_up(peer, link)).await;
                }
            }
        });
    }

    // ----- inputs -----

    /// A command, and every command queued right behind it: sends are
    /// stored together.
    fn on_commands(&mut self, first: Command, commands: &mut mpsc::Receiver<Command>) {
        self.on_command(first);
        for _ in 1..COMMAND_BATCH {
            if self.waiting.is_some() || self.stopping {
                return;
            }
            match commands.try_recv() {
                Ok(Command::Shutdown) => {
                    self.stopping = true;
                    return;
                }
                Ok(cmd) => self.on_command(cmd),
                Err(_) => return,
            }
        }
    }

    fn retry_waiting(&mut self) {
        if self.waiting.is_some() && self.outbox.can_accept(self.links.chat_link()) {
            if let Some(cmd) = self.waiting.take() {
                self.on_command(cmd);
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let actions = match cmd {
            Command::Username(name) => self.login.username(name),
            Command::Password(pw) => self.login.password(pw),
            Command::Online => self.login.online_list(),
            Command::Chat(name) => match common::names::normalize_username(&name) {
                Ok(name) => {
                    let cx = context(&self.login, self.coord.is_some(), &self.links);
                    self.signaling.chat(name, cx)
                }
                Err(e) => refuse(CommandKind::Chat, Refusal::BadName(e)),
            },
            Command::CancelRequest => self.signaling.cancel(),
            Command::Answer { accept } => self.signaling.answer(accept),
            Command::Leave => {
                let mut a = self.links.leave();
                a.extend(self.signaling.cancel());
                a
            }
            Command::Send { to, body } => {
                if self.store.is_none() {
                    refuse(CommandKind::Send, Refusal::NotLoggedIn)
                } else if !self.outbox.can_accept(self.links.chat_link()) {
                    self.waiting = Some(Command::Send { to, body });
                    Vec::new()
                } else {
                    let chat = self.links.chat_peer().map(str::to_string);
                    self.outbox.send(&to, body, chat.as_deref())
                }
            }
            Command::History(name) => {
                if self.store.is_none() {
                    refuse(CommandKind::History, Refusal::NotLoggedIn)
                } else {
                    self.outbox.history(&name)
                }
            }
            Command::ChangePassword { old, new } => self.login.change_password(old, new),
            Command::Status => {
                let links = self
                    .links
                    .open()
                    .into_iter()
                    .filter_map(|(id, info)| {
                        let (remote, rtt) = self.handles.get(&id)?.path();
                        Some(LinkStatus {
                            peer: info.peer.clone(),
                            chat: Some(id) == self.links.chat_link(),
                            remote,
                            relayed: info.relayed,
                            rtt,
                        })
                    })
                    .collect();
                vec![Action::Emit(Event::Status(Status {
                    coordinator: self.config.coordinator.clone(),
                    connected: self.coord.is_some(),
                    node: self.coord.as_ref().and(self.login.node()),
                    me: self.login.me().map(str::to_string),
                    local: self.local_addr(),
                    links,
                }))]
            }
            Command::Whois(name) => match common::names::normalize_username(&name) {
                Ok(name) => {
                    let key = if self.login.me() == Some(name.as_str()) {
                        Some(self.identity.fingerprint())
                    } else {
                        self.contact_keys.get(&name).copied()
                    };
                    let me = self.login.me() == Some(name.as_str());
                    vec![Action::Emit(Event::Whois { name, key, me })]
                }
                Err(e) => refuse(CommandKind::Whois, Refusal::BadName(e)),
            },
            Command::Shutdown => {
                self.stopping = true;
                Vec::new()
            }
        };
        self.act(actions);
    }

    fn on_input(&mut self, input: Input) {
        let gen = self.login.gen();
        match input {
            Input::Attempting(g) if g == gen => {
                let a = self.login.on_attempting();
                self.act(a);
            }
            Input::CoordConnected(g, c) if g == gen => {
                let Connected {
                    conn,
                    send,
                    recv,
                    addr,
                    addresses,
                    pinned_now,
                } = c;
                let deadline = self.config.timings.coordinator_write;
                let io =
                    CoordIo::start(g, conn, send, recv, deadline, &self.inputs, &mut self.tasks);
                self.coord = Some(io);
                let addrs = local_candidates(self.local_addr(), self.config.advertise);
                let a = self.login.on_connected(addrs, addr, addresses);
                self.act(a);
                // Told after which node was reached; nothing the coordinator
                // answers can come first (this loop reads it).
                if let Some((coordinator, fingerprint, file)) = pinned_now {
                    self.emit(
                        Event::CoordinatorPinned {
                            coordinator,
                            fingerprint,
                            file,
                        },
                        false,
                    );
                }
            }
            Input::CoordFailed(g, e) if g == gen => {
                let a = self.login.on_connect_failed(e);
                self.act(a);
            }
            Input::Session(g, frame) if g == gen => match frame {
                Ok(Some(msg)) => {
                    let online = match &msg {
                        SessionResponse::Presence { name, online: true } => Some(name.clone()),
                        SessionResponse::Welcome(w) => {
                            self.behind_nat = behind_nat(self.local_addr(), w.observed);
                            None
                        }
                        _ => None,
                    };
                    let a = self.login.on_session(msg);
                    self.act(a);
                    if let Some(name) = online {
                        let a = self.outbox.on_online(&name, Instant::now());
                        self.act(a);
                    }
                }
                Ok(None) => self.coordinator_gone("the coordinator ended the session".into()),
                Err(e) => self.coordinator_gone(format!("bad data from the coordinator: {e}")),
            },
            Input::Signal(g, frame) if g == gen => match frame {
                Ok(Some(ev)) => {
                    let cx = context(&self.login, self.coord.is_some(), &self.links);
                    let a = self.signaling.on_event(ev, cx);
                    self.act(a);
                }
                Ok(None) => self.coordinator_gone("the coordinator ended signaling".into()),
                Err(e) => self.coordinator_gone(format!("bad data from the coordinator: {e}")),
            },
            Input::CoordClosed(g, err) if g == gen => {
                self.coordinator_gone(close::describe_connection_error(&err))
            }
            Input::SessionOpened(g, result) if g == gen => self.on_session_opened(g, result),
            Input::Accepted(conn) => self.on_accepted(conn),
            Input::LinkUp(up) => self.on_link_up(*up),
            Input::LinkFailed { arrangement, error } => {
                tracing::info!(error = %error, "direct connection failed");
                if let Some(a) = arrangement.filter(|a| a.kind == RequestKind::Chat) {
                    let ev = Event::ChatFailed {
                        with: a.peer,
                        reason: super::api::ChatFailure::Dial(error),
                    };
                    self.emit(ev, false);
                }
            }
            Input::LinkEnded(link, err) => self.on_link_ended(link, err),
            // Reports of an earlier coordinator connection.
            _ => {}
        }
    }

    /// The coordinator session ended, however it was noticed.
    fn coordinator_gone(&mut self, reason: String) {
        let closed = self.coord.as_ref().and_then(|c| c.conn().close_reason());
        let code = closed.as_ref().and_then(close::code_of);
        let reason = closed
            .map(|e| close::describe_connection_error(&e))
            .unwrap_or(reason);
        let was_ready = self.login.is_ready();
        let a = self.login.on_gone(code, reason);
        self.act(a);
        if was_ready {
            let a = self.signaling.on_coordinator_lost();
            self.act(a);
        }
    }

    fn on_session_opened(
        &mut self,
        gen: u64,
        result: Result<(Store, SendStream, RecvStream), Fatal>,
    ) {
        if self.login.stage() != Stage::Opening {
            return;
        }
        let (store, send, recv) = match result {
            Ok(r) => r,
            Err(f) => {
                self.act(vec![Action::Emit(Event::Fatal(f)), Action::Stop]);
                return;
            }
        };
        let Some(coord) = self.coord.as_mut() else {
            return;
        };
        coord.add_signaling(gen, send, recv, &self.inputs, &mut self.tasks);
        self.tasks.spawn(relay_path::run_stream(
            coord.conn().clone(),
            self.relay.clone(),
        ));
        if !coord.signal(SignalRequest::Open) {
            self.coordinator_stuck();
            return;
        }
        let first_login = self.store.is_none();
        if first_login {
            self.store = Some(store);
        }
        let (a, _online) = self.login.on_session_open();
        self.act(a);
        let mut jobs = vec![
            Action::Store(StoreJob::ContactKeys),
            Action::Store(StoreJob::PeersWithUndelivered),
        ];
        if first_login {
            jobs.push(Action::Store(StoreJob::Unshown));
        }
        self.act(jobs);
    }

    fn on_accepted(&mut self, conn: quinn::Connection) {
        let Some(fp) = Fingerprint::of_connection(&conn) else {
            close::close(&conn, CloseCode::UNEXPECTED_PEER);
            return;
        };
        let allowed = self.links.allowed(&fp);
        if allowed.is_empty() {
            tracing::warn!(fingerprint = %fp, "connection from a peer nobody vouched for");
            close::close(&conn, CloseCode::UNEXPECTED_PEER);
            return;
        }
        let tx = self.inputs.clone();
        self.tasks.spawn(async move {
            let ev = match direct::hello_as_acceptor(&conn, &allowed).await {
                Ok((peer, kind, send, recv)) => Input::LinkUp(Box::new(LinkUp {
                    peer,
                    kind,
                    conn,
                    send,
                    recv,
                    accepted_fingerprint: Some(fp),
                })),
                Err(error) => Input::LinkFailed {
                    arrangement: None,
                    error,
                },
            };
            let _ = tx.send(ev).await;
        });
    }

    fn on_link_up(&mut self, up: LinkUp) {
        let LinkUp {
            peer,
            kind,
            conn,
            send,
            recv,
            accepted_fingerprint,
        } = up;
        if self.store.is_none() {
            close::close(&conn, CloseCode::SIGNED_OUT);
            return;
        }
        let relayed = relay_path::is_relay_addr(conn.remote_address());
        let (admission, a) = self
            .links
            .on_up(peer.clone(), kind, accepted_fingerprint, relayed);
        self.act(a);
        let Admission::Admit(link) = admission else {
            close::close(&conn, CloseCode::DUPLICATE);
            return;
        };
        let (handle, task) = link_io::start(
            link,
            conn,
            send,
            recv,
            self.link_frames.clone(),
            self.inputs.clone(),
        );
        self.handles.insert(link, handle);
        self.tasks.spawn(task);
        let a = self.outbox.on_link_up(link, &peer, kind);
        self.act(a);
    }

    fn on_link_input(&mut self, link: LinkId, input: LinkInput) {
        let a = match input {
            LinkInput::Frames(frames) => {
                let keeping_up = self.pending_messages == 0 && !self.config.confirm_shown;
                self.outbox.on_frames(link, frames, keeping_up)
            }
            LinkInput::Eof => self.outbox.on_eof(link),
            LinkInput::Bad(fault, code) => vec![Action::LinkFail(link, code, fault)],
        };
        self.act(a);
    }

    fn on_link_ended(&mut self, link: LinkId, err: Option<quinn::ConnectionError>) {
        let Some(handle) = self.handles.remove(&link) else {
            return;
        };
        let (clean, reason) = handle.end(err.as_ref());
        let (_, a) = self.links.on_ended(link, reason);
        self.act(a);
        let a = self.outbox.on_link_ended(link, clean, Instant::now());
        self.act(a);
    }

    fn on_stored(&mut self, done: StoreDone) {
        let chat = self.links.chat_link();
        let a = match done {
            StoreDone::Outgoing(batch, result) => {
                self.outbox.on_outgoing_stored(batch, result, chat)
            }
            StoreDone::Incoming {
                link,
                peer,
                msgs,
                shown,
                result,
            } => self
                .outbox
                .on_incoming_stored(link, &peer, msgs, shown, result),
            StoreDone::Delivered { link, ids, result } => {
                if let Err(e) = &result {
                    tracing::error!(error = %e, "marking messages delivered failed");
                }
                self.outbox.on_delivered(link, &ids)
            }
            StoreDone::Backlog { link, result } => self.outbox.on_backlog(link, result),
            StoreDone::Waiting(Ok(peers)) => {
                let online: Vec<String> = peers
                    .into_iter()
                    .filter(|p| self.login.is_online(p))
                    .collect();
                self.outbox.on_waiting(online)
            }
            StoreDone::Unshown(Ok(msgs)) => msgs
                .into_iter()
                .map(|(from, m)| {
                    Action::EmitUnshown(Event::Message {
                        from,
                        id: m.id,
                        body: m.body,
                        sent_at_ms: m.sent_at_ms,
                        held: m.held,
                        unshown: true,
                    })
                })
                .collect(),
            StoreDone::History(with, Ok(rows)) => {
                let me = self.login.me().unwrap_or_default();
                vec![Action::Emit(outbox::history_event(me, with, rows))]
            }
            StoreDone::History(_, Err(e)) => refuse(CommandKind::History, Refusal::Store(e)),
            StoreDone::Waiting(Err(e)) | StoreDone::Unshown(Err(e)) | StoreDone::Marked(Err(e)) => {
                tracing::error!(error = %e, "store work failed");
                Vec::new()
            }
            StoreDone::Marked(Ok(())) => Vec::new(),
            StoreDone::ContactKeys(Ok(keys)) => {
                // Keys learned since the load was asked for are newer.
                for (name, key) in keys {
                    self.contact_keys.entry(name).or_insert(key);
                }
                Vec::new()
            }
            StoreDone::ContactKeys(Err(e)) => {
                tracing::error!(error = %e, "contact keys could not be read");
                Vec::new()
            }
        };
        self.act(a);
    }
}

/// What signaling decisions depend on, from the other parts.
fn context<'a>(login: &'a Login, connected: bool, links: &'a Links) -> signaling::Context<'a> {
    signaling::Context {
        me: login.me().unwrap_or_default(),
        ready: login.is_ready() && connected,
        chat_with: links.chat_peer(),
    }
}

fn refuse(command: CommandKind, reason: Refusal) -> Vec<Action> {
    vec![Action::Emit(Event::Refused { command, reason })]
}

/// Behind a NAT when the coordinator sees an address that is none of ours.
fn behind_nat(local: SocketAddr, observed: SocketAddr) -> bool {
    let observed = observed.ip();
    !observed.is_loopback()
        && !local_candidates(local, None)
            .iter()
            .any(|a| a.ip() == observed)
}
