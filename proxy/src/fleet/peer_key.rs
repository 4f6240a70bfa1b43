//! The fleet's key for peer links: 32 random bytes at `P/fleet/peer_key`, made by the
//! first edge that needs it (a transaction that writes it only if absent, so two edges
//! starting at once agree on one), read by every other. Whoever can read the fleet's
//! etcd prefix can forward into the fleet's sessions: guard etcd as the token hashes
//! in it are guarded.

use std::{sync::Arc, time::Duration};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::Peers;
use crate::state::etcd::FleetLink;

const RETRY: Duration = Duration::from_secs(1);

/// Loads (or makes) the key and hands it to `peers`; retries until it has it.
pub async fn load(link: FleetLink, peers: Arc<Peers>) {
    let key = link.key("fleet/peer_key");
    let mut logged = false;
    loop {
        match fetch_or_make(&link, &key).await {
            Ok(k) => {
                peers.set_key(k);
                tracing::info!("fleet peer key loaded: this edge opens and accepts peer links");
                return;
            }
            Err(e) => {
                if !std::mem::replace(&mut logged, true) {
                    tracing::warn!(error = %e, "fleet peer key not loaded yet (etcd away); no peer links until it is; retrying");
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn fetch_or_make(link: &FleetLink, key: &str) -> anyhow::Result<[u8; 32]> {
    let mut client = link
        .client()
        .ok_or_else(|| anyhow::anyhow!("not connected to etcd yet"))?;
    let fresh: [u8; 32] = rand::random();
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, hex(&fresh), None)]);
    client.txn(txn).await?;
    let got = client.get(key, None).await?;
    let value = got
        .kvs()
        .first()
        .ok_or_else(|| anyhow::anyhow!("{key} missing after it was written"))?
        .value();
    parse(value).ok_or_else(|| anyhow::anyhow!("{key} does not hold 64 hex digits"))
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse(value: &[u8]) -> Option<[u8; 32]> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_back_from_its_hex() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
        assert_eq!(parse(hex(&key).as_bytes()), Some(key));
        assert_eq!(parse(b"abc"), None);
        assert_eq!(parse(&[b'z'; 64]), None);
    }
}
