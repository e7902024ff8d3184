//! Socket plumbing every protocol's server shares.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// The next connection of `listener`, or `None` once `shutdown` completes. An accept that
/// fails (most often: out of file descriptors) is logged and retried after a short pause
/// instead of spinning, since connections ending will free what it lacked.
pub async fn accept<F: Future<Output = ()>>(
    listener: &TcpListener,
    shutdown: &mut Pin<&mut F>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.as_mut() => return None,
            accepted = listener.accept() => match accepted {
                Ok(pair) => return Some(pair),
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
