//! Socket plumbing the protocols' servers and tools share.

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

/// Turns on the kernel's receive timestamps (SO_TIMESTAMPNS): when bytes arrived, by the
/// kernel's clock rather than by when this process got to them. Sockets accepted from a
/// listener inherit it.
pub fn stamp_arrivals(socket: &impl std::os::fd::AsFd) {
    use nix::sys::socket::{setsockopt, sockopt::ReceiveTimestampns};
    let _ = setsockopt(socket, ReceiveTimestampns, &true);
}

/// One read; with it, when the bytes read arrived (since the Unix epoch: the kernel stamps
/// with the real-time clock), if the socket stamps arrivals. On TCP a read that takes in
/// several segments gets the last one's stamp. A socket that would block gives `WouldBlock`.
pub fn read_stamped(stream: &impl std::os::fd::AsRawFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<Duration>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut space = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    loop {
        match recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()) {
            Ok(msg) => {
                let at = msg.cmsgs().ok().and_then(|mut all| {
                    all.find_map(|c| match c {
                        ControlMessageOwned::ScmTimestampns(t) => {
                            Some(Duration::new(t.tv_sec().max(0) as u64, t.tv_nsec().clamp(0, 999_999_999) as u32))
                        }
                        _ => None,
                    })
                });
                return Ok((msg.bytes, at));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
