//! A bounded attacker against a coordinator on loopback, to check the
//! limits of issue 10 by hand (never point it at a server you do not run).
//!
//! ```sh
//! attack ADDR CA_FILE idle N      # N connections from 127.0.0.1 that say hello and sit
//! attack ADDR CA_FILE guess N     # N parallel wrong passwords on one account from 127.0.0.1
//! attack ADDR CA_FILE burst N     # N parallel new accounts, from 127.0.1.1, .2, … (one per address)
//! ```
//!
//! Each mode then logs in a real user from 127.0.0.2 and reports how long
//! it took. Every wait is bounded.

use anyhow::{bail, Context};
use common::close::code_of;
use common::protocol::{LoginFailure, SessionRequest, SessionResponse, PROTOCOL_VERSION};
use common::tls::coordinator_client_config_ca;
use common::wire::{read_frame, write_frame};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "correct horse battery";

struct Conn {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

async fn connect(
    from: IpAddr,
    addr: SocketAddr,
    config: quinn::ClientConfig,
) -> anyhow::Result<Conn> {
    let endpoint = quinn::Endpoint::client(SocketAddr::new(from, 0))?;
    let conn = tokio::time::timeout(WAIT, endpoint.connect_with(config, addr, "localhost")?)
        .await
        .context("handshake timed out")??;
    let (send, recv) = tokio::time::timeout(WAIT, conn.open_bi()).await??;
    Ok(Conn {
        _endpoint: endpoint,
        conn,
        send,
        recv,
    })
}

impl Conn {
    async fn ask(&mut self, req: SessionRequest) -> anyhow::Result<SessionResponse> {
        write_frame(&mut self.send, &req).await?;
        match tokio::time::timeout(WAIT, read_frame::<SessionResponse, _>(&mut self.recv)).await {
            Ok(Ok(Some(r))) => Ok(r),
            Ok(Ok(None)) => bail!("stream ended"),
            Ok(Err(e)) => {
                let code = self.conn.close_reason().as_ref().and_then(code_of);
                bail!("read failed ({e}); close code {code:?}")
            }
            Err(_) => bail!("no answer in time"),
        }
    }
    async fn hello(&mut self) -> anyhow::Result<SessionResponse> {
        self.ask(SessionRequest::Hello {
            version: PROTOCOL_VERSION,
            addrs: vec![],
        })
        .await
    }
    async fn enter(&mut self, name: &str, password: &str) -> anyhow::Result<SessionResponse> {
        self.hello().await?;
        self.ask(SessionRequest::Username { name: name.into() })
            .await?;
        self.ask(SessionRequest::Password {
            password: password.into(),
        })
        .await
    }
}

fn client_config(ca: &str) -> anyhow::Result<quinn::ClientConfig> {
    let identity = certs::generate_peer_identity()?.identity()?;
    let cas = certs::load_ca_certs(std::path::Path::new(ca))?;
    Ok(coordinator_client_config_ca(&identity, cas)?)
}

async fn real_user(addr: SocketAddr, ca: String) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut c = connect([127, 0, 0, 2].into(), addr, client_config(&ca)?).await?;
    let r = c.enter("realuser", PASSWORD).await?;
    let verdict = match r {
        SessionResponse::Welcome(_) => "logged in".to_string(),
        other => format!("refused: {other:?}"),
    };
    println!(
        "real user from 127.0.0.2: {verdict} in {:?}",
        start.elapsed()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, ca, mode, n] = args.as_slice() else {
        bail!("usage: attack ADDR CA_FILE idle|guess|burst N");
    };
    let addr: SocketAddr = addr.parse()?;
    let n: usize = n.parse()?;
    let n = n.min(20_000);
    let me: IpAddr = [127, 0, 0, 1].into();
    // The real user and the victim account exist first.
    let mut setup = connect([127, 0, 0, 2].into(), addr, client_config(ca)?).await?;
    let _ = setup.enter("realuser", PASSWORD).await?;
    setup.conn.close(0u32.into(), b"");
    let start = Instant::now();
    match mode.as_str() {
        "idle" => {
            let config = client_config(ca)?;
            let mut held = Vec::new();
            let (mut ok, mut closed) = (0, std::collections::BTreeMap::new());
            for _ in 0..n {
                match connect(me, addr, config.clone()).await {
                    Ok(mut c) => match c.hello().await {
                        Ok(SessionResponse::HelloOk) => {
                            ok += 1;
                            held.push(c);
                        }
                        Ok(other) => *closed.entry(format!("{other:?}")).or_insert(0) += 1,
                        Err(e) => *closed.entry(e.to_string()).or_insert(0) += 1,
                    },
                    Err(e) => *closed.entry(e.to_string()).or_insert(0) += 1,
                }
            }
            println!(
                "{n} idle attempts from 127.0.0.1 in {:?}: {ok} held, refused: {closed:?}",
                start.elapsed()
            );
            real_user(addr, ca.clone()).await?;
        }
        "guess" => {
            let config = client_config(ca)?;
            let mut conns = Vec::new();
            let mut not_admitted = 0;
            for _ in 0..n {
                let admitted = async {
                    let mut c = connect(me, addr, config.clone()).await?;
                    c.hello().await?;
                    c.ask(SessionRequest::Username {
                        name: "realuser".into(),
                    })
                    .await?;
                    anyhow::Ok(c)
                };
                match admitted.await {
                    Ok(c) => conns.push(c),
                    Err(_) => not_admitted += 1,
                }
            }
            println!(
                "{} connections at the password prompt ({not_admitted} not admitted)",
                conns.len()
            );
            let n = conns.len();
            let start = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for mut c in conns {
                tasks.spawn(async move {
                    c.ask(SessionRequest::Password {
                        password: "wrong guess!".into(),
                    })
                    .await
                });
            }
            let real = tokio::spawn(real_user(addr, ca.clone()));
            let (mut hashed, mut refused, mut other) = (0, 0, 0);
            while let Some(r) = tasks.join_next().await {
                match r? {
                    Ok(SessionResponse::LoginFailed {
                        reason: LoginFailure::WrongPassword,
                        ..
                    }) => hashed += 1,
                    Ok(SessionResponse::LoginFailed {
                        reason: LoginFailure::TooManyAttempts,
                        ..
                    }) => refused += 1,
                    _ => other += 1,
                }
            }
            println!("{n} parallel wrong passwords: {hashed} checked, {refused} refused at once, {other} other, all answered in {:?}", start.elapsed());
            real.await??;
        }
        "burst" => {
            let config = client_config(ca)?;
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..n {
                let config = config.clone();
                tasks.spawn(async move {
                    let from = IpAddr::from([127, 0, 1, (i % 250) as u8 + 1]);
                    let mut c = connect(from, addr, config).await?;
                    let r = c.enter(&format!("burst{i}"), PASSWORD).await?;
                    anyhow::Ok(matches!(r, SessionResponse::Welcome(_)))
                });
            }
            let mut welcomed = 0;
            while let Some(r) = tasks.join_next().await {
                if matches!(r?, Ok(true)) {
                    welcomed += 1;
                }
            }
            println!(
                "{n} parallel new accounts from distinct addresses: {welcomed} welcomed in {:?}",
                start.elapsed()
            );
        }
        other => bail!("unknown mode {other}"),
    }
    Ok(())
}
