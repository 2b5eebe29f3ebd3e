//! Three real coordinator processes as one cluster (issue 12): accounts in a
//! real PostgreSQL, presence and signaling over a real NATS server, each
//! started privately by the test. Peers are given the list of nodes and
//! land on the first that answers.

use crate::e2e_support::*;
use std::path::Path;
use std::time::Duration;
use testkit::nats::NatsServer;
use testkit::postgres::PgServer;

const PW: &str = "correct horse battery";
/// A node not heard from for this long is dead (seconds, short for tests).
const NODE_TTL: &str = "3";

/// PostgreSQL, NATS and three coordinator nodes sharing one certificate.
struct Cluster {
    nodes: Vec<Coordinator>,
    nats: NatsServer,
    pg: PgServer,
}

impl Cluster {
    fn start() -> Cluster {
        let pg = PgServer::start();
        let nats = NatsServer::start();
        let (database, nats_url) = (pg.fresh_database(), nats.url());
        let common = |node: &str| -> Vec<String> {
            [
                "--database",
                &database,
                "--nats",
                &nats_url,
                "--node",
                node,
                "--node-ttl",
                NODE_TTL,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        let args = common("n0");
        let first = Coordinator::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let tls = first.dir.path().join("tls");
        let (cert, key) = (tls.join("coordinator.pem"), tls.join("coordinator.key"));
        let mut nodes = vec![first];
        for i in 1..3 {
            let mut args = common(&format!("n{i}"));
            args.extend([
                "--cert".to_string(),
                cert.display().to_string(),
                "--key".to_string(),
                key.display().to_string(),
            ]);
            nodes.push(Coordinator::start_with(
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            ));
        }
        Cluster { nodes, nats, pg }
    }

    /// The nodes' addresses, starting with node `first`.
    fn list_from(&self, first: usize) -> String {
        (0..self.nodes.len())
            .map(|i| self.nodes[(first + i) % self.nodes.len()].addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A peer given every node, node `first` first.
    fn peer(&self, first: usize, data_dir: &Path) -> Peer {
        let ca = self.nodes[0].ca_cert();
        Peer::spawn(&self.list_from(first), data_dir, Some(&ca))
    }
}

#[test]
fn users_on_different_nodes_chat_and_deliver_kept_messages() {
    let cluster = Cluster::start();
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut alice = cluster.peer(0, da.path());
    alice.login_new("alice", PW);
    let mut bob = cluster.peer(1, db.path());
    bob.login_new("bob", PW);
    // Presence crosses nodes both ways.
    alice.expect("bob is online.");
    bob.send("/online");
    bob.expect("Online: alice");

    // A request declined across nodes, then one accepted: a direct chat.
    alice.send("bob");
    bob.expect("Chat with alice? [y/n]");
    bob.send("n");
    alice.expect("bob declined the chat.");
    alice.expect("alice → bob (kept)>");
    alice.send("kept while declined");
    alice.expect("(kept for bob)");
    alice.send("disconnect");
    alice.expect("Who do you want to chat with?");
    alice.send("bob");
    bob.expect("Chat with alice? [y/n]");
    bob.send("y");
    bob.expect("You are now chatting with alice");
    alice.expect("You are now chatting with bob");
    alice.send("hello across nodes");
    bob.expect("alice: hello across nodes");
    bob.send("hi back");
    alice.expect("bob: hi back");
    bob.send("disconnect");
    alice.expect("bob left the chat.");

    // A kept message for someone offline, delivered when they log in on
    // the third node.
    let mut carol = cluster.peer(2, dc.path());
    carol.login_new("carol", PW);
    carol.exit();
    alice.expect("carol went offline.");
    alice.send("carol");
    alice.expect("alice → carol (kept)>");
    alice.send("waiting for you");
    alice.expect("(kept for carol)");
    alice.send("disconnect");
    let mut carol = cluster.peer(2, dc.path());
    carol.login("carol", PW);
    carol.expect("alice: waiting for you");
    alice.expect("delivered to carol");
    let got: Vec<String> = stored_messages(dc.path(), "carol")
        .into_iter()
        .map(|r| r.body)
        .collect();
    assert_eq!(got, ["waiting for you"]);
    // The message kept while bob declined was delivered in the background.
    assert!(stored_messages(db.path(), "bob")
        .iter()
        .any(|r| r.body == "kept while declined"));
}

#[test]
fn one_login_per_account_across_nodes() {
    let cluster = Cluster::start();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut first = cluster.peer(0, d1.path());
    first.login_new("alice", PW);
    let mut second = cluster.peer(1, d2.path());
    second.login("alice", PW);
    first.expect("signed in from another place");
    second.send("/status");
    second.expect("alice");
    let bob_dir = tempfile::tempdir().unwrap();
    let mut bob = cluster.peer(2, bob_dir.path());
    bob.login_new("bob", PW);
    bob.send("/online");
    bob.expect("Online: alice");
}

#[test]
fn a_killed_nodes_users_go_offline_then_resume_on_another_node_and_chats_go_on() {
    let mut cluster = Cluster::start();
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut alice = cluster.peer(0, da.path());
    alice.login_new("alice", PW);
    let mut bob = cluster.peer(1, db.path());
    bob.login_new("bob", PW);
    let mut carol = cluster.peer(2, dc.path());
    carol.login_new("carol", PW);
    carol.expect("Online now: alice, bob");
    alice.send("bob");
    bob.expect("Chat with alice? [y/n]");
    bob.send("y");
    alice.expect("You are now chatting with bob");

    cluster.nodes[0].kill();
    // Alice's node is gone: within the TTL (and a sweep) carol sees her
    // leave, long before alice's peer notices (QUIC's idle time-out).
    carol.expect_within("alice went offline.", Duration::from_secs(10));
    // The direct chat goes on without the coordinator.
    alice.send("still here");
    bob.expect("alice: still here");
    // Alice's peer moves to the next node and resumes with its token.
    alice.expect_within("Reconnected to the coordinator.", Duration::from_secs(40));
    carol.expect("alice is online.");
    bob.send("and the chat went on");
    alice.expect("bob: and the chat went on");
}

#[test]
fn while_nats_or_postgresql_is_away_logins_fail_clearly_and_resume_by_themselves() {
    let mut cluster = Cluster::start();
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut bob = cluster.peer(1, db.path());
    bob.login_new("bob", PW);
    let mut alice = cluster.peer(0, da.path());
    alice.login_new("alice", PW);
    bob.expect("alice is online.");
    alice.exit();
    bob.expect("alice went offline.");

    // NATS away: a login is refused with the reason, and retried.
    cluster.nats.stop();
    let mut alice = cluster.peer(0, da.path());
    alice.expect("Username:");
    alice.send("alice");
    alice.expect("Password for alice:");
    alice.send(PW);
    alice.expect("cannot reach the rest of its cluster (NATS); try again shortly");
    cluster.nats.start_again();
    // The peer tries again by itself; the user answers the prompts again.
    alice.login("alice", PW);
    bob.expect_within("alice is online.", Duration::from_secs(30));

    // PostgreSQL away: a new name cannot even be looked up.
    cluster.pg.stop();
    let mut carol = cluster.peer(2, dc.path());
    carol.expect("Username:");
    carol.send("carol");
    carol.expect("cannot reach its accounts database; try again shortly");
    cluster.pg.start_again();
    carol.login_new("carol", PW);
    carol.expect("Online now: alice, bob");
    // Nothing was lost: every account logs in again.
    carol.exit();
    let mut carol = cluster.peer(1, dc.path());
    carol.login("carol", PW);
}
