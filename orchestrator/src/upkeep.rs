//! Background upkeep of the store: the audit linker (issue 11). It runs on every node, on
//! the worker path, in short transactions: two nodes linking one chain take turns on its
//! head.

use std::sync::Arc;
use std::time::Duration;

use lockstep_persistence::Store;
use tracing::{debug, info, warn};

/// How often the linker looks for unlinked audit rows.
pub const LINK_EVERY: Duration = Duration::from_millis(200);

/// Links the audit rows steps wrote, every `every`, for as long as the node runs. A
/// failure is logged once until the linker succeeds again; the rows wait, nothing is lost.
pub async fn audit_linker(store: Arc<dyn Store>, every: Duration) {
    let mut failing = false;
    loop {
        match lockstep_persistence::audit::link_all(store.as_ref()).await {
            Ok(n) => {
                if failing {
                    info!("audit linker: linking again");
                    failing = false;
                }
                if n > 0 {
                    debug!(rows = n, "audit rows linked");
                }
            }
            Err(e) if !failing => {
                warn!(error = %e, "audit linker: linking failed, the rows wait");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(every).await;
    }
}
