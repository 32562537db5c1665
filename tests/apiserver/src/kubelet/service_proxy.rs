//! The stand-in for the `kubernetes` Service inside a pod sandbox: the API server listens only
//! on the host's 127.0.0.1, so in a pod's own network namespace the kubelet listens on
//! `127.0.0.1:<server port>` and forwards each connection to the server. Pods therefore reach
//! the API at the same address (`KUBERNETES_SERVICE_HOST=127.0.0.1`, the kubeconfig's server)
//! whether they share the host's network or not, and the serving certificate covers it.

use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddr},
    os::fd::AsFd,
    path::Path,
};

use tokio::{net::TcpStream, task::JoinHandle};

use crate::error::{Error, Result};

/// Forwarding task; stops when dropped.
#[derive(Debug)]
pub(crate) struct ServiceProxy(JoinHandle<()>);

impl Drop for ServiceProxy {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn listen_in(netns: &Path, addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let ns = File::open(netns)?;
    // A thread of its own enters the namespace; the socket keeps it after the thread ends.
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("listener thread panicked")))
    })
}

/// Listen on `127.0.0.1:port` in `netns` and forward to `127.0.0.1:port` on the host.
pub(crate) fn start(netns: &Path, port: u16) -> Result<ServiceProxy> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = listen_in(netns, addr)
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|source| Error::Io {
            what: format!("listening on {addr} in {}", netns.display()),
            source,
        })?;
    Ok(ServiceProxy(tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut upstream) = TcpStream::connect(addr).await {
                    let _ = upstream.set_nodelay(true);
                    let _ = inbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
                }
            });
        }
    })))
}
