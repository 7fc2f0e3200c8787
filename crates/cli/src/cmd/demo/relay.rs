//! A TCP relay between one gateway and the bundle server, so the demo can cut that
//! gateway off the way a network partition would: open connections are closed and new
//! ones refused.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Relay {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl Relay {
    /// Listens on 127.0.0.1 and relays every connection to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the relay")?;
        let addr = listener.local_addr()?;
        let (cut, cut_rx) = watch::channel(false);
        let mut accept_cut = cut_rx.clone();
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    c = listener.accept() => c,
                    _ = accept_cut.wait_for(|c| *c) => return,
                };
                let Ok((mut client, _)) = conn else { continue };
                let mut conn_cut = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = conn_cut.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Ok(Relay { addr, cut })
    }

    /// Closes every relayed connection and stops accepting new ones.
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }
}
