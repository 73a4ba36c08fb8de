//! A real SMTP server for tests: accepts every message and keeps it.
//!
//! Speaks enough of RFC 5321 for a client such as lettre: greeting, EHLO,
//! MAIL FROM, RCPT TO, DATA (with dot-unstuffing), RSET, NOOP, QUIT.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A message as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// `MAIL FROM` address.
    pub from: String,
    /// `RCPT TO` addresses.
    pub to: Vec<String>,
    /// The message (headers and body), dot-unstuffed.
    pub data: String,
}

/// An SMTP server on a random loopback port; stops when dropped.
pub struct SmtpSink {
    port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

/// What the sessions share.
#[derive(Default)]
struct State {
    mails: Mutex<Vec<ReceivedMail>>,
    /// How many of the first messages have their `250` after `.` held back.
    stalls: Mutex<u32>,
    stall: std::time::Duration,
    /// Connections accepted.
    connections: Mutex<u32>,
    /// Recipients refused for good (`550`).
    refused: Vec<String>,
    /// Commands received on a connection after a held-back reply: a client
    /// that went on using a connection whose message's reply it never read.
    after_stall: Mutex<Vec<String>>,
}

impl SmtpSink {
    /// Starts the server.
    pub async fn start() -> SmtpSink {
        SmtpSink::stalling(0, std::time::Duration::ZERO).await
    }

    /// Starts a server that holds back its reply to the end of each of the
    /// first `messages` messages for `stall` (a slow server, as it scans
    /// or queues a message).
    pub async fn stalling(messages: u32, stall: std::time::Duration) -> SmtpSink {
        SmtpSink::serve(State {
            stalls: Mutex::new(messages),
            stall,
            ..State::default()
        })
        .await
    }

    /// Starts a server that refuses each of `recipients` for good (`550`
    /// to its `RCPT TO`), as for a mailbox that does not exist.
    pub async fn refusing(recipients: &[&str]) -> SmtpSink {
        SmtpSink::serve(State {
            refused: recipients.iter().map(|r| (*r).to_owned()).collect(),
            ..State::default()
        })
        .await
    }

    async fn serve(state: State) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind SMTP sink");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(state);
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if let Ok(mut n) = shared.connections.lock() {
                    *n += 1;
                }
                tokio::spawn(session(stream, Arc::clone(&shared)));
            }
        });
        SmtpSink { port, state, task }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u32 {
        self.state
            .connections
            .lock()
            .map(|n| *n)
            .unwrap_or_default()
    }

    /// Commands received after a held-back reply, on the same connection.
    pub fn after_stall(&self) -> Vec<String> {
        self.state
            .after_stall
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every message received so far.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.state
            .mails
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn address(arg: &str) -> String {
    arg.split_once(':')
        .map(|(_, a)| {
            a.trim()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default()
}

async fn session(stream: TcpStream, state: Arc<State>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut from = String::new();
    let mut to = Vec::new();
    let mut stalled = false;
    if write.write_all(b"220 sink ESMTP ready\r\n").await.is_err() {
        return;
    }
    while let Ok(Some(line)) = lines.next_line().await {
        if stalled && let Ok(mut after) = state.after_stall.lock() {
            after.push(line.clone());
        }
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-sink greets you\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("HELO") {
            b"250 sink\r\n"
        } else if upper.starts_with("MAIL FROM") {
            from = address(&line);
            to.clear();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO") {
            let recipient = address(&line);
            if state.refused.contains(&recipient) {
                b"550 5.1.1 no such mailbox\r\n"
            } else {
                to.push(recipient);
                b"250 OK\r\n"
            }
        } else if upper == "DATA" {
            if write
                .write_all(b"354 end with <CRLF>.<CRLF>\r\n")
                .await
                .is_err()
            {
                return;
            }
            let mut data = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "." {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
                data.push('\n');
            }
            if let Ok(mut all) = state.mails.lock() {
                all.push(ReceivedMail {
                    from: from.clone(),
                    to: to.clone(),
                    data,
                });
            }
            let stall = state.stalls.lock().is_ok_and(|mut left| {
                let stall = *left > 0;
                *left = left.saturating_sub(1);
                stall
            });
            if stall {
                tokio::time::sleep(state.stall).await;
                stalled = true;
            }
            b"250 OK queued\r\n"
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else if upper == "RSET" || upper == "NOOP" {
            b"250 OK\r\n"
        } else {
            b"502 command not implemented\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}
