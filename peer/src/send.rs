//! The non-interactive front end, `peer send`: logs in with a password
//! from the environment or a file, hands the messages to the engine (which
//! stores each one before it goes anywhere), waits until they are delivered
//! or kept for later, and says which with its exit status. Like the
//! terminal front end it only sends [`Command`]s and reads [`Event`]s.

use crate::cli::render;
use crate::engine::{Command, EngineHandle, Event};
use std::time::Duration;
use tokio::sync::mpsc;

/// How a send ended; the process exit status says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Every message reached the recipient (status 0).
    Delivered,
    /// Every message is stored and will be delivered when both sides are
    /// online (status 3).
    Kept,
    /// Nothing was sent: the reason (status 1).
    Failed(String),
}

impl SendOutcome {
    /// The process exit status.
    pub fn status(&self) -> u8 {
        match self {
            SendOutcome::Delivered => 0,
            SendOutcome::Kept => 3,
            SendOutcome::Failed(_) => 1,
        }
    }
}

/// What to send, as whom.
#[derive(Debug, Clone)]
pub struct SendJob {
    /// The account to log in as.
    pub user: String,
    /// Its password.
    pub password: String,
    /// The recipient.
    pub to: String,
    /// The messages, in order.
    pub messages: Vec<String>,
    /// How long to wait for the coordinator, the login and a delivery to
    /// an online recipient before settling for "kept".
    pub wait: Duration,
}

/// Runs a send on a started engine; prints one line saying what happened.
pub async fn run(
    engine: EngineHandle,
    mut events: mpsc::Receiver<Event>,
    job: SendJob,
) -> SendOutcome {
    let mut logged_in = false;
    let done =
        tokio::time::timeout(job.wait, drive(&engine, &mut events, &job, &mut logged_in)).await;
    let outcome = match done {
        Ok(o) => o,
        Err(_) if !logged_in => {
            SendOutcome::Failed(format!("no login within {} s", job.wait.as_secs()))
        }
        // Stored before anything else: delivered later if not now.
        Err(_) => SendOutcome::Kept,
    };
    engine.shutdown().await;
    outcome
}

async fn drive(
    engine: &EngineHandle,
    events: &mut mpsc::Receiver<Event>,
    job: &SendJob,
    logged_in: &mut bool,
) -> SendOutcome {
    let n = job.messages.len();
    let mut kept = 0;
    let mut delivered = 0;
    let mut online = false;
    while let Some(ev) = events.recv().await {
        match ev {
            Event::Connected if !engine.send(Command::Username(job.user.clone())).await => break,
            Event::AccountStatus {
                exists: false,
                name,
            } => return SendOutcome::Failed(format!("there is no account named {name}")),
            Event::AccountStatus { exists: true, .. }
                if !engine.send(Command::Password(job.password.clone())).await =>
            {
                break
            }
            Event::LoginFailed { reason, .. } => {
                return SendOutcome::Failed(format!(
                    "login failed: {}",
                    render::login_failure_text(&reason)
                ))
            }
            Event::LoggedIn { online: list, .. } => {
                *logged_in = true;
                online = list.contains(&job.to);
                for body in &job.messages {
                    let cmd = Command::Send {
                        to: job.to.clone(),
                        body: body.clone(),
                    };
                    if !engine.send(cmd).await {
                        break;
                    }
                }
            }
            Event::Presence { name, online: o } if name == job.to => online = o,
            Event::Kept { to } if to == job.to => {
                kept += 1;
                if kept == n && !online {
                    return SendOutcome::Kept;
                }
            }
            Event::Delivered { to, count } if to == job.to => {
                delivered += count;
                if delivered >= n {
                    return SendOutcome::Delivered;
                }
            }
            Event::Refused { command, reason } => {
                return SendOutcome::Failed(render::refusal_text(command, &reason))
            }
            Event::Fatal(f) => return SendOutcome::Failed(render::fatal_text(&f)),
            _ => {}
        }
    }
    SendOutcome::Failed("the engine stopped".into())
}
