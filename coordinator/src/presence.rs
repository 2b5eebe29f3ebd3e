//! Presence: joining and leaving the online set, and telling everyone else.

use crate::hub::{Hub, Member, Outbound};
use crate::logs::{self, limited};
use common::close::CloseCode;
use common::protocol::SessionResponse;

impl Hub {
    /// Puts a logged-in session online and returns the others online. A
    /// session already online for the account is closed as replaced (the
    /// account stays online, so nobody is told it left); otherwise everyone
    /// else is told the account came online.
    pub fn join(&self, name: &str, member: Member) -> Vec<String> {
        let mut st = self.lock();
        match st.online.insert(name.to_string(), member) {
            Some(old) => {
                limited!(
                    logs::REPLACED,
                    info,
                    user = name,
                    "second login replaces the first session"
                );
                old.close(CloseCode::REPLACED);
                st.drop_requests_of(old.session);
            }
            None => {
                limited!(logs::ONLINE, info, user = name, "online");
                let msg = SessionResponse::Presence {
                    name: name.to_string(),
                    online: true,
                };
                for (_, m) in st.online.iter().filter(|(n, _)| *n != name) {
                    m.send(Outbound::Session(msg.clone()));
                }
            }
        }
        st.online_except(name)
    }

    /// Takes `session` of `name` offline (if it is still the current one) and
    /// tells everyone else.
    pub fn leave(&self, name: &str, session: u64) {
        let mut st = self.lock();
        if st.online.get(name).is_none_or(|m| m.session != session) {
            return;
        }
        st.online.remove(name);
        st.drop_requests_of(session);
        st.relays.remove(&session);
        st.relay_pairs
            .retain(|(a, b), _| a.as_str() != name && b.as_str() != name);
        limited!(logs::OFFLINE, info, user = name, "offline");
        let msg = SessionResponse::Presence {
            name: name.to_string(),
            online: false,
        };
        for m in st.online.values() {
            m.send(Outbound::Session(msg.clone()));
        }
    }

    /// Is `name` online?
    pub fn is_online(&self, name: &str) -> bool {
        self.lock().online.contains_key(name)
    }

    /// Everyone online except `name`, sorted.
    pub fn online_except(&self, name: &str) -> Vec<String> {
        self.lock().online_except(name)
    }

    /// Closes every session with `code` (shutdown).
    pub fn close_all(&self, code: CloseCode) {
        for m in self.lock().online.values() {
            m.close(code);
        }
    }
}

impl crate::hub::State {
    /// Everyone online except `name`, sorted.
    pub fn online_except(&self, name: &str) -> Vec<String> {
        let mut names: Vec<String> = self.online.keys().filter(|n| *n != name).cloned().collect();
        names.sort();
        names
    }
}
