//! A server on 127.0.0.1 for the unit tests: it reads each request whole and answers with
//! the raw HTTP/1.1 bytes a test gives, then closes the connection (or keeps it open and
//! says nothing), so a test can send what no well-behaved server would.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::generate::{RemoteGenerator, RemoteGeneratorSettings};
use crate::pool::PoolSettings;

/// What the server does with each request.
#[derive(Clone)]
pub(crate) enum Reply {
    /// These bytes, then the connection closes.
    Raw(String),
    /// Nothing, and the connection stays open.
    Silence,
}

/// An answer with `status` (`"400 Bad Request"`) and `body`, its length announced.
pub(crate) fn http(status: &str, body: &str) -> Reply {
    Reply::Raw(format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()))
}

/// A stream of server-sent events that ends when the connection closes.
pub(crate) fn events(events: &[&str]) -> Reply {
    let data: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    Reply::Raw(format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n{data}"))
}

pub(crate) struct Fake {
    /// The base URL, as the pool takes it (`http://127.0.0.1:PORT/v1`).
    pub(crate) url: String,
    requests: Arc<AtomicUsize>,
}

impl Fake {
    /// Starts a server answering every request with `reply`.
    pub(crate) async fn start(reply: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, reply.clone(), counted.clone()));
            }
        });
        Self { url, requests }
    }

    /// Requests read whole so far.
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A base URL where nothing listens.
pub(crate) fn closed() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}/v1")
}

/// A pool of `endpoints` whose failed servers stay out for the whole test.
pub(crate) fn settings(endpoints: Vec<String>) -> PoolSettings {
    PoolSettings {
        endpoints,
        api_key: None,
        max_in_flight: 2,
        health_interval: Duration::from_secs(3600),
        timeout: Duration::from_secs(5),
        request_deadline: Duration::from_secs(10),
    }
}

pub(crate) fn generator(endpoints: Vec<String>) -> RemoteGenerator {
    RemoteGenerator::new(RemoteGeneratorSettings {
        pool: settings(endpoints),
        model: "fake".into(),
        chat: false,
        context_tokens: 2048,
        tokenizer: None,
    })
    .unwrap()
}

async fn serve(mut socket: TcpStream, reply: Reply, requests: Arc<AtomicUsize>) {
    if !read_request(&mut socket).await {
        return;
    }
    requests.fetch_add(1, Ordering::SeqCst);
    match reply {
        Reply::Raw(bytes) => {
            let _ = socket.write_all(bytes.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
        Reply::Silence => std::future::pending().await,
    }
}

/// Reads a request's head and its body of `Content-Length` bytes; false when the client
/// went first.
async fn read_request(socket: &mut TcpStream) -> bool {
    let mut request = Vec::new();
    let mut piece = [0; 4096];
    loop {
        if let Some(head) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            let lines = String::from_utf8_lossy(&request[..head]).to_ascii_lowercase();
            let length = lines
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if request.len() >= head + 4 + length {
                return true;
            }
        }
        match socket.read(&mut piece).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => request.extend_from_slice(&piece[..n]),
        }
    }
}
