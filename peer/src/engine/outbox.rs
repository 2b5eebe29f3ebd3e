//! The one owner of a message's life. Outgoing: accepted, stored, sent on
//! the link that carries messages to its recipient (or kept), acknowledged,
//! marked delivered; kept messages go out in pages at the start of the next
//! link, and a delivery is asked for as soon as one is wanted. Incoming:
//! stored, then acknowledged, then shown. Backpressure: input is taken only
//! while the messages in flight fit in the window. Sans I/O: time is passed
//! in and store work is returned as [`StoreJob`]s whose results come back.

use super::action::{Action, LinkId, StoreJob};
use super::api::{CommandKind, Event, HistoryLine, LinkFault, Refusal};
use crate::store::StoredMessage;
use common::close::CloseCode;
use common::ids::{now_millis, MessageId};
use common::names::{check_message, normalize_username};
use common::protocol::{ChatMessage, PeerMsg, RequestKind};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Most messages read from the store for one page of a backlog.
const PAGE: usize = 512;

/// What the outbox knows of one recipient.
#[derive(Debug, Default)]
struct PeerState {
    /// The link that carries our messages to them.
    sender: Option<LinkId>,
    /// Undelivered messages may wait in the store that no link carries.
    waiting: bool,
    /// When a delivery to them was last wanted.
    last_delivery: Option<Instant>,
    /// A delivery waits for the pause to pass.
    retry: bool,
}

/// What the outbox knows of one link.
#[derive(Debug)]
struct LinkOut {
    peer: String,
    kind: RequestKind,
    /// Carries our messages to the peer (else it only receives).
    sender: bool,
    /// A backlog page is being read.
    loading: bool,
    /// Every page was sent, then `Flushed`.
    flushed: bool,
    /// The last message of the last page.
    last_loaded: Option<MessageId>,
    /// Live messages waiting behind the backlog.
    buffer: Vec<ChatMessage>,
    /// Sent and not acknowledged.
    outstanding: HashSet<MessageId>,
    /// Backlog messages not yet marked delivered, and how many were sent.
    backlog_left: HashSet<MessageId>,
    backlog_total: usize,
    /// Received messages being stored (their acks are not sent yet).
    storing: usize,
    /// Acknowledged messages being marked delivered.
    marking: usize,
    peer_flushed: bool,
    finished: bool,
    peer_eof: bool,
    /// A protocol breach closed it.
    failed: bool,
    /// Ticks since the other side last sent a frame.
    idle_ticks: u32,
}

impl LinkOut {
    fn load(&mut self, link: LinkId) -> Action {
        self.loading = true;
        Action::Store(StoreJob::LoadBacklog {
            link,
            peer: self.peer.clone(),
            after: self.last_loaded,
            limit: PAGE,
        })
    }

    fn delivery_done(&self) -> bool {
        self.kind == RequestKind::Deliver
            && self.flushed
            && self.peer_flushed
            && self.outstanding.is_empty()
            && self.buffer.is_empty()
            && self.storing == 0
            && self.marking == 0
    }
}

/// The outbox.
#[derive(Debug)]
pub(crate) struct Outbox {
    window: usize,
    /// Ticks a delivery may go without a frame from the other side.
    stall_ticks: u32,
    pause: Duration,
    /// Accepted messages not yet given to the store.
    batch: Vec<(String, ChatMessage)>,
    /// Messages given to the store and not yet back.
    storing: usize,
    peers: HashMap<String, PeerState>,
    links: HashMap<LinkId, LinkOut>,
    /// Store jobs for received messages in flight.
    incoming_jobs: usize,
}

impl Outbox {
    /// `stall_ticks`: ticks a delivery may go without a frame from the
    /// other side before it is closed.
    pub(crate) fn new(window: usize, pause: Duration, stall_ticks: u32) -> Outbox {
        Outbox {
            window: window.max(1),
            stall_ticks: stall_ticks.max(1),
            pause,
            batch: Vec::new(),
            storing: 0,
            peers: HashMap::new(),
            links: HashMap::new(),
            incoming_jobs: 0,
        }
    }

    /// True while more input fits: messages being stored, and messages for
    /// the chat not yet acknowledged, stay under the window.
    pub(crate) fn can_accept(&self, chat: Option<LinkId>) -> bool {
        let chat_load = chat
            .and_then(|l| self.links.get(&l))
            .map_or(0, |l| l.outstanding.len() + l.buffer.len());
        self.storing + self.batch.len() < self.window && chat_load < self.window
    }

    /// True while received messages can be taken: their store work keeps up.
    pub(crate) fn can_receive(&self) -> bool {
        self.incoming_jobs < 8
    }

    /// A message typed for `to`; `chat_with` is the open chat's peer.
    pub(crate) fn send(&mut self, to: &str, body: String, chat_with: Option<&str>) -> Vec<Action> {
        if let Err(e) = check_message(&body) {
            return refuse(Refusal::BadMessage(e));
        }
        let to = match normalize_username(to) {
            Ok(n) => n,
            Err(e) => return refuse(Refusal::BadName(e)),
        };
        let msg = ChatMessage {
            id: MessageId::generate(),
            sent_at_ms: now_millis(),
            held: chat_with != Some(to.as_str()),
            body,
        };
        self.batch.push((to, msg));
        Vec::new()
    }

    /// Gives the accepted messages to the store, in one job.
    pub(crate) fn flush(&mut self) -> Vec<Action> {
        if self.batch.is_empty() {
            return Vec::new();
        }
        let batch = std::mem::take(&mut self.batch);
        self.storing += batch.len();
        vec![Action::Store(StoreJob::AddOutgoing(batch))]
    }

    /// Stored: send each message on its recipient's chat link, or keep it.
    pub(crate) fn on_outgoing_stored(
        &mut self,
        batch: Vec<(String, ChatMessage)>,
        result: Result<(), String>,
        chat: Option<LinkId>,
    ) -> Vec<Action> {
        self.storing = self.storing.saturating_sub(batch.len());
        if let Err(e) = result {
            return refuse(Refusal::Store(e));
        }
        let mut out = Vec::new();
        let mut live: Vec<PeerMsg> = Vec::new();
        let mut live_link = None;
        for (to, msg) in batch {
            let sender = self.peers.get(&to).and_then(|p| p.sender);
            match sender.filter(|l| Some(*l) == chat) {
                Some(link) => {
                    let Some(l) = self.links.get_mut(&link) else {
                        continue;
                    };
                    if l.loading || !l.flushed {
                        l.buffer.push(msg);
                    } else {
                        l.outstanding.insert(msg.id);
                        live.push(PeerMsg::Message(msg));
                        live_link = Some(link);
                    }
                }
                None => {
                    out.push(Action::Emit(Event::Kept { to: to.clone() }));
                    let peer = self.peers.entry(to.clone()).or_default();
                    if !peer.waiting {
                        peer.waiting = true;
                        out.push(Action::WantDelivery(to));
                    }
                }
            }
        }
        if let Some(link) = live_link {
            out.insert(0, Action::LinkSend(link, live));
        }
        out
    }

    /// A link is up. A chat link carries our messages to its peer; a
    /// delivery does unless another link already does.
    pub(crate) fn on_link_up(
        &mut self,
        link: LinkId,
        peer: &str,
        kind: RequestKind,
    ) -> Vec<Action> {
        let state = self.peers.entry(peer.to_string()).or_default();
        let takes_over = kind == RequestKind::Chat || state.sender.is_none();
        let previous = if takes_over {
            state.sender.replace(link)
        } else {
            None
        };
        let mut out = Vec::new();
        if let Some((prev, old)) = previous.and_then(|p| Some(p).zip(self.links.get_mut(&p))) {
            // The new link carries the rest; the old one says it is done.
            if !old.flushed {
                old.flushed = true;
                out.push(Action::LinkSend(prev, vec![PeerMsg::Flushed]));
            }
            old.sender = false;
        }
        let mut l = LinkOut {
            peer: peer.to_string(),
            kind,
            sender: takes_over,
            loading: false,
            flushed: !takes_over,
            last_loaded: None,
            buffer: Vec::new(),
            outstanding: HashSet::new(),
            backlog_left: HashSet::new(),
            backlog_total: 0,
            storing: 0,
            marking: 0,
            peer_flushed: false,
            finished: false,
            peer_eof: false,
            failed: false,
            idle_ticks: 0,
        };
        if takes_over {
            out.push(l.load(link));
        } else {
            out.push(Action::LinkSend(link, vec![PeerMsg::Flushed]));
        }
        self.links.insert(link, l);
        out
    }

    /// A page of a link's backlog was read.
    pub(crate) fn on_backlog(
        &mut self,
        link: LinkId,
        result: Result<Vec<ChatMessage>, String>,
    ) -> Vec<Action> {
        let Some(l) = self.links.get_mut(&link) else {
            return Vec::new();
        };
        l.loading = false;
        let page = match result {
            Ok(p) => p,
            Err(e) => return fail(link, l, LinkFault::Store(e)),
        };
        if !l.sender {
            return Vec::new();
        }
        let mut out = Vec::new();
        let full = page.len() >= PAGE;
        let ids: HashSet<MessageId> = page.iter().map(|m| m.id).collect();
        l.buffer.retain(|m| !ids.contains(&m.id));
        let not_held: Vec<MessageId> = page.iter().filter(|m| !m.held).map(|m| m.id).collect();
        if !not_held.is_empty() {
            // They missed their chat: from now on they count as kept.
            out.push(Action::Store(StoreJob::MarkHeld {
                peer: l.peer.clone(),
                ids: not_held,
            }));
        }
        l.last_loaded = page.last().map(|m| m.id).or(l.last_loaded);
        let mut frames = Vec::with_capacity(page.len() + 1);
        for mut m in page {
            if l.outstanding.insert(m.id) {
                l.backlog_left.insert(m.id);
                l.backlog_total += 1;
                m.held = true;
                frames.push(PeerMsg::Message(m));
            }
        }
        if full {
            if l.outstanding.len() < self.window / 2 {
                out.push(l.load(link));
            }
        } else {
            // Everything waiting is now in flight on this link.
            l.flushed = true;
            frames.push(PeerMsg::Flushed);
            for m in std::mem::take(&mut l.buffer) {
                if l.outstanding.insert(m.id) {
                    frames.push(PeerMsg::Message(m));
                }
            }
            if let Some(p) = self.peers.get_mut(&l.peer) {
                p.waiting = false;
            }
        }
        if !frames.is_empty() {
            out.insert(0, Action::LinkSend(link, frames));
        }
        out
    }

    /// Frames read on a link, in order. `keeping_up`: the front end has
    /// taken every event so far, so new messages reach it right after they
    /// are stored and are stored as shown (else they are marked shown once
    /// it has them, and shown again after a restart if it never did).
    pub(crate) fn on_frames(
        &mut self,
        link: LinkId,
        frames: Vec<PeerMsg>,
        keeping_up: bool,
    ) -> Vec<Action> {
        let Some(l) = self.links.get_mut(&link) else {
            return Vec::new();
        };
        if l.failed {
            return Vec::new();
        }
        l.idle_ticks = 0;
        let mut msgs = Vec::new();
        let mut acks = Vec::new();
        let mut fault = None;
        for f in frames {
            match f {
                PeerMsg::Message(m) => match check_message(&m.body) {
                    Ok(()) => msgs.push(m),
                    Err(e) => {
                        fault = Some(LinkFault::BadMessage(e));
                        break;
                    }
                },
                // An ack for nothing outstanding (a resend's second ack) is
                // harmless and ignored.
                PeerMsg::Ack { id } => {
                    if l.outstanding.remove(&id) {
                        acks.push(id);
                    }
                }
                PeerMsg::Flushed => l.peer_flushed = true,
                PeerMsg::Hello { .. } | PeerMsg::HelloOk | PeerMsg::Refused { .. } => {
                    fault = Some(LinkFault::OutOfOrder);
                    break;
                }
            }
        }
        let mut out = Vec::new();
        if !msgs.is_empty() {
            l.storing += 1;
            self.incoming_jobs += 1;
            out.push(Action::Store(StoreJob::AddIncoming {
                link,
                peer: l.peer.clone(),
                msgs,
                shown: keeping_up,
            }));
        }
        if !acks.is_empty() {
            l.marking += 1;
            out.push(Action::Store(StoreJob::MarkDelivered {
                link,
                peer: l.peer.clone(),
                ids: acks,
            }));
            if l.sender && !l.loading && !l.flushed && l.outstanding.len() < self.window / 2 {
                out.push(l.load(link));
            }
        }
        if let Some(f) = fault {
            out.extend(fail(link, l, f));
            return out;
        }
        out.extend(self.progress(link));
        out
    }

    /// The other side finished its stream.
    pub(crate) fn on_eof(&mut self, link: LinkId) -> Vec<Action> {
        let Some(l) = self.links.get_mut(&link) else {
            return Vec::new();
        };
        if l.kind == RequestKind::Chat || !l.peer_flushed {
            // A chat peer closes the connection; it never finishes its stream.
            let fault = if l.kind == RequestKind::Chat {
                LinkFault::EndedStream
            } else {
                LinkFault::OutOfOrder
            };
            return fail(link, l, fault);
        }
        l.peer_eof = true;
        self.progress(link)
    }

    /// Received messages are stored: acknowledge, then show the new ones.
    pub(crate) fn on_incoming_stored(
        &mut self,
        link: LinkId,
        peer: &str,
        msgs: Vec<ChatMessage>,
        shown: bool,
        result: Result<Vec<bool>, String>,
    ) -> Vec<Action> {
        self.incoming_jobs = self.incoming_jobs.saturating_sub(1);
        let Some(l) = self.links.get_mut(&link) else {
            return Vec::new();
        };
        l.storing = l.storing.saturating_sub(1);
        let fresh = match result {
            Ok(f) => f,
            Err(e) => return fail(link, l, LinkFault::Store(e)),
        };
        let acks = msgs.iter().map(|m| PeerMsg::Ack { id: m.id }).collect();
        let mut out = vec![Action::LinkSend(link, acks)];
        for (m, new) in msgs.into_iter().zip(fresh) {
            if new {
                let ev = Event::Message {
                    from: peer.to_string(),
                    id: m.id,
                    body: m.body,
                    sent_at_ms: m.sent_at_ms,
                    held: m.held,
                    unshown: false,
                };
                out.push(if shown {
                    Action::Emit(ev)
                } else {
                    Action::EmitUnshown(ev)
                });
            }
        }
        out.extend(self.progress(link));
        out
    }

    /// Acknowledged messages are marked delivered.
    pub(crate) fn on_delivered(&mut self, link: LinkId, ids: &[MessageId]) -> Vec<Action> {
        let Some(l) = self.links.get_mut(&link) else {
            return Vec::new();
        };
        l.marking = l.marking.saturating_sub(1);
        let before = l.backlog_left.len();
        for id in ids {
            l.backlog_left.remove(id);
        }
        let mut out = Vec::new();
        if before > 0 && l.backlog_left.is_empty() && l.flushed && !l.loading {
            let count = std::mem::take(&mut l.backlog_total);
            out.push(Action::Emit(Event::Delivered {
                to: l.peer.clone(),
                count,
            }));
        }
        out.extend(self.progress(link));
        out
    }

    /// A delivery whose work is done finishes its stream, and closes once
    /// the other side has finished too.
    fn progress(&mut self, link: LinkId) -> Vec<Action> {
        let Some(l) = self.links.get_mut(&link) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if l.delivery_done() {
            if !l.finished {
                l.finished = true;
                out.push(Action::LinkFinish(link));
            }
            if l.peer_eof {
                out.push(Action::LinkClose(link, CloseCode::NORMAL));
            }
        }
        out
    }

    /// A link ended; `clean` when it ended as the protocol says. What it
    /// did not deliver waits for the next delivery: at once after a clean
    /// end, after the pause otherwise (a peer that takes deliveries and
    /// drops them cannot make this engine spin).
    pub(crate) fn on_link_ended(&mut self, link: LinkId, clean: bool, now: Instant) -> Vec<Action> {
        let Some(l) = self.links.remove(&link) else {
            return Vec::new();
        };
        let Some(peer) = self.peers.get_mut(&l.peer) else {
            return Vec::new();
        };
        if peer.sender == Some(link) {
            peer.sender = None;
            if !l.outstanding.is_empty() || !l.flushed || !l.buffer.is_empty() {
                peer.waiting = true;
            }
        }
        if !peer.waiting {
            return Vec::new();
        }
        let recent = peer
            .last_delivery
            .is_some_and(|t| now.saturating_duration_since(t) < self.pause);
        if !clean && recent {
            peer.retry = true;
            return Vec::new();
        }
        peer.last_delivery = Some(now);
        vec![Action::WantDelivery(l.peer)]
    }

    /// `name` came online: deliver what waits for them.
    pub(crate) fn on_online(&mut self, name: &str, now: Instant) -> Vec<Action> {
        match self.peers.get_mut(name) {
            Some(p) if p.waiting && p.sender.is_none() => {
                p.last_delivery = Some(now);
                p.retry = false;
                vec![Action::WantDelivery(name.to_string())]
            }
            _ => Vec::new(),
        }
    }

    /// After a login: these peers have messages waiting.
    pub(crate) fn on_waiting(&mut self, peers: Vec<String>) -> Vec<Action> {
        peers
            .into_iter()
            .filter_map(|name| {
                let p = self.peers.entry(name.clone()).or_default();
                p.waiting = true;
                p.sender.is_none().then_some(Action::WantDelivery(name))
            })
            .collect()
    }

    /// Deliveries whose pause has passed; deliveries that stalled are closed.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let stall = self.stall_ticks;
        for (id, l) in self.links.iter_mut() {
            if l.kind == RequestKind::Deliver && !l.failed {
                l.idle_ticks += 1;
                if l.idle_ticks > stall {
                    out.extend(fail(*id, l, LinkFault::Stalled));
                }
            }
        }
        let pause = self.pause;
        let retries = self
            .peers
            .iter_mut()
            .filter(|(_, p)| {
                p.retry
                    && p.last_delivery
                        .is_none_or(|t| now.saturating_duration_since(t) >= pause)
            })
            .map(|(name, p)| {
                p.retry = false;
                p.last_delivery = Some(now);
                Action::WantDelivery(name.clone())
            })
            .collect::<Vec<_>>();
        out.extend(retries);
        out
    }

    /// `/history name`.
    pub(crate) fn history(&self, name: &str) -> Vec<Action> {
        match normalize_username(name) {
            Ok(n) => vec![Action::Store(StoreJob::History(n))],
            Err(e) => vec![Action::Emit(Event::Refused {
                command: CommandKind::History,
                reason: Refusal::BadName(e),
            })],
        }
    }
}

/// The lines of `/history` with `with`, as `me` sees them.
pub(crate) fn history_event(me: &str, with: String, rows: Vec<StoredMessage>) -> Event {
    let lines = rows
        .into_iter()
        .map(|r| HistoryLine {
            from: if r.outgoing {
                me.to_string()
            } else {
                with.clone()
            },
            body: r.message.body,
            sent_at_ms: r.message.sent_at_ms,
            held: r.message.held,
            delivered: r.outgoing.then_some(r.delivered_at_ms.is_some()),
        })
        .collect();
    Event::History { with, lines }
}

fn refuse(reason: Refusal) -> Vec<Action> {
    vec![Action::Emit(Event::Refused {
        command: CommandKind::Send,
        reason,
    })]
}

fn fail(link: LinkId, l: &mut LinkOut, fault: LinkFault) -> Vec<Action> {
    l.failed = true;
    let code = match fault {
        LinkFault::Store(_) => CloseCode::INTERNAL,
        LinkFault::NotReading => CloseCode::TOO_SLOW,
        LinkFault::Stalled => CloseCode::TIMEOUT,
        _ => CloseCode::PROTOCOL_ERROR,
    };
    vec![Action::LinkFail(link, code, fault)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAUSE: Duration = Duration::from_secs(5);

    fn msg(body: &str) -> ChatMessage {
        ChatMessage {
            id: MessageId::generate(),
            sent_at_ms: now_millis(),
            held: true,
            body: body.into(),
        }
    }

    fn sends(actions: &[Action]) -> Vec<(LinkId, &Vec<PeerMsg>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::LinkSend(l, f) => Some((*l, f)),
                _ => None,
            })
            .collect()
    }

    fn stored_batch(actions: &[Action]) -> Vec<(String, ChatMessage)> {
        match actions {
            [Action::Store(StoreJob::AddOutgoing(b))] => b.clone(),
            other => panic!("{other:?}"),
        }
    }

    /// A chat link whose (empty) backlog has been read.
    fn chat_open(o: &mut Outbox, link: LinkId) {
        o.on_link_up(link, "bob", RequestKind::Chat);
        let a = o.on_backlog(link, Ok(Vec::new()));
        assert_eq!(sends(&a), [(link, &vec![PeerMsg::Flushed])]);
    }

    #[test]
    fn a_live_message_is_stored_then_sent_and_input_waits_at_the_window() {
        let mut o = Outbox::new(3, PAUSE, 30);
        chat_open(&mut o, 1);
        for i in 0..3 {
            assert!(o.can_accept(Some(1)));
            assert!(o.send("Bob", format!("m{i}"), Some("bob")).is_empty());
        }
        assert!(!o.can_accept(Some(1)), "three accepted, none stored yet");
        let batch = stored_batch(&o.flush());
        assert!(batch.iter().all(|(to, m)| to == "bob" && !m.held));
        let ids: Vec<MessageId> = batch.iter().map(|(_, m)| m.id).collect();
        let a = o.on_outgoing_stored(batch, Ok(()), Some(1));
        assert_eq!(sends(&a)[0].1.len(), 3, "sent in one write");
        assert!(!o.can_accept(Some(1)), "three unacknowledged");
        let acks = ids.iter().map(|id| PeerMsg::Ack { id: *id }).collect();
        let a = o.on_frames(1, acks, true);
        assert!(
            matches!(&a[0], Action::Store(StoreJob::MarkDelivered { ids: d, .. }) if *d == ids)
        );
        assert!(o.can_accept(Some(1)));
    }

    #[test]
    fn a_message_for_someone_not_in_the_chat_is_kept_and_a_delivery_wanted_once() {
        let mut o = Outbox::new(16, PAUSE, 30);
        o.send("carol", "hi".into(), None);
        o.send("carol", "again".into(), None);
        let batch = stored_batch(&o.flush());
        assert!(batch.iter().all(|(_, m)| m.held));
        let a = o.on_outgoing_stored(batch, Ok(()), None);
        let wants = a
            .iter()
            .filter(|a| matches!(a, Action::WantDelivery(p) if p == "carol"))
            .count();
        let kept = a
            .iter()
            .filter(|a| matches!(a, Action::Emit(Event::Kept { .. })))
            .count();
        assert_eq!((wants, kept), (1, 2));
    }

    #[test]
    fn the_backlog_goes_first_in_pages_then_flushed_then_live_messages_without_duplicates() {
        let mut o = Outbox::new(4 * PAGE, PAUSE, 30);
        let a = o.on_link_up(1, "bob", RequestKind::Chat);
        assert!(matches!(
            &a[..],
            [Action::Store(StoreJob::LoadBacklog { after: None, .. })]
        ));
        // A live message stored while the backlog is read waits behind it.
        o.send("bob", "live".into(), Some("bob"));
        let batch = stored_batch(&o.flush());
        let live = batch[0].1.clone();
        assert!(sends(&o.on_outgoing_stored(batch, Ok(()), Some(1))).is_empty());
        let page1: Vec<ChatMessage> = (0..PAGE).map(|i| msg(&format!("k{i}"))).collect();
        let a = o.on_backlog(1, Ok(page1.clone()));
        assert_eq!(sends(&a)[0].1.len(), PAGE);
        assert!(a.iter().any(|a| matches!(a, Action::Store(StoreJob::LoadBacklog { after: Some(id), .. }) if *id == page1[PAGE - 1].id)));
        // The second page holds the live message too: it is sent once.
        let page2 = vec![msg("last kept"), live.clone()];
        let a = o.on_backlog(1, Ok(page2));
        let frames = sends(&a)[0].1;
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[2], PeerMsg::Flushed);
        assert!(
            frames
                .iter()
                .all(|f| !matches!(f, PeerMsg::Message(m) if !m.held)),
            "backlog goes out as kept"
        );
        // All acknowledged and marked: the count is what was waiting.
        let mut ids: Vec<MessageId> = page1.iter().map(|m| m.id).collect();
        ids.extend(frames.iter().filter_map(|f| match f {
            PeerMsg::Message(m) => Some(m.id),
            _ => None,
        }));
        o.on_frames(
            1,
            ids.iter().map(|id| PeerMsg::Ack { id: *id }).collect(),
            true,
        );
        let a = o.on_delivered(1, &ids);
        assert!(
            matches!(&a[..], [Action::Emit(Event::Delivered { count, .. })] if *count == PAGE + 2)
        );
    }

    #[test]
    fn received_messages_are_stored_then_acknowledged_then_shown() {
        let mut o = Outbox::new(16, PAUSE, 30);
        chat_open(&mut o, 1);
        let (a, b) = (msg("one"), msg("two"));
        let act = o.on_frames(
            1,
            vec![PeerMsg::Message(a.clone()), PeerMsg::Message(b.clone())],
            true,
        );
        assert!(
            matches!(&act[..], [Action::Store(StoreJob::AddIncoming { msgs, .. })] if msgs.len() == 2)
        );
        assert!(sends(&act).is_empty(), "no ack before the store");
        let act = o.on_incoming_stored(
            1,
            "bob",
            vec![a.clone(), b.clone()],
            true,
            Ok(vec![true, false]),
        );
        assert!(
            matches!(&act[0], Action::LinkSend(1, acks) if acks.len() == 2),
            "acks first"
        );
        let shown: Vec<_> = act
            .iter()
            .filter(|a| matches!(a, Action::Emit(Event::Message { .. })))
            .collect();
        assert_eq!(
            shown.len(),
            1,
            "a resend is acknowledged but not shown again"
        );
    }

    #[test]
    fn a_delivery_finishes_after_both_sides_flushed_and_closes_after_their_end() {
        let mut o = Outbox::new(16, PAUSE, 30);
        o.on_link_up(1, "bob", RequestKind::Deliver);
        let kept = msg("k");
        o.on_backlog(1, Ok(vec![kept.clone()]));
        let a = o.on_frames(1, vec![PeerMsg::Flushed], true);
        assert!(
            !a.iter().any(|a| matches!(a, Action::LinkFinish(_))),
            "ours is not acknowledged yet"
        );
        let a = o.on_frames(1, vec![PeerMsg::Ack { id: kept.id }], true);
        assert!(
            !a.iter().any(|a| matches!(a, Action::LinkFinish(_))),
            "not marked delivered yet"
        );
        let a = o.on_delivered(1, &[kept.id]);
        assert!(a
            .iter()
            .any(|a| matches!(a, Action::Emit(Event::Delivered { count: 1, .. }))));
        assert!(a.iter().any(|a| matches!(a, Action::LinkFinish(1))));
        let a = o.on_eof(1);
        assert!(a
            .iter()
            .any(|a| matches!(a, Action::LinkClose(1, CloseCode::NORMAL))));
    }

    #[test]
    fn a_link_that_ends_with_messages_in_flight_wants_a_delivery_and_pauses_after_a_bad_end() {
        let mut o = Outbox::new(16, PAUSE, 30);
        let now = Instant::now();
        chat_open(&mut o, 1);
        o.send("bob", "lost?".into(), Some("bob"));
        let batch = stored_batch(&o.flush());
        o.on_outgoing_stored(batch, Ok(()), Some(1));
        let a = o.on_link_ended(1, false, now);
        assert!(matches!(&a[..], [Action::WantDelivery(p)] if p == "bob"));
        // The delivery link dies at once: the next one waits for the pause.
        o.on_link_up(2, "bob", RequestKind::Deliver);
        let a = o.on_link_ended(2, false, now + Duration::from_secs(1));
        assert!(a.is_empty());
        assert!(o.tick(now + Duration::from_secs(2)).is_empty());
        let a = o.tick(now + Duration::from_secs(6));
        assert!(matches!(&a[..], [Action::WantDelivery(p)] if p == "bob"));
    }

    #[test]
    fn a_delivery_with_no_frame_for_too_long_is_closed_and_a_chat_is_not() {
        let mut o = Outbox::new(16, PAUSE, 2);
        let now = Instant::now();
        chat_open(&mut o, 1);
        o.on_link_up(2, "carol", RequestKind::Deliver);
        assert!(o.tick(now).is_empty());
        o.on_frames(2, vec![PeerMsg::Flushed], true);
        assert!(o.tick(now).is_empty());
        assert!(o.tick(now).is_empty());
        let a = o.tick(now);
        assert!(matches!(
            &a[..],
            [Action::LinkFail(2, CloseCode::TIMEOUT, LinkFault::Stalled)]
        ));
    }

    #[test]
    fn a_bad_message_closes_the_link_as_a_protocol_error_and_an_early_end_too() {
        let mut o = Outbox::new(16, PAUSE, 30);
        chat_open(&mut o, 1);
        let a = o.on_frames(1, vec![PeerMsg::Message(msg(""))], true);
        assert!(matches!(
            &a[..],
            [Action::LinkFail(
                1,
                CloseCode::PROTOCOL_ERROR,
                LinkFault::BadMessage(_)
            )]
        ));
        o.on_link_up(2, "carol", RequestKind::Deliver);
        let a = o.on_eof(2);
        assert!(matches!(
            &a[..],
            [Action::LinkFail(2, _, LinkFault::OutOfOrder)]
        ));
    }
}
